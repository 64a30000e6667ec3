"""Neighbour lists against a brute-force search over periodic images, and the Verlet list."""

import itertools

import numpy as np
import pytest
import torch
from ase.neighborlist import neighbor_list

from hipqeq.errors import HipqeqError
from hipqeq.qeq import VerletNeighborList, neighbor_pairs

from qeq_helpers import cspbi3


def brute_force_pairs(positions, cell, pbc, cutoff) -> set:
    """Every (i, j, n) with |r_j + n.C - r_i| < cutoff, by trying all images in a box of
    translations wide enough for the cutoff and the spread of the (unwrapped) atoms."""
    positions, cell = np.asarray(positions), np.asarray(cell)
    fractional = positions @ np.linalg.inv(cell)
    plane_spacing = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)
    spread = np.ptp(fractional, axis=0)
    reach = [int(np.ceil(cutoff / plane_spacing[k] + spread[k])) + 1 if pbc[k] else 0 for k in range(3)]
    pairs = set()
    for shift in itertools.product(*(range(-n, n + 1) for n in reach)):
        distances = np.linalg.norm(positions[None, :, :] + np.array(shift) @ cell - positions[:, None, :], axis=-1)
        for i, j in zip(*np.nonzero(distances < cutoff)):
            if i != j or any(shift):
                pairs.add((int(i), int(j), *shift))
    return pairs


def as_set(first, second, shifts) -> set:
    return set(zip(first.tolist(), second.tolist(), *shifts.T.tolist()))


# (cell rows in Angstrom, pbc, atoms, cutoff in Angstrom). Cutoffs avoid the lattice
# lengths: an image exactly at the cutoff is a tie that any search may break either way.
CELLS = {
    "periodic": (np.eye(3) * 8.0, (True, True, True), 20, 5.3),
    "smaller than the cutoff": (np.eye(3) * 3.1, (True, True, True), 3, 7.3),
    "one atom, tiny cell": (np.eye(3) * 2.05, (True, True, True), 1, 5.1),
    "triclinic": (np.array([[6.0, 0.0, 0.0], [4.5, 5.0, 0.0], [1.0, 2.5, 7.0]]), (True, True, True), 10, 6.3),
    "slab": (np.array([[6.2, 0.0, 0.0], [0.0, 6.2, 0.0], [0.0, 0.0, 30.0]]), (True, True, False), 12, 7.1),
    "skewed small slab": (np.array([[3.1, 0.0, 0.0], [1.3, 3.0, 0.0], [0.0, 0.0, 20.0]]), (True, True, False), 4, 7.2),
    "open": (np.eye(3) * 10.0, (False, False, False), 15, 4.3),
}


@pytest.mark.parametrize("name", CELLS)
def test_neighbor_pairs_match_brute_force(name):
    cell, pbc, n_atoms, cutoff = CELLS[name]
    rng = np.random.default_rng(len(name))
    fractional = rng.random((n_atoms, 3))
    fractional[:, ~np.array(pbc)] *= 0.5  # slabs and molecules sit inside their box
    positions = fractional @ cell
    positions[0] += 2.0 * cell[0] if pbc[0] else 0.0  # unwrapped along a periodic axis
    expected = brute_force_pairs(positions, cell, pbc, cutoff)
    assert len(expected) > n_atoms  # the case is not trivially empty
    found = neighbor_pairs(torch.tensor(positions), torch.tensor(cell), pbc, cutoff)
    assert all(t.dtype == torch.int64 for t in found)
    assert len(found[0]) == len(expected)  # no duplicates
    assert as_set(*found) == expected
    # numpy input, float32 tensors: the same pairs
    assert as_set(*neighbor_pairs(positions, cell, pbc, cutoff)) == expected
    assert as_set(*neighbor_pairs(torch.tensor(positions, dtype=torch.float32),
                                  torch.tensor(cell, dtype=torch.float32), pbc, cutoff)) == expected


@pytest.mark.parametrize("pbc", [(True, True, True), (True, True, False), (False, False, False)])
def test_neighbor_pairs_match_ase(pbc):
    atoms = cspbi3(rattle=0.2)  # a cell smaller than the cutoff
    atoms.pbc = pbc
    first, second, shifts = neighbor_pairs(torch.tensor(atoms.positions), torch.tensor(atoms.cell.array), pbc, 9.0)
    assert as_set(first, second, shifts) == as_set(*(np.asarray(a) for a in neighbor_list("ijS", atoms, 9.0)))


def test_open_system_needs_no_cell():
    positions = np.random.default_rng(1).random((12, 3)) * 6.0
    expected = brute_force_pairs(positions, np.eye(3), (False,) * 3, 3.0)
    assert as_set(*neighbor_pairs(positions, None, (False,) * 3, 3.0)) == expected


def test_bad_inputs_raise():
    with pytest.raises(HipqeqError, match="cutoff"):
        neighbor_pairs(np.zeros((2, 3)), np.eye(3), (True,) * 3, 0.0)
    with pytest.raises(HipqeqError, match="pbc=\\(True, True, True\\)"):
        neighbor_pairs(np.zeros((2, 3)), np.zeros((3, 3)), (True,) * 3, 3.0)
    with pytest.raises(HipqeqError, match="skin"):
        VerletNeighborList(5.0, skin=-1.0)


def within(positions, cell, pairs, cutoff) -> set:
    first, second, shifts = pairs
    distances = np.linalg.norm(positions[second] - positions[first] + shifts.numpy() @ cell, axis=1)
    keep = distances < cutoff
    return as_set(first[keep], second[keep], shifts[keep])


def test_verlet_list_is_complete_and_rebuilds_only_when_needed():
    atoms = cspbi3(repeat=(2, 2, 2), rattle=0.05)
    cell, positions = atoms.cell.array, atoms.positions.copy()
    verlet = VerletNeighborList(6.0, skin=1.0)
    rng = np.random.default_rng(3)
    for step in range(30):
        pairs = verlet.pairs(positions, cell, atoms.pbc)
        assert within(positions, cell, pairs, 6.0) == as_set(*neighbor_pairs(positions, cell, atoms.pbc, 6.0))
        positions = positions + rng.normal(0.0, 0.04, positions.shape)  # a random walk, ~0.07 A per step
    assert 2 <= verlet.builds < 30  # the walk leaves the skin sometimes, not every step
    builds = verlet.builds
    verlet.pairs(positions, cell * 1.01, atoms.pbc)  # a new cell: searched again
    verlet.pairs(positions[:-1], cell * 1.01, atoms.pbc)  # an atom fewer: again
    verlet.pairs(positions[:-1], cell * 1.01, (True, True, False))  # other periodicity: again
    assert verlet.builds == builds + 3


def test_verlet_list_without_skin_searches_every_call():
    atoms = cspbi3(rattle=0.05)
    verlet = VerletNeighborList(5.0, skin=0.0)
    for _ in range(3):
        verlet.pairs(atoms.positions + 1e-3 * verlet.builds, atoms.cell.array, atoms.pbc)
    assert verlet.builds == 3
