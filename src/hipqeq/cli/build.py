"""Build the configured structures (RP slabs/bulk, CsPbI3 phases, variants) or user CIFs.

With --config, builds every structure the config's `structures` section plans (seeds,
strained, tilted and defective variants; names from hipqeq.plan) and writes one
unlabelled row per structure. With --cif (and no --config), reads the given CIF files
with pymatgen (symmetry expanded; partial occupancies are rejected) instead. Every
structure passes sanity checks (minimum distances, Pb-I bonds, Cs-I distances) or the
verb fails naming it.

examples:
  hipqeq build --config config/toy.yaml --output results/structures/structures.parquet
  hipqeq build --cif my_phase.cif --output results/structures/cif.parquet --write-extxyz view/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hipqeq.cli._common import add_config_argument, add_output_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser, required=False)
    parser.add_argument("--cif", type=Path, nargs="+", metavar="FILE",
                        help="build these CIF files instead of the config's structures")
    add_output_argument(parser, "built structures")
    parser.add_argument("--write-extxyz", type=Path, metavar="DIR",
                        help="also write each structure as DIR/<name>.extxyz for viewing")


def run(args: argparse.Namespace) -> int:
    from hipqeq.errors import ConfigError
    from hipqeq.structures import build_structures, cif_structures, write_extxyz
    from hipqeq.data import write_dataset
    from hipqeq.cli._common import load

    if (args.config is None) == (args.cif is None):
        raise ConfigError("hipqeq build needs exactly one of --config FILE or --cif FILE...")
    structures = build_structures(load(args)) if args.config else cif_structures(args.cif)
    write_dataset(structures, args.output)
    if args.write_extxyz:
        write_extxyz(structures, args.write_extxyz)
    print(f"built {len(structures)} structure(s) into {args.output}")
    return 0
