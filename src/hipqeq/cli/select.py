"""Select diverse frames for labelling by farthest-point sampling (FPS).

Reads sampled frames (any number of dataset files), describes each frame by
per-species-pair radial histograms (Gaussian-smeared, periodic, per atom; settings in
the config's `selection` section), and orders frames by FPS, starting with one frame
per family so that every strain/defect/phase family is represented. The first
selection.n_xtb frames of that order go to xTB labelling (`hipqeq select-dft` takes the
first selection.n_dft of them, a diverse prefix, for DFT). Rows are copied unchanged
(identity columns kept). Frames with identical content are counted once.

example:
  hipqeq select --config config/toy.yaml --output-xtb results/selection/xtb.parquet \\
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
    parser.add_argument("--output-xtb", type=Path, required=True, metavar="FILE",
                        help="frames to label with xTB, in FPS order (Parquet)")


def run(args: argparse.Namespace) -> int:
    from hipqeq.cli._common import load
    from hipqeq.selection import select_files

    counts = select_files(load(args), args.inputs, args.output_xtb)
    print(f"selected {counts['xtb']} of {counts['available']} frame(s) for xTB ({args.output_xtb})")
    return 0
