"""Seed structures: Ruddlesden-Popper Cs(n+1)Pb(n)I(3n+1) and the 3D CsPbI3 phases.

Lattice data (and their sources) live in ``phases.json`` next to this module; lengths
are Angstrom. Every builder returns an ``ase.Atoms`` with atoms sorted by height (z).
"""

from __future__ import annotations

import functools
import json
from importlib.resources import files

import numpy as np
from ase import Atoms

from hipqeq.errors import StructureError

PHASES = ("alpha", "beta", "gamma", "delta")


@functools.cache
def structure_data() -> dict:
    """The package's lattice data (``phases.json``): per phase and for the RP stacking."""
    return json.loads((files("hipqeq.structures") / "phases.json").read_text())


def _sort_by_height(atoms: Atoms) -> Atoms:
    order = np.lexsort((atoms.positions[:, 1], atoms.positions[:, 0], atoms.positions[:, 2]))
    return atoms[order]


def _rp_layer(n: int, a: float, shift: tuple[float, float], z0: float) -> tuple[list[str], list]:
    """One RP slab of ``n`` octahedral layers, bottom apical iodide at height ``z0``.

    Pb planes sit at z0 + (k + 1/2) a (k = 0..n-1) with equatorial I at (a/2, 0) and
    (0, a/2); the n + 1 CsI planes at z0 + k a (k = 0..n) hold the apical I above/below
    Pb at (0, 0) and Cs at (a/2, a/2). Everything is shifted in-plane by ``shift`` (in
    units of a). Cs(n+1)Pb(n)I(3n+1): 2n + 1 + 3n + 1 atoms.
    """
    symbols, positions = [], []
    sx, sy = shift
    for k in range(n + 1):  # CsI (AO) planes
        z = z0 + k * a
        symbols += ["I", "Cs"]
        positions += [[sx * a, sy * a, z], [(sx + 0.5) * a, (sy + 0.5) * a, z]]
    for k in range(n):  # PbI2 (BO2) planes
        z = z0 + (k + 0.5) * a
        symbols += ["Pb", "I", "I"]
        positions += [[sx * a, sy * a, z], [(sx + 0.5) * a, sy * a, z], [sx * a, (sy + 0.5) * a, z]]
    return symbols, positions


def ruddlesden_popper(n: int, kind: str = "slab", a: float | None = None, vacuum: float = 20.0,
                      supercell: tuple[int, int, int] = (1, 1, 1), gap: float | None = None) -> Atoms:
    """Untilted Ruddlesden-Popper Cs(n+1)Pb(n)I(3n+1) on its I4/mmm aristotype.

    Corner-sharing PbI6 octahedra with Pb-I = a/2; adjacent slabs are shifted by
    (a/2, a/2) and separated by the CsI rock-salt spacing ``gap`` (Cs above I).

    ``kind="bulk"``: the conventional layered cell, 3D periodic, two slabs per
    c = 2 (n a + gap) (14, 24, 34 atoms for n = 1, 2, 3).
    ``kind="slab"``: one slab (7, 12, 17 atoms), pbc = (True, True, False), cell height
    n a + ``vacuum``: ``vacuum`` (Angstrom) is the empty gap between the outermost
    iodide planes of periodic images along z; the slab sits in the middle of the cell.

    ``a`` (Angstrom) defaults to the pseudo-cubic parameter of alpha-CsPbI3 and
    ``gap`` (Angstrom) to ``gap_fraction`` * a from ``phases.json`` (0.62 a, a GFN2-xTB
    scan; g = a/2 puts Cs 3.15 A from the next slab's iodide). ``supercell`` repeats
    the cell; a slab repeats in-plane only.
    """
    if n not in (1, 2, 3):
        raise StructureError(f"ruddlesden_popper: n = {n} is not supported (1, 2 or 3)")
    data = structure_data()["ruddlesden_popper"]
    a = float(a if a is not None else data["a"])
    gap = float(gap if gap is not None else data["gap_fraction"] * a)
    if kind == "bulk":
        period = n * a + gap
        symbols, positions = _rp_layer(n, a, (0.0, 0.0), 0.0)
        upper = _rp_layer(n, a, (0.5, 0.5), period)
        atoms = Atoms(symbols + upper[0], positions=positions + upper[1],
                      cell=[a, a, 2 * period], pbc=True)
    elif kind == "slab":
        if supercell[2] != 1:
            raise StructureError(f"ruddlesden_popper: a slab repeats in-plane only, got supercell {tuple(supercell)}")
        if vacuum <= 0:
            raise StructureError(f"ruddlesden_popper: slab vacuum must be positive, got {vacuum} A")
        symbols, positions = _rp_layer(n, a, (0.0, 0.0), vacuum / 2)
        atoms = Atoms(symbols, positions=positions, cell=[a, a, n * a + vacuum], pbc=(True, True, False))
    else:
        raise StructureError(f"ruddlesden_popper: kind must be 'bulk' or 'slab', got '{kind}'")
    atoms.wrap()
    return _sort_by_height(atoms.repeat(tuple(supercell)))


def phase(name: str, supercell: tuple[int, int, int] = (1, 1, 1)) -> Atoms:
    """A 3D CsPbI3 polymorph (alpha, beta, gamma, delta) from the package's Wyckoff data.

    The asymmetric unit in ``phases.json`` is expanded with ASE's space-group tables
    (standard settings: Pm-3m, P4/mbm, Pnma); the data file names each source.
    """
    from ase.spacegroup import crystal

    phases = structure_data()["phases"]
    if name not in phases:
        raise StructureError(f"unknown CsPbI3 phase '{name}'; choose one of {', '.join(PHASES)}")
    entry = phases[name]
    lattice = entry["lattice"]
    atoms = crystal([s["element"] for s in entry["sites"]], [s["coords"] for s in entry["sites"]],
                    spacegroup=entry["space_group"],
                    cellpar=[lattice[k] for k in ("a", "b", "c", "alpha", "beta", "gamma")])
    atoms = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell.array, pbc=True)
    return _sort_by_height(atoms.repeat(tuple(supercell)))
