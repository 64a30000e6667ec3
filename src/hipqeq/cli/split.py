"""Split the study's parent structures into train / valid / test, once for every model.

Reads the built structures (every MD frame, rattle and label derives from one of them:
its parent), plus any dataset whose structures were not built here (an ingested
external DFT set, whose rows are their own parents), and assigns whole parents to
splits with the config's training.split_fractions and seed. The test parents are shared by every committee
member; train and valid differ per member, and every total charge among the non-test
parents is in every member's train split (a 4G member fits an energy per unit of total
charge only from the charge states it trains on). Training and validation read this file, so
the charge model, the short-range model and the baseline are all tested on the same
held-out structures, in the xTB and the DFT datasets alike. --members overrides the
committee size (training.n_models) without changing the test parents: the active-learning
committee (active_learning.n_models) is tested on round 0's held-out set.

example:
  hipqeq split --config config/toy.yaml --output results/splits.json \\
      results/structures/structures.parquet [results/labels/dft/external.parquet]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hipqeq.cli._common import add_config_argument, load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("datasets", nargs="+", type=Path, metavar="DATASET",
                        help="files whose parent structures are split: the built structures "
                             "(hipqeq build output) and any external set")
    parser.add_argument("--output", "-o", type=Path, required=True, metavar="JSON",
                        help="split file to write")
    parser.add_argument("--members", type=int, default=None, metavar="N",
                        help="committee members to split for (default: training.n_models)")


def run(args: argparse.Namespace) -> int:
    from hipqeq.data import make_splits, read_table, write_splits
    from hipqeq.errors import ConfigError

    config = load(args)
    rows = [row for path in args.datasets
            for row in read_table(path).select(["parent_id", "total_charge"]).to_pylist()]
    parents = [row["parent_id"] for row in rows]
    charges = {row["parent_id"]: float(row["total_charge"]) for row in rows}
    training = config["training"]
    members = training["n_models"] if args.members is None else args.members
    if members < 1:
        raise ConfigError(f"--members must be >= 1, got {members}")
    splits = make_splits(parents, training["split_fractions"], config["seed"], members, total_charges=charges)
    write_splits(splits, args.output)
    sizes = [f"member {k}: train {len(m['train'])}, valid {len(m['valid'])}"
             for k, m in enumerate(splits["members"])]
    print(f"{len(set(parents))} parent structures: test {len(splits['test'])}; " + "; ".join(sizes))
    return 0
