"""Transformations of built structures: strain, octahedral tilts, point defects.

All functions return new ``Atoms`` and leave their input untouched. "In-plane" means
the first two lattice vectors (the RP layers lie in the xy plane; for 3D phases the
a-b plane).
"""

from __future__ import annotations

import math

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from hipqeq.errors import StructureError

#: Largest Pb-I distance (Angstrom) counted as a bond when octahedra are identified.
PB_I_BOND_MAX_A = 3.6


#: Lattice vectors (a, b, c) each strain mode scales.
STRAINED_VECTORS = {"biaxial": (True, True, False), "uniaxial": (True, False, False),
                    "isotropic": (True, True, True)}


def strain(atoms: Atoms, percent: float, mode: str = "biaxial") -> Atoms:
    """Strain of ``percent`` %: ``biaxial`` scales lattice vectors a and b (in-plane),
    ``uniaxial`` a only, ``isotropic`` all three (a 3D cell's volume scan); fractional
    coordinates are kept (bonds stretch with the cell; under in-plane strain the slab
    thickness and vacuum do not change)."""
    if mode not in STRAINED_VECTORS:
        raise StructureError(f"strain mode must be one of {', '.join(STRAINED_VECTORS)}, got '{mode}'")
    factors = np.where(STRAINED_VECTORS[mode], 1 + percent / 100, 1.0)
    strained = atoms.copy()
    strained.set_cell(atoms.cell.array * factors[:, None], scale_atoms=True)
    return strained


def even_in_plane(supercell) -> tuple[int, int, int]:
    """``supercell`` with its in-plane repeats rounded up to even numbers (3x3x1 -> 4x4x1):
    alternating octahedral rotations need an even number of octahedra along a and b."""
    return (supercell[0] + supercell[0] % 2, supercell[1] + supercell[1] % 2, supercell[2])


def _pb_bonds(atoms: Atoms, species: str):
    """Pb->``species`` bonds (at most :data:`PB_I_BOND_MAX_A`): Pb indices, ``species``
    indices, bond vectors (minimum image), and masks of the bonds in the plane and along z
    (within ~14 degrees)."""
    i, j, vectors = neighbor_list("ijD", atoms, PB_I_BOND_MAX_A)
    symbols = np.array(atoms.get_chemical_symbols())
    keep = (symbols[i] == "Pb") & (symbols[j] == species)
    i, j, vectors = i[keep], j[keep], vectors[keep]
    lengths = np.linalg.norm(vectors, axis=1)
    in_plane = np.abs(vectors[:, 2]) < 0.25 * lengths
    along_z = np.linalg.norm(vectors[:, :2], axis=1) < 0.25 * lengths
    return i, j, vectors, in_plane, along_z


def _octahedra(atoms: Atoms):
    """Pb-I bonds split into equatorial (in-plane) and apical (along z) ones.

    Returns ``(equatorial, apical)``: arrays of (pb, iodide, dx, dy, dz) rows with the
    Pb->I bond vector (minimum image).
    """
    i, j, vectors, in_plane, along_z = _pb_bonds(atoms, "I")
    if not np.all(in_plane | along_z):
        raise StructureError("tilt needs untilted octahedra with Pb-I bonds along x, y and z")
    return (i[in_plane], j[in_plane], vectors[in_plane]), (i[along_z], j[along_z])


def _rotation_senses(equatorial, apical) -> dict[int, int]:
    """+1/-1 rotation sense per Pb: opposite across a shared equatorial iodide, equal
    across a shared apical one (in-phase stacking, a0a0c+). Raises when the periodic
    cell has an odd number of octahedra along a or b (no consistent pattern)."""
    owners: dict[int, list[int]] = {}
    for pb, iodide in zip(equatorial[0], equatorial[1]):
        owners.setdefault(int(iodide), []).append(int(pb))
    odd_cell = StructureError("tilt needs an even number of octahedra along each in-plane lattice "
                              "vector (use even_in_plane on the supercell)")
    links: dict[int, list[tuple[int, int]]] = {}
    for pbs in owners.values():
        if len(set(pbs)) < len(pbs):  # one octahedron shares an iodide with its own image
            raise odd_cell
        for p in pbs:
            links.setdefault(p, []).extend((q, -1) for q in pbs if q != p)
    apical_owners: dict[int, list[int]] = {}
    for pb, iodide in zip(*apical):
        apical_owners.setdefault(int(iodide), []).append(int(pb))
    for pbs in apical_owners.values():
        for p in pbs:
            links.setdefault(p, []).extend((q, 1) for q in pbs if q != p)
    sense: dict[int, int] = {}
    for start in sorted(links):
        if start in sense:
            continue
        sense[start] = 1
        stack = [start]
        while stack:
            p = stack.pop()
            for q, relation in links[p]:
                wanted = sense[p] * relation
                if q not in sense:
                    sense[q] = wanted
                    stack.append(q)
                elif sense[q] != wanted:
                    raise odd_cell
    return sense


