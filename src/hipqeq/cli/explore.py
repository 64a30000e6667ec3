"""Explore with a committee: ML-MD walkers that measure where the committee disagrees.

One active-learning round's exploration. Every walker (a built structure that is not
a test parent of --splits, x a temperature of active_learning.temperatures_K x
active_learning.walkers) runs Langevin MD for active_learning.steps steps with the
mean forces of the committee (--model, two directories or more), keeping a frame every
active_learning.frame_interval steps. On
each frame the committee's model deviation is measured: the largest per-atom standard
deviation of the members' forces (eV/A, DP-GEN's definition) and of their charges (e),
and the frame is classed accurate / candidate / failed by the trust window
(active_learning.trust_*; `hipqeq select-candidates` picks the frames to label).

A walker that blows up (atoms closer than 1 A, non-finite positions, a model error)
stops with the frames it has and a recorded reason; the other walkers go on. Each
walker's trajectory (under --trajectory-dir) is its checkpoint: a killed run resumes
every walker from its last snapshot, as long as the committee is the same.

Outputs: the explored frames (dataset contract, unlabelled, source "active"), one row
per frame of deviations with provenance (round, walker, MD step, structure, family,
temperature, class), and a JSON summary of the walkers. With --validation, also the
committee's errors on a fixed held-out set (the test parents of --splits in
--held-out, round 0's xTB dataset in the workflow), so rounds compare on equal terms.

example:
  hipqeq explore --config config/toy.yaml --round 1 \\
      --model results/active/r1/models/4g_0 results/active/r1/models/4g_1 \\
      --structures results/structures/structures.parquet \\
      --output results/active/r1/frames.parquet --deviations results/active/r1/deviations.parquet \\
      --summary results/active/r1/walkers.json --trajectory-dir results/active/r1/walkers \
      --held-out results/datasets/xtb.parquet --splits results/active/splits.json \
      --validation results/active/r1/validation.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hipqeq.cli._common import (
    add_config_argument,
    add_device_argument,
    add_model_argument,
    add_output_argument,
    load,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--round", type=int, required=True, help="the round (>= 1); seeds the walkers")
    add_model_argument(parser, "the committee's model directories (hipqeq train short-range outputs)")
    parser.add_argument("--structures", type=Path, required=True, metavar="FILE",
                        help="built structures the walkers start from (hipqeq build output)")
    add_output_argument(parser, "explored frames, unlabelled")
    parser.add_argument("--deviations", type=Path, required=True, metavar="FILE",
                        help="per-frame model deviations with provenance (Parquet)")
    parser.add_argument("--summary", type=Path, required=True, metavar="JSON",
                        help="walkers' summaries: frames, steps done, why a walker stopped")
    parser.add_argument("--trajectory-dir", type=Path, required=True, metavar="DIR",
                        help="one checkpointed trajectory per walker (kept for resuming)")
    parser.add_argument("--held-out", type=Path, metavar="FILE",
                        help="labelled dataset whose test parents measure the committee (with --validation)")
    parser.add_argument("--splits", type=Path, metavar="JSON",
                        help="split file naming the test parents: no walker starts from them, and "
                             "--validation measures on them")
    parser.add_argument("--validation", type=Path, metavar="JSON",
                        help="write the committee's held-out errors here (needs --held-out and --splits)")
    add_device_argument(parser, "the committee runs on")


def run(args: argparse.Namespace) -> int:
    from hipqeq.active.explore import explore_round
    from hipqeq.data import read_splits
    from hipqeq.errors import ConfigError

    if args.round < 1:
        raise ConfigError(f"--round must be >= 1 (round 0 is the xTB-driven pipeline), got {args.round}")
    if len(args.model) < 2:
        raise ConfigError(f"--model: a committee needs two models or more, got {len(args.model)}")
    if args.validation and not (args.held_out and args.splits):
        raise ConfigError("--validation needs --held-out and --splits")
    held_out = read_splits(args.splits)["test"] if args.splits else []
    summary = explore_round(load(args), args.model, args.structures, args.round, args.output, args.deviations,
                            args.summary, args.trajectory_dir, device=args.device, held_out_parents=held_out)
    if args.validation:
        import json

        from hipqeq.active.report import round_validation

        errors = round_validation(args.model, args.held_out, args.splits, device=args.device)
        args.validation.parent.mkdir(parents=True, exist_ok=True)
        args.validation.write_text(json.dumps(errors, indent=1) + "\n")
    failed = [w for w in summary["walkers"] if w["stopped_early"]]
    print(f"round {args.round}: {summary['n_frames']} frame(s) from {len(summary['walkers'])} walker(s), "
          f"{len(failed)} stopped early" + "".join(f"\n  {w['walker']}: {w['reason']}" for w in failed))
    return 0
