"""Label structures with xTB single points or DFT partial charges, one chunk per job.

`label xtb` runs GFN1-xTB (default) or GFN2-xTB single points with tblite (periodic
cells, slabs, clusters; Gamma point only, so labels depend on the cell), xtb-python
(finite clusters only) or CP2K (GFN1-xTB with a k-mesh from xtb.cp2k.kpoint_density_A
and Ewald sums; needs the cp2k.psmp binary): energy (eV), forces (eV/Angstrom), stress
(eV/Angstrom^3) and Mulliken charges (e). CP2K rows record the k-mesh, the SCF settings,
the SCF cycles, the spin multiplicity and the (3D-periodic) boundary in calc_params. `label dft` runs
periodic Kohn-Sham (PBE, GTH pseudopotentials and basis) with PySCF (Mulliken and meta-Lowdin
charges; Gamma point or dft.kmesh) or, with dft.source cp2k, CP2K's GPW (Mulliken and
Hirshfeld charges; a k-mesh from dft.cp2k.kpoint_density_A; ~10x faster on 28-atom
slabs here) and, when dft.energy_forces is set, energy and forces.

Every input structure gives exactly one output row: a failed or refused structure is
a row whose status says why (scf_not_converged, error, rejected_overlap, rejected_nan,
rejected_cell, rejected_element, rejected_small_cell; rejected_periodic for a periodic
cell given to xtb-python, rejected_nonperiodic for a cluster given to DFT). An
unconverged SCF is retried once with the section's `retry` settings (recorded in
calc_params) before it counts as failed; the method never changes. The command exits 0 when it
recorded failures and non-zero only when it cannot write its output. An interrupted
job resumes from OUTPUT.partial and re-runs only the structures that are missing.

With --config, settings come from the config's xtb / dft section and --chunk I picks
rows hipqeq.plan.chunk_bounds(I, chunk_size, n_rows) of the input; without it the
schema defaults apply, the flags below override them, and the whole input is labelled.
Inputs are hipqeq Parquet datasets, extxyz or any file ASE can read.

examples:
  hipqeq label xtb --config config/toy.yaml --input results/selection/xtb.parquet \\
      --chunk 0 --output results/labels/xtb/chunk_0.parquet
  hipqeq label xtb --input frames.extxyz --output labelled.parquet --method GFN2-xTB
  OMP_NUM_THREADS=2 hipqeq label xtb --input frames.extxyz --output labelled.parquet \
      --engine cp2k --kpoint-density-A 30
  hipqeq label dft --config config/toy.yaml --input results/selection/dft.parquet \\
      --chunk 0 --output results/labels/dft/chunk_0.parquet
  hipqeq label dft --input frames.extxyz --output charges.parquet --source cp2k \\
      --kpoint-density-A 36 --charge-scheme Hirshfeld
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hipqeq.cli._common import add_config_argument, add_output_argument


def _add_io_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser, required=False)
    parser.add_argument("--input", "-i", type=Path, required=True, metavar="FILE",
                        help="structures to label: a hipqeq Parquet dataset, extxyz or any ASE-readable file")
    add_output_argument(parser, "labelled chunk")
    parser.add_argument("--chunk", type=int, default=None, metavar="I",
                        help="0-based chunk index: label only rows chunk_bounds(I, chunk_size, n_rows) "
                             "(default: the whole input)")
    parser.add_argument("--chunk-size", type=int, default=None, metavar="N",
                        help="structures per chunk (overrides the config's chunk_size)")
    parser.add_argument("--allow-small-cells", action="store_true", default=None,
                        help="label cells shorter than min_periodic_length_A anyway (finite-size error)")
    parser.add_argument("--min-periodic-length-A", type=float, default=None, metavar="L",
                        help="shortest periodic length (Angstrom) a labelled cell must have")
    parser.add_argument("--min-distance-A", type=float, default=None, metavar="D",
                        help="reject structures with two atoms closer than D Angstrom")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    levels = parser.add_subparsers(dest="level", metavar="LEVEL", required=True)
    xtb = levels.add_parser("xtb", help="xTB single points (energy, forces, stress, Mulliken charges)",
                            description="xTB single points with tblite or xtb-python; see `hipqeq label --help`.")
    _add_io_arguments(xtb)
    xtb.add_argument("--method", choices=("GFN1-xTB", "GFN2-xTB"), default=None,
                     help="level of theory (default GFN1-xTB)")
    xtb.add_argument("--engine", choices=("tblite", "xtb-python", "cp2k"), default=None,
                     help="tblite (periodic and finite, Gamma point), xtb-python (finite clusters only) "
                          "or cp2k (GFN1-xTB with k-points)")
    xtb.add_argument("--kpoint-density-A", type=float, default=None, metavar="L",
                     help="engine cp2k: k-mesh n_i = ceil(L / |a_i|) (overrides xtb.cp2k.kpoint_density_A)")
    xtb.add_argument("--accuracy", type=float, default=None, help="engine accuracy (1.0 default)")
    xtb.add_argument("--electronic-temperature-K", type=float, default=None, metavar="T",
                     help="Fermi smearing temperature (K)")
    xtb.add_argument("--max-iterations", type=int, default=None, metavar="N", help="SCF iteration limit")

    dft = levels.add_parser("dft", help="periodic DFT partial charges (and energy/forces), PySCF or CP2K",
                            description="Periodic Kohn-Sham charges with PySCF or CP2K; see `hipqeq label --help`.")
    _add_io_arguments(dft)
    dft.add_argument("--source", choices=("pyscf", "cp2k"), default=None,
                     help="engine: pyscf (default) or cp2k (GPW with a k-mesh, needs cp2k.psmp)")
    dft.add_argument("--kpoint-density-A", type=float, default=None, metavar="L",
                     help="source cp2k: k-mesh n_i = ceil(L / |a_i|) (overrides dft.cp2k.kpoint_density_A)")
    dft.add_argument("--xc", default=None, help="exchange-correlation functional (default PBE)")
    dft.add_argument("--basis", default=None, help="GTH basis, e.g. gth-szv-molopt-sr, gth-dzvp-molopt-sr")
    dft.add_argument("--pseudo", default=None, help="pseudopotential (default gth-pbe)")
    dft.add_argument("--kmesh", type=int, nargs=3, default=None, metavar=("K1", "K2", "K3"),
                     help="source pyscf: Monkhorst-Pack k-mesh (default 1 1 1: Gamma point)")
    dft.add_argument("--charge-scheme", choices=("Mulliken", "meta-Lowdin", "Hirshfeld"), default=None,
                     help="which population analysis fills the charges column")
    dft.add_argument("--energy-forces", action="store_true", default=None,
                     help="also store the DFT energy and forces")


#: command-line flags (argparse dest) that override keys of the same name in the section.
_OVERRIDES = {
    "xtb": ("method", "engine", "accuracy", "electronic_temperature_K", "max_iterations",
            "chunk_size", "allow_small_cells", "min_periodic_length_A", "min_distance_A"),
    "dft": ("source", "xc", "basis", "pseudo", "kmesh", "charge_scheme", "energy_forces",
            "chunk_size", "allow_small_cells", "min_periodic_length_A", "min_distance_A"),
}


def run(args: argparse.Namespace) -> int:
    from hipqeq.cli._common import load
    from hipqeq.config import validate_section
    from hipqeq.labels.common import label_file

    base = load(args)[args.level] if args.config else {}
    overrides = {k: getattr(args, k) for k in _OVERRIDES[args.level] if getattr(args, k) is not None}
    section = {**base, **overrides}
    if getattr(args, "kpoint_density_A", None) is not None:
        section["cp2k"] = {**section.get("cp2k", {}), "kpoint_density_A": args.kpoint_density_A}
    settings = validate_section(args.level, section)
    from hipqeq.labels import dft_labeller, xtb_labeller

    make_labeller = xtb_labeller if args.level == "xtb" else dft_labeller
    counts = label_file(args.input, args.output, make_labeller(settings), chunk=args.chunk,
                        progress=not args.no_progress)
    summary = ", ".join(f"{status} {n}" for status, n in counts.items()) or "no structures"
    print(f"labelled {sum(counts.values())} structure(s) into {args.output}: {summary}")
    return 0
