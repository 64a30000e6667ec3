"""Diverse frames for labelling: farthest-point sampling (FPS) on radial histograms.

Descriptor of a frame: for every unordered pair of elements (A, B) from a fixed element
list, the histogram of A-B distances up to ``cutoff_A`` under the frame's periodic
boundary conditions, each distance smeared by a Gaussian of one bin width, divided by
the number of atoms. Concatenated over pairs this is a fixed-length vector that
changes with bond lengths, coordination (vacancies), composition (substitutions) and
cell shape (strain), and does not depend on atom order, translations or rotations.

FPS adds, one at a time, the frame farthest (Euclidean) from all frames chosen so far.
Until every family is represented the candidates are restricted to unrepresented
families, so every family gets a frame (if the budget allows) and the first frames of
the order cover the families; after that the order is plain FPS. Any prefix of the
order is a diverse subset: the first n_dft frames of the xTB selection go to DFT.

The held-out selection (:func:`select_held_out`) runs the same FPS on the frames of the
test parents that no label holds yet: the selection above picks for diversity over every
parent, so a held-out parent may keep one labelled frame or none, and test errors over a
handful of frames measure nothing finer than their scatter.
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Sequence

import numpy as np
import pyarrow as pa
from ase import Atoms
from ase.neighborlist import neighbor_list
from tqdm import tqdm

from hipqeq.data import atoms_from_record, read_table, write_table
from hipqeq.errors import DatasetError

log = logging.getLogger(__name__)


def radial_descriptor(atoms: Atoms, elements: Sequence[int], cutoff_A: float = 6.0,
                      n_bins: int = 24) -> np.ndarray:
    """Per-element-pair, Gaussian-smeared radial histograms per atom, shape
    (n_pairs * n_bins,), pairs of ``elements`` (atomic numbers) in sorted order."""
    elements = sorted(elements)
    pairs = {pair: k for k, pair in enumerate(itertools.combinations_with_replacement(elements, 2))}
    centres = np.linspace(0.0, cutoff_A, n_bins)
    width = centres[1] - centres[0]
    i, j, d = neighbor_list("ijd", atoms, cutoff_A)
    descriptor = np.zeros((len(pairs), n_bins))
    zi, zj = atoms.numbers[i], atoms.numbers[j]
    first, second = np.minimum(zi, zj), np.maximum(zi, zj)
    try:
        index = np.array([pairs[(a, b)] for a, b in zip(first.tolist(), second.tolist())], dtype=int)
    except KeyError as exc:
        raise DatasetError(f"element pair {exc} is not among the descriptor's elements {elements}") from None
    if len(d):
        weights = np.exp(-0.5 * ((d[:, None] - centres[None, :]) / width) ** 2)
        np.add.at(descriptor, index, weights)
    # every pair appears twice in the neighbour list (i->j and j->i); halve it
    return descriptor.ravel() / (2 * len(atoms))


def farthest_point_order(features: np.ndarray, families: Sequence[str], n_select: int,
                         first: int | None = None) -> list[int]:
    """Indices of ``n_select`` rows of ``features`` in FPS order, families first.

    Starts from row ``first``, by default the frame farthest from the mean; ties go to
    the lowest index, so the order is deterministic. Returns all rows when
    ``n_select`` >= the number of rows.
    """
    n = len(features)
    n_select = min(n_select, n)
    if n_select == 0:
        return []
    families = np.asarray(families)
    missing = set(families.tolist())
    # the first pick is the frame farthest from the mean, later ones farthest from the chosen
    distance = np.linalg.norm(features - features.mean(axis=0), axis=1)
    order: list[int] = []
    chosen = np.zeros(n, dtype=bool)
    for _ in tqdm(range(n_select), desc="fps", unit="frame", mininterval=5.0, disable=n_select < 1000):
        eligible = ~chosen & (np.isin(families, list(missing)) if missing else True)
        k = int(np.argmax(np.where(eligible, distance, -1.0))) if order or first is None else first
        order.append(k)
        chosen[k] = True
        missing.discard(families[k])
        to_k = np.linalg.norm(features - features[k], axis=1)
        distance = to_k if len(order) == 1 else np.minimum(distance, to_k)
    return order


def unique_rows(table: pa.Table) -> pa.Table:
    """The first row of each ``structure_id`` of ``table``, in table order."""
    first_row: dict[str, int] = {}
    for k, sid in enumerate(table.column("structure_id").to_pylist()):
        first_row.setdefault(sid, k)
    if len(first_row) < table.num_rows:
        log.info("%d duplicate frame(s) counted once", table.num_rows - len(first_row))
    return table.take(sorted(first_row.values()))


def select(table: pa.Table, n_xtb: int, cutoff_A: float = 6.0, n_bins: int = 24) -> pa.Table:
    """The xTB selection of ``table``: ``n_xtb`` rows in FPS order.

    Rows with a repeated ``structure_id`` count once (:func:`unique_rows`). Rows are
    copied unchanged.
    """
    return _fps_rows(unique_rows(table), n_xtb, cutoff_A, n_bins)


def _fps_rows(table: pa.Table, n_select: int, cutoff_A: float, n_bins: int) -> pa.Table:
    """``n_select`` rows of ``table`` (distinct frames) in FPS order, families first."""
    records = table.to_pylist()
    frames = [atoms_from_record(r) for r in records]
    elements = sorted({int(z) for frame in frames for z in frame.numbers})
    features = np.array([radial_descriptor(f, elements, cutoff_A, n_bins)
                         for f in tqdm(frames, desc="descriptors", unit="frame", mininterval=5.0,
                                       disable=len(frames) < 1000)])
    families = [r["family"] for r in records]
    if n_select >= len(frames):
        log.warning("asked for %d frames, %d available: selecting all", n_select, len(frames))
    order = farthest_point_order(features, families, n_select)
    n_families = len(set(families))
    covered = len({families[k] for k in order})
    if covered < n_families:
        log.warning("only %d of %d families fit in %d frames", covered, n_families, n_select)
    return table.take(order)


def select_held_out(table: pa.Table, test_parents: Sequence[str], labelled_ids: set[str], n_select: int,
                    cutoff_A: float = 6.0, n_bins: int = 24) -> pa.Table:
    """Up to ``n_select`` frames of ``table`` whose parent is one of ``test_parents`` and
    whose ``structure_id`` is not in ``labelled_ids``, in FPS order (families first).

    Raises :class:`DatasetError` when no frame of ``table`` belongs to a test parent
    (the frames and the split are of different studies)."""
    table = unique_rows(table)
    held_out = _held_out_rows(table, test_parents)
    if not held_out:
        raise DatasetError(f"none of the {table.num_rows} sampled frame(s) belongs to a test parent "
                           f"({', '.join(test_parents)}): are the frames and the split of one study?")
    ids = table.column("structure_id").to_pylist()
    unlabelled = [k for k in held_out if ids[k] not in labelled_ids]
    log.info("test parents: %d sampled frame(s), %d labelled already, %d to choose from",
             len(held_out), len(held_out) - len(unlabelled), len(unlabelled))
    return _fps_rows(table.take(unlabelled), n_select, cutoff_A, n_bins)


def _held_out_rows(table: pa.Table, test_parents: Sequence[str]) -> list[int]:
    test_parents = set(test_parents)
    return [k for k, parent in enumerate(table.column("parent_id").to_pylist()) if parent in test_parents]


def select_files(config: dict, inputs: Sequence[str | os.PathLike], output_xtb: str | os.PathLike) -> dict[str, int]:
    """Run :func:`select` on the frames of ``inputs`` with the config's ``selection``
    section and write the xTB selection; returns the row counts (``available``: distinct
    frames of the inputs, duplicates counted once)."""
    section = config["selection"]
    tables = [read_table(p) for p in inputs]
    table = unique_rows(pa.concat_tables(tables).replace_schema_metadata(None))
    xtb = select(table, section["n_xtb"], section["cutoff_A"], section["n_bins"])
    write_table(xtb, output_xtb)
    return {"available": table.num_rows, "xtb": xtb.num_rows}


def select_dft_file(config: dict, xtb_selection: str | os.PathLike, output: str | os.PathLike) -> int:
    """Write the first ``selection.n_dft`` rows of the xTB selection (its FPS order: a
    diverse prefix, every family first) to ``output``; return their count. A rule of its
    own, so that raising n_dft labels more DFT frames without selecting (and labelling)
    the xTB frames again."""
    xtb = read_table(xtb_selection)
    dft = xtb.slice(0, min(config["selection"]["n_dft"], xtb.num_rows))
    write_table(dft, output)
    return dft.num_rows


def select_held_out_files(config: dict, inputs: Sequence[str | os.PathLike], test_parents: Sequence[str],
                          labelled: Sequence[str | os.PathLike], output: str | os.PathLike) -> dict[str, int]:
    """Run :func:`select_held_out` with ``selection.n_xtb_test`` on the frames of
    ``inputs``, excluding the frames of the ``labelled`` datasets; write ``output`` and
    return the row counts (``labelled``: frames of the test parents labelled already)."""
    section = config["selection"]
    table = unique_rows(pa.concat_tables([read_table(p) for p in inputs]).replace_schema_metadata(None))
    labelled_ids = {sid for path in labelled for sid in read_table(path).column("structure_id").to_pylist()}
    chosen = select_held_out(table, test_parents, labelled_ids, section["n_xtb_test"], section["cutoff_A"],
                             section["n_bins"])
    write_table(chosen, output)
    held_out = table.take(_held_out_rows(table, test_parents)).column("structure_id").to_pylist()
    return {"available": len(held_out), "labelled": sum(sid in labelled_ids for sid in held_out),
            "selected": chosen.num_rows}
