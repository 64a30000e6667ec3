"""Merge many chunk files into one dataset, conserving rows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pyarrow as pa

from hipqeq.data.io import read_table, status_counts, write_table
from hipqeq.data.schema import STATUS_OK
from hipqeq.errors import DatasetError, TooManyFailures


def check_failure_rate(counts: dict[str, int], max_failed_fraction: float, what: str = "labels") -> None:
    """Raise :class:`TooManyFailures` when the fraction of rows whose status is not ok
    exceeds ``max_failed_fraction`` (a study whose labelling mostly failed would train on
    what happened to converge)."""
    total = sum(counts.values())
    failed = total - counts.get(STATUS_OK, 0)
    if total and failed / total > max_failed_fraction:
        listed = ", ".join(f"{status} {n}" for status, n in counts.items() if status != STATUS_OK)
        raise TooManyFailures(
            f"{failed} of {total} {what} failed ({failed / total:.0%}: {listed}), more than "
            f"selection.max_failed_fraction = {max_failed_fraction:g} allows; read the error column of the "
            "chunks (`hipqeq inspect CHUNK`), fix the cause (settings, structures) and re-run, or raise the limit")


def gather(inputs: Sequence[str | os.PathLike], output: str | os.PathLike,
           max_failed_fraction: float | None = None,
           base: Sequence[str | os.PathLike] = ()) -> dict[str, int]:
    """Concatenate the dataset files ``base`` and ``inputs`` into ``output``.

    Every input row reaches the output (failed rows included), so the number of rows out
    equals the sum of rows in; a ``structure_id`` present in two inputs is an error
    because it would be counted twice. With ``max_failed_fraction``, too many failed
    rows among ``inputs`` (:func:`check_failure_rate`) raise before anything is written;
    the rows of ``base``, a dataset gathered (and checked) before, are carried over
    unchecked, so that an active-learning round's labels are judged on their own and not
    diluted by every round before. Returns the per-status row counts of the output.
    """
    if not inputs:
        raise DatasetError("gather needs at least one input file")
    paths = [*base, *inputs]
    tables = [read_table(p) for p in paths]
    merged = pa.concat_tables(tables)
    ids = merged.column("structure_id").to_pylist()
    if len(set(ids)) != len(ids):
        seen: dict[str, str] = {}
        for path, table in zip(paths, tables):
            for sid in table.column("structure_id").to_pylist():
                if sid in seen:
                    raise DatasetError(f"structure {sid} appears in both {seen[sid]} and {path}")
                seen[sid] = str(path)
    if max_failed_fraction is not None:
        new_rows = pa.concat_tables(tables[len(base):])
        check_failure_rate(status_counts(new_rows), max_failed_fraction, what=f"labels in {len(inputs)} file(s)")
    counts = status_counts(merged)
    write_table(merged, Path(output))
    return counts
