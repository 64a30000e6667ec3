"""Summarise the active-learning rounds: fractions, labels added, errors, a histogram.

Reads each round's deviations, decision, walker summary and held-out validation
(`hipqeq explore` and `hipqeq select-candidates` outputs, rounds in order) and the last
round's gathered dataset, and writes into --output-dir:

  summary.json              every round: class counts, accurate fraction, selected
                            frames, labels added per status, walkers stopped early,
                            held-out errors; and which criterion stopped the loop
                            (accurate_fraction or max_rounds)
  rounds.md                 the same, one table row per round
  fractions.md              accurate / candidate / failed fractions per round,
                            structure family and walker temperature
  deviation_histogram.png   the committee's force deviation per round (eV/A, log
                            axis) with the trust window's bounds

example:
  hipqeq active-report --config config/toy.yaml --output-dir results/active \\
      --deviations results/active/r*/deviations.parquet --decisions results/active/r*/decision.json \\
      --walkers results/active/r*/walkers.json --validations results/active/r*/validation.json \\
      --dataset results/active/r2/xtb.parquet
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hipqeq.cli._common import add_config_argument, load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    for name, what in (("deviations", "per-frame deviations (Parquet)"), ("decisions", "decisions (JSON)"),
                       ("walkers", "walker summaries (JSON)"), ("validations", "held-out errors (JSON)")):
        parser.add_argument(f"--{name}", type=Path, nargs="+", required=True, metavar="FILE",
                            help=f"each round's {what}, rounds in order")
    parser.add_argument("--dataset", type=Path, default=None, metavar="FILE",
                        help="the last gathered dataset (labels added per round); omitted when no round labelled")
    parser.add_argument("--output-dir", type=Path, required=True, metavar="DIR", help="where the report goes")


def run(args: argparse.Namespace) -> int:
    from hipqeq.active.report import write_active_report
    from hipqeq.errors import ConfigError

    lengths = {len(args.decisions), len(args.walkers), len(args.validations)}
    if len(lengths) != 1:
        raise ConfigError("--decisions, --walkers and --validations need one file per round each")
    summary = write_active_report(load(args), args.deviations, args.decisions, args.walkers, args.validations,
                                  args.dataset, args.output_dir)
    print(f"{len(summary['rounds'])} round(s); stopped by {summary['stopped_by'] or 'nothing yet'}; "
          f"report in {args.output_dir}")
    return 0
