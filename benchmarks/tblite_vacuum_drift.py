"""Minimal reproducer (for tblite upstream): periodic GFN1-xTB slab energies drift with the vacuum.

A slab in a 3D-periodic cell, with the cell length c along the normal increased and
nothing else changed (same atoms, same in-plane cell), should approach a constant energy
once the images no longer interact. With tblite 0.8.0 (GFN1-xTB and GFN2-xTB) the energy
keeps falling, by roughly the same amount per doubling of c, up to c = 180 A; a neutral,
non-polar slab's electrostatics converge exponentially with the vacuum, so no physical
term explains a logarithmic drift. CP2K 2023.1's GFN1-xTB (with Ewald) on the same slab
is flat to 0.1 meV per formula unit from ~25 A of vacuum (hipqeq, PHYSICS.md).

Needs only numpy, ASE and tblite (no hipqeq). Two slabs: the 7-atom Ruddlesden-Popper
Cs2PbI4 cell (one PbI6 octahedral layer between CsI rock-salt layers, a = 6.289 A,
symmetric and non-polar), and a rock-salt NaCl (001) bilayer (a = 5.64 A, 8 atoms) to show
that it is not specific to heavy elements. Prints energy per atom against c and the
change per doubling of c; a converged code would print changes going to zero.

example:
  python benchmarks/tblite_vacuum_drift.py
  python benchmarks/tblite_vacuum_drift.py --method GFN2-xTB --lengths 25 50 100
"""

from __future__ import annotations

import argparse

import numpy as np
from ase import Atoms


def cs2pbi4(c: float) -> Atoms:
    """The RP n = 1 Cs2PbI4 slab (7 atoms) centred in a cell of height ``c`` (Angstrom)."""
    a, pb_i, cs_z = 6.289, 3.1445, 3.9  # Pb-I bond a/2; Cs 3.9 A above/below the Pb plane
    positions = [[0, 0, 0], [a / 2, 0, 0], [0, a / 2, 0], [0, 0, pb_i], [0, 0, -pb_i],
                 [a / 2, a / 2, cs_z], [a / 2, a / 2, -cs_z]]
    atoms = Atoms("PbI4Cs2", positions=positions, cell=[a, a, c], pbc=True)
    atoms.positions[:, 2] += c / 2
    return atoms


def nacl_bilayer(c: float) -> Atoms:
    """Two rock-salt NaCl (001) layers (8 atoms), centred in a cell of height ``c``."""
    a = 5.64
    layer = [("Na", 0, 0), ("Na", a / 2, a / 2), ("Cl", a / 2, 0), ("Cl", 0, a / 2)]
    symbols, positions = [], []
    for k, z in enumerate((0.0, a / 2)):
        for s, x, y in layer:
            flipped = {"Na": "Cl", "Cl": "Na"}[s] if k else s  # rock salt: the next layer swaps species
            symbols.append(flipped)
            positions.append([x, y, z])
    atoms = Atoms(symbols, positions=positions, cell=[a, a, c], pbc=True)
    atoms.positions[:, 2] += c / 2 - a / 4
    return atoms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="GFN1-xTB", choices=("GFN1-xTB", "GFN2-xTB"))
    parser.add_argument("--lengths", type=float, nargs="+", default=[22.5, 45, 90, 180],
                        help="cell lengths c along the normal (Angstrom); doublings show the trend")
    args = parser.parse_args()
    from tblite.ase import TBLite
    import tblite

    print(f"tblite {getattr(tblite, '__version__', '?')}, {args.method}; E per atom (eV) vs cell length c")
    for name, build in (("Cs2PbI4 RP n=1 slab", cs2pbi4), ("NaCl (001) bilayer", nacl_bilayer)):
        previous = None
        print(f"\n{name}\n   c (A) | vacuum (A) | E/atom (eV)      | change from previous c (meV/atom)")
        for c in args.lengths:
            atoms = build(c)
            atoms.calc = TBLite(method=args.method, verbosity=0)
            energy = atoms.get_potential_energy() / len(atoms)
            z = atoms.positions[:, 2]
            change = "" if previous is None else f"{1000 * (energy - previous):+.3f}"
            print(f"{c:8.1f} | {c - (z.max() - z.min()):10.1f} | {energy:.8f} | {change}")
            previous = energy
    print("\nA code whose slab energies converge prints changes -> 0 as c doubles.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
