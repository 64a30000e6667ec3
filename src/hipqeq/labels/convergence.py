"""Convergence gates: do a seed's labels depend on the vacuum or the in-plane sampling?

A potential learns whatever its labels contain. tblite (Gamma point only) gives energies
that drift with the vacuum of a slab without converging and change by up to 26 meV/atom
between 3x3, 4x4 and 5x5 supercells (PHYSICS.md); a label set is only consistent when
its settings are converged. For each seed and level of theory (``xtb``: the config's
``xtb`` section; ``dft``: its ``dft`` section, PySCF), :func:`check_convergence` labels
the seed as built (rattled by ``convergence.rattle_A`` so that forces are not zero by
symmetry) in two series:

- **vacuum** (slabs: a non-periodic direction): the seed's own vacuum and every
  ``convergence.vacuum_A``; the atoms are unchanged, only the cell along the normal;
- **sampling**: the labelled setting (m = 1) and each ``sampling_multipliers`` m: the
  k-point density times m for engine ``cp2k``, the ``dft.kmesh`` count times m along
  every periodic direction for PySCF, or the cell repeated m times along every periodic
  direction for Gamma-point xTB engines (a k-mesh of m samples the same Born-von Karman
  supercell as an m-fold repeat at Gamma).

- **strain path** (seeds): the seed strained in-plane (slabs) or isotropically (3D cells)
  by each ``convergence.strain_percent`` at fixed fractional positions, labelled with the
  study's settings. Nothing converges here: the energies must lie on a smooth curve, and a
  labeller whose real-space cutoffs truncate an interaction steps it as pairs cross the
  cutoff (CP2K's default xTB Coulomb cutoff stepped the RP n = 1 slab by 25 meV/atom
  between -3 and -2 %, where a vacuum or k-point series at one geometry sees nothing).
  Each energy is compared with a cubic fit through all of them
  (``energy_residual_meV_per_atom``).

Each point is compared with its series' most converged setting (largest vacuum, largest
m): energy per atom (meV/atom), the largest change of a force component (meV/Angstrom)
and of a charge (e) of the same atoms (image 0 of a repeat), each where the level labels
it (DFT charges always; DFT energy and forces with ``dft.energy_forces``). The energy and
forces compared are those the 4G short range learns: the label minus the Coulomb energy
(and forces) of the label's own charges under the boundary the engine used
(``label_boundary``; Gaussian widths: the model's initial ``training.qeq_parameters``).
A charged slab labelled as a 3D-periodic cell carries the charge's interaction with the
neutralising background, which grows with the vacuum (CP2K: +0.4 eV per 10 A for Q = +1);
the model subtracts that term, so what must not depend on the vacuum is the rest. The
raw label's changes are reported beside them (``d_label_energy_meV_per_atom``,
``max_d_label_force_meV_A``). Charged slabs (``convergence.charged_slabs``, built
structures with a total charge) get a vacuum series of their own; their in-plane
sampling is their seed's gate.

The labelled setting passes when the gated quantities are within ``convergence.tolerance``
(a strain path: every residual within ``tolerance.strain_residual_meV_per_atom``);
:func:`gate_failures` names each failure with its numbers, and the check-convergence verb
stops the study unless ``convergence.allow_unconverged`` is set.

A gate of CP2K labels runs for an hour or more: given a :class:`GateLabels` file, each
label is kept there as it finishes, and a rerun with the same labelling settings (an
interrupted gate, a changed tolerance) reuses it instead of labelling again.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from hipqeq.data import read_records, read_structure, record_from_atoms, write_dataset
from hipqeq.data.schema import LABEL_BOUNDARY_PBC, STATUS_OK
from hipqeq.errors import ConfigError, StructureError
from hipqeq.geometry import slab_normal, vacuum_of, with_vacuum
from hipqeq.labels.common import label_structure, labelled_with
from hipqeq.plan import gated_structures
from hipqeq.qeq import fixed_charge_electrostatics
from hipqeq.structures.transform import strain

log = logging.getLogger(__name__)

#: Levels of theory a gate can check: the xtb and dft sections' labellers.
LEVELS = ("xtb", "dft")

#: Gate quantities: report key, tolerance key, unit. Energy and forces: the short-range
#: target (label minus the Coulomb term of its own charges).
QUANTITIES = (("d_energy_meV_per_atom", "energy_meV_per_atom", "meV/atom"),
              ("max_d_force_meV_A", "force_meV_per_A", "meV/A"),
              ("max_d_charge_e", "charge_e", "e"))

#: Each reported difference: report key -> (point entry, scale to the key's unit).
DIFFERENCES = {"d_energy_meV_per_atom": ("target_energy_per_atom_eV", 1000.0),
               "max_d_force_meV_A": ("target_forces", 1000.0),
               "max_d_charge_e": ("charges", 1.0),
               "d_label_energy_meV_per_atom": ("energy_per_atom_eV", 1000.0),
               "max_d_label_force_meV_A": ("forces", 1000.0)}

#: The raw label's counterpart of a gated energy or force difference (plotted beside it).
RAW_LABEL_DIFFERENCES = {"d_energy_meV_per_atom": "d_label_energy_meV_per_atom",
                         "max_d_force_meV_A": "max_d_label_force_meV_A"}

#: Name of the strain-path series, and the degree of the polynomial its energies must follow:
#: cubic, so that a smooth E(strain) over +-3 % fits to ~0.1 meV/atom (tblite's GFN1 on the
#: RP n = 1 slab: third differences of 0.4 meV/atom per 1 %).
STRAIN_SERIES, STRAIN_FIT_DEGREE = "strain_percent", 3

#: Each strain-path residual: report key -> point entry (gated: the short-range target).
RESIDUALS = {"energy_residual_meV_per_atom": "target_energy_per_atom_eV",
             "label_energy_residual_meV_per_atom": "energy_per_atom_eV"}


def _label_electrostatics(atoms: Atoms, row: dict, sigma_A: dict[int, float]) -> tuple[float, np.ndarray] | None:
    """Coulomb energy (eV) and forces (eV/A) of a label's own charges under the label's
    boundary, or None for a row without charges."""
    if row["status"] != STATUS_OK or row["charges"] is None:
        return None
    if row["label_boundary"] not in LABEL_BOUNDARY_PBC:
        raise ConfigError(f"{row['structure_name']}: the labeller recorded no boundary (label_boundary "
                          f"{row['label_boundary']!r}); the gate cannot subtract its electrostatics")
    under_label_boundary = atoms.copy()
    under_label_boundary.pbc = LABEL_BOUNDARY_PBC[row["label_boundary"]]
    return fixed_charge_electrostatics(under_label_boundary, row["charges"], [sigma_A[z] for z in atoms.numbers])


class GateLabels:
    """A gate's labels as rows of a hipqeq dataset at ``path`` (None: kept in memory only):
    :meth:`label` returns the stored row of the same structure labelled with the same
    parameters, or labels it and writes the file again (atomically) before returning."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = None if path is None else Path(path)
        self.rows = read_records(self.path) if self.path is not None and self.path.exists() else []

    def label(self, record: dict, labeller) -> dict:
        for row in self.rows:
            if row["structure_id"] == record["structure_id"] and labelled_with(row, labeller.parameters):
                log.info("%s: reusing its label%s", record["structure_name"], f" from {self.path}" if self.path else "")
                return row
        row = label_structure(record, labeller)
        self.rows.append(row)
        if self.path is not None:
            write_dataset(self.rows, self.path)
        return row


