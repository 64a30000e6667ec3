"""Select more frames of the held-out test parents to label, for validation only.

The study's selection (`hipqeq select`) picks frames for diversity over every parent,
so a test parent may end up with one labelled frame or none, and test errors over a
handful of frames measure little beyond their scatter. This verb runs the same
farthest-point sampling on the sampled frames of the test parents (the split's "test"
list) that none of the --labelled datasets holds, and writes up to
selection.n_xtb_test of them. Label them with `hipqeq label xtb`, gather them, and pass
the result to `hipqeq validate --xtb-test`: no training stage ever reads them.

example:
  hipqeq select-test --config config/study.yaml --splits results/splits.json \\
      --labelled results/datasets/xtb.parquet --output results/selection/xtb_test.parquet \\
      results/sampling/*/*.parquet
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hipqeq.cli._common import add_config_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("inputs", nargs="+", type=Path, metavar="FRAMES",
                        help="sampled frame files (hipqeq sample outputs)")
    parser.add_argument("--splits", type=Path, required=True, metavar="JSON",
                        help="split file (`hipqeq split`) whose test parents are sampled")
    parser.add_argument("--labelled", type=Path, nargs="*", default=[], metavar="FILE",
                        help="datasets whose frames are labelled already (not selected again)")
    parser.add_argument("--output", type=Path, required=True, metavar="FILE",
                        help="frames to label, in FPS order (Parquet)")


def run(args: argparse.Namespace) -> int:
    from hipqeq.cli._common import load
    from hipqeq.data.split import read_splits
    from hipqeq.selection import select_held_out_files

    test_parents = read_splits(args.splits)["test"]
    counts = select_held_out_files(load(args), args.inputs, test_parents, args.labelled, args.output)
    print(f"test parents: {len(test_parents)}, {counts['available']} sampled frame(s), "
          f"{counts['labelled']} labelled already; selected {counts['selected']} ({args.output})")
    return 0
