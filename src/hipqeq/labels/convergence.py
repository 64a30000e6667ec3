"""Convergence gates: do a seed's labels depend on the vacuum or the in-plane sampling?

A potential learns whatever its labels contain. tblite (Gamma point only) gives energies
that drift with the vacuum of a slab without converging and change by up to 26 meV/atom
between 3x3, 4x4 and 5x5 supercells (PHYSICS.md); a label set is only consistent when
its settings are converged. For each seed, :func:`check_convergence` labels the seed as
built (rattled by ``convergence.rattle_A`` so that forces are not zero by symmetry) with
the config's ``xtb`` settings in two series:

- **vacuum** (slabs: a non-periodic direction): the seed's own vacuum and every
  ``convergence.vacuum_A``; the atoms are unchanged, only the cell along the normal;
- **sampling**: the labelled setting (m = 1) and each ``sampling_multipliers`` m: the
  k-point density times m for engine ``cp2k``, or the cell repeated m times along every
  periodic direction for Gamma-point engines (a k-mesh of m samples the same
  Born-von Karman supercell as an m-fold repeat at Gamma).

Each point is compared with its series' most converged setting (largest vacuum, largest
m): energy per atom (meV/atom), the largest change of a force component (meV/Angstrom)
and of a charge (e) of the same atoms (image 0 of a repeat). The labelled setting passes
when all three are within ``convergence.tolerance``; :func:`gate_failures` names each
failure with its numbers, and the check-convergence verb stops the study unless
``convergence.allow_unconverged`` is set.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np
from ase import Atoms

from hipqeq.data import read_structure, record_from_atoms
from hipqeq.data.schema import STATUS_OK
from hipqeq.errors import ConfigError, StructureError
from hipqeq.labels.common import label_structure

log = logging.getLogger(__name__)

#: Gate quantities: report key, tolerance key, unit.
QUANTITIES = (("d_energy_meV_per_atom", "energy_meV_per_atom", "meV/atom"),
              ("max_d_force_meV_A", "force_meV_per_A", "meV/A"),
              ("max_d_charge_e", "charge_e", "e"))


def slab_normal(atoms: Atoms) -> int | None:
    """The non-periodic direction of a slab (its cell vector must be along the normal), or None."""
    free = [i for i in range(3) if not atoms.pbc[i]]
    if not free:
        return None
    if len(free) > 1:
        raise StructureError(f"a convergence gate needs a 3D cell or a slab, got pbc {atoms.pbc.tolist()}")
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


def _labelled_point(atoms: Atoms, labeller, name: str) -> dict:
    atoms = atoms.copy()
    atoms.info.update(structure_name=name, source="build")
    row = label_structure(record_from_atoms(atoms), labeller)
    params = json.loads(row["calc_params"])
    return {"n_atoms": len(atoms), "status": row["status"], "error": row["error"],
            "wall_time_s": row["wall_time_s"], "kmesh": params.get("kmesh", [1, 1, 1]),
            "scf_cycles": params.get("scf_cycles"),
            "energy_per_atom_eV": None if row["energy"] is None else row["energy"] / len(atoms),
            "forces": row["forces"], "charges": row["charges"]}


def _compare(points: list[dict], n_atoms: int) -> None:
    """Fill each point's differences to the last point (the reference), over atoms 0..n_atoms-1."""
    reference = points[-1]
    for point in points:
        point.update(d_energy_meV_per_atom=None, max_d_force_meV_A=None, max_d_charge_e=None)
        if point["status"] != STATUS_OK or reference["status"] != STATUS_OK:
            continue
        forces = np.asarray(point["forces"])[:n_atoms] - np.asarray(reference["forces"])[:n_atoms]
        charges = np.asarray(point["charges"])[:n_atoms] - np.asarray(reference["charges"])[:n_atoms]
        point.update(d_energy_meV_per_atom=1000 * (point["energy_per_atom_eV"] - reference["energy_per_atom_eV"]),
                     max_d_force_meV_A=1000 * float(np.abs(forces).max()),
                     max_d_charge_e=float(np.abs(charges).max()))
    for point in points:
        point.pop("forces", None)
        point.pop("charges", None)


def _series(name: str, values: list, points: list[dict], labelled, tolerance: dict) -> dict:
    """One gate series: its points, the labelled setting's verdict and the first converged value."""
    index = values.index(labelled)
    within = [all(p[key] is not None and abs(p[key]) <= tolerance[tol] for key, tol, _ in QUANTITIES)
              for p in points]
    # the smallest setting from which every point agrees with the reference (None: only the reference)
    converged_from = next((v for k, v in enumerate(values[:-1]) if all(within[k:])), None)
    for value, point in zip(values, points):
        point["value"] = value
    return {"series": name, "labelled": labelled, "reference": values[-1], "passed": within[index],
            "converged_from": converged_from, "points": points}


