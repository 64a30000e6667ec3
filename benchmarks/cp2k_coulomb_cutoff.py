"""Reproducer: CP2K's GFN1-xTB energies wiggle along a strain path, at every short-range Coulomb cutoff.

CP2K sums GFN1's Coulomb kernel as an Ewald 1/r sum plus a short-range part gamma - 1/r
that keeps a shell-dependent 1/r^3 tail; it switches that part off over 1 bohr at a
cutoff set by ``&xTB &PARAMETER COULOMB_SR_CUT`` (bohr) and ``COULOMB_SR_EPS``. As a
strain moves pairs through the switch the energy wiggles, and no cutoff converges it
(README, "Reference labels"; ``docs/study/cp2k_coulomb_cutoff.json``). This script
labels the 7-atom RP n = 1 slab (rattled, 2x2x1 k-mesh) along -3..3 % of in-plane strain
with hipqeq's CP2K labeller at each cutoff and prints each path's largest distance from
a cubic fit (a smooth E(strain) over 6 % fits to ~0.01 meV/atom; tblite's does), and with
``--vacuum`` the reach of the default cutoff across the vacuum. ~30 s a cutoff on one
core (CP2K 2023.1). With ``--cubic-strains`` it also scans cubic CsPbI3 (the 5-atom
Pm-3m cell, scaled isotropically) with the default cutoff: its energy (eV/atom) and
Mulliken charges per strain, or the SCF's failure (~10 s a point at 6x6x6,
``docs/study/cp2k_cubic_scf/README.md``).

example:
  OMP_NUM_THREADS=1 python benchmarks/cp2k_coulomb_cutoff.py
  OMP_NUM_THREADS=1 python benchmarks/cp2k_coulomb_cutoff.py --cutoffs 20,1e-3 35,1e-14 --vacuum 26 36 45
  OMP_NUM_THREADS=1 python benchmarks/cp2k_coulomb_cutoff.py --cutoffs --cubic-strains -8 -7 -6 -5 -4 -3 -2 -1 0 1 2 3
"""

from __future__ import annotations

import argparse

import numpy as np

from hipqeq.config import validate_section
from hipqeq.errors import SCFNotConverged
from hipqeq.labels.convergence import cubic_fit_residuals_meV
from hipqeq.labels.cp2k import CP2KLabeller
from hipqeq.structures.builders import phase, ruddlesden_popper
from hipqeq.structures.transform import strain

STRAINS_PERCENT = (-3, -2, -1, 0, 1, 2, 3)


def labeller(cut_bohr: float, eps: float, kpoint_density_A: float = 12.0) -> CP2KLabeller:
    """hipqeq's CP2K GFN1 labeller with this cutoff; the default k-density gives the 6.3 A
    cells a 2x2 mesh."""
    cp2k = {"kpoint_density_A": kpoint_density_A, "coulomb_sr_cut_bohr": cut_bohr, "coulomb_sr_eps": eps}
    return CP2KLabeller(validate_section("xtb", {"engine": "cp2k", "allow_small_cells": True, "cp2k": cp2k}))


def strain_path(label, vacuum_A: float) -> np.ndarray:
    """Energies (eV/atom) of the rattled slab at each of :data:`STRAINS_PERCENT`."""
    energies = []
    for percent in STRAINS_PERCENT:
        atoms = strain(ruddlesden_popper(1, "slab", vacuum=vacuum_A), percent)
        atoms.rattle(0.05, seed=1)
        energies.append(label.label(atoms).energy / len(atoms))
    return np.array(energies)


def default_labeller(kpoint_density_A: float = 12.0) -> CP2KLabeller:
    """The labeller at hipqeq's default cutoff."""
    default = validate_section("xtb", {"engine": "cp2k"})["cp2k"]
    return labeller(default["coulomb_sr_cut_bohr"], default["coulomb_sr_eps"], kpoint_density_A)


def cubic_scan(strains_percent, kpoint_density_A: float) -> None:
    """Print cubic CsPbI3's energy and charges at each isotropic strain, or the SCF's failure."""
    label = default_labeller(kpoint_density_A)
    seed = phase("alpha", (1, 1, 1))
    print(f"cubic CsPbI3, k-density {kpoint_density_A} A:  strain (%)  a (A)  E (eV/atom)  Mulliken "
          + " / ".join(seed.get_chemical_symbols()) + " (e)")
    for percent in strains_percent:
        atoms = strain(seed, percent, mode="isotropic")
        a_A = float(np.linalg.norm(atoms.cell[0]))
        try:
            result = label.label(atoms)
        except SCFNotConverged as exc:
            print(f"{percent:+5.1f}  {a_A:.3f}  SCF failed: {exc}", flush=True)
            continue
        charges = " / ".join(f"{q:+.3f}" for q in result.charges)
        print(f"{percent:+5.1f}  {a_A:.3f}  {result.energy / len(atoms):.5f}  {charges}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cutoffs", nargs="*", default=["20,1e-3", "25,1e-14", "35,1e-14"],
                        help="COULOMB_SR_CUT (bohr),COULOMB_SR_EPS pairs; CP2K's own is 20,1e-3")
    parser.add_argument("--path-vacuum", type=float, default=30.0, help="vacuum of the strain path (Angstrom)")
    parser.add_argument("--vacuum", type=float, nargs="*", default=[],
                        help="also label the unstrained slab at these vacua (Angstrom) with hipqeq's default cutoff")
    parser.add_argument("--cubic-strains", type=float, nargs="*", default=[],
                        help="also scan cubic CsPbI3 at these isotropic strains (%%) with hipqeq's default cutoff")
    parser.add_argument("--cubic-kpoint-density", type=float, default=36.0,
                        help="k-point density of the cubic scan (Angstrom; 36: 6x6x6)")
    args = parser.parse_args()
    if args.cutoffs:
        print("COULOMB_SR_CUT,EPS  E(0 %) eV/atom  E - E(0 %) at -3..3 % (meV/atom)        largest distance from a cubic")
    for spec in args.cutoffs:
        cut_bohr, eps = map(float, spec.split(","))
        energies = strain_path(labeller(cut_bohr, eps), args.path_vacuum)
        residual = cubic_fit_residuals_meV(STRAINS_PERCENT, energies)
        relative = " ".join(f"{1000 * (e - energies[3]):6.1f}" for e in energies)
        print(f"{spec:>18}  {energies[3]:.5f}  {relative}   {np.abs(residual).max():.2f} meV/atom", flush=True)
    if args.vacuum:
        label = default_labeller()
        slabs = [ruddlesden_popper(1, "slab", vacuum=v) for v in args.vacuum]
        energies = [label.label(slab).energy / len(slab) for slab in slabs]
        for vacuum_A, energy in zip(args.vacuum, energies):
            print(f"vacuum {vacuum_A:5.1f} A: {energy:.5f} eV/atom, {1000 * (energy - energies[-1]):+.2f} meV/atom "
                  "from the last")
    if args.cubic_strains:
        cubic_scan(args.cubic_strains, args.cubic_kpoint_density)


if __name__ == "__main__":
    main()
