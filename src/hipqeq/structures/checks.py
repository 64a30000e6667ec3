"""Sanity checks of built structures and their formal charge.

Formal-charge convention: Cs +1, Pb +2, Sn +2, I -1, Br -1, Cl -1 (e). Pristine
structures and isovalent substitutions (Br on I, Sn on Pb) have formal charge 0. A
vacancy changes the formal charge by minus the removed ion's charge (V_I: +1, V_Cs: -1,
V_Pb: -2). A structure's ``total_charge`` is what the engines see: a *neutral* defect
keeps total_charge 0 (the removed ion's electrons stay in the cell), a *fully ionised*
one has total_charge equal to the formal charge (V_I^+ -> +1). In between (e.g. V_Pb^-)
is allowed; :func:`trapped_electrons` is formal charge minus total charge.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from hipqeq.errors import StructureError
from hipqeq.geometry import closest_pair

FORMAL_CHARGES = {"Cs": 1, "Pb": 2, "Sn": 2, "I": -1, "Br": -1, "Cl": -1}

#: Default sanity limits (Angstrom): shortest distance of any two atoms, the window of
#: Pb-halide bond lengths (each Pb needs at least 4 halides within the upper limit; the
#: ideal Pb-I is ~3.14-3.22 A in the black phases, 3.09-3.43 A in delta), and the
#: shortest Cs-halide distance (3.95 A in CsI; 3.73 A in gamma-CsPbI3).
MIN_DISTANCE_A = 2.6
PB_X_BOND_A = (2.95, 3.5)
MIN_CS_X_A = 3.6

HALIDES = ("I", "Br", "Cl")
B_SITE = ("Pb", "Sn")


def formal_charge(atoms: Atoms) -> int:
    """Sum of formal ionic charges (e); raises for elements without one."""
    symbols = atoms.get_chemical_symbols()
    unknown = sorted(set(symbols) - set(FORMAL_CHARGES))
    if unknown:
        raise StructureError(f"no formal charge known for {', '.join(unknown)}")
    return sum(FORMAL_CHARGES[s] for s in symbols)


def trapped_electrons(atoms: Atoms) -> int:
    """Formal charge minus ``atoms.info['total_charge']``: electrons a defect keeps."""
    return formal_charge(atoms) - int(round(atoms.info.get("total_charge", 0)))


def pair_distances(atoms: Atoms, first: tuple[str, ...], second: tuple[str, ...], cutoff: float):
    """Distances (Angstrom, minimum image, within ``cutoff``) from atoms of elements
    ``first`` to atoms of elements ``second``, with the index of the first atom."""
    i, j, d = neighbor_list("ijd", atoms, cutoff)
    symbols = np.array(atoms.get_chemical_symbols())
    keep = np.isin(symbols[i], first) & np.isin(symbols[j], second)
    return i[keep], d[keep]


def check_structure(atoms: Atoms, name: str, tolerance: float = 0.0) -> None:
    """Raise :class:`StructureError` naming ``name`` unless ``atoms`` is sane.

    Checks the shortest interatomic distance, that every Pb/Sn has at least four
    halides at bond length (no halide closer than the window), and the shortest
    Cs-halide distance, with the limits above widened by the fraction ``tolerance``
    (strained structures pass their strain, e.g. 0.04 for 4 %).
    """
    lo, hi = PB_X_BOND_A[0] * (1 - tolerance), PB_X_BOND_A[1] * (1 + tolerance)
    pair = closest_pair(atoms, MIN_DISTANCE_A)
    if pair is not None:
        i, j, d = pair
        raise StructureError(f"{name}: atoms {i} ({atoms[i].symbol}) and {j} "
                             f"({atoms[j].symbol}) are {d:.2f} A apart (< {MIN_DISTANCE_A} A)")
    owners, d = pair_distances(atoms, B_SITE, HALIDES, hi)
    if len(d) and d.min() < lo:
        raise StructureError(f"{name}: a Pb-halide bond of {d.min():.3f} A is shorter than {lo:.2f} A")
    for b_site in (k for k, s in enumerate(atoms.get_chemical_symbols()) if s in B_SITE):
        if np.count_nonzero(owners == b_site) < 4:
            raise StructureError(f"{name}: atom {b_site} ({atoms[b_site].symbol}) has "
                                 f"{np.count_nonzero(owners == b_site)} halides within {hi:.2f} A "
                                 f"(needs >= 4 of its octahedron)")
    _, d = pair_distances(atoms, ("Cs",), HALIDES, MIN_CS_X_A * (1 - tolerance))
    if len(d):
        raise StructureError(f"{name}: a Cs-halide distance of {d.min():.3f} A is below "
                             f"{MIN_CS_X_A * (1 - tolerance):.2f} A")