def tilt(atoms: Atoms, angle_deg: float) -> Atoms:
    """Rotate the corner-sharing PbI6 octahedra about z by +-``angle_deg``, alternating
    in-plane (checkerboard) and in phase along z (Glazer a0a0c+ within each slab).

    Octahedra stay rigid: every Pb-I bond keeps its length, equatorial iodides move
    sideways by (a/2) sin(angle) and the in-plane lattice shrinks by cos(angle), as in
    real tilted perovskites; Cs keeps its fractional position. Needs an untilted
    corner-sharing structure (RP or alpha) with an even number of octahedra along a
    and b: a 1x1 RP cell cannot host the pattern, so callers build the seed with
    :func:`even_in_plane` supercells first; an odd cell raises :class:`StructureError`.
    """
    equatorial, apical = _octahedra(atoms)
    if len(equatorial[0]) == 0:
        raise StructureError("tilt found no corner-sharing PbI6 octahedra")
    sense = _rotation_senses(equatorial, apical)
    phi = math.radians(angle_deg)
    shrink = np.array([math.cos(phi), math.cos(phi), 1.0])
    tilted = atoms.copy()
    tilted.set_cell(atoms.cell.array * shrink[:, None], scale_atoms=True)
    positions = tilted.positions
    moved = set()
    for pb, iodide, bond in zip(*equatorial):
        if iodide in moved:  # a shared iodide lands on the same place from either Pb
            continue
        angle = sense[int(pb)] * phi
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        positions[iodide, :2] = positions[pb, :2] + rotation @ bond[:2]
        moved.add(int(iodide))
    tilted.positions = positions
    tilted.wrap()
    return tilted


#: Halide sites of a corner-sharing lattice :func:`defect_site` can pick: the iodides of
#: the in-plane Pb-I-Pb links, and those of Pb-I bonds along the normal (z; in a
#: Ruddlesden-Popper slab the terminal ones facing the Cs layer, and the links between
#: layers for n >= 2).
HALIDE_SITES = ("equatorial", "apical")


def _halides_on_site(atoms: Atoms, species: str, site: str) -> set[int]:
    """Indices of the ``species`` atoms with a Pb bond in the plane (``equatorial``) or
    along z (``apical``), see :func:`_pb_bonds`."""
    _, j, _, in_plane, along_z = _pb_bonds(atoms, species)
    return set(j[in_plane if site == "equatorial" else along_z].tolist())


def defect_site(atoms: Atoms, species: str, site: str | None = None) -> int:
    """Index of the ``species`` atom closest to the cell centre (lowest index on ties):
    a deterministic, central defect site; with ``site`` (one of :data:`HALIDE_SITES`),
    the most central of the halides bonded to Pb in that direction."""
    candidates = [k for k, s in enumerate(atoms.get_chemical_symbols()) if s == species]
    if not candidates:
        raise StructureError(f"no {species} atom to remove or replace in {atoms.get_chemical_formula()}")
    if site is not None:
        if site not in HALIDE_SITES:
            raise StructureError(f"unknown defect site '{site}' (choose from {', '.join(HALIDE_SITES)})")
        on_site = _halides_on_site(atoms, species, site)
        candidates = [k for k in candidates if k in on_site]
        if not candidates:
            raise StructureError(f"no {site} {species} (bonded to Pb) in {atoms.get_chemical_formula()}")
    centre = atoms.cell.array.sum(axis=0) / 2
    distances = np.linalg.norm(atoms.positions[candidates] - centre, axis=1)
    return candidates[int(np.argmin(np.round(distances, 6)))]


def vacancy(atoms: Atoms, species: str, site: str | None = None) -> Atoms:
    """``atoms`` without its most central ``species`` atom (see :func:`defect_site`)."""
    defective = atoms.copy()
    del defective[defect_site(atoms, species, site)]
    return defective


def substitution(atoms: Atoms, species: str, by: str, site: str | None = None) -> Atoms:
    """``atoms`` with its most central ``species`` atom replaced by element ``by`` (see
    :func:`defect_site`)."""
    substituted = atoms.copy()
    symbols = substituted.get_chemical_symbols()
    symbols[defect_site(atoms, species, site)] = by
    substituted.set_chemical_symbols(symbols)
    return substituted
