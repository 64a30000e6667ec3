"""xTB energy per atom, forces and charges of a seed versus in-plane supercell size.

tblite is Gamma-point only, so small cells carry finite-size errors in energies and
charges. This verb takes a seed structure, reduces it to its primitive repeat (the
seed's config supercell divided out), labels convergence.repeats repetitions of it
(in-plane for slabs and layered cells, all three directions for 3D cells) with the
config's xTB settings, and writes energy per atom (eV), largest force (eV/Angstrom),
mean charge per element (e) and the shortest periodic length (Angstrom) per size as
JSON, and optionally a plot. Size checks (min_periodic_length_A) do not apply here:
showing the small-cell error is the point.

example:
  hipqeq check-convergence --config config/config.yaml \\
      --structures results/structures/structures.parquet --name rp1_slab \\
      --output results/convergence/rp1_slab.json --plot results/convergence/rp1_slab.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hipqeq.cli._common import add_config_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--structures", type=Path, required=True, metavar="FILE",
                        help="built structures (Parquet), e.g. results/structures/structures.parquet")
    parser.add_argument("--name", required=True, help="seed name (structures.seeds[].name)")
    parser.add_argument("--output", "-o", type=Path, required=True, metavar="JSON",
                        help="convergence table (JSON)")
    parser.add_argument("--plot", type=Path, default=None, metavar="PNG", help="also plot it here")
    parser.add_argument("--repeats", type=int, nargs="+", default=None, metavar="N",
                        help="repetitions of the primitive cell (overrides convergence.repeats)")


def run(args: argparse.Namespace) -> int:
    from hipqeq.cli._common import load
    from hipqeq.labels.convergence import check_convergence, plot_convergence, write_report

    config = load(args)
    repeats = args.repeats or config["convergence"]["repeats"]
    report = check_convergence(config, args.structures, args.name, repeats)
    write_report(report, args.output)
    if args.plot:
        plot_convergence(report, args.plot)
    for size in report["sizes"]:
        energy = size["energy_per_atom_eV"]
        print(f"{args.name} x{size['repeat']}: {size['n_atoms']} atoms, shortest periodic length "
              f"{size['shortest_periodic_length_A']:.2f} A, "
              + (f"E/atom {energy:.5f} eV" if energy is not None else f"{size['status']}: {size['error']}"))
    return 0