def _labelled_point(atoms: Atoms, labeller, name: str, sigma_A: dict[int, float], store: GateLabels) -> dict:
    atoms = atoms.copy()
    atoms.info.update(structure_name=name, source="build")
    row = store.label(record_from_atoms(atoms), labeller)
    params = json.loads(row["calc_params"])
    energy = None if row["energy"] is None else row["energy"] / len(atoms)
    # a gate runs for up to an hour or more: one line per label shows where it is
    log.info("%s: %s in %.0f s%s", name, row["status"], row["wall_time_s"],
             "" if energy is None else f", {energy:.6f} eV/atom")
    point = {"n_atoms": len(atoms), "status": row["status"], "error": row["error"],
             "wall_time_s": row["wall_time_s"], "kmesh": params.get("kmesh", [1, 1, 1]),
             "scf_cycles": params.get("scf_cycles"), "energy_per_atom_eV": energy,
             "forces": row["forces"], "charges": row["charges"], "elec_energy_per_atom_eV": None,
             "target_energy_per_atom_eV": energy, "target_forces": row["forces"]}
    electrostatics = _label_electrostatics(atoms, row, sigma_A)
    if electrostatics is not None:
        elec_energy, elec_forces = electrostatics
        point["elec_energy_per_atom_eV"] = elec_energy / len(atoms)
        if energy is not None:
            point["target_energy_per_atom_eV"] = energy - elec_energy / len(atoms)
        if row["forces"] is not None:
            point["target_forces"] = np.asarray(row["forces"]) - elec_forces
    return point


