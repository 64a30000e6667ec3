"""What every labeller shares: settings, pre-checks, the chunk loop, resume and provenance.

A *labeller* (:class:`hipqeq.labels.xtb.XTBLabeller`, :class:`hipqeq.labels.dft.DFTLabeller`)
turns one ``Atoms`` into :class:`Labels` or raises a :class:`~hipqeq.errors.LabellingFailed`
subclass. :func:`label_records` runs it over a chunk and never drops a structure:

1. :func:`precheck` refuses plainly broken structures before any engine runs
   (``rejected_nan``, ``rejected_cell``, ``rejected_overlap``, ``rejected_element``,
   ``rejected_small_cell``; the labeller adds its own refusals, e.g. ``rejected_periodic``);
2. the engine runs; an SCF that does not converge is retried once with the labeller's
   safer settings, then recorded as ``scf_not_converged``; any other engine error is
   recorded as ``error``;
3. every row carries ``method``, ``software``, the wall time and ``calc_params`` (JSON:
   method, engine, software versions, every parameter, the retry settings and what each
   attempt did).

Each finished row is also written to a sidecar ``OUTPUT.partial`` (Parquet, atomically),
so a job killed half-way resumes with only its missing structures; the chunk itself is
written atomically at the end and the sidecar removed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from hipqeq.data import atoms_from_record, atoms_id, read_records, status_counts, write_dataset
from hipqeq.data.io import unpaired_electrons
from hipqeq.data.schema import STATUS_ERROR, STATUS_OK
from hipqeq.errors import ConfigError, DatasetError, LabellingFailed, SCFNotConverged, StructureRejected
from hipqeq.geometry import closest_pair, total_charge_of, unwrap_slab

log = logging.getLogger(__name__)

#: Identity and geometry columns copied unchanged from an input row to its labelled row.
IDENTITY_KEYS = ("structure_id", "parent_id", "structure_name", "family", "source", "temperature_K",
                 "active_round", "trajectory", "md_step", "config_hash", "numbers", "positions", "cell", "pbc",
                 "total_charge", "unpaired_electrons")


@dataclasses.dataclass
class Labels:
    """What one successful calculation gives (eV, eV/Angstrom, eV/Angstrom^3, e).

    ``details`` goes into ``calc_params`` (engine options, other charge schemes, ...);
    ``boundary`` is the boundary condition under which the engine computed the
    electrostatics (a key of :data:`hipqeq.data.schema.LABEL_BOUNDARY_PBC`; e.g. tblite
    treats a slab as a 3D-periodic cell), the ``label_boundary`` of the row.
    """

    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    charges: np.ndarray | None = None
    charge_scheme: str | None = None
    details: dict = dataclasses.field(default_factory=dict)
    boundary: str | None = None


class Labeller(Protocol):
    """The interface :func:`label_records` drives.

    ``settings`` is the validated config section (``xtb`` or ``dft``; the pre-checks read
    ``min_distance_A``, ``min_periodic_length_A``, ``allow_small_cells`` from it);
    ``parameters`` holds every setting that changes a label (it goes into
    ``calc_params`` and decides whether a partial row can be reused); ``kmesh`` is the
    k-point mesh (``(1, 1, 1)`` for Gamma-point engines), which lengthens the effective
    periodic length for the small-cell check; an engine that chooses the mesh per
    structure makes it a method ``kmesh(atoms)``.
    """

    method: str
    software: dict[str, str]
    settings: dict
    parameters: dict
    kmesh: tuple[int, int, int]

    def supports(self, number: int) -> bool:
        """Whether the engine has parameters for atomic number ``number``."""

    def check(self, atoms: Atoms) -> None:
        """Raise :class:`StructureRejected` for structures this engine cannot take."""

    def label(self, atoms: Atoms, safer: bool = False) -> Labels:
        """Run the engine (``safer``: the retry settings); raise ``LabellingFailed``."""


def unpaired_electrons_of(atoms: Atoms) -> int:
    """``atoms.info["unpaired_electrons"]`` (a dataset row's), or the lowest number the
    electron count allows (:func:`hipqeq.data.io.unpaired_electrons`)."""
    return unpaired_electrons(atoms.numbers, float(atoms.info.get("total_charge", 0.0)),
                              atoms.info.get("unpaired_electrons"))


def shortest_periodic_length(atoms: Atoms, kmesh: Sequence[int] = (1, 1, 1)) -> float | None:
    """Length (Angstrom) of the shortest lattice translation along periodic directions.

    The periodic sub-lattice is Minkowski-reduced first, so skewed cells give their true
    nearest-image distance. With a k-mesh, direction i counts ``kmesh[i]`` times its
    length (a k-mesh samples the Born-von Karman supercell). ``None`` without periodicity.
    """
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if not pbc.any():
        return None
    from ase.geometry import minkowski_reduce

    cell = atoms.cell.array * np.asarray(kmesh, dtype=float)[:, None]
    reduced, _ = minkowski_reduce(cell, pbc=pbc)
    return float(np.linalg.norm(np.asarray(reduced)[pbc], axis=1).min())


def precheck(atoms: Atoms, labeller: Labeller) -> None:
    """Refuse a structure before any engine runs; raise :class:`StructureRejected`.

    Thresholds come from ``labeller.settings``: ``min_distance_A``,
    ``min_periodic_length_A`` and ``allow_small_cells``. Checks, in order: NaN or infinite coordinates or cell, a
    degenerate periodic cell, atoms closer than ``min_distance_A`` (periodic images
    included), elements the engine does not know, and cells whose shortest periodic
    length (times the k-mesh) is below ``min_periodic_length_A``.
    """
    if not (np.isfinite(atoms.positions).all() and np.isfinite(atoms.cell.array).all()):
        raise StructureRejected("rejected_nan", "positions or cell contain NaN or infinite values")
    settings = labeller.settings
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any() and np.linalg.matrix_rank(atoms.cell.array[pbc]) < pbc.sum():
        raise StructureRejected("rejected_cell", f"cell vectors along periodic directions {pbc.tolist()} "
                                                 "are zero or linearly dependent")
    _check_overlap(atoms, settings["min_distance_A"])
    unknown = sorted({int(z) for z in atoms.numbers if not labeller.supports(int(z))})
    if unknown:
        names = ", ".join(chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}" for z in unknown)
        raise StructureRejected("rejected_element", f"{labeller.method} has no parameters for {names}")
    kmesh = labeller.kmesh(atoms) if callable(labeller.kmesh) else labeller.kmesh
    length = shortest_periodic_length(atoms, kmesh)
    if length is not None and length < settings["min_periodic_length_A"] and not settings["allow_small_cells"]:
        raise StructureRejected(
            "rejected_small_cell",
            f"shortest periodic length {length:.2f} A (k-mesh {list(kmesh)}) is below "
            f"min_periodic_length_A = {settings['min_periodic_length_A']} A: Gamma-point labels of "
            "cells this small carry large finite-size errors; use a larger supercell, a k-mesh, or "
            "set allow_small_cells")


def _check_overlap(atoms: Atoms, min_distance_A: float) -> None:
    pair = closest_pair(atoms, min_distance_A)
    if pair is not None:
        i, j, d = pair
        raise StructureRejected(
            "rejected_overlap", f"atoms {i} ({atoms[i].symbol}) and {j} ({atoms[j].symbol}) "
                                f"are {d:.3f} A apart, closer than min_distance_A = {min_distance_A} A")


def label_structure(record: dict, labeller: Labeller) -> dict:
    """The labelled row of one input record; never raises for a failed calculation.

    Identity and geometry are copied from ``record``; labels, ``status``, ``error``,
    ``method``, ``software``, ``calc_params`` and ``wall_time_s`` are filled here.
    """
    row = {key: record.get(key) for key in IDENTITY_KEYS}
    atoms = atoms_from_record({**row, "energy": None, "forces": None, "stress": None, "charges": None})
    attempts: list[dict] = []
    labels = Labels()
    status, error = STATUS_OK, None
    start = time.perf_counter()
    try:
        precheck(atoms, labeller)
        labeller.check(atoms)
        labels = _run_with_retry(atoms, labeller, attempts)
    except LabellingFailed as exc:
        status, error = exc.status, str(exc)
    except Exception as exc:  # noqa: BLE001 - a failed structure is a row, never a crash
        status, error = STATUS_ERROR, f"{type(exc).__name__}: {exc}"
    wall_time_s = time.perf_counter() - start
    if status != STATUS_OK:
        log.warning("%s (%s): %s: %s", row["structure_name"], row["structure_id"], status, error)
    calc_params = {"method": labeller.method, "software": labeller.software,
                   "parameters": labeller.parameters, "attempts": attempts, **labels.details}
    row.update(energy=labels.energy, forces=labels.forces, stress=labels.stress, charges=labels.charges,
               charge_scheme=labels.charge_scheme, label_boundary=labels.boundary, method=labeller.method,
               software=", ".join(f"{k} {v}" for k, v in labeller.software.items()),
               calc_params=json.dumps(calc_params, sort_keys=True, default=str),
               status=status, error=error, wall_time_s=wall_time_s)
    return row


def _run_with_retry(atoms: Atoms, labeller: Labeller, attempts: list[dict]) -> Labels:
    """One attempt with the normal settings and, after an unconverged SCF, one with the
    safer settings (when ``parameters['retry']['enabled']``). ``attempts`` records both."""
    retry_enabled = labeller.parameters.get("retry", {}).get("enabled", False)
    for safer in (False, True):
        start = time.perf_counter()
        try:
            labels = labeller.label(atoms, safer=safer)
        except SCFNotConverged as exc:
            attempts.append({"safer": safer, "status": exc.status, "error": str(exc),
                             "wall_time_s": time.perf_counter() - start})
            if safer or not retry_enabled:
                raise
            log.info("SCF did not converge; retrying once with safer settings")
            continue
        attempts.append({"safer": safer, "status": STATUS_OK, "wall_time_s": time.perf_counter() - start})
        return labels
    raise AssertionError("unreachable: the second attempt returns or raises")  # pragma: no cover


def partial_path(output: str | os.PathLike) -> Path:
    """The sidecar that holds the finished rows of an interrupted chunk."""
    output = Path(output)
    return output.with_name(output.name + ".partial")


def labelled_with(row: dict, parameters: dict) -> bool:
    """Whether ``row`` was labelled with the labeller ``parameters`` (its ``calc_params``'),
    so that reusing it is the same as labelling again."""
    params = json.loads(row["calc_params"] or "{}").get("parameters")
    return params == json.loads(json.dumps(parameters, default=str))


def _reusable_rows(sidecar: Path, wanted: set[str], parameters: dict) -> dict[str, dict]:
    """Rows of a previous run of this chunk that used the same parameters."""
    if not sidecar.exists():
        return {}
    try:
        rows = read_records(sidecar)
    except DatasetError as exc:
        log.warning("ignoring unreadable partial file %s: %s", sidecar, exc)
        return {}
    reuse = {row["structure_id"]: row for row in rows
             if row["structure_id"] in wanted and labelled_with(row, parameters)}
    log.info("resuming from %s: %d of %d structures already done", sidecar, len(reuse), len(wanted))
    return reuse


def label_records(records: Sequence[dict], labeller: Labeller, output: str | os.PathLike,
                  progress: bool = True) -> dict[str, int]:
    """Label ``records`` into the dataset file ``output``; return per-status counts.

    One output row per input record, in input order. Rows finished by an earlier,
    interrupted run with the same parameters (read from :func:`partial_path`) are kept
    and not recomputed.
    """
    from tqdm import tqdm

    sidecar = partial_path(output)
    done = _reusable_rows(sidecar, {r["structure_id"] for r in records}, labeller.parameters)
    rows = []
    for record in tqdm(records, desc=f"label {labeller.method}", unit="structure", disable=not progress):
        row = done.get(record["structure_id"])
        if row is None:
            row = label_structure(record, labeller)
            done[row["structure_id"]] = row
            write_dataset(list(done.values()), sidecar)
        rows.append(row)
    write_dataset(rows, output)
    sidecar.unlink(missing_ok=True)
    return status_counts(rows)


def read_structures(path: str | os.PathLike) -> list[dict]:
    """Records of the structures in ``path``: a hipqeq Parquet dataset, or any file ASE reads.

    For non-Parquet files the identity columns are derived: ``structure_id`` from the
    content, ``source`` and ``family`` ``"external"``, ``structure_name`` from
    ``atoms.info['structure_name']`` or ``<file stem>_<index>``, and ``total_charge`` from
    :func:`hipqeq.geometry.total_charge_of` (``info['total_charge']``, ``info['charge']`` or
    the initial charges; 0 when none) and ``unpaired_electrons`` from ``info`` when set (checked, see
    :func:`hipqeq.data.io.unpaired_electrons`). A slab wrapped across its cell along the
    non-periodic direction is unwrapped (:func:`hipqeq.geometry.unwrap_slab`). Labels in
    the file are ignored.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such input file")
    if path.suffix == ".parquet":
        return read_records(path)
    import ase.io

    try:
        frames = ase.io.read(path, index=":")
    except Exception as exc:  # noqa: BLE001 - ASE raises many types for unreadable files
        raise DatasetError(f"{path}: ASE cannot read it ({type(exc).__name__}: {exc})") from exc
    return [external_record(atoms, f"{path.stem}_{i}") for i, atoms in enumerate(frames)]


def external_record(atoms: Atoms, default_name: str) -> dict:
    """Identity and geometry columns of a structure from outside the pipeline (see
    :func:`read_structures`); ``default_name`` names it when ``atoms.info`` does not."""
    info = atoms.info
    total_charge = total_charge_of(atoms)
    bare = unwrap_slab(Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc))
    bare.info["total_charge"] = total_charge
    sid = atoms_id(bare)
    name = str(info.get("structure_name", default_name))
    return {"structure_id": sid, "parent_id": info.get("parent_id", sid),
            "structure_name": name, "family": "external",
            "source": "external", "temperature_K": info.get("temperature_K"), "config_hash": "",
            "numbers": bare.numbers, "positions": bare.positions, "cell": bare.cell.array,
            "pbc": atoms.pbc, "total_charge": total_charge,
            "unpaired_electrons": unpaired_electrons(atoms.numbers, total_charge, info.get("unpaired_electrons"),
                                                     f"structure {name}")}


def label_file(input_path: str | os.PathLike, output: str | os.PathLike, labeller: Labeller,
               chunk: int | None = None, progress: bool = True) -> dict[str, int]:
    """Label chunk ``chunk`` (``None``: all rows) of ``input_path`` into ``output``.

    Rows are :func:`hipqeq.plan.chunk_bounds` ``(chunk, labeller.settings['chunk_size'],
    n_rows)``; a chunk past the end writes an empty, valid dataset.
    """
    from hipqeq.plan import chunk_bounds

    records = read_structures(input_path)
    if chunk is not None:
        if chunk < 0:
            raise ConfigError(f"--chunk must be >= 0, got {chunk}")
        start, stop = chunk_bounds(chunk, labeller.settings["chunk_size"], len(records))
        records = records[start:stop]
    return label_records(records, labeller, output, progress=progress)
