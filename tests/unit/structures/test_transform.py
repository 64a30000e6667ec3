"""Strain, tilts and point defects: counts, charges, bonds, symmetry-breaking."""

from __future__ import annotations

import numpy as np
import pytest
from ase.neighborlist import neighbor_list

from hipqeq.errors import StructureError
from hipqeq.structures import (
    check_structure, even_in_plane, formal_charge, phase, ruddlesden_popper, strain, substitution, tilt,
    vacancy,
)
from hipqeq.structures.checks import pair_distances


@pytest.mark.parametrize("mode, expected", [("biaxial", [1.02, 1.02, 1.0]), ("uniaxial", [1.02, 1.0, 1.0])])
def test_strain_scales_in_plane_only(mode, expected):
    slab = ruddlesden_popper(1, "slab", vacuum=12.0)
    strained = strain(slab, 2.0, mode)
    assert strained.cell.lengths() / slab.cell.lengths() == pytest.approx(expected)
    assert np.ptp(strained.positions[:, 2]) == pytest.approx(np.ptp(slab.positions[:, 2]))


def test_isotropic_strain_scales_the_whole_cell():
    cubic = phase("alpha")
    strained = strain(cubic, -3.0, "isotropic")
    assert strained.cell.lengths() / cubic.cell.lengths() == pytest.approx([0.97, 0.97, 0.97])
    assert strained.get_scaled_positions() == pytest.approx(cubic.get_scaled_positions())
    with pytest.raises(StructureError, match="strain mode"):
        strain(cubic, 1.0, "shear")


@pytest.mark.parametrize("atoms", [ruddlesden_popper(1, "slab", supercell=(2, 2, 1)),
                                   ruddlesden_popper(2, "bulk", supercell=(2, 2, 1)),
                                   phase("alpha", (2, 2, 2))], ids=["rp1_slab", "rp2_bulk", "alpha"])
def test_tilt_keeps_octahedra_rigid_and_shrinks_lattice(atoms):
    tilted = tilt(atoms, 8.0)
    _, before = pair_distances(atoms, ("Pb",), ("I",), 3.5)
    owners, after = pair_distances(tilted, ("Pb",), ("I",), 3.5)
    assert np.allclose(np.sort(after), np.sort(before), atol=1e-9)  # rigid octahedra
    assert np.all(np.bincount(owners, minlength=len(tilted))[tilted.numbers == 82] == 6)
    assert tilted.cell.lengths()[:2] == pytest.approx(atoms.cell.lengths()[:2] * np.cos(np.radians(8)))
    # every Pb-I-Pb angle through an equatorial iodide bends from 180 to 180 - 2 x 8 degrees
    i, j, vectors = neighbor_list("ijD", tilted, 3.5)
    equatorial = (tilted.numbers[i] == 53) & (tilted.numbers[j] == 82) & (np.abs(vectors[:, 2]) < 0.1)
    angles = []
    for iodide in np.unique(i[equatorial]):
        first, second = vectors[equatorial & (i == iodide)]
        angles.append(np.degrees(np.arccos(first @ second / np.linalg.norm(first) / np.linalg.norm(second))))
    assert len(angles) == 2 * (tilted.numbers == 82).sum() and np.allclose(angles, 164.0)
    check_structure(tilted, "tilted")


def test_tilt_needs_even_in_plane_cell():
    with pytest.raises(StructureError, match="even number"):
        tilt(ruddlesden_popper(1, "slab"), 5.0)
    with pytest.raises(StructureError, match="even number"):
        tilt(ruddlesden_popper(1, "slab", supercell=(3, 3, 1)), 5.0)
    assert even_in_plane((3, 1, 1)) == (4, 2, 1) and even_in_plane((2, 4, 3)) == (2, 4, 3)