def _difference(entry: str, scale: float, point: dict, reference: dict, n_atoms: int) -> float | None:
    """``point`` minus ``reference`` in ``entry`` (largest component change of an array,
    over atoms 0..n_atoms-1), times ``scale``; None where the level does not label it."""
    if point[entry] is None or reference[entry] is None:
        return None
    if np.ndim(point[entry]) == 0:
        return scale * (point[entry] - reference[entry])
    change = np.asarray(point[entry])[:n_atoms] - np.asarray(reference[entry])[:n_atoms]
    return scale * float(np.abs(change).max())


def _compare(points: list[dict], n_atoms: int) -> None:
    """Fill each point's differences to the last point (the reference), over atoms 0..n_atoms-1."""
    reference = points[-1]
    both_ok = reference["status"] == STATUS_OK
    for point in points:
        ok = both_ok and point["status"] == STATUS_OK
        point.update({key: _difference(entry, scale, point, reference, n_atoms) if ok else None
                      for key, (entry, scale) in DIFFERENCES.items()})
    for point in points:
        for entry in ("forces", "charges", "target_forces"):
            point.pop(entry, None)


def gated_quantities(config: dict, level: str) -> list[tuple[str, str, str]]:
    """The gate quantities (report key, tolerance key, unit) that ``level``'s labels hold."""
    if level == "xtb" or config["dft"]["energy_forces"]:
        return list(QUANTITIES)
    return [q for q in QUANTITIES if q[0] == "max_d_charge_e"]


def _series(name: str, values: list, points: list[dict], labelled, tolerance: dict, quantities) -> dict:
    """One gate series: its points, the labelled setting's verdict and the first converged value."""
    index = values.index(labelled)
    within = [all(p[key] is not None and abs(p[key]) <= tolerance[tol] for key, tol, _ in quantities)
              for p in points]
    # the smallest setting from which every point agrees with the reference (None: only the reference)
    converged_from = next((v for k, v in enumerate(values[:-1]) if all(within[k:])), None)
    for value, point in zip(values, points):
        point["value"] = value
    return {"series": name, "labelled": labelled, "reference": values[-1], "passed": within[index],
            "converged_from": converged_from, "points": points}


def cubic_fit_residuals_meV(strains_percent, energies_eV) -> np.ndarray:
    """Distance (meV/atom) of each energy per atom (eV) from the cubic through all of them."""
    energies = np.asarray(energies_eV, dtype=float)
    return 1000.0 * (energies - np.polyval(np.polyfit(strains_percent, energies, STRAIN_FIT_DEGREE), strains_percent))


