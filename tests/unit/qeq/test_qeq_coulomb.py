"""Coulomb sums of Gaussian charges against physics oracles."""

import math

import numpy as np
import pytest
import torch
import torchpme

from hipqeq.errors import HipqeqError
from hipqeq.qeq import (
    P3M_INTERPOLATION_NODES,
    PME_INTERPOLATION_NODES,
    CoulombOperator,
    MeshReciprocal,
    EwaldParameters,
    boundary_from_pbc,
    coulomb_matrix,
    electrostatic_energy,
    ewald_kvectors,
    mesh_parameters,
    mesh_points,
)
from hipqeq.qeq.ewald import MIN_MESH_POINTS, smooth_mesh_size
from hipqeq.units import COULOMB_EV_A

from qeq_helpers import cspbi3, water_like


def _point_charge_energy(frac, charges, cell, sigma, tolerance=1e-10):
    """Ewald energy of point charges: Gaussian matrix minus the Gaussian self terms."""
    cell = torch.as_tensor(cell, dtype=torch.float64)
    positions = torch.as_tensor(frac, dtype=torch.float64) @ cell
    widths = torch.full((len(positions),), sigma, dtype=torch.float64)
    matrix = coulomb_matrix(positions, widths, cell, "periodic", tolerance)
    matrix = matrix - torch.diag(COULOMB_EV_A / (widths * math.sqrt(math.pi)))
    return float(electrostatic_energy(torch.as_tensor(charges, dtype=torch.float64), matrix))


@pytest.mark.parametrize("sigma", [1e-3, 1e-2])
def test_madelung_nacl(sigma):
    # Rock salt, conventional cell: 4 ion pairs, nearest-neighbour distance a/2.
    a = 5.64
    frac = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
    frac = frac + [[x + 0.5 if i == 0 else x for i, x in enumerate(f)] for f in frac]
    charges = [1.0] * 4 + [-1.0] * 4
    energy = _point_charge_energy(frac, charges, np.eye(3) * a, sigma)
    madelung = -energy / 4 * (a / 2) / COULOMB_EV_A
    assert madelung == pytest.approx(1.747564594633, rel=1e-6)


@pytest.mark.parametrize("sigma", [1e-3, 1e-2])
def test_madelung_cscl(sigma):
    a = 4.12
    energy = _point_charge_energy([[0, 0, 0], [0.5, 0.5, 0.5]], [1.0, -1.0], np.eye(3) * a, sigma)
    madelung = -energy * (a * math.sqrt(3) / 2) / COULOMB_EV_A
    assert madelung == pytest.approx(1.762674773070, rel=1e-6)


def test_madelung_nacl_primitive_triclinic_cell():
    # The same crystal in its rhombohedral primitive cell (any cell shape is supported).
    a = 5.64
    cell = 0.5 * a * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])
    energy = _point_charge_energy([[0, 0, 0], [0.5, 0.5, 0.5]], [1.0, -1.0], cell, 1e-3)
    assert -energy * (a / 2) / COULOMB_EV_A == pytest.approx(1.747564594633, rel=1e-6)


@pytest.mark.parametrize("smearing", [0.7, 1.2, 2.5])
def test_independent_of_ewald_splitting(smearing):
    atoms = cspbi3(rattle=0.1)
    positions = torch.tensor(atoms.positions)
    cell = torch.tensor(atoms.cell.array)
    sigma = torch.tensor([1.6, 1.8, 1.9, 1.9, 1.9], dtype=torch.float64)
    reference = coulomb_matrix(positions, sigma, cell, "periodic", tolerance=1e-12)
    p = math.sqrt(2 * math.log(1e12))
    chosen = EwaldParameters(smearing, p * max(smearing, math.sqrt(2) * 1.9), p / smearing)
    matrix = coulomb_matrix(positions, sigma, cell, "periodic", parameters=chosen)
    assert torch.allclose(matrix, reference, rtol=0, atol=1e-9)


