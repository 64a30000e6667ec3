"""The ``hipqeq`` command line: one verb per pipeline stage.

Each verb lives in its own module of this package with a docstring (first line: the
one-line help; the rest: the ``--help`` text), ``add_arguments(parser)`` and
``run(args) -> int``. Verb modules import heavy libraries (torch, engines) inside
``run`` so that ``hipqeq --help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys

from hipqeq import __version__
from hipqeq.errors import HipqeqError

#: (verb, module) in pipeline order; ``hipqeq --help`` lists them in this order.
VERBS = (
    ("build", "build"),
    ("sample", "sample"),
    ("select", "select"),
    ("select-dft", "select_dft"),
    ("select-test", "select_test"),
    ("check-convergence", "check_convergence"),
    ("label", "label"),
    ("ingest", "ingest"),
    ("gather", "gather"),
    ("split", "split"),
    ("train", "train"),
    ("validate", "validate"),
    ("md", "md"),
    ("properties", "properties"),
    ("explore", "explore"),
    ("select-candidates", "select_candidates"),
    ("active-report", "active_report"),
    ("models", "models"),
    ("inspect", "inspect"),
    ("timings", "timings"),
)

EPILOG = """\
pipeline (each stage is a Snakemake rule calling one verb):
  build -> sample -> select (-> select-dft) -> label xtb / label dft (or ingest) -> gather -> split
        (-> select-test -> label xtb -> gather: more held-out frames, selection.n_xtb_test)
        -> train charges -> train short-range (and train baseline, train mace) -> validate
  active learning, rounds r >= 1 (active_learning.enabled):
  train a committee on all labels so far -> explore -> select-candidates -> label xtb
        -> gather -> the next round, until the committee is accurate or max_rounds
  properties from the potential (properties.enabled): NPT MD over a temperature grid
        -> V(T), thermal expansion, U(T), dU/dT, octahedral tilts
  pretrained potentials shipped with the package: hipqeq models list

Units everywhere: eV, Angstrom, elementary charge e. Settings come from the workflow
config (--config FILE, validated against the package's schema); flags cover inputs,
outputs and overrides. Run `hipqeq VERB --help` for each verb.
"""


def _verb_module(module: str):
    return importlib.import_module(f"hipqeq.cli.{module}")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every verb registered)."""
    parser = argparse.ArgumentParser(
        prog="hipqeq",
        description="hipqeq: build, label, train and validate a 4G machine-learned potential "
                    "(HIP-NN electronegativities + charge equilibration + short-range HIP-NN) "
                    "for 2D CsPbI perovskites.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"hipqeq {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, module_name in VERBS:
        module = _verb_module(module_name)
        summary, _, details = (module.__doc__ or verb).strip().partition("\n")
        sub = verbs.add_parser(verb, help=summary, description=f"{summary}\n{details}",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hipqeq`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose + 1, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        return int(args.run(args) or 0)
    except HipqeqError as exc:
        print(f"hipqeq {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # a full disk is the user's to fix, not a bug: say where, without a traceback
        print(f"hipqeq {args.verb}: error: no space left writing {exc.filename or 'an output'} ({exc.strerror}); "
              "free disk space (or quota) there, or write elsewhere, then re-run", file=sys.stderr)
        return 2
