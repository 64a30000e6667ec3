"""The frames to label with DFT: the first selection.n_dft frames of the xTB selection.

`hipqeq select` orders the sampled frames by farthest-point sampling, every family
first; its first n_dft frames are a diverse prefix. A verb (and rule) of its own, so
that raising selection.n_dft labels more DFT frames without selecting, and labelling,
the xTB frames again. Rows are copied unchanged.

example:
  hipqeq select-dft --config config/toy.yaml --selection results/selection/xtb.parquet \\
      --output results/selection/dft.parquet
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hipqeq.cli._common import add_config_argument, add_output_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--selection", type=Path, required=True, metavar="FILE",
                        help="the xTB selection (`hipqeq select --output-xtb`), in FPS order")
    add_output_argument(parser, "frames to label with DFT")


def run(args: argparse.Namespace) -> int:
    from hipqeq.cli._common import load
    from hipqeq.selection import select_dft_file

    n = select_dft_file(load(args), args.selection, args.output)
    print(f"selected the first {n} frame(s) of {args.selection} for DFT ({args.output})")
    return 0
