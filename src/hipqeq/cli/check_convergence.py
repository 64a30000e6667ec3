"""Convergence gate of one seed or charged slab: do its labels depend on the vacuum or the sampling, or jump
along a strain path?

Labels the seed as built (rattled by convergence.rattle_A) with the config's settings of
one level of theory (--level xtb: the xtb section; --level dft: the dft section, PySCF)
at its own vacuum and at convergence.vacuum_A (slabs), and with denser in-plane sampling
(convergence.sampling_multipliers: k-point density times m for engine cp2k, the dft.kmesh
counts times m for PySCF, an m-fold repeated cell for tblite), and compares energy per
atom (meV/atom), forces (meV/Angstrom) and charges (e) of the labelled setting with the
most converged one (DFT: charges, plus energy and forces with dft.energy_forces). Energy
and forces are compared as the 4G short range learns them: the label minus the Coulomb
energy and forces of the label's own charges under the engine's boundary (3D-periodic
for tblite and CP2K, with the neutralising background of a charged cell); the raw
label's changes are in the report too. A seed is also labelled along a strain path
(convergence.strain_percent, in-plane for slabs): its energies must lie within
convergence.tolerance.strain_residual_meV_per_atom of a cubic through them, which a
labeller that truncates an interaction at a cutoff fails. A charged slab (a built
structure with a total charge, convergence.charged_slabs) gets the vacuum series only: a
3D-periodic label of it grows with the vacuum by the charge's interaction with the
background, which the model subtracts, so the rest must not. Writes the gate as JSON,
CSV (the report's table) and a plot.

Each label is kept as it finishes in --labels (default: the report's name with
.labels.parquet, a hipqeq dataset): a gate rerun with the same labelling settings, after
an interruption or with another tolerance, reuses those labels instead of computing them
again (a gate of CP2K labels takes an hour or more).

Exits non-zero with one line per failure (seed, setting, quantity, value, tolerance)
when the labelled setting is outside convergence.tolerance, and keeps a copy of each file
it wrote beside it as NAME.failed.EXT (Snakemake removes a failed job's outputs; the copy
shows why, and a passing gate removes it); with
convergence.allow_unconverged: true it prints the same lines as warnings and exits 0
(toy runs: their labels then depend on the cell). Size checks (min_periodic_length_A)
do not apply here: measuring the size error is the point.

example:
  hipqeq check-convergence --config config/config.yaml \\
      --structures results/structures/structures.parquet --name rp1_slab \\
      --output results/convergence/xtb/rp1_slab.json --table results/convergence/xtb/rp1_slab.csv \\
      --plot results/convergence/xtb/rp1_slab.png
  hipqeq check-convergence --config config/config.yaml \\
      --structures results/structures/structures.parquet --name rp1_slab__vac_I_qp1 \\
      --output results/convergence/xtb/rp1_slab__vac_I_qp1.json
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from hipqeq.cli._common import add_config_argument
from hipqeq.labels.convergence import LEVELS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--structures", type=Path, required=True, metavar="FILE",
                        help="built structures (Parquet), e.g. results/structures/structures.parquet")
    parser.add_argument("--name", required=True, help="seed name (structures.seeds[].name), or a charged slab's "
                        "(e.g. rp1_slab__vac_I_qp1, with convergence.charged_slabs)")
    parser.add_argument("--level", choices=LEVELS, default="xtb",
                        help="labelling settings to gate: the xtb or the dft section (default: xtb)")
    parser.add_argument("--output", "-o", type=Path, required=True, metavar="JSON", help="the gate report (JSON)")
    parser.add_argument("--table", type=Path, default=None, metavar="CSV", help="also the gate table here")
    parser.add_argument("--plot", type=Path, default=None, metavar="PNG", help="also plot it here")
    parser.add_argument("--labels", type=Path, default=None, metavar="PARQUET",
                        help="the gate's labels, reused and extended (default: OUTPUT's name with .labels.parquet)")


def run(args: argparse.Namespace) -> int:
    from hipqeq.cli._common import load
    from hipqeq.errors import ConvergenceGateFailed
    from hipqeq.labels.convergence import (check_convergence, gate_failures, plot_convergence, summary_lines,
                                           write_report, write_table)

    config = load(args)
    labels = args.labels or args.output.with_name(f"{args.output.stem}.labels.parquet")
    report = check_convergence(config, args.structures, args.name, args.level, labels)
    failures = gate_failures(report)
    written = [write_report({**report, "failures": failures}, args.output)]
    if args.table:
        written.append(write_table(report, args.table))
    if args.plot:
        written.append(plot_convergence(report, args.plot))
    for line in summary_lines(report):
        print(f"{args.name} {args.level} {line}")
    failed = not config["convergence"]["allow_unconverged"] and bool(failures)
    kept = [_failed_copy(path, keep=failed) for path in written]
    if failed:
        raise ConvergenceGateFailed("convergence gate failed (set convergence.allow_unconverged: true to "
                                    "label anyway, toy runs only):\n  " + "\n  ".join(failures)
                                    + "\nthe gate's report is kept in " + ", ".join(map(str, kept)))
    for failure in failures:
        print(f"warning: {failure} (allowed by convergence.allow_unconverged)", file=sys.stderr)
    return 0


def _failed_copy(path: Path, keep: bool) -> Path:
    """``path``'s NAME.failed.EXT sibling: a copy of it when ``keep``, else removed (a stale
    one from an earlier failure would contradict the passing report)."""
    copy = path.with_name(f"{path.stem}.failed{path.suffix}")
    if keep:
        shutil.copyfile(path, copy)
    else:
        copy.unlink(missing_ok=True)
    return copy
