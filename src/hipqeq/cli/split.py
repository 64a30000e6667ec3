"""Split the study's parent structures into train / valid / test, once for every model.

Reads the built structures (every MD frame, rattle and label derives from one of them:
its parent), plus any dataset whose structures were not built here (an ingested
external DFT set, whose rows are their own parents), and assigns whole parents to
splits with the config's training.split_fractions and seed. The test parents are shared
by every committee member; train and valid differ per member. Every member's train split
holds every total charge of the non-test parents and spans their compositions and
charges (a 4G member fits per-species energies and an energy per unit of total charge by
least squares on what it trains on), counted over the parents with ok rows in --labels
(a built structure no frame of which was labelled adds nothing to the fit), and its
valid split holds the valid share of those rows (parents carry unequal numbers of
frames, and the validation rows pick each model's best epoch). Test parents are drawn
among those the other parents determine, as built (their total charge occurs among the
others' and their composition and charge are a combination of the others'): another's
test energy would be the fit's extrapolation, not the model's. A
test parent outside the span of the others' labelled rows (too few parents qualified, or
the labels lack some) is named in a warning.
Training and validation read this file, so the charge model, the short-range model and
the baseline are all tested on the same held-out structures, in the xTB and the DFT
datasets alike. --members overrides the committee size (training.n_models) without
changing the test parents: the active-learning committee (active_learning.n_models) is
tested on round 0's held-out set.

example:
  hipqeq split --config config/toy.yaml --output results/splits.json \\
      --labels results/datasets/xtb.parquet \\
      results/structures/structures.parquet [results/labels/dft/external.parquet]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from hipqeq.cli._common import add_config_argument, load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("datasets", nargs="+", type=Path, metavar="DATASET",
                        help="files whose parent structures are split: the built structures "
                             "(hipqeq build output) and any external set")
    parser.add_argument("--output", "-o", type=Path, required=True, metavar="JSON",
                        help="split file to write")
    parser.add_argument("--labels", nargs="+", type=Path, default=None, metavar="DATASET",
                        help="labelled datasets the energy models train on (results/datasets/xtb.parquet): "
                             "the train splits' coverage of charge states and compositions is checked "
                             "on the parents with ok rows there (default: on the DATASET rows)")
    parser.add_argument("--members", type=int, default=None, metavar="N",
                        help="committee members to split for (default: training.n_models)")


def _records(path: Path) -> list:
    from hipqeq.data import read_table

    return read_table(path).select(["parent_id", "numbers", "total_charge", "status"]).to_pylist()


def _reference_rows(records) -> dict:
    from hipqeq.data import reference_rows

    return reference_rows((row["parent_id"], row["numbers"], row["total_charge"]) for row in records)


def run(args: argparse.Namespace) -> int:
    from hipqeq.data import make_splits, outside_span, write_splits
    from hipqeq.errors import ConfigError

    config = load(args)
    split_rows = [row for path in args.datasets for row in _records(path)]
    parents = [row["parent_id"] for row in split_rows]
    parent_rows = _reference_rows(split_rows)
    labelled = None if args.labels is None else [
        row for path in args.labels for row in _records(path) if row["status"] == "ok"]
    rows = parent_rows if labelled is None else _reference_rows(labelled)
    row_counts = None if labelled is None else Counter(row["parent_id"] for row in labelled)
    training = config["training"]
    members = training["n_models"] if args.members is None else args.members
    if members < 1:
        raise ConfigError(f"--members must be >= 1, got {members}")
    splits = make_splits(parents, training["split_fractions"], config["seed"], members, reference_rows=rows,
                         test_rows=parent_rows, row_counts=row_counts)
    write_splits(splits, args.output)
    non_test = sorted(set(parents) - set(splits["test"]))
    for parent in outside_span(splits["test"], non_test, rows):
        print(f"warning: test parent {parent} has a composition and total charge no combination of "
              f"the other parents' gives: its test energy is an extrapolation of the energy reference",
              file=sys.stderr)

    def size(chosen):
        return f"{len(chosen)}" if row_counts is None else f"{len(chosen)} ({sum(row_counts[p] for p in chosen)} rows)"

    sizes = [f"member {k}: train {size(m['train'])}, valid {size(m['valid'])}" for k, m in enumerate(splits["members"])]
    print(f"{len(set(parents))} parent structures: test {size(splits['test'])}; " + "; ".join(sizes))
    return 0
