"""Write and read datasets that follow the contract of :mod:`hipqeq.data.schema`.

A *record* is a plain dict keyed by column name, one per structure. ASE ``Atoms`` are
converted to records with :func:`record_from_atoms` (identity and provenance from
``atoms.info``, labels from an attached single-point calculator) and back with
:func:`atoms_from_record`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from hipqeq import __version__
from hipqeq.data import schema as S
from hipqeq.errors import DatasetError
from hipqeq.units import DATASET_UNITS

#: ``atoms.info`` keys carried into records (everything that is not geometry or a label).
INFO_COLUMNS = (
    "structure_id", "parent_id", "structure_name", "family", "source", "temperature_K",
    "active_round", "trajectory", "md_step", "config_hash", "total_charge", "unpaired_electrons",
    "charge_scheme", "method", "software", "calc_params", "label_boundary", "status", "error", "wall_time_s",
)


def structure_id(numbers, positions, cell, pbc, total_charge: float = 0.0) -> str:
    """Content hash of a structure (16 hex digits).

    Positions and cell are rounded to 1e-6 Angstrom so that a file round trip does not
    change the id.
    """
    h = hashlib.sha256()
    h.update(np.asarray(numbers, dtype=np.int64).tobytes())
    for array in (positions, cell):
        h.update(np.round(np.asarray(array, dtype=np.float64), 6).tobytes())
    h.update(np.asarray(pbc, dtype=bool).tobytes())
    h.update(np.float64(total_charge).tobytes())
    return h.hexdigest()[:16]


def atoms_id(atoms: Atoms) -> str:
    """:func:`structure_id` of an ``Atoms`` (total charge from ``atoms.info``)."""
    return structure_id(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc,
                        atoms.info.get("total_charge", 0.0))


def config_hash(section) -> str:
    """Hash of a config section (any JSON-serialisable value), 12 hex digits."""
    text = json.dumps(section, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def record_from_atoms(atoms: Atoms) -> dict:
    """A dataset record from ``atoms``.

    Geometry comes from the atoms, identity/provenance/outcome from ``atoms.info``
    (missing keys take defaults: the structure is its own parent, the unpaired electrons
    follow from the electron count (:func:`unpaired_electrons`), ``status`` is ``ok``
    when an energy or charges are attached and ``unlabelled`` otherwise), and labels from
    ``atoms.calc.results`` when a calculator is attached.
    """
    info = atoms.info
    total_charge = float(info.get("total_charge", 0.0))
    sid = info.get("structure_id") or atoms_id(atoms)
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    record = {
        "structure_id": sid,
        "parent_id": info.get("parent_id", sid),
        "structure_name": info.get("structure_name", sid),
        "family": info.get("family", "pristine"),
        "source": info.get("source", "build"),
        "temperature_K": info.get("temperature_K"),
        "active_round": info.get("active_round"),
        "trajectory": info.get("trajectory"),
        "md_step": info.get("md_step"),
        "config_hash": info.get("config_hash", ""),
        "numbers": atoms.numbers,
        "positions": atoms.positions,
        "cell": atoms.cell.array,
        "pbc": atoms.pbc,
        "total_charge": total_charge,
        "unpaired_electrons": unpaired_electrons(atoms.numbers, total_charge, info.get("unpaired_electrons"),
                                                 f"structure {info.get('structure_name', sid)}"),
        "energy": results.get("energy"),
        "forces": results.get("forces"),
        "stress": results.get("stress"),
        "charges": results.get("charges"),
    }
    for key in ("charge_scheme", "method", "software", "calc_params", "label_boundary", "error", "wall_time_s"):
        record[key] = info.get(key)
    record["status"] = info.get(
        "status", S.STATUS_OK if record["energy"] is not None or record["charges"] is not None
        else S.STATUS_UNLABELLED)
    return record


def label_pbc(record: dict) -> np.ndarray:
    """The ``pbc`` under which the reference engine computed a row's electrostatics (its
    ``label_boundary``, e.g. (T,T,T) for a slab that tblite labelled as a 3D-periodic
    cell), or the row's own ``pbc`` when it records none."""
    boundary = record.get("label_boundary")
    if boundary is None:
        return np.asarray(record["pbc"], dtype=bool)
    if boundary not in S.LABEL_BOUNDARY_PBC:
        raise DatasetError(f"structure {record.get('structure_id')}: unknown label_boundary {boundary!r} "
                           f"(one of {', '.join(S.LABEL_BOUNDARY_PBC)})")
    return np.array(S.LABEL_BOUNDARY_PBC[boundary], dtype=bool)