def test_periodic_converges_to_open_in_growing_box():
    positions = torch.tensor(water_like().positions)
    sigma = torch.tensor([1.0, 0.7, 0.7], dtype=torch.float64)
    charges = torch.tensor([-0.8, 0.4, 0.4], dtype=torch.float64)
    open_energy = float(electrostatic_energy(charges, coulomb_matrix(positions, sigma)))
    errors = []
    for length in (20.0, 40.0, 80.0):
        cell = torch.eye(3, dtype=torch.float64) * length
        matrix = coulomb_matrix(positions, sigma, cell, "periodic")
        errors.append(abs(float(electrostatic_energy(charges, matrix)) - open_energy))
    # A neutral molecule with a dipole: the image interaction falls off as 1/L^3.
    assert errors[1] < errors[0] / 6 and errors[2] < errors[1] / 6
    assert errors[2] < 1e-4


def test_slab_with_dipole_correction_matches_open_molecule():
    # One polar molecule in slab cells: with the dipole correction the energy does not
    # depend on the vacuum height, and it tends to the open result as the in-plane
    # period L grows (in-plane images of a dipole: 1/L^3).
    positions = torch.tensor(water_like().positions)[:, [2, 0, 1]]  # dipole along z
    sigma = torch.tensor([1.0, 0.7, 0.7], dtype=torch.float64)
    charges = torch.tensor([-0.8, 0.4, 0.4], dtype=torch.float64)
    open_energy = float(electrostatic_energy(charges, coulomb_matrix(positions, sigma)))

    def slab_energy(length, height):
        cell = torch.diag(torch.tensor([length, length, height], dtype=torch.float64))
        return float(electrostatic_energy(charges, coulomb_matrix(positions, sigma, cell, "slab")))

    assert slab_energy(40.0, 80.0) == pytest.approx(slab_energy(40.0, 160.0), abs=1e-6)
    error_20 = abs(slab_energy(20.0, 80.0) - open_energy)
    error_40 = abs(slab_energy(40.0, 160.0) - open_energy)
    assert error_40 < error_20 / 6 and error_40 < 2e-4


def test_slab_energy_independent_of_vacuum():
    slab = cspbi3((2, 2, 2), rattle=0.05)
    slab.center(vacuum=10.0, axis=2)
    slab.pbc = (True, True, False)
    rng = np.random.default_rng(1)
    charges = torch.tensor(rng.normal(size=len(slab)))
    charges -= charges.mean()
    sigma = torch.full((len(slab),), 1.7, dtype=torch.float64)
    energies = []
    for vacuum in (10.0, 20.0, 40.0):
        slab.center(vacuum=vacuum, axis=2)
        matrix = coulomb_matrix(torch.tensor(slab.positions), sigma, torch.tensor(slab.cell.array), "slab")
        energies.append(float(electrostatic_energy(charges, matrix)))
    assert energies[1] == pytest.approx(energies[2], abs=1e-4)
    assert abs(energies[0] - energies[2]) > abs(energies[1] - energies[2])


@pytest.mark.parametrize("mesh_method", ["pme", "p3m"])
@pytest.mark.parametrize("boundary", ["periodic", "slab"])
def test_ewald_operator_reproduces_dense_matrix(boundary, mesh_method):
    atoms = cspbi3((2, 1, 1), rattle=0.1)
    positions, cell = torch.tensor(atoms.positions), torch.tensor(atoms.cell.array)
    if boundary == "slab":
        cell[2, 2] = 40.0
    sigma = torch.linspace(1.4, 2.0, len(atoms), dtype=torch.float64)
    charges = torch.linspace(-1.0, 1.2, len(atoms), dtype=torch.float64)
    matrix = coulomb_matrix(positions, sigma, cell, boundary)
    operator = CoulombOperator(positions, sigma, cell, boundary, method="ewald")
    assert torch.allclose(operator.matvec(charges, positions, sigma, cell), matrix @ charges, atol=1e-10)
    mesh = CoulombOperator(positions, sigma, cell, boundary, tolerance=1e-6, method=mesh_method)
    error = (mesh.matvec(charges, positions, sigma, cell) - matrix @ charges).abs().max()
    assert error < 1e-5 * (matrix @ charges).abs().max()


