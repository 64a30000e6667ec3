"""Merge many chunk files into one dataset, conserving rows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pyarrow as pa

from hipqeq.data.io import read_table, status_counts, write_table
from hipqeq.errors import DatasetError


def gather(inputs: Sequence[str | os.PathLike], output: str | os.PathLike) -> dict[str, int]:
    """Concatenate the dataset files ``inputs`` into ``output``.

    Every input row reaches the output (failed rows included), so the number of rows out
    equals the sum of rows in; a ``structure_id`` present in two inputs is an error
    because it would be counted twice. Returns the per-status row counts.
    """
    if not inputs:
        raise DatasetError("gather needs at least one input file")
    tables = [read_table(p) for p in inputs]
    merged = pa.concat_tables(tables)
    ids = merged.column("structure_id").to_pylist()
    if len(set(ids)) != len(ids):
        seen: dict[str, str] = {}
        for path, table in zip(inputs, tables):
            for sid in table.column("structure_id").to_pylist():
                if sid in seen:
                    raise DatasetError(f"structure {sid} appears in both {seen[sid]} and {path}")
                seen[sid] = str(path)
    write_table(merged, Path(output))
    return status_counts(merged)