def atoms_from_record(record: dict) -> Atoms:
    """An ``Atoms`` from a record; labels become a :class:`SinglePointCalculator`."""
    atoms = Atoms(numbers=np.asarray(record["numbers"], dtype=int),
                  positions=np.asarray(record["positions"], dtype=float).reshape(-1, 3),
                  cell=np.asarray(record["cell"], dtype=float).reshape(3, 3),
                  pbc=np.asarray(record["pbc"], dtype=bool))
    for key in INFO_COLUMNS:
        value = record.get(key)
        if value is not None:
            atoms.info[key] = value
    labels = {}
    for key in S.LABEL_COLUMNS:
        value = record.get(key)
        if value is not None:
            labels[key] = value if key == "energy" else np.asarray(value, dtype=float)
    if labels:
        if "forces" in labels:
            labels["forces"] = labels["forces"].reshape(-1, 3)
        atoms.calc = SinglePointCalculator(atoms, **labels)
    return atoms


#: Total charges closer than this to a whole number count as whole (e).
INTEGER_CHARGE_TOLERANCE_E = 1e-6


def unpaired_electrons(numbers, total_charge: float, given: int | None = None, name: str = "structure") -> int:
    """The number of unpaired electrons of structure ``name``: ``given`` when set
    (checked), else the lowest the electron count allows, ``(sum(numbers) - total_charge) mod 2``.

    Raises :class:`DatasetError` naming the structure for a total charge that is not a
    whole number (a fractional charge has no electron count), and for a ``given`` value
    that is negative or of the wrong parity for the electron count."""
    if abs(total_charge - round(total_charge)) > INTEGER_CHARGE_TOLERANCE_E:
        raise DatasetError(f"{name}: total charge {total_charge:g} e is not a whole number of electrons")
    n_electrons = int(np.sum(numbers)) - int(round(total_charge))
    if given is None:
        return n_electrons % 2
    if given < 0 or (n_electrons - given) % 2:
        raise DatasetError(f"{name}: {given} unpaired electron(s) impossible with {n_electrons} electrons "
                           "(needs the same parity, >= 0)")
    return int(given)


def _normalise(record: dict, created_at: _dt.datetime) -> dict:
    """Fill provenance defaults, check charge and spin (:func:`unpaired_electrons`) and
    turn numpy values into Arrow-ready Python values."""
    row = {}
    if record.get("numbers") is not None and record.get("total_charge") is not None:
        name = f"structure {record.get('structure_name') or record.get('structure_id')}"
        record = {**record, "unpaired_electrons": unpaired_electrons(
            record["numbers"], float(record["total_charge"]), record.get("unpaired_electrons"), name)}
    for col in S.COLUMNS:
        value = record.get(col.name)
        if col.name == "created_at" and value is None:
            value = created_at
        elif col.name == "package_version" and value is None:
            value = __version__
        elif col.name == "calc_params" and isinstance(value, dict):
            value = json.dumps(value, sort_keys=True, default=str)
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        row[col.name] = value
    return row


