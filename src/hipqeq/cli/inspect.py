"""Summarise a dataset file: rows, statuses, sources, sampling rounds, families, methods
and labels.

Reads any file of the hipqeq dataset contract (built structures, MD frames, a
selection, a labelled chunk or a gathered dataset) and prints what is in it.

example:
  hipqeq inspect results/datasets/xtb.parquet
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="a hipqeq Parquet dataset")


def run(args: argparse.Namespace) -> int:
    from hipqeq.data import read_table
    from hipqeq.data.schema import LABEL_COLUMNS

    table = read_table(args.dataset)
    n_atoms = [len(z) for z in table.column("numbers").to_pylist()]
    print(f"{args.dataset}: {table.num_rows} structures, "
          f"{min(n_atoms, default=0)}-{max(n_atoms, default=0)} atoms each")
    for key in ("status", "source", "active_round", "family", "method"):
        counts = Counter("-" if v is None else str(v) for v in table.column(key).to_pylist())
        print(f"  {key}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    labelled = {c: table.num_rows - table.column(c).null_count for c in LABEL_COLUMNS}
    print("  labels present: " + ", ".join(f"{c} {n}" for c, n in labelled.items()))
    print(f"  parent structures: {len(set(table.column('structure_name').to_pylist()))} names")
    return 0
