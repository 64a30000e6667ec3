"""Merge labelled chunk files into one dataset, conserving every row.

Reads any number of Parquet chunks written by `hipqeq label` or `hipqeq ingest`,
checks each against the dataset contract, and writes them as one file. Failed rows
(scf_not_converged, error, rejected_*) are kept: the number of rows out equals the
number of structures selected. Per-status counts are printed and stored in the file's
metadata (key hipqeq.status_counts), and optionally as JSON. With --max-failed-fraction
a set where more rows failed stops here with a message (the workflow's guard against
training on whatever happened to converge). A --base dataset (an earlier round's,
checked when it was gathered) is carried into the output without counting towards
that limit, so each active-learning round's labels are checked on their own.

examples:
  hipqeq gather results/labels/xtb/chunk_*.parquet -o results/datasets/xtb.parquet \\
      --max-failed-fraction 0.5
  hipqeq gather --base results/active/r1/xtb.parquet results/active/r2/labels/chunk_*.parquet \\
      -o results/active/r2/xtb.parquet --max-failed-fraction 0.5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hipqeq.cli._common import add_output_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, metavar="CHUNK",
                        help="chunk files to merge")
    add_output_argument(parser, "merged dataset")
    parser.add_argument("--base", type=Path, action="append", default=[], metavar="DATASET",
                        help="a dataset gathered before (repeatable): its rows go into the output first "
                             "and do not count towards --max-failed-fraction")
    parser.add_argument("--counts", type=Path, metavar="JSON",
                        help="also write the per-status row counts here")
    parser.add_argument("--max-failed-fraction", type=_fraction, default=None, metavar="F",
                        help="stop (exit 2, nothing written) when more than this fraction of the rows "
                             "failed (the workflow passes selection.max_failed_fraction)")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    from hipqeq.data import gather

    counts = gather(args.inputs, args.output, max_failed_fraction=args.max_failed_fraction, base=args.base)
    total = sum(counts.values())
    summary = ", ".join(f"{status} {n}" for status, n in counts.items())
    print(f"gathered {total} rows from {len(args.base) + len(args.inputs)} file(s) into {args.output}: {summary}")
    if args.counts:
        args.counts.parent.mkdir(parents=True, exist_ok=True)
        args.counts.write_text(json.dumps({"total": total, "status": counts}, indent=2) + "\n")
    return 0