def _strain_series(seed: Atoms, labelled: dict, labeller, name: str, sigma_A: dict[int, float],
                   strains_percent: list[float], axis: int | None, tolerance: dict, store: GateLabels) -> dict:
    """The strain-path series: ``seed`` (its ``labelled`` point at 0 %) strained by each of
    ``strains_percent``, in-plane for a slab with normal ``axis``, isotropically for a 3D cell."""
    values = sorted({0.0, *map(float, strains_percent)})
    if len(values) < STRAIN_FIT_DEGREE + 2:
        raise ConfigError(f"convergence.strain_percent {strains_percent}: a cubic fit needs at least "
                          f"{STRAIN_FIT_DEGREE + 1} strains besides 0 to leave residuals")
    if axis not in (None, 2):
        raise StructureError(f"{name}: the strain path strains cell vectors a and b in-plane; this slab's "
                             f"normal is cell vector {'abc'[axis]}")
    mode = "isotropic" if axis is None else "biaxial"
    points = [dict(labelled) if value == 0 else
              _labelled_point(strain(seed, value, mode), labeller, f"{name}_strain{value:g}", sigma_A, store)
              for value in values]
    ok = all(point["status"] == STATUS_OK for point in points)
    for key, entry in RESIDUALS.items():
        residuals = cubic_fit_residuals_meV(values, [p[entry] for p in points]).tolist() if ok else [None] * len(points)
        for point, residual in zip(points, residuals):
            point[key] = residual
    for value, point in zip(values, points):
        point["value"] = value
        for entry in ("forces", "charges", "target_forces"):
            point.pop(entry, None)
    # the point farthest from the fit, or None where a label failed
    worst = max(points, key=lambda p: abs(p["energy_residual_meV_per_atom"])) if ok else None
    passed = ok and abs(worst["energy_residual_meV_per_atom"]) <= tolerance["strain_residual_meV_per_atom"]
    return {"series": STRAIN_SERIES, "labelled": 0.0, "reference": None, "mode": mode,
            "fit_degree": STRAIN_FIT_DEGREE, "passed": passed, "converged_from": None, "points": points,
            "worst": None if worst is None else {key: worst[key] for key in ("value", "energy_residual_meV_per_atom")}}


def _labeller(config: dict, level: str, densify: int = 1, pbc=(True, True, True)):
    """The labeller of ``level`` as the study labels (``densify`` = 1), or with its k-point
    sampling ``densify`` times denser along the periodic directions ``pbc``; None for a
    Gamma-point xTB engine, whose denser sampling is a repeated cell. Size checks are off:
    the gate measures the size error."""
    from hipqeq.labels import dft_labeller, xtb_labeller

    if level == "dft":
        settings = {**config["dft"], "allow_small_cells": True}
        if densify > 1 and settings["source"] == "cp2k":
            settings = _denser_kpoints(settings, densify)
        elif densify > 1:
            settings["kmesh"] = [k * densify if periodic else k for k, periodic in zip(settings["kmesh"], pbc)]
        return dft_labeller(settings)
    settings = {**config["xtb"], "allow_small_cells": True}
    if densify == 1:
        return xtb_labeller(settings)
    if settings["engine"] != "cp2k":
        return None
    return xtb_labeller(_denser_kpoints(settings, densify))


def _denser_kpoints(settings: dict, densify: int) -> dict:
    """A CP2K-labelled section (``xtb`` or ``dft``) with its ``cp2k.kpoint_density_A``
    times ``densify``."""
    cp2k = settings["cp2k"]
    return {**settings, "cp2k": {**cp2k, "kpoint_density_A": densify * cp2k["kpoint_density_A"]}}