def table_from_records(records: Iterable[dict]) -> pa.Table:
    """An Arrow table with the contract's schema; raises :class:`DatasetError` on bad rows."""
    now = _dt.datetime.now(_dt.timezone.utc)
    rows = [_normalise(r, now) for r in records]
    for i, row in enumerate(rows):
        missing = [c.name for c in S.COLUMNS if not c.nullable and row[c.name] is None]
        if missing:
            raise DatasetError(f"record {i} ({row.get('structure_id')}) lacks required "
                               f"column(s) {', '.join(missing)}")
    try:
        return pa.Table.from_pylist(rows, schema=S.SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DatasetError(f"records do not fit the dataset schema: {exc}") from exc


def _metadata(table: pa.Table) -> dict[bytes, bytes]:
    return {
        S.META_SCHEMA_VERSION: S.SCHEMA_VERSION.encode(),
        S.META_UNITS: json.dumps(DATASET_UNITS).encode(),
        S.META_PACKAGE_VERSION: __version__.encode(),
        S.META_STATUS_COUNTS: json.dumps(status_counts(table)).encode(),
    }


def write_table(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write ``table`` to ``path`` atomically (a temporary file renamed into place), so a
    killed job or a full disk never leaves a truncated dataset behind; a failed write
    raises :class:`DatasetError` naming the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = table.replace_schema_metadata(_metadata(table))
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except OSError as exc:  # a full disk or quota, a read-only directory
        tmp.unlink(missing_ok=True)
        raise DatasetError(f"{path}: could not be written ({exc}); free disk space (or quota) in "
                           f"{path.parent} or write elsewhere, then re-run") from None
    return path


def write_dataset(items: Sequence[Atoms | dict], path: str | os.PathLike) -> Path:
    """Write structures (``Atoms`` or records) as one Parquet dataset file."""
    records = [record_from_atoms(x) if isinstance(x, Atoms) else x for x in items]
    return write_table(table_from_records(records), path)


def _upgraded(table: pa.Table, version: str, path: Path) -> pa.Table:
    """``table``, written under schema ``version``, with the columns added since as nulls."""
    if version == S.SCHEMA_VERSION:
        return table
    if version not in S.ADDED_SINCE:
        raise DatasetError(f"{path}: schema version {version}, this hipqeq reads {S.SCHEMA_VERSION} "
                           f"and {', '.join(S.ADDED_SINCE)}")
    for name in S.ADDED_SINCE[version]:
        table = table.append_column(S.SCHEMA.field(name), pa.nulls(table.num_rows, S.column(name).type))
    return table


def read_table(path: str | os.PathLike) -> pa.Table:
    """Read and check a dataset file.

    A file of an older schema version reads with the columns added since as nulls.
    Raises :class:`DatasetError` naming the file and the column when a column is
    missing, has the wrong type, or the schema version is unknown.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such dataset file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DatasetError(f"{path}: not a readable Parquet file ({exc})") from exc
    version = (table.schema.metadata or {}).get(S.META_SCHEMA_VERSION)
    if version is None:
        raise DatasetError(f"{path}: not a hipqeq dataset (no {S.META_SCHEMA_VERSION.decode()} metadata)")
    table = _upgraded(table, version.decode(), path)
    for col in S.COLUMNS:
        if col.name not in table.column_names:
            raise DatasetError(f"{path}: missing column '{col.name}' ({col.doc})")
        actual = table.schema.field(col.name).type
        if actual != col.type:
            raise DatasetError(f"{path}: column '{col.name}' has type {actual}, expected {col.type}")
    extra = sorted(set(table.column_names) - set(S.COLUMN_NAMES))
    if extra:
        raise DatasetError(f"{path}: unknown column(s) {', '.join(extra)}")
    return table.select(list(S.COLUMN_NAMES))


def read_records(path: str | os.PathLike) -> list[dict]:
    """Rows of a dataset file as records."""
    return read_table(path).to_pylist()


def read_atoms(path: str | os.PathLike, status: str | None = None) -> list[Atoms]:
    """Structures of a dataset file as ``Atoms`` (optionally only rows with ``status``)."""
    return [atoms_from_record(r) for r in read_records(path)
            if status is None or r["status"] == status]


def read_structure(path: str | os.PathLike, name: str) -> Atoms:
    """The first row whose ``structure_name`` is ``name`` (e.g. a built structure of a
    ``hipqeq build`` output), as ``Atoms`` with its identity in ``info`` and no labels
    attached. Raises :class:`DatasetError` naming the file, ``name`` and (some of) the
    names the file has."""
    table = read_table(path)
    names = table.column("structure_name").to_pylist()
    if name not in names:
        known = sorted(set(names))
        raise DatasetError(f"{path}: no structure named '{name}' (has {', '.join(known[:10])}"
                           + (" ..." if len(known) > 10 else "") + ")")
    record = table.slice(names.index(name), 1).to_pylist()[0]
    return atoms_from_record({**record, **dict.fromkeys(S.LABEL_COLUMNS)})


def status_counts(rows: pa.Table | Iterable[dict]) -> dict[str, int]:
    """Number of rows per ``status`` value of a table or of records, sorted by status."""
    statuses = rows.column("status").to_pylist() if isinstance(rows, pa.Table) else (r["status"] for r in rows)
    return dict(sorted(Counter(statuses).items()))
