"""Sample configurations of one built structure: xTB-driven MD or rattles.

`hipqeq sample md` runs one trajectory (structure x temperature x replica) with ASE
Langevin NVT (or Berendsen NPT, sampling.ensemble) driven by tblite GFN-xTB, discards
the equilibration steps and keeps a frame every sampling.frame_interval steps. The ASE
trajectory (--trajectory) is the checkpoint: a killed job resumes from its last
snapshot. An xTB failure ends the trajectory with the frames so far; the reason is
logged and written to OUTPUT with the suffix .summary.json; the verb still exits 0.
`hipqeq sample rattle` writes random displacements and small random cell strains of
the structure (no engine). Frames are unlabelled rows (the MD's own energies are not
labels); seeds derive from the config seed, the name, the temperature and the replica.

examples:
  hipqeq sample md --config config/toy.yaml --structures results/structures/structures.parquet \\
      --name rp1_slab --temperature-K 300 --replica 0 \\
      --output results/sampling/rp1_slab/T300_r0.parquet --trajectory results/sampling/rp1_slab/T300_r0.traj
  hipqeq sample rattle --config config/toy.yaml --structures results/structures/structures.parquet \\
      --name rp1_slab --output results/sampling/rp1_slab/rattle.parquet
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hipqeq.cli._common import (
    add_config_argument,
    add_output_argument,
    add_seed_argument,
    non_negative_int,
    positive_float,
)


def _add_common(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--structures", type=Path, required=True, metavar="FILE",
                        help="built structures (output of hipqeq build)")
    parser.add_argument("--name", required=True, help="structure_name of the structure to sample")
    add_output_argument(parser, "sampled frames")
    add_seed_argument(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    modes = parser.add_subparsers(dest="mode", metavar="MODE", required=True)
    md = modes.add_parser("md", help="one xTB MD trajectory (structure x temperature x replica)")
    _add_common(md)
    md.add_argument("--temperature-K", type=positive_float, required=True, metavar="T",
                    help="thermostat temperature (K)")
    md.add_argument("--replica", type=non_negative_int, default=0, help="replica index (changes the seed)")
    md.add_argument("--trajectory", type=Path, required=True, metavar="FILE",
                    help="ASE trajectory: checkpoint and full record of the run (resumed if present)")
    rattle = modes.add_parser("rattle", help="random displacements and cell strains (no engine)")
    _add_common(rattle)


def run(args: argparse.Namespace) -> int:
    from hipqeq.cli._common import load
    from hipqeq.sampling import sample_md_job, sample_rattle_job

    config = load(args)
    if args.mode == "md":
        summary = sample_md_job(config, args.structures, args.name, args.temperature_K,
                                args.replica, args.output, args.trajectory, seed=args.seed)
        ended = f" (stopped early: {summary['reason']})" if summary["stopped_early"] else ""
        print(f"{args.name} at {args.temperature_K:g} K replica {args.replica}: "
              f"{summary['n_frames']} frame(s) into {args.output}{ended}")
    else:
        n = sample_rattle_job(config, args.structures, args.name, args.output, seed=args.seed)
        print(f"{args.name}: {n} rattled frame(s) into {args.output}")
    return 0