def check_convergence(config: dict, structures_path: str | os.PathLike, name: str, level: str = "xtb",
                      labels: str | os.PathLike | None = None) -> dict:
    """The gate report (a JSON-ready dict) of structure ``name`` (a seed, or a charged slab
    of :func:`hipqeq.plan.gated_structures`) under the config's ``level`` (``xtb`` or
    ``dft``) labelling settings; ``labels``: the :class:`GateLabels` file to reuse and
    extend (None: label everything, keep nothing)."""
    if level not in LEVELS:
        raise ConfigError(f"no convergence gate for level '{level}' (levels: {', '.join(LEVELS)})")
    if level == "dft" and config["dft"]["source"] == "external":
        raise ConfigError("the DFT gate labels with PySCF or CP2K; an external DFT set (dft.source: external) "
                          "cannot be relabelled here")
    gated = gated_structures(config)
    if name not in gated:
        raise ConfigError(f"'{name}' is not gated: the gates label the seeds of structures.seeds and, with "
                          f"convergence.charged_slabs, the charged slabs (gated: {', '.join(gated)})")
    from hipqeq.models.charges import qeq_parameters  # imports hippynn: only when a gate runs

    is_seed = name in {s["name"] for s in config["structures"]["seeds"]}
    gate = config["convergence"]
    seed = read_structure(structures_path, name)
    seed.rattle(gate["rattle_A"], seed=config["seed"])
    seed.info = {"total_charge": float(seed.info.get("total_charge", 0.0))}
    species = sorted({int(z) for z in seed.numbers})
    sigma_A = dict(zip(species, qeq_parameters(species, config["training"]["qeq_parameters"])["sigma_A"]))
    labeller = _labeller(config, level)
    store = GateLabels(labels)
    quantities = gated_quantities(config, level)
    engine = config["xtb"]["engine"] if level == "xtb" else config["dft"]["source"]
    report = {"name": name, "level": level, "method": labeller.method, "software": labeller.software,
              "engine": engine, "kind": "seed" if is_seed else "charged slab", "n_atoms": len(seed),
              "total_charge": seed.info["total_charge"],
              "tolerance": gate["tolerance"], "quantities": [key for key, _, _ in quantities],
              "sigma_A": {chemical_symbols[z]: width for z, width in sigma_A.items()},
              "allow_unconverged": gate["allow_unconverged"], "series": []}

    axis = slab_normal(seed)
    if axis is None and not is_seed:
        raise StructureError(f"{name}: a charged structure is gated on its vacuum, but it is not a slab")
    if axis is not None:
        own = round(vacuum_of(seed, axis), 2)
        if max(gate["vacuum_A"]) < own + 1.0:
            # its own vacuum (moved by the rattle by a fraction of an Angstrom from the built
            # one) would be the reference or next to it: the gate would pass without evidence
            raise ConfigError(f"{name} is labelled with {own:g} A of vacuum, within 1 A of the largest of "
                              f"convergence.vacuum_A {gate['vacuum_A']}: the gate needs a larger vacuum to compare with")
        seed = with_vacuum(seed, axis, own)  # the labelled geometry of both series
    # the labelled setting is the same calculation in both series: computed once
    labelled = _labelled_point(seed, labeller, f"{name}_labelled", sigma_A, store)
    if axis is not None:
        vacua = sorted({own, *gate["vacuum_A"]})
        points = [dict(labelled) if v == own else
                  _labelled_point(with_vacuum(seed, axis, v), labeller, f"{name}_vacuum{v:g}", sigma_A, store)
                  for v in vacua]
        _compare(points, len(seed))
        report["series"].append(_series("vacuum_A", vacua, points, own, gate["tolerance"], quantities))

    if is_seed:
        multipliers = sorted({1, *gate["sampling_multipliers"]})
        points = [dict(labelled)]
        for m in multipliers[1:]:
            denser = _labeller(config, level, m, seed.pbc)
            if denser is not None:
                points.append(_labelled_point(seed, denser, f"{name}_k{m}", sigma_A, store))
            else:
                repeat = [m if seed.pbc[i] else 1 for i in range(3)]
                points.append(_labelled_point(seed.repeat(repeat), labeller, f"{name}_x{m}", sigma_A, store))
        _compare(points, len(seed))
        series = "supercell x" if level == "xtb" and engine != "cp2k" else "k-point density x"
        report["series"].append(_series(series, multipliers, points, 1, gate["tolerance"], quantities))
        if gate["strain_percent"] and "d_energy_meV_per_atom" in report["quantities"]:
            report["series"].append(_strain_series(seed, labelled, labeller, name, sigma_A, gate["strain_percent"],
                                                   axis, gate["tolerance"], store))
    report["passed"] = all(s["passed"] for s in report["series"])
    return report


