"""From a Parquet dataset to the arrays a hippynn ``Database`` trains on.

Rows are kept only when their status is ``ok`` and every label the stage needs is
present and finite; the rest are dropped with a count in the log (never silently).
Rows are assigned to train/valid/test by parent structure from the study's split file;
test rows never reach training.

A model's species are the elements of *every* row of its dataset file, dropped and
test rows included (:func:`dataset_species`): element lists carry no labels, and a
model that knows every element of its dataset can later be evaluated on all of it
(the short-range stage's E_elec subtraction, validation). An element that occurs only
in rows that do not train keeps its per-species parameters untrained (see :mod:`hipqeq.training.stages`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hipqeq.data import assign_splits, outside_span, padded_arrays, read_splits, read_table, reference_rows
from hipqeq.errors import DatasetError

log = logging.getLogger(__name__)

#: Labels each training stage needs in a row.
STAGE_LABELS = {
    "charges": ("charges",),
    "short-range": ("energy", "forces"),
    "baseline": ("energy", "forces"),
    "mace": ("energy", "forces"),
}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file (dataset provenance in the model directory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _finite(value) -> bool:
    return value is not None and bool(np.all(np.isfinite(np.asarray(value, dtype=float))))


def usable_rows(table: pa.Table, labels: tuple[str, ...], source: str = "dataset") -> np.ndarray:
    """Boolean mask of rows with status ``ok`` and every one of ``labels`` present and finite.

    Logs how many rows are dropped for each reason.
    """
    status_ok = np.array([s == "ok" for s in table.column("status").to_pylist()], dtype=bool)
    keep = status_ok.copy()
    if (~status_ok).any():
        log.warning("%s: dropping %d of %d rows whose status is not ok", source,
                    int((~status_ok).sum()), len(table))
    for label in labels:
        present = np.array([_finite(v) for v in table.column(label).to_pylist()], dtype=bool)
        missing = status_ok & ~present
        if missing.any():
            log.warning("%s: dropping %d ok rows whose %s is missing or not finite", source,
                        int(missing.sum()), label)
        keep &= present
    return keep


def pair_cells(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, n_atoms: np.ndarray,
               cutoff_A: float) -> np.ndarray:
    """Cells for hippynn's ``PeriodicPairIndexer``, which treats every direction as periodic.

    Periodic lattice vectors are kept. Each non-periodic direction gets an orthonormal
    complement vector long enough (extent of the atoms along it + cutoff + 1 A) that no
    image of any atom comes within the cutoff, so slabs (pbc T,T,F) and open systems
    get exactly their own neighbours.

    Shapes: positions (n_sys, n_max, 3), cell (n_sys, 3, 3), pbc (n_sys, 3), n_atoms
    (n_sys,); returns (n_sys, 3, 3), Angstrom.
    """
    out = np.array(cell, dtype=float, copy=True)
    for k in range(len(out)):
        if pbc[k].all():
            continue
        periodic = out[k][pbc[k]]
        # Rows of vt beyond the rank of the periodic vectors span their orthogonal complement.
        _, _, vt = np.linalg.svd(np.vstack([periodic, np.zeros((3 - len(periodic), 3))]))
        complement = vt[len(periodic):]
        coords = positions[k, :n_atoms[k]] @ complement.T
        lengths = np.ptp(coords, axis=0) + cutoff_A + 1.0
        out[k][~pbc[k]] = complement * lengths[:, None]
    return out


def training_arrays(table: pa.Table, cutoff_A: float, dtype=np.float32) -> dict[str, np.ndarray]:
    """hippynn database arrays of a (filtered) table.

    Keys: ``Z``, ``R``, ``cell`` (true lattice), ``pair_cell`` (see :func:`pair_cells`),
    ``pbc``, ``Qtot``, ``n_atoms``, ``T`` (energy, eV), ``T_per_atom`` (eV/atom),
    ``F`` (eV/A), ``q`` (e, shape (n_sys, n_max, 1)); label padding and absent labels
    are 0 (rows were filtered for the labels the stage uses).
    """
    arrays = padded_arrays(table, dtype=np.float64)
    arrays["pair_cell"] = pair_cells(arrays["R"], arrays["cell"], arrays["pbc"], arrays["n_atoms"], cutoff_A)
    arrays["T_per_atom"] = arrays["T"] / arrays["n_atoms"][:, None]
    arrays["q"] = arrays["q"][..., None]
    for key in ("T", "T_per_atom", "F", "q"):
        arrays[key] = np.nan_to_num(arrays[key], nan=0.0)
    return {k: v.astype(dtype) if v.dtype == np.float64 else v for k, v in arrays.items()}


def dataset_species(table: pa.Table) -> list[int]:
    """Sorted atomic numbers occurring in any row of ``table`` (whatever its status)."""
    return sorted(int(z) for z in pc.unique(pc.list_flatten(table.column("numbers"))).to_pylist())


class StageRows(NamedTuple):
    """What a training stage reads from its dataset file: ``table``, the usable rows
    outside the test split; ``split_names``, "train" or "valid" per row of ``table``;
    ``species``, the atomic numbers of every row of the file (:func:`dataset_species`)."""

    table: pa.Table
    split_names: np.ndarray
    species: list[int]


def load_stage_table(stage: str, dataset: str | os.PathLike, splits: str | os.PathLike,
                     member: int) -> StageRows:
    """Usable rows of ``dataset`` for ``stage`` outside the test split, their split
    names, and the species of the whole file."""
    table = read_table(dataset)
    keep = usable_rows(table, STAGE_LABELS[stage], source=Path(dataset).name)
    split_file = read_splits(splits)
    if not 0 <= member < len(split_file["members"]):
        raise DatasetError(f"{splits}: no committee member {member} "
                           f"(the split has {len(split_file['members'])})")
    names = assign_splits(table.column("parent_id").to_pylist(), split_file, member)
    in_test = keep & (names == "test")
    log.info("%s: %d usable rows held out as test", Path(dataset).name, int(in_test.sum()))
    keep &= names != "test"
    if not keep.any():
        raise DatasetError(f"{dataset}: no usable training rows for {stage} "
                           f"(status ok, labels {', '.join(STAGE_LABELS[stage])}, not in the test split)")
    rows = StageRows(table.filter(pa.array(keep)), names[keep], dataset_species(table))
    if "energy" in STAGE_LABELS[stage]:
        _warn_outside_span(rows, member)
    return rows


def _warn_outside_span(rows: StageRows, member: int) -> None:
    """Warn when validation parents have compositions or charges the training rows do
    not combine to: the energy reference is extrapolated there, and early stopping would
    chase that error (the study's member 1: 385 meV/atom on a neutral V_I)."""
    parents = rows.table.column("parent_id").to_pylist()
    reference = reference_rows(zip(parents, rows.table.column("numbers").to_pylist(),
                                   rows.table.column("total_charge").to_pylist()))
    train = {p for p, name in zip(parents, rows.split_names) if name == "train"}
    valid = {p for p, name in zip(parents, rows.split_names) if name == "valid"}
    outside = outside_span(sorted(valid), sorted(train), reference)
    if train and outside:
        log.warning("member %d: validation parent(s) %s have compositions and total charges no "
                    "combination of the training rows gives; their energies are extrapolated "
                    "(remake the split with `hipqeq split --labels`)", member, ", ".join(outside))


def train_valid_rows(split_names: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Indices of the rows to train and to validate on, from ``split_names`` ("train" or
    "valid" per row), and whether the validation rows are the training rows.

    Tiny sets (e.g. two DFT frames) can leave one side empty. With no valid rows the
    training rows are validated on too; with no training rows the validation rows are
    trained on (and validated on). Both cases log a warning: early stopping then watches
    the training loss.
    """
    train = np.flatnonzero(split_names == "train")
    valid = np.flatnonzero(split_names == "valid")
    if len(train) == 0:
        log.warning("no training rows in this split: training on the %d validation rows", len(valid))
        train, valid = valid, valid[:0]
    valid_is_train = len(valid) == 0
    if valid_is_train:
        log.warning("no validation rows in this split: validating on the %d training rows "
                    "(early stopping watches the training loss)", len(train))
        valid = train
    return train, valid, valid_is_train