@pytest.mark.parametrize("species, formal", [("I", +1), ("Cs", -1), ("Pb", -2)])
def test_vacancy_counts_and_formal_charge(species, formal):
    seed = ruddlesden_popper(1, "slab", supercell=(2, 2, 1))
    defective = vacancy(seed, species)
    assert len(defective) == len(seed) - 1
    assert defective.get_chemical_symbols().count(species) == seed.get_chemical_symbols().count(species) - 1
    # the formal ionic charge of a vacancy cell is minus the removed ion's charge: a fully
    # ionised V_X has total_charge = formal; a neutral one keeps total_charge 0
    assert formal_charge(defective) == formal
    assert vacancy(seed, species).positions == pytest.approx(defective.positions)  # deterministic site


def _pb_bonds_of_removed_iodide(seed, defective):
    """Pb->I bond vectors (Angstrom) of the iodide ``defective`` lacks from ``seed``."""
    kept = {tuple(np.round(p, 6)) for p in defective.positions}
    (removed,) = [k for k, p in enumerate(seed.positions) if tuple(np.round(p, 6)) not in kept]
    i, j, vectors = neighbor_list("ijD", seed, 3.6)
    return vectors[(j == removed) & (np.array(seed.get_chemical_symbols())[i] == "Pb")]


@pytest.mark.parametrize("n, bridging_pb", [(1, 1), (2, 2)])
def test_iodide_vacancy_sites(n, bridging_pb):
    """An equatorial V_I breaks an in-plane Pb-I-Pb link, an apical one a bond along z
    (a terminal iodide at n = 1; at n = 2 the most central apical iodide links the two
    layers); without a site the most central iodide of the n = 1 slab is apical."""
    seed = ruddlesden_popper(n, "slab", supercell=(2, 2, 1))
    equatorial = _pb_bonds_of_removed_iodide(seed, vacancy(seed, "I", "equatorial"))
    assert len(equatorial) == 2 and np.abs(equatorial[:, 2]).max() < 0.1
    apical = _pb_bonds_of_removed_iodide(seed, vacancy(seed, "I", "apical"))
    assert len(apical) == bridging_pb and np.linalg.norm(apical[:, :2], axis=1).max() < 0.1
    assert vacancy(seed, "I").positions == pytest.approx(vacancy(seed, "I", "apical").positions)
    assert formal_charge(vacancy(seed, "I", "equatorial")) == +1


def test_defect_site_needs_a_halide_of_that_kind():
    seed = ruddlesden_popper(1, "slab", supercell=(2, 2, 1))
    with pytest.raises(StructureError, match="no equatorial Cs"):
        vacancy(seed, "Cs", "equatorial")
    with pytest.raises(StructureError, match="unknown defect site 'axial'"):
        substitution(seed, "I", "Br", "axial")


@pytest.mark.parametrize("species, by", [("I", "Br"), ("Pb", "Sn")])
def test_substitution_counts_and_neutrality(species, by):
    seed = ruddlesden_popper(2, "slab", supercell=(2, 2, 1))
    substituted = substitution(seed, species, by)
    assert len(substituted) == len(seed)
    assert substituted.get_chemical_symbols().count(by) == 1
    assert substituted.get_chemical_symbols().count(species) == seed.get_chemical_symbols().count(species) - 1
    assert formal_charge(substituted) == 0  # isovalent
    check_structure(substituted, "substituted")


def test_defect_of_absent_species_is_refused():
    with pytest.raises(StructureError, match="no Br atom"):
        vacancy(phase("alpha"), "Br")


def test_check_structure_catches_bad_geometry():
    atoms = phase("alpha")
    squeezed = strain(atoms, -10.0)
    with pytest.raises(StructureError, match="shorter than"):
        check_structure(squeezed, "squeezed")
    check_structure(squeezed, "squeezed", tolerance=0.10)  # its strain widens the window
    atoms.positions[1] = atoms.positions[0] + [0.5, 0.5, 0.5]
    with pytest.raises(StructureError, match="apart"):
        check_structure(atoms, "overlap")
