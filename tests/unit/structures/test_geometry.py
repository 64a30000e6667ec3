"""The closest-pair search shared by the structure checks, labelling pre-checks and MD."""

from __future__ import annotations

import pytest
from ase import Atoms

from hipqeq.geometry import closest_pair


def test_closest_pair_sees_periodic_images():
    # 0.5 A apart across the x boundary, 9.5 A apart inside the cell
    atoms = Atoms("II", positions=[[0.2, 5, 5], [9.7, 5, 5]], cell=[10, 10, 10], pbc=True)
    i, j, d = closest_pair(atoms, 1.0)
    assert {i, j} == {0, 1}
    assert d == pytest.approx(0.5)
    atoms.pbc = False
    assert closest_pair(atoms, 1.0) is None


def test_closest_pair_picks_the_shortest_and_an_atom_near_its_own_image():
    atoms = Atoms("CsII", positions=[[0, 0, 0], [2.0, 0, 0], [0, 1.5, 0]], cell=[20, 20, 20], pbc=True)
    assert closest_pair(atoms, 3.0) == (0, 2, pytest.approx(1.5))
    lone = Atoms("I", positions=[[0, 0, 0]], cell=[1.2, 20, 20], pbc=True)
    assert closest_pair(lone, 2.0) == (0, 0, pytest.approx(1.2))


def test_closest_pair_none_without_atoms_or_cutoff():
    atoms = Atoms("II", positions=[[0, 0, 0], [0.1, 0, 0]])
    assert closest_pair(atoms, 0.0) is None
    assert closest_pair(Atoms(), 2.0) is None