def gate_failures(report: dict) -> list[str]:
    """One message per failed quantity of the labelled setting, naming the structure and numbers."""
    messages = []
    for series in report["series"]:
        if series["series"] == STRAIN_SERIES:
            messages += _strain_failures(report, series)
            continue
        point = next(p for p in series["points"] if p["value"] == series["labelled"])
        reference = series["points"][-1]
        where = (f"{report.get('kind', 'seed')} {report['name']}: {report['level']} {report['method']} ({report['engine']}) at {series['series']} "
                 f"{series['labelled']:g} vs {series['reference']:g}")
        if point["status"] != STATUS_OK or reference["status"] != STATUS_OK:
            failed = point if point["status"] != STATUS_OK else reference
            messages.append(f"{where}: a label failed ({failed['status']}: {failed['error']})")
            continue
        for key, tol, unit in QUANTITIES:
            if key in report["quantities"] and abs(point[key]) > report["tolerance"][tol]:
                what = " (label minus E_elec of its own charges)" if key in RAW_LABEL_DIFFERENCES else ""
                messages.append(f"{where}: {key}{what} = {point[key]:.4g} {unit} exceeds the tolerance "
                                f"{report['tolerance'][tol]:g} {unit}")
    return messages


def summary_lines(report: dict) -> list[str]:
    """One line per series: the labelled setting's changes against the reference, or a
    strain path's largest distance from its cubic fit."""
    lines = []
    for series in report["series"]:
        if series["series"] == STRAIN_SERIES:
            worst = series["worst"]
            worst = (f"{abs(worst['energy_residual_meV_per_atom']):.4g} meV/atom" if worst is not None
                     else "n/a (a label failed)")
            lines.append(f"{series['series']} {series['points'][0]['value']:g}..{series['points'][-1]['value']:g}: "
                         f"largest distance from a cubic fit {worst}")
            continue
        labelled = next(p for p in series["points"] if p["value"] == series["labelled"])
        changes = ", ".join(f"{key} {labelled[key]:.4g} {unit}" if labelled[key] is not None else f"{key} n/a"
                            for key, _, unit in QUANTITIES if key in report["quantities"])
        lines.append(f"{series['series']} {series['labelled']:g} vs {series['reference']:g}: {changes}; "
                     f"converged from {series['converged_from']}")
    return lines


def _strain_failures(report: dict, series: dict) -> list[str]:
    strains = ", ".join(f"{point['value']:g}" for point in series["points"])
    where = (f"{report.get('kind', 'seed')} {report['name']}: {report['level']} {report['method']} "
             f"({report['engine']}) along its {series['mode']} strain path {strains} %")
    failed = [p for p in series["points"] if p["status"] != STATUS_OK]
    if failed:
        return [f"{where}: the label at {failed[0]['value']:g} % failed ({failed[0]['status']}: {failed[0]['error']})"]
    if series["passed"]:
        return []
    worst = series["worst"]
    tolerance = report["tolerance"]["strain_residual_meV_per_atom"]
    return [f"{where}: the energy (label minus E_elec of its own charges) leaves a smooth cubic E(strain) by "
            f"{worst['energy_residual_meV_per_atom']:.4g} meV/atom at {worst['value']:g} %, above the tolerance "
            f"{tolerance:g} meV/atom: the labeller's energy steps as the cell changes (a real-space cutoff "
            "that truncates an interaction, such as CP2K's xtb.cp2k.coulomb_sr_*)"]


