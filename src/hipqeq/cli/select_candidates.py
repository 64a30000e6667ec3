"""Select an active-learning round's frames to label, and decide whether to stop.

Reads the round's explored frames and their model deviations (`hipqeq explore`
outputs) and classes each frame by DP-GEN's trust window of the config:

  accurate   force deviation < active_learning.trust_lo_force_eV_A (and charge
             spread < trust_lo_charge_e): the committee agrees; not labelled
  failed     force deviation >= trust_hi_force_eV_A (or charge spread >=
             trust_hi_charge_e): the committee is lost, the frame is likely
             unphysical; counted, not labelled
  candidate  otherwise

Up to active_learning.budget candidates are chosen by farthest-point sampling on the
selection section's descriptors (the most uncertain candidate first, one per family
next). The round converged when the accurate fraction over all walkers' frames
reaches active_learning.stop_accurate_fraction (then nothing is selected); the
decision file says whether it did. The workflow's loop ends at the first converged
round or at active_learning.max_rounds (raise it to continue a finished study).

example:
  hipqeq select-candidates --config config/toy.yaml --round 1 \\
      --frames results/active/r1/frames.parquet --deviations results/active/r1/deviations.parquet \\
      --output results/active/r1/selection.parquet --decision results/active/r1/decision.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hipqeq.cli._common import add_config_argument, add_output_argument, load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--round", type=int, required=True, help="the round (>= 1)")
    parser.add_argument("--frames", type=Path, required=True, metavar="FILE",
                        help="explored frames (hipqeq explore --output)")
    parser.add_argument("--deviations", type=Path, nargs="+", required=True, metavar="FILE",
                        help="their deviations (hipqeq explore --deviations)")
    add_output_argument(parser, "frames to label, in FPS order")
    parser.add_argument("--decision", type=Path, required=True, metavar="JSON",
                        help="the round's class counts and whether it converged")


def run(args: argparse.Namespace) -> int:
    from hipqeq.active.candidates import select_round
    from hipqeq.active.stop import CONVERGED, NO_CANDIDATES

    decision = select_round(load(args), args.frames, args.deviations, args.round, args.output, args.decision)
    counts = ", ".join(f"{k} {v}" for k, v in decision["counts"].items())
    verdict = {CONVERGED: "converged: the rounds stop",
               NO_CANDIDATES: "not converged, but no frame to label: the rounds stop"}.get(decision["reason"],
                                                                                          "not converged")
    print(f"round {args.round}: {counts}; accurate fraction {decision['accurate_fraction']:.3f}; "
          f"{decision['n_selected']} selected; {verdict}")
    return 0
