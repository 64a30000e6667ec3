"""Geometry helpers shared by the structure checks, the labelling pre-checks, MD and the
calculator's input handling (total charge conventions, slabs wrapped across their cell),
and by the structure builder and the convergence gates (a slab's normal and vacuum)."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from hipqeq.errors import StructureError

#: Total charges (e) closer than this count as equal when conventions are compared.
CHARGE_TOLERANCE_E = 1e-6


def closest_pair(atoms: Atoms, cutoff_A: float) -> tuple[int, int, float] | None:
    """The two closest atoms (indices ``i``, ``j`` and their distance in Angstrom) among
    pairs closer than ``cutoff_A``, periodic images included; ``None`` when no pair is
    that close (always for ``cutoff_A <= 0`` or no atoms). An atom close to its own
    periodic image gives ``i == j``."""
    if cutoff_A <= 0 or len(atoms) == 0:
        return None
    i, j, d = neighbor_list("ijd", atoms, cutoff_A)
    if not len(d):
        return None
    k = int(np.argmin(d))
    return int(i[k]), int(j[k]), float(d[k])


def total_charge_of(atoms: Atoms, calculator_charge: float | None = None) -> float:
    """The total charge (e) of ``atoms`` from the conventions ASE users rely on:
    ``atoms.info["total_charge"]`` (hipqeq datasets), ``atoms.info["charge"]`` (extxyz
    files, many ASE calculators), the sum of ``atoms.get_initial_charges()``, and
    ``calculator_charge``, a calculator's ``charge`` argument (as tblite's and xtb's
    ASE calculators take it). Unset conventions are ignored (initial charges count as
    unset when absent or all zero, which is what ASE returns for "absent"); 0 e when
    none is set. Set conventions that disagree by more than :data:`CHARGE_TOLERANCE_E`
    raise :class:`StructureError`."""
    given = {f'atoms.info["{key}"]': float(atoms.info[key])
             for key in ("total_charge", "charge") if atoms.info.get(key) is not None}
    if calculator_charge is not None:
        given["the calculator's charge"] = float(calculator_charge)
    initial = atoms.arrays.get("initial_charges")
    if initial is not None and np.any(initial != 0):
        given["the sum of atoms.get_initial_charges()"] = float(np.sum(initial))
    values = list(given.values())
    if values and max(values) - min(values) > CHARGE_TOLERANCE_E:
        listed = ", ".join(f"{where} = {value:+g} e" for where, value in given.items())
        raise StructureError(f"the total charge is ambiguous: {listed}; set one of them, or make them agree")
    return values[0] if values else 0.0


def _widest_gap(fractional: np.ndarray) -> tuple[float, float]:
    """``(width, end)``: the widest gap between the fractional coordinates ``fractional``
    taken modulo 1 (across 1 included) and the coordinate (in [0, 1)) where it ends."""
    ordered = np.sort(np.mod(fractional, 1.0))
    gaps = np.diff(np.append(ordered, ordered[0] + 1.0))  # gap after each atom, the last one across 1
    largest = int(np.argmax(gaps))
    return float(gaps[largest]), float(ordered[(largest + 1) % len(ordered)])


def unwrap_slab(atoms: Atoms) -> Atoms:
    """``atoms`` itself, or for a slab (pbc T,T,F) whose atoms were wrapped across the cell
    boundary along the third lattice vector a copy with those atoms moved by whole
    lattice vectors so that the slab is contiguous again.

    Along a non-periodic direction an atom and its image one lattice vector away are not
    the same atom to a neighbour list or a slab Coulomb sum, so a slab cut in two by
    z = 0 (e.g. after ``atoms.wrap()``) would be two half-slabs far apart. The vacuum is
    the largest gap between the atoms' fractional coordinates along the third vector
    (taken modulo 1); the atoms are placed so that the gap lies outside them and the
    slab's mean fractional coordinate is in [0, 1).
    """
    if tuple(bool(p) for p in atoms.pbc) != (True, True, False) or len(atoms) < 2:
        return atoms
    fractional = np.linalg.solve(atoms.cell.array.T, atoms.positions.T).T[:, 2]
    gap, start = _widest_gap(fractional)
    if np.ptp(fractional) <= 1.0 - gap + 1e-9:
        return atoms  # already contiguous (wherever it sits)
    contiguous = np.mod(fractional - start, 1.0) + start
    contiguous -= np.floor(contiguous.mean())  # the slab's centre inside the cell
    unwrapped = atoms.copy()
    unwrapped.positions += np.rint(contiguous - fractional)[:, None] * atoms.cell.array[2]
    return unwrapped


def slab_normal(atoms: Atoms) -> int | None:
    """The non-periodic direction of a slab (its cell vector must be along the normal), or None."""
    free = [i for i in range(3) if not atoms.pbc[i]]
    if not free:
        return None
    if len(free) > 1:
        raise StructureError(f"expected a 3D cell or a slab (one non-periodic direction), got pbc {atoms.pbc.tolist()}")
    axis = free[0]
    in_plane = [atoms.cell.array[i] for i in range(3) if i != axis]
    normal = np.cross(*in_plane)
    vector = atoms.cell.array[axis]
    if abs(abs(vector @ normal) - np.linalg.norm(vector) * np.linalg.norm(normal)) > 1e-6 * np.linalg.norm(normal):
        raise StructureError("the slab's cell vector along its non-periodic direction is not normal to the plane")
    return axis


def vacuum_of(atoms: Atoms, axis: int) -> float:
    """Empty gap (Angstrom) between the slab and its image along cell vector ``axis``."""
    unit = atoms.cell.array[axis] / np.linalg.norm(atoms.cell.array[axis])
    heights = atoms.positions @ unit
    return float(np.linalg.norm(atoms.cell.array[axis]) - (heights.max() - heights.min()))


def widest_gap_A(atoms: Atoms, axis: int) -> float:
    """Width (Angstrom) of the widest layer without atoms between the lattice planes
    spanned by the two other cell vectors, along cell vector ``axis``, across the cell
    boundary (fractional coordinates modulo 1, so wrapped atoms count where they are):
    the vacuum of a slab, whatever its pbc says. Needs a cell of full rank."""
    gap, _ = _widest_gap(atoms.cell.scaled_positions(atoms.positions)[:, axis])
    plane_spacing_A = 1.0 / np.linalg.norm(atoms.cell.reciprocal()[axis])
    return gap * plane_spacing_A


def with_vacuum(atoms: Atoms, axis: int, vacuum_A: float) -> Atoms:
    """``atoms`` with the gap along ``axis`` set to ``vacuum_A``, the slab centred; atoms unchanged."""
    unit = atoms.cell.array[axis] / np.linalg.norm(atoms.cell.array[axis])
    heights = atoms.positions @ unit
    thickness = heights.max() - heights.min()
    result = atoms.copy()
    cell = atoms.cell.array.copy()
    cell[axis] = unit * (thickness + vacuum_A)
    result.set_cell(cell, scale_atoms=False)
    result.positions += np.outer(vacuum_A / 2 - heights.min(), unit)
    return result