def write_table(report: dict, path: str | os.PathLike) -> Path:
    """The gate as CSV (one row per labelled point; ``labelled``/``reference`` mark the compared pair)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["series", "value", "role", "n_atoms", "kmesh", "status", "scf_cycles", "energy_per_atom_eV",
               "elec_energy_per_atom_eV", "d_energy_meV_per_atom", "max_d_force_meV_A", "max_d_charge_e",
               "d_label_energy_meV_per_atom", "max_d_label_force_meV_A", *RESIDUALS, "passed"]
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

    quantities = [q for q in QUANTITIES if q[0] in report["quantities"]]
    rows, columns = len(report["series"]), len(quantities)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), constrained_layout=True,
                             squeeze=False)
    for ax_row, series in zip(axes, report["series"]):
        if series["series"] == STRAIN_SERIES:
            _plot_strain_path(ax_row, series, report["tolerance"]["strain_residual_meV_per_atom"])
            continue
        for ax, (key, tol, unit) in zip(ax_row, quantities):
            # the reference (last point) differs from itself by zero: not drawn on a log axis
            ok = [p for p in series["points"][:-1] if p[key] is not None]
            floor = report["tolerance"][tol] / 1000
            ax.plot([p["value"] for p in ok], [max(abs(p[key]), floor) for p in ok], "o-", label="gated")
            raw = RAW_LABEL_DIFFERENCES.get(key)
            shown = [abs(p[key]) for p in ok]
            if raw is not None and any(p.get(raw) is not None for p in ok):
                ax.plot([p["value"] for p in ok], [max(abs(p[raw]), floor) for p in ok], "s:", color="grey",
                        label="raw label")
                ax.legend(fontsize="small")
                shown += [abs(p[raw]) for p in ok]
            ax.axhline(report["tolerance"][tol], color="grey", ls="--", lw=1)
            ax.axvline(series["labelled"], color="tab:red", ls=":", lw=1)
            ax.set_xlabel(f"{series['series']} (reference {series['reference']:g})")
            ax.set_ylabel(f"|{key}| ({unit})")
            ax.set_yscale("log")
            ax.set_ylim(floor / 2, 2 * max([report["tolerance"][tol]] + shown))
    verdict = "passed" if report["passed"] else "FAILED"
    fig.suptitle(f"{report['name']}: {report['level']} {report['method']} ({report['engine']}) vs the most converged setting; "
                 f"dashed: tolerance, dotted: labelled setting; gate {verdict}\n"
                 "energy and forces gated as the 4G short range learns them: label minus the Coulomb term of its own charges")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_strain_path(axes, series: dict, tolerance_meV: float) -> None:
    """A strain path's energies (relative to 0 %) with their cubic fit, and the residuals."""
    points = [p for p in series["points"] if p["energy_residual_meV_per_atom"] is not None]
    for ax in axes[2:]:
        ax.axis("off")
    if not points:
        axes[0].set_title("strain path: a label failed")
        return
    strains = np.array([p["value"] for p in points])
    dense = np.linspace(strains.min(), strains.max(), 200)
    for key, entry, style, label in (("energy_residual_meV_per_atom", "target_energy_per_atom_eV", "o", "gated"),
                                     ("label_energy_residual_meV_per_atom", "energy_per_atom_eV", "s", "raw label")):
        energies = 1000.0 * np.array([p[entry] for p in points])
        energies -= energies[np.argmin(np.abs(strains))]
        line, = axes[1].plot(strains, energies, style, label=label)
        axes[1].plot(dense, np.polyval(np.polyfit(strains, energies, series["fit_degree"]), dense), "-",
                     color=line.get_color(), lw=1)
        floor = tolerance_meV / 1000
        axes[0].plot(strains, [max(abs(p[key]), floor) for p in points], style + ("-" if style == "o" else ":"),
                     color=line.get_color(), label=label)
    axes[0].axhline(tolerance_meV, color="grey", ls="--", lw=1)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("|E - cubic fit| (meV/atom)")
    axes[1].set_ylabel("E - E(0 %) (meV/atom)")
    for ax in axes[:2]:
        ax.set_xlabel(f"{series['mode']} strain (%)")
        ax.legend(fontsize="small")


def write_report(report: dict, path: str | os.PathLike) -> Path:
    """Write ``report`` as indented JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
