"""Wall time, CPU time and memory per stage of a workflow run, from its jobs' benchmarks.

Every rule of the workflow records its job's wall time, CPU time and peak memory with
Snakemake's benchmark directive, in logs/<rule>/<wildcards>.benchmark.tsv beside the
job's log. This prints one row per stage (rule): its jobs, their wall time summed and
the longest one's, their CPU time summed and the largest resident memory (MB), the
stage with the most wall time first. Summed wall time is the work a stage did, not the
time it took: jobs run side by side (on a cluster, on several nodes).

examples:
  hipqeq timings                                  # the run in this directory
  hipqeq timings studies/cspbi-gfn1-k72 > docs/timings.md
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, nargs="?", default=Path("."),
                        help="the workflow's working directory (default: this one)")


def run(args: argparse.Namespace) -> int:
    from hipqeq.timings import timings_markdown

    print(timings_markdown(args.directory), end="")
    return 0