@pytest.mark.parametrize("mesh_method", ["pme", "p3m"])
def test_slab_mesh_matches_dense_when_the_cutoff_exceeds_the_cell_height(mesh_method):
    """The real-space sum takes images along the slab normal too: PME's smearing (and
    cutoff) grows with the vacuum-diluted density beyond the cell height, and leaving
    those images out made PME and dense slab potentials differ by ~1e-4 relative."""
    slab = cspbi3((2, 2, 1), rattle=0.1)
    slab.center(vacuum=10.0, axis=2)
    positions, cell = torch.tensor(slab.positions), torch.tensor(slab.cell.array)
    sigma = torch.full((len(slab),), 1.9, dtype=torch.float64)
    charges = torch.tensor(np.random.default_rng(0).normal(size=len(slab)))
    reference = coulomb_matrix(positions, sigma, cell, "slab", 1e-8) @ charges
    mesh = CoulombOperator(positions, sigma, cell, "slab", tolerance=1e-8, method=mesh_method)
    assert mesh.parameters.cutoff > float(cell[2, 2])  # the case this test is about
    error = (mesh.matvec(charges, positions, sigma, cell) - reference).abs().max()
    assert error < 1e-7 * reference.abs().max()


@pytest.mark.parametrize("mesh_method", ["pme", "p3m"])
def test_mesh_geometry_cache_changes_nothing(mesh_method):
    """Without autograd the mesh set-up is kept between products at one geometry; with
    autograd it is rebuilt. Both give torch-pme's own calculator's potential, and the
    set-up follows the positions when they change."""
    atoms = cspbi3((2, 2, 2), rattle=0.1)
    positions, cell = torch.tensor(atoms.positions), torch.tensor(atoms.cell.array)
    charges = torch.tensor(np.random.default_rng(1).normal(size=(len(atoms), 2)))
    # torch-pme's mesh_spacing argument 0.6 gives 64 points; hipqeq's spacing is the actual one.
    spacing = float(torch.linalg.norm(cell[0])) / 64
    assert mesh_points(cell, spacing).tolist() == torchpme.lib.get_ns_mesh(cell, 0.6).tolist() == [64] * 3
    parameters = EwaldParameters(smearing=1.5, cutoff=8.0, kspace_cutoff=4.0, mesh_spacing=spacing)
    mesh = MeshReciprocal(mesh_method, parameters, positions)
    calculator_class = torchpme.PMECalculator if mesh_method == "pme" else torchpme.P3MCalculator
    nodes = PME_INTERPOLATION_NODES if mesh_method == "pme" else P3M_INTERPOLATION_NODES
    public = calculator_class(torchpme.CoulombPotential(smearing=1.5), mesh_spacing=0.6,
                              interpolation_nodes=nodes).to(dtype=torch.float64)
    no_pairs = torch.zeros((0, 2), dtype=torch.int64)

    def reference(at):
        return 2.0 * public(charges, cell, at, no_pairs, torch.zeros(0, dtype=torch.float64))

    with torch.no_grad():
        first = mesh(charges, positions, cell)
        again = mesh(charges, positions, cell)  # cached set-up
        moved = positions + 0.3
        after_move = mesh(charges, moved, cell)
        torch.testing.assert_close(first, reference(positions), rtol=0, atol=1e-12)
        torch.testing.assert_close(again, first, rtol=0, atol=0)
        torch.testing.assert_close(after_move, reference(moved), rtol=0, atol=1e-12)
    grad_positions = positions.clone().requires_grad_(True)
    energy = (charges * mesh(charges, grad_positions, cell)).sum()
    (force,) = torch.autograd.grad(energy, grad_positions)
    reference_positions = positions.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad((charges * reference(reference_positions)).sum(), reference_positions)
    torch.testing.assert_close(force, expected, rtol=0, atol=1e-10)


