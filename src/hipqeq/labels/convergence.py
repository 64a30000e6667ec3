"""Finite-size convergence of Gamma-point xTB labels versus supercell size, per seed.

tblite has no k-points, so energies and charges of small periodic cells carry large
finite-size errors (GFN1, cubic CsPbI3, per formula unit: -387.98 eV at 1x1x1,
-382.47 at 2x2x2, -384.17 at 3x3x3, -383.87 at 4x4x4; PHYSICS.md). This module shows
that error for each seed so the choice of ``xtb.min_periodic_length_A`` is visible:

1. the seed's built structure is reduced to its primitive repeat by dividing out the
   seed's config ``supercell`` (:func:`primitive_cell`);
2. the primitive cell is repeated ``n`` times for each ``n`` in ``convergence.repeats``
   along its *short* periodic directions — those shorter than ``min_periodic_length_A``
   (in-plane for slabs and layered RP cells, all three for small 3D cells; every
   periodic direction when none is short);
3. each size is labelled with the config's xTB settings (size checks off) and the
   report lists, per size: atoms, shortest periodic length (Angstrom), energy per atom
   (eV) and its difference to the largest size, largest and RMS force (eV/Angstrom)
   and the mean charge per element (e).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from ase import Atoms

from hipqeq.data import read_structure, record_from_atoms
from hipqeq.data.schema import STATUS_OK
from hipqeq.errors import ConfigError, StructureError
from hipqeq.labels.common import label_structure, shortest_periodic_length

log = logging.getLogger(__name__)

#: Tolerance (fractional coordinates) for assigning atoms on cell boundaries to an image.
_FRACTIONAL_TOLERANCE = 1e-4


def primitive_cell(atoms: Atoms, supercell) -> Atoms:
    """The repeat unit of ``atoms``, a ``supercell`` (n1, n2, n3) repetition of it.

    Keeps the atoms of image (0, 0, 0): those whose fractional coordinates in the
    primitive cell (lattice vectors divided by ``supercell``) lie in [0, 1) along each
    repeated direction. Atom order inside the supercell does not matter. Raises
    :class:`StructureError` when the atom count is not divisible as expected.
    """
    supercell = np.asarray(supercell, dtype=int)
    if np.all(supercell == 1):
        return atoms.copy()
    primitive = atoms.cell.array / supercell[:, None]
    fractional = np.linalg.solve(primitive.T, atoms.positions.T).T
    repeated = supercell > 1
    # wrap into the supercell, then find each atom's image index along repeated directions
    wrapped = np.mod(fractional[:, repeated] + _FRACTIONAL_TOLERANCE, supercell[repeated]) - _FRACTIONAL_TOLERANCE
    keep = np.all(np.floor(wrapped + _FRACTIONAL_TOLERANCE) == 0, axis=1)
    n_expected, remainder = divmod(len(atoms), int(supercell.prod()))
    if remainder or keep.sum() != n_expected:
        raise StructureError(f"cannot divide {len(atoms)} atoms by supercell {supercell.tolist()}: "
                             f"{keep.sum()} atoms fall in the first image, expected {n_expected}")
    unit = atoms[keep]
    unit.set_cell(primitive, scale_atoms=False)
    unit.info = dict(atoms.info)
    return unit


def repeat_directions(atoms: Atoms, min_periodic_length_A: float) -> list[int]:
    """Periodic directions shorter than ``min_periodic_length_A`` (all periodic ones if none)."""
    periodic = [i for i in range(3) if atoms.pbc[i]]
    lengths = atoms.cell.lengths()
    short = [i for i in periodic if lengths[i] < min_periodic_length_A]
    return short or periodic


def _size_row(repeat: int, supercell: list[int], atoms: Atoms, row: dict) -> dict:
    result = {"repeat": repeat, "supercell": supercell, "n_atoms": len(atoms),
              "shortest_periodic_length_A": shortest_periodic_length(atoms),
              "status": row["status"], "error": row["error"], "wall_time_s": row["wall_time_s"],
              "energy_per_atom_eV": None, "max_force_eV_A": None, "rms_force_eV_A": None,
              "mean_charge_e": None}
    if row["status"] == STATUS_OK:
        forces = np.asarray(row["forces"])
        charges = np.asarray(row["charges"])
        symbols = np.array(atoms.get_chemical_symbols())
        result.update(energy_per_atom_eV=row["energy"] / len(atoms),
                      max_force_eV_A=float(np.linalg.norm(forces, axis=1).max()),
                      rms_force_eV_A=float(np.sqrt((forces ** 2).sum(axis=1).mean())),
                      mean_charge_e={s: float(charges[symbols == s].mean()) for s in sorted(set(symbols))})
    return result


def check_convergence(config: dict, structures_path: str | os.PathLike, name: str,
                      repeats) -> dict:
    """The convergence report (a JSON-ready dict) of seed ``name`` of ``config``."""
    from hipqeq.labels.xtb import XTBLabeller

    seeds = {s["name"]: s for s in config["structures"]["seeds"]}
    if name not in seeds:
        raise ConfigError(f"'{name}' is not a seed in structures.seeds (seeds: {', '.join(seeds)})")
    unit = primitive_cell(read_structure(structures_path, name), seeds[name].get("supercell", [1, 1, 1]))
    settings = {**config["xtb"], "allow_small_cells": True}
    labeller = XTBLabeller(settings)
    directions = repeat_directions(unit, settings["min_periodic_length_A"])
    sizes = []
    for n in repeats:
        supercell = [n if i in directions else 1 for i in range(3)]
        atoms = unit.repeat(supercell)
        atoms.info = {"total_charge": float(unit.info.get("total_charge", 0.0)),
                      "structure_name": f"{name}_x{n}", "source": "build"}
        row = label_structure(record_from_atoms(atoms), labeller)
        sizes.append(_size_row(n, supercell, atoms, row))
        log.info("%s x%d: %d atoms, %s", name, n, len(atoms), row["status"])
    converged = [s for s in sizes if s["energy_per_atom_eV"] is not None]
    if converged:
        reference = max(converged, key=lambda s: s["n_atoms"])["energy_per_atom_eV"]
        for s in converged:
            s["energy_per_atom_minus_largest_eV"] = s["energy_per_atom_eV"] - reference
    return {"name": name, "method": labeller.method, "software": labeller.software,
            "primitive_n_atoms": len(unit), "repeat_directions": directions,
            "min_periodic_length_A": settings["min_periodic_length_A"], "sizes": sizes}


def plot_convergence(report: dict, path: str | os.PathLike) -> Path:
    """Energy per atom, largest force and mean charges versus shortest periodic length (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [s for s in report["sizes"] if s["status"] == STATUS_OK]
    length = [s["shortest_periodic_length_A"] for s in ok]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
    axes[0].plot(length, [s["energy_per_atom_eV"] for s in ok], "o-")
    axes[0].set_ylabel("energy per atom (eV)")
    axes[1].plot(length, [s["max_force_eV_A"] for s in ok], "o-")
    axes[1].set_ylabel("largest force (eV/Å)")
    elements = sorted({e for s in ok for e in s["mean_charge_e"]})
    for element in elements:
        axes[2].plot(length, [s["mean_charge_e"][element] for s in ok], "o-", label=element)
    axes[2].set_ylabel("mean Mulliken charge (e)")
    if elements:
        axes[2].legend()
    for ax in axes:
        ax.axvline(report["min_periodic_length_A"], color="grey", ls="--", lw=1)
        ax.set_xlabel("shortest periodic length (Å)")
    fig.suptitle(f"{report['name']}: {report['method']} (Gamma point) vs cell size; "
                 f"dashed: min_periodic_length_A")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(report: dict, path: str | os.PathLike) -> Path:
    """Write ``report`` as indented JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
