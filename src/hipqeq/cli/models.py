"""List the pretrained potentials that ship with hipqeq, or package a finished study as one.

`hipqeq models list` prints, for every potential in the package, its level of theory,
its training data (labelled structures, families, charge states) and its test errors
against the reference level (parents held out of training). Use one in Python with
`hipqeq.pretrained.calculator(NAME)` (the 4G committee) or `kind="2g"` (the baseline).

`hipqeq models package` copies a finished study's models, datasets, splits and metrics
into the package (src/hipqeq/pretrained/NAME), with a manifest and a check structure
whose energies and forces a fresh install must reproduce. --caveat states what the
potential is not fit for (e.g. test errors far above a target); every load of it then
warns with that text, and `models list` prints it. --committee ships another 4G
committee of the study instead of its own (the other charge mode's, trained with
scripts/charge_reference.py on the same labels and split, or one trained with more
parents, scripts/charged_siblings.py), with its validation and the labels and split its
members record (checked by sha256; `models list` names what the baselines did not see).

examples:
  hipqeq models list
  hipqeq models package --study studies/cspbi-gfn1 \\
      --name cspbi-gfn1 --description "2D RP CsPbI slabs, GFN1-xTB (CP2K, k-points)"
  hipqeq models package --study studies/cspbi-gfn1-k72 --config config/study.yaml \\
      --committee studies/cspbi-gfn1-k72/results/charge_reference/mulliken \\
      --charge-reference xtb --name cspbi-gfn1 --description "..." --overwrite
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    modes = parser.add_subparsers(dest="mode", metavar="MODE", required=True)
    listing = modes.add_parser("list", help="the pretrained potentials, their data and test errors")
    listing.add_argument("--root", type=Path, default=None, help=argparse.SUPPRESS)
    package = modes.add_parser("package", help="package a finished study as a pretrained potential")
    package.add_argument("--study", type=Path, required=True, help="the study's directory (holding results/)")
    package.add_argument("--config", type=Path, default=None,
                         help="the config file the study ran with (default: STUDY/study.yaml)")
    package.add_argument("--name", required=True, help="the potential's name, e.g. cspbi-gfn1")
    package.add_argument("--description", required=True, help="one line: systems and reference level")
    package.add_argument("--root", type=Path, default=None,
                         help="where to write NAME/ (default: the installed package's pretrained folder)")
    package.add_argument("--caveat", default=None,
                         help="what the potential is not fit for; every load warns with it (PretrainedCaveat)")
    package.add_argument("--overwrite", action="store_true", help="replace an existing potential of that name")
    package.add_argument("--committee", type=Path, default=None,
                         help="ship another 4G committee of the study (DIR/4g_<k>, validated in "
                              "DIR/validation_<charge-reference>/), e.g. the other charge mode's "
                              "(scripts/charge_reference.py), with the labels its members trained on; "
                              "default: STUDY/results/models")
    package.add_argument("--charge-reference", choices=["dft", "xtb"], default=None,
                         help="the charges that --committee's charge models learned")


def run(args: argparse.Namespace) -> int:
    from hipqeq import pretrained
    from hipqeq.plan import study_config

    if args.mode == "list":
        available = pretrained.names(args.root)
        if not available:
            print("no pretrained potential is installed")
        for name in available:
            print("\n".join(pretrained.summary_lines(name, args.root)))
        return 0
    folder = pretrained.package_study(args.study, study_config(args.study, args.config), args.name,
                                      args.description, root=args.root, overwrite=args.overwrite, caveat=args.caveat,
                                      committee=args.committee, charge_reference=args.charge_reference)
    print("\n".join(pretrained.summary_lines(args.name, folder.parent)))
    print(f"written to {folder}")
    return 0