def test_real_space_kernel_is_evaluated_once_per_geometry(monkeypatch):
    """A differentiable product and the products without autograd that follow at equal
    geometry (the shadow step's pattern: strained positions, then detached ones) share
    one evaluation of the pair kernel; a moved atom, in place or not, gets a new one, and
    every product equals a fresh operator's."""
    atoms = cspbi3((2, 2, 2), rattle=0.1)
    positions, cell = torch.tensor(atoms.positions), torch.tensor(atoms.cell.array)
    sigma = torch.full((len(atoms),), 1.2, dtype=torch.float64)
    charges = torch.tensor(np.random.default_rng(2).normal(size=(len(atoms), 2)))
    operator = CoulombOperator(positions, sigma, cell, "periodic", tolerance=1e-6, method="p3m")
    evaluations = []
    original = operator.pairs.kernel
    monkeypatch.setattr(operator.pairs, "kernel", lambda *a: evaluations.append(1) or original(*a))

    def fresh(at):  # a new operator with the same pair list (built at the same geometry)
        with torch.no_grad():
            return CoulombOperator(positions, sigma, cell, "periodic", tolerance=1e-6,
                                   method="p3m").matvec(charges, at, sigma, cell)

    leaf = positions.clone().requires_grad_(True)
    strained = leaf @ torch.eye(3, dtype=torch.float64)
    differentiable = operator.matvec(charges, strained, sigma, cell)
    assert differentiable.requires_grad and len(evaluations) == 1
    with torch.no_grad():
        for _ in range(3):
            torch.testing.assert_close(operator.matvec(charges, positions.clone(), sigma, cell), differentiable.detach(),
                                       rtol=0, atol=0)
        assert len(evaluations) == 1
        moved = positions.clone()
        moved[0, 0] += 0.05
        torch.testing.assert_close(operator.matvec(charges, moved, sigma, cell), fresh(moved), rtol=0, atol=0)
        assert len(evaluations) == 2
        moved[0, 0] += 0.05  # in place: the kept kernel is a copy's, not this tensor's
        torch.testing.assert_close(operator.matvec(charges, moved, sigma, cell), fresh(moved), rtol=0, atol=0)
        assert len(evaluations) == 3


def test_mesh_sizes_are_smooth_numbers_covering_the_spacing():
    assert [smooth_mesh_size(n) for n in (1, 8, 11, 49, 97, 121, 257)] == [8, 8, 12, 50, 100, 125, 270]
    cell = torch.tensor([[20.0, 0.0, 0.0], [3.0, 31.0, 0.0], [0.0, 0.0, 7.0]], dtype=torch.float64)
    points = mesh_points(cell, 0.45).tolist()
    lengths = torch.linalg.norm(cell, dim=1).tolist()
    assert points == [smooth_mesh_size(math.ceil(length / 0.45)) for length in lengths]
    assert all(length / n <= 0.45 for length, n in zip(lengths, points)) and min(points) >= MIN_MESH_POINTS
    # the actual spacing given back gives the same mesh (no rounding up to n + 1)
    assert mesh_points(cell, lengths[1] / points[1]).tolist()[1] == points[1]


@pytest.mark.parametrize("mesh_method", ["pme", "p3m"])
def test_mesh_cost_per_atom_does_not_jump_with_the_cell(mesh_method):
    """With meshes of powers of two the mesh points per atom swung by 4.6x (and the
    real-space pairs against them) between cubic CsPbI3 supercells of 1080 to 29160
    atoms; smooth mesh sizes keep both within a few tens of per cent."""
    mesh_per_atom, pairs_per_atom = [], []
    for repeat in range(6, 19):
        n_atoms, cell = 5 * repeat**3, torch.eye(3, dtype=torch.float64) * 6.29 * repeat
        parameters = mesh_parameters(cell, n_atoms, 1.5, 1e-6, mesh_method)
        mesh_per_atom.append(float(mesh_points(cell, parameters.mesh_spacing).prod()) / n_atoms)
        pairs_per_atom.append(4.0 * math.pi / 3.0 * parameters.cutoff**3 * n_atoms / float(torch.det(cell)))
    assert max(mesh_per_atom) / min(mesh_per_atom) < 1.6
    assert max(pairs_per_atom) / min(pairs_per_atom) < 1.6