def check_convergence(config: dict, structures_path: str | os.PathLike, name: str) -> dict:
    """The gate report (a JSON-ready dict) of seed ``name`` under the config's xtb settings."""
    from hipqeq.labels import xtb_labeller

    seeds = {s["name"]: s for s in config["structures"]["seeds"]}
    if name not in seeds:
        raise ConfigError(f"'{name}' is not a seed in structures.seeds (seeds: {', '.join(seeds)})")
    gate = config["convergence"]
    seed = read_structure(structures_path, name)
    seed.rattle(gate["rattle_A"], seed=config["seed"])
    seed.info = {"total_charge": float(seed.info.get("total_charge", 0.0))}
    settings = {**config["xtb"], "allow_small_cells": True}  # the gate measures the size error
    labeller = xtb_labeller(settings)
    report = {"name": name, "method": labeller.method, "software": labeller.software,
              "engine": settings["engine"], "n_atoms": len(seed), "tolerance": gate["tolerance"],
              "allow_unconverged": gate["allow_unconverged"], "series": []}

    axis = slab_normal(seed)
    if axis is not None:
        own = round(vacuum_of(seed, axis), 2)
        vacua = sorted({own, *gate["vacuum_A"]})
        points = [_labelled_point(with_vacuum(seed, axis, v), labeller, f"{name}_vacuum{v:g}") for v in vacua]
        _compare(points, len(seed))
        report["series"].append(_series("vacuum_A", vacua, points, own, gate["tolerance"]))

    multipliers = sorted({1, *gate["sampling_multipliers"]})
    points = []
    for m in multipliers:
        if settings["engine"] == "cp2k":
            dense = xtb_labeller({**settings, "cp2k": {**settings["cp2k"],
                                                       "kpoint_density_A": m * settings["cp2k"]["kpoint_density_A"]}})
            points.append(_labelled_point(seed, dense, f"{name}_k{m}"))
        else:
            repeat = [m if seed.pbc[i] else 1 for i in range(3)]
            points.append(_labelled_point(seed.repeat(repeat), labeller, f"{name}_x{m}"))
    _compare(points, len(seed))
    series = "k-point density x" if settings["engine"] == "cp2k" else "supercell x"
    report["series"].append(_series(series, multipliers, points, 1, gate["tolerance"]))
    report["passed"] = all(s["passed"] for s in report["series"])
    return report


def gate_failures(report: dict) -> list[str]:
    """One message per failed quantity of the labelled setting, naming seed and numbers."""
    messages = []
    for series in report["series"]:
        point = next(p for p in series["points"] if p["value"] == series["labelled"])
        reference = series["points"][-1]
        where = (f"seed {report['name']}: {report['method']} ({report['engine']}) at {series['series']} "
                 f"{series['labelled']:g} vs {series['reference']:g}")
        if point["status"] != STATUS_OK or reference["status"] != STATUS_OK:
            failed = point if point["status"] != STATUS_OK else reference
            messages.append(f"{where}: a label failed ({failed['status']}: {failed['error']})")
            continue
        for key, tol, unit in QUANTITIES:
            if abs(point[key]) > report["tolerance"][tol]:
                messages.append(f"{where}: {key} = {point[key]:.4g} {unit} exceeds the tolerance "
                                f"{report['tolerance'][tol]:g} {unit}")
    return messages


def write_table(report: dict, path: str | os.PathLike) -> Path:
    """The gate as CSV (one row per labelled point; ``labelled``/``reference`` mark the compared pair)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["series", "value", "role", "n_atoms", "kmesh", "status", "scf_cycles", "energy_per_atom_eV",
               "d_energy_meV_per_atom", "max_d_force_meV_A", "max_d_charge_e", "passed"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for series in report["series"]:
            for point in series["points"]:
                role = ("labelled" if point["value"] == series["labelled"] else
                        "reference" if point["value"] == series["reference"] else "")
                writer.writerow({**point, "series": series["series"], "role": role,
                                 "kmesh": "x".join(map(str, point["kmesh"])),
                                 "passed": series["passed"] if role == "labelled" else ""})
    return path


def plot_convergence(report: dict, path: str | os.PathLike) -> Path:
    """Energy, force and charge differences to the reference per series, with tolerances (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(report["series"])
    fig, axes = plt.subplots(rows, 3, figsize=(12, 3.2 * rows), constrained_layout=True, squeeze=False)
    for ax_row, series in zip(axes, report["series"]):
        # the reference (last point) differs from itself by zero: not drawn on a log axis
        ok = [p for p in series["points"][:-1] if p["d_energy_meV_per_atom"] is not None]
        for ax, (key, tol, unit) in zip(ax_row, QUANTITIES):
            floor = report["tolerance"][tol] / 1000
            ax.plot([p["value"] for p in ok], [max(abs(p[key]), floor) for p in ok], "o-")
            ax.axhline(report["tolerance"][tol], color="grey", ls="--", lw=1)
            ax.axvline(series["labelled"], color="tab:red", ls=":", lw=1)
            ax.set_xlabel(f"{series['series']} (reference {series['reference']:g})")
            ax.set_ylabel(f"|{key}| ({unit})")
            ax.set_yscale("log")
            ax.set_ylim(floor / 2, 2 * max([report["tolerance"][tol]] + [abs(p[key]) for p in ok]))
    verdict = "passed" if report["passed"] else "FAILED"
    fig.suptitle(f"{report['name']}: {report['method']} ({report['engine']}) vs the most converged setting; "
                 f"dashed: tolerance, dotted: labelled setting; gate {verdict}")
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