def test_half_kvectors_hold_one_of_each_pair():
    cell = torch.tensor([[9.0, 0.0, 0.0], [2.0, 11.0, 0.0], [1.0, -1.5, 14.0]], dtype=torch.float64)
    full = ewald_kvectors(cell, 1.3)
    half = ewald_kvectors(cell, 1.3, half=True)
    assert 2 * len(half) == len(full)
    both = torch.cat([half, -half])
    order = lambda k: k[torch.argsort(k @ torch.tensor([1.0, 1e3, 1e6], dtype=torch.float64))]  # noqa: E731
    torch.testing.assert_close(order(both), order(full), rtol=0, atol=1e-12)


def test_unknown_kspace_method_raises():
    atoms = cspbi3()
    positions, cell = torch.tensor(atoms.positions), torch.tensor(atoms.cell.array)
    with pytest.raises(HipqeqError, match="p3m"):
        CoulombOperator(positions, torch.ones(len(atoms), dtype=torch.float64), cell, "periodic", method="spme")


def test_matrix_invariant_under_translation_and_rotation():
    atoms = cspbi3((1, 1, 2), rattle=0.1)
    positions, cell = torch.tensor(atoms.positions), torch.tensor(atoms.cell.array)
    sigma = torch.full((len(atoms),), 1.7, dtype=torch.float64)
    reference = coulomb_matrix(positions, sigma, cell, "periodic")
    shifted = coulomb_matrix(positions + torch.tensor([0.3, -1.7, 4.0]), sigma, cell, "periodic")
    angle = 0.7
    rotation = torch.tensor(
        [[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]],
        dtype=torch.float64,
    ) @ torch.tensor([[1, 0, 0], [0, math.cos(0.4), -math.sin(0.4)], [0, math.sin(0.4), math.cos(0.4)]], dtype=torch.float64)
    rotated = coulomb_matrix(positions @ rotation.T, sigma, cell @ rotation.T, "periodic")
    assert torch.allclose(shifted, reference, atol=1e-8)
    assert torch.allclose(rotated, reference, atol=1e-8)


def test_unsupported_pbc_raises():
    with pytest.raises(HipqeqError, match="pbc"):
        boundary_from_pbc((True, False, False))
    with pytest.raises(HipqeqError, match="pbc"):
        boundary_from_pbc((False, True, True))


def test_the_background_conventions_differ_by_the_charges_second_moment_term_only():
    """A charged periodic cell: the Gaussian background convention's energy is the point
    one's plus (2 pi k_e / V) Q sum_i q_i sigma_i^2; neutral cells and slabs do not depend
    on the convention; the matrix-free operator follows the dense matrix in both."""
    atoms = cspbi3(rattle=0.2)
    positions, cell = torch.tensor(atoms.positions), torch.tensor(atoms.cell.array)
    sigma = torch.tensor([1.6, 1.8, 1.9, 1.9, 1.9], dtype=torch.float64)
    neutral = torch.tensor([0.9, 0.8, -0.6, -0.5, -0.6], dtype=torch.float64)
    charged = neutral + 0.2  # Q = +1
    volume = abs(float(torch.linalg.det(cell)))
    energies = {}
    for background in ("point", "gaussian"):
        for boundary, box in (("periodic", cell), ("slab", cell * torch.tensor([1.0, 1.0, 4.0])[:, None])):
            matrix = coulomb_matrix(positions, sigma, box, boundary, background=background)
            for name, q in (("neutral", neutral), ("charged", charged)):
                energies[background, boundary, name] = float(electrostatic_energy(q, matrix))
            operator = CoulombOperator(positions, sigma, box, boundary, method="ewald", background=background)
            assert torch.allclose(operator.matvec(charged, positions, sigma, box), matrix @ charged, atol=1e-6)
    second_moment = 2 * math.pi * COULOMB_EV_A / volume * float(charged.sum() * (charged * sigma**2).sum())
    assert abs(second_moment) > 0.5  # a term the test can see
    assert energies["gaussian", "periodic", "charged"] - energies["point", "periodic", "charged"] == pytest.approx(
        second_moment, abs=1e-8)
    for key in (("periodic", "neutral"), ("slab", "neutral"), ("slab", "charged")):
        assert energies[("gaussian", *key)] == pytest.approx(energies[("point", *key)], abs=1e-10)
    with pytest.raises(HipqeqError, match="background must be one of"):
        coulomb_matrix(positions, sigma, cell, "periodic", background="jellium")
