"""QEq solvers: analytic cases, the constraint, agreement, and gradients."""

import math

import numpy as np
import pytest
import torch

from hipqeq.qeq import (
    CoulombOperator,
    QEqNotConverged,
    coulomb_matrix,
    electrostatic_energy,
    fixed_charge_electrostatics,
    qeq_energy,
    solve_dense,
    solve_iterative,
)
from hipqeq.units import COULOMB_EV_A

from qeq_helpers import cspbi3, parameters

F64 = torch.float64


def _system(repeat=(1, 1, 1), rattle=0.1):
    atoms = cspbi3(repeat, rattle=rattle)
    chi, hardness, sigma = (torch.tensor(x) for x in parameters(atoms))
    return torch.tensor(atoms.positions), torch.tensor(atoms.cell.array), chi, hardness, sigma


def test_two_atoms_analytic():
    # Open dimer, q1 = -q2 = q: E = q^2 (A11 + A22 - 2 A12 + J1 + J2) / 2 + (chi1 - chi2) q.
    r, sigma1, sigma2 = 2.3, 1.1, 0.8
    chi1, chi2, j1, j2 = -1.0, 2.0, 6.0, 8.0
    a11 = COULOMB_EV_A / (sigma1 * math.sqrt(math.pi))
    a22 = COULOMB_EV_A / (sigma2 * math.sqrt(math.pi))
    a12 = COULOMB_EV_A * math.erf(r / math.sqrt(2 * (sigma1**2 + sigma2**2))) / r
    expected = -(chi1 - chi2) / (a11 + a22 - 2 * a12 + j1 + j2)

    positions = torch.tensor([[0.0, 0.0, 0.0], [r, 0.0, 0.0]], dtype=F64)
    matrix = coulomb_matrix(positions, torch.tensor([sigma1, sigma2], dtype=F64))
    charges = solve_dense(matrix, torch.tensor([chi1, chi2], dtype=F64), torch.tensor([j1, j2], dtype=F64))
    assert charges.tolist() == pytest.approx([expected, -expected], rel=1e-12)


@pytest.mark.parametrize("total_charge", [0.0, 1.0])
@pytest.mark.parametrize("solver", ["dense", "iterative"])
def test_total_charge_constraint(total_charge, solver):
    positions, cell, chi, hardness, sigma = _system((2, 1, 1))
    if solver == "dense":
        matrix = coulomb_matrix(positions, sigma, cell, "periodic")
        charges = solve_dense(matrix, chi, hardness, total_charge)
    else:
        operator = CoulombOperator(positions, sigma, cell, "periodic", tolerance=1e-6)
        charges, _ = solve_iterative(
            operator.matvec, (positions, sigma, cell), chi, hardness, operator.diagonal_estimate(sigma), total_charge
        )
    assert abs(float(charges.sum()) - total_charge) < 1e-10


@pytest.mark.parametrize("mesh_method", ["pme", "p3m"])
@pytest.mark.parametrize("total_charge", [0.0, 1.0])
@pytest.mark.parametrize("boundary", ["periodic", "slab", "open"])
def test_dense_and_iterative_agree(boundary, total_charge, mesh_method):
    positions, cell, chi, hardness, sigma = _system((2, 2, 1))
    if boundary == "slab":
        cell[2, 2] = 30.0
    cell = None if boundary == "open" else cell
    matrix = coulomb_matrix(positions, sigma, cell, boundary)
    dense = solve_dense(matrix, chi, hardness, total_charge)
    # With the Ewald operator both use the same sums: agreement to solver tolerance.
    operator = CoulombOperator(positions, sigma, cell, boundary, method="ewald")
    iterative, _ = solve_iterative(
        operator.matvec, (positions, sigma, cell), chi, hardness, operator.diagonal_estimate(sigma),
        total_charge, tolerance=1e-12,
    )
    assert torch.allclose(iterative, dense, atol=1e-9)
    if boundary != "open":
        # Mesh potentials: agreement to the mesh accuracy.
        pme = CoulombOperator(positions, sigma, cell, boundary, tolerance=1e-7, method=mesh_method)
        approximate, _ = solve_iterative(
            pme.matvec, (positions, sigma, cell), chi, hardness, pme.diagonal_estimate(sigma), total_charge
        )
        assert torch.allclose(approximate, dense, atol=1e-5)


def test_warm_start_needs_fewer_products():
    positions, cell, chi, hardness, sigma = _system((2, 2, 2))
    operator = CoulombOperator(positions, sigma, cell, "periodic", tolerance=1e-6)
    args = (operator.matvec, (positions, sigma, cell), chi, hardness, operator.diagonal_estimate(sigma))
    cold, cold_products = solve_iterative(*args, tolerance=1e-10)
    moved = positions + 0.01 * torch.randn(positions.shape, dtype=F64, generator=torch.Generator().manual_seed(3))
    operator_moved = CoulombOperator(moved, sigma, cell, "periodic", tolerance=1e-6)
    args_moved = (operator_moved.matvec, (moved, sigma, cell), chi, hardness, operator_moved.diagonal_estimate(sigma))
    _, warm_products = solve_iterative(*args_moved, initial=cold, tolerance=1e-10)
    _, fresh_products = solve_iterative(*args_moved, tolerance=1e-10)
    assert warm_products < fresh_products


def test_warm_adjoint_needs_fewer_products_and_gives_the_same_forces():
    """The adjoint solve of the forces started from the previous geometry's adjoint: fewer
    products than a cold one, the same gradient to solver tolerance."""
    positions, cell, chi, hardness, sigma = _system((2, 2, 2))
    moved = positions + 0.01 * torch.randn(positions.shape, dtype=F64, generator=torch.Generator().manual_seed(3))

    def gradient(pos, store):
        pos = pos.clone().requires_grad_(True)
        operator = CoulombOperator(pos, sigma, cell, "periodic", tolerance=1e-6)
        charges, _ = solve_iterative(operator.matvec, (pos, sigma, cell), chi, hardness,
                                     operator.diagonal_estimate(sigma), tolerance=1e-10, warm_adjoint=store)
        (charges**3).sum().backward()   # a non-trivial dE/dq, as the short range's
        return pos.grad

    store = {}
    gradient(positions, store)
    assert store["adjoint"].shape == chi.shape and store["products"] > 0
    warm = gradient(moved, store)
    cold_store = {}
    cold = gradient(moved, cold_store)
    assert store["products"] < cold_store["products"]
    torch.testing.assert_close(warm, cold, atol=1e-7, rtol=0)


def test_iterative_raises_when_not_converged():
    positions, cell, chi, hardness, sigma = _system()
    operator = CoulombOperator(positions, sigma, cell, "periodic", tolerance=1e-6)
    with pytest.raises(QEqNotConverged):
        solve_iterative(
            operator.matvec, (positions, sigma, cell), chi, hardness, operator.diagonal_estimate(sigma),
            tolerance=1e-12, max_iterations=1,
        )


def test_gradcheck_dense_charges_wrt_chi_hardness_sigma():
    positions, cell, chi, hardness, sigma = _system(rattle=0.2)

    def charges(chi, hardness, sigma):
        return solve_dense(coulomb_matrix(positions, sigma, cell, "periodic", 1e-12), chi, hardness)

    inputs = tuple(x.clone().requires_grad_() for x in (chi, hardness, sigma))
    assert torch.autograd.gradcheck(charges, inputs)


def test_gradcheck_iterative_charges_implicit_gradients():
    # The implicit-function-theorem backward against finite differences, for every input.
    positions, cell, chi, hardness, sigma = _system(rattle=0.2)

    def charges(chi, hardness, positions, sigma, cell):
        operator = CoulombOperator(positions, sigma, cell, "periodic", tolerance=1e-12, method="ewald")
        solved, _ = solve_iterative(
            operator.matvec, (positions, sigma, cell), chi, hardness, operator.diagonal_estimate(sigma),
            total_charge=0.5, tolerance=1e-14,
        )
        return solved

    inputs = tuple(x.clone().requires_grad_() for x in (chi, hardness, positions, sigma, cell))
    assert torch.autograd.gradcheck(charges, inputs, atol=1e-6)


def _iterative_energy(positions, cell, chi, hardness, sigma, total_charge):
    """E_elec(q*) + sum q^3 (a term that makes the charges' second derivatives count)."""
    operator = CoulombOperator(positions, sigma, cell, "periodic", tolerance=1e-8, method="ewald")
    charges, _ = solve_iterative(operator.matvec, (positions, sigma, cell), chi, hardness,
                                 operator.diagonal_estimate(sigma), total_charge, tolerance=1e-14)
    return 0.5 * (charges * operator.matvec(charges, positions, sigma, cell)).sum() + (charges**3).sum()


def _dense_energy(positions, cell, chi, hardness, sigma, total_charge):
    matrix = coulomb_matrix(positions, sigma, cell, "periodic", 1e-8)
    charges = solve_dense(matrix, chi, hardness, total_charge)
    return 0.5 * charges @ matrix @ charges + (charges**3).sum()


@pytest.mark.parametrize("total_charge", [0.0, 1.0])
def test_iterative_hessian_equals_the_dense_one(total_charge):
    """Second derivatives in the positions through the iterative solve (implicit
    differentiation of the adjoint solve) equal those of autograd through the dense
    solve; a once-differentiable backward would give a different Hessian silently."""
    positions, cell, chi, hardness, sigma = _system(rattle=0.2)
    args = (cell, chi, hardness, sigma, total_charge)
    dense = torch.autograd.functional.hessian(lambda p: _dense_energy(p, *args), positions)
    iterative = torch.autograd.functional.hessian(lambda p: _iterative_energy(p, *args), positions)
    assert dense.abs().max() > 1e-3
    torch.testing.assert_close(iterative, dense, rtol=1e-7, atol=1e-9)


def _energies(positions, cell, chi, hardness, sigma, boundary="periodic"):
    matrix = coulomb_matrix(positions, sigma, cell, boundary, 1e-12)
    charges = solve_dense(matrix, chi, hardness)
    potential = matrix @ charges
    return charges, 0.5 * (charges * potential).sum(), qeq_energy(charges, potential, chi, hardness)


@pytest.mark.parametrize("boundary", ["open", "periodic", "slab"])
def test_forces_match_finite_differences(boundary):
    positions, cell, chi, hardness, sigma = _system(rattle=0.2)
    if boundary == "slab":
        cell[2, 2] = 25.0
    cell = None if boundary == "open" else cell
    positions.requires_grad_()
    _, e_elec, e_qeq = _energies(positions, cell, chi, hardness, sigma, boundary)
    grad_elec, grad_qeq = (torch.autograd.grad(e, positions, retain_graph=True)[0] for e in (e_elec, e_qeq))
    step = 1e-5
    for atom, axis in [(0, 0), (2, 1), (4, 2)]:
        displaced = []
        for sign in (1, -1):
            moved = positions.detach().clone()
            moved[atom, axis] += sign * step
            _, elec, qeq = _energies(moved, cell, chi, hardness, sigma, boundary)
            displaced.append((float(elec), float(qeq)))
        fd_elec = (displaced[0][0] - displaced[1][0]) / (2 * step)
        fd_qeq = (displaced[0][1] - displaced[1][1]) / (2 * step)
        assert float(grad_elec[atom, axis]) == pytest.approx(fd_elec, abs=1e-6)
        assert float(grad_qeq[atom, axis]) == pytest.approx(fd_qeq, abs=1e-6)


def test_variational_forces_need_no_charge_derivative():
    # dE_QEq/dR through the solve equals the partial derivative at fixed q*; even with
    # chi depending on the positions (as a network's would).
    positions, cell, chi0, hardness, sigma = _system(rattle=0.2)
    positions.requires_grad_()
    chi = chi0 + 0.3 * torch.sin(positions).sum(1)
    _, _, total = _energies(positions, cell, chi, hardness, sigma)
    full = torch.autograd.grad(total, positions, retain_graph=True)[0]

    matrix = coulomb_matrix(positions, sigma, cell, "periodic", 1e-12)
    fixed = solve_dense(matrix, chi, hardness).detach()
    partial_energy = qeq_energy(fixed, matrix @ fixed, chi, hardness)
    partial = torch.autograd.grad(partial_energy, positions)[0]
    assert torch.allclose(full, partial, atol=1e-9)
    # ...but E_elec alone is not variational: its forces differ at fixed charges.
    elec_fixed = torch.autograd.grad(electrostatic_energy(fixed, coulomb_matrix(positions, sigma, cell, "periodic", 1e-12)), positions)[0]
    assert not torch.allclose(full, elec_fixed, atol=1e-3)


def test_stress_matches_finite_differences():
    # Stress = (1/V) dE/d(strain) with positions and cell deformed by (1 + strain).
    positions, cell, chi, hardness, sigma = _system(rattle=0.2)
    strain = torch.zeros((3, 3), dtype=F64, requires_grad=True)

    def energy(strain):
        deformation = torch.eye(3, dtype=F64) + strain
        return _energies(positions @ deformation, cell @ deformation, chi, hardness, sigma)[1]

    analytic = torch.autograd.grad(energy(strain), strain)[0]
    step = 1e-6
    for i, j in [(0, 0), (1, 2), (2, 0)]:
        plus, minus = torch.zeros((3, 3), dtype=F64), torch.zeros((3, 3), dtype=F64)
        plus[i, j], minus[i, j] = step, -step
        fd = (float(energy(plus)) - float(energy(minus))) / (2 * step)
        assert float(analytic[i, j]) == pytest.approx(fd, abs=1e-6)


def test_supercell_gives_same_charges_per_atom():
    positions, cell, chi, hardness, sigma = _system(rattle=0.15)
    matrix = coulomb_matrix(positions, sigma, cell, "periodic", 1e-12)
    unit = solve_dense(matrix, chi, hardness)
    unit_energy = electrostatic_energy(unit, matrix)
    big_atoms = cspbi3(rattle=0.15) * (2, 1, 2)
    big_chi, big_hardness, big_sigma = (torch.tensor(x) for x in parameters(big_atoms))
    big_matrix = coulomb_matrix(torch.tensor(big_atoms.positions), big_sigma, torch.tensor(big_atoms.cell.array), "periodic", 1e-12)
    big = solve_dense(big_matrix, big_chi, big_hardness)
    assert torch.allclose(big, unit.repeat(4), atol=1e-8)
    assert float(electrostatic_energy(big, big_matrix)) == pytest.approx(4 * float(unit_energy), rel=1e-8)


def test_charges_invariant_under_rotation_and_translation():
    positions, cell, chi, hardness, sigma = _system(rattle=0.15)
    reference = solve_dense(coulomb_matrix(positions, sigma, cell, "periodic"), chi, hardness)
    rotation = torch.tensor(np.linalg.qr(np.random.default_rng(5).normal(size=(3, 3)))[0])
    moved = (positions + torch.tensor([1.0, -2.0, 0.5], dtype=F64)) @ rotation.T
    rotated = solve_dense(coulomb_matrix(moved, sigma, cell @ rotation.T, "periodic"), chi, hardness)
    assert torch.allclose(rotated, reference, atol=1e-8)


@pytest.mark.parametrize("pbc, total_charge", [((True, True, True), 0.0), ((True, True, True), 1.0),
                                               ((True, True, False), 1.0), ((False, False, False), 0.0)])
def test_fixed_charge_electrostatics_is_half_qAq_and_its_forces_are_its_gradient(pbc, total_charge):
    """The Coulomb term of given charges (what a label's own charges contribute): the energy
    is 1/2 q^T A q of the dense matrix under the boundary ``pbc`` (a charged cell with its
    background), the forces its negative gradient at fixed charges (float64 central
    differences, 1e-6 eV/A)."""
    atoms = cspbi3(rattle=0.2)
    atoms.cell[2, 2] = 25.0 if pbc == (True, True, False) else atoms.cell[2, 2]
    atoms.pbc = pbc
    sigma = parameters(atoms)[2]
    charges = np.array([0.9, 0.8, -0.6, -0.5, -0.6]) + total_charge / 5  # sums to total_charge
    energy, forces = fixed_charge_electrostatics(atoms, charges, sigma)
    boundary = {(True, True, True): "periodic", (True, True, False): "slab", (False, False, False): "open"}[pbc]
    cell = None if boundary == "open" else torch.tensor(atoms.cell.array)
    q = torch.tensor(charges)
    matrix = coulomb_matrix(torch.tensor(atoms.positions), torch.tensor(sigma), cell, boundary)
    assert energy == pytest.approx(float(0.5 * q @ matrix @ q), abs=1e-10)
    step = 1e-5
    for atom, axis in [(0, 0), (2, 1), (4, 2)]:
        moved = []
        for sign in (1, -1):
            displaced = atoms.copy()
            displaced.positions[atom, axis] += sign * step
            moved.append(fixed_charge_electrostatics(displaced, charges, sigma)[0])
        assert forces[atom, axis] == pytest.approx(-(moved[0] - moved[1]) / (2 * step), abs=1e-6)


def _rp1_slab(repeat):
    from hipqeq.structures.builders import ruddlesden_popper

    atoms = ruddlesden_popper(1, kind="slab", vacuum=20.0, supercell=(repeat, repeat, 1))
    atoms.rattle(0.05, seed=repeat)
    return atoms


def _products(atoms, boundary, long_waves: bool, total_charge=0.0):
    """CG products and charges of a P3M solve, with and without the long-wave modes,
    and the dense Ewald solve's charges of the same system."""
    chi, hardness, sigma = (torch.tensor(x) for x in parameters(atoms))
    positions, cell = torch.tensor(atoms.positions), torch.tensor(atoms.cell.array)
    operator = CoulombOperator(positions, sigma, cell, boundary, tolerance=1e-7, method="p3m")
    modes = operator.long_wave_modes(positions, sigma, cell, hardness) if long_waves else None
    charges, products = solve_iterative(operator.matvec, (positions, sigma, cell), chi, hardness,
                                        operator.diagonal_estimate(sigma), total_charge, tolerance=1e-9,
                                        long_waves=modes)
    dense = solve_dense(coulomb_matrix(positions, sigma, cell, boundary, 1e-7), chi, hardness, total_charge)
    return products, charges, dense


@pytest.mark.parametrize("family", ["periodic", "slab"])
def test_long_wave_preconditioner_keeps_the_iterations_from_growing_with_the_cell(family):
    """The Jacobi-preconditioned CG needs more products as the cell grows (its condition
    number grows as L^2 through the long-wave charge modes); with those modes in the
    preconditioner the count grows far less (bulk: by 2 from 40 to 625 atoms, where
    Jacobi's doubles), and the charges are the dense solve's."""
    small, large = ((cspbi3((2, 2, 2), rattle=0.05), cspbi3((5, 5, 5), rattle=0.05)) if family == "periodic"
                    else (_rp1_slab(3), _rp1_slab(10)))
    counts = {}
    for long_waves in (False, True):
        for name, atoms in (("small", small), ("large", large)):
            products, charges, dense = _products(atoms, family, long_waves)
            torch.testing.assert_close(charges, dense, rtol=0, atol=2e-5)  # the mesh's accuracy
            counts[long_waves, name] = products
    jacobi_growth = counts[False, "large"] - counts[False, "small"]
    assert jacobi_growth >= 10  # what the preconditioner is for
    assert counts[True, "large"] - counts[True, "small"] <= 0.5 * jacobi_growth
    assert counts[True, "large"] <= 0.7 * counts[False, "large"]


def test_long_wave_preconditioner_stays_positive_definite_where_the_waves_overlap():
    """Atoms filling a small part of a periodic box: the plane waves over them are far
    from orthogonal, the diagonal Woodbury inner matrix overshoots, and the correction is
    scaled back; the preconditioner stays symmetric positive definite and the solve, with a
    total charge, converges to the dense charges."""
    from hipqeq.qeq.solvers import two_level_preconditioner

    atoms = cspbi3((3, 3, 3), rattle=0.05)
    atoms.set_cell(atoms.cell.array * 2.0, scale_atoms=False)  # a block of atoms in 1/8 of a 38 A box
    products, charges, dense = _products(atoms, "periodic", True, total_charge=1.0)
    torch.testing.assert_close(charges, dense, rtol=0, atol=2e-5)
    chi, hardness, sigma = (torch.tensor(x) for x in parameters(atoms))
    positions, cell = torch.tensor(atoms.positions), torch.tensor(atoms.cell.array)
    operator = CoulombOperator(positions, sigma, cell, "periodic", method="p3m")
    modes = operator.long_wave_modes(positions, sigma, cell, hardness)
    inverse_diagonal = 1.0 / (operator.diagonal_estimate(sigma) + hardness)
    columns, couplings = modes.columns, modes.couplings
    weighted = inverse_diagonal[:, None] * columns
    unscaled = 1.0 / (1.0 / couplings + (weighted * columns).sum(0))
    overlap = torch.linalg.eigvalsh(unscaled.sqrt()[:, None] * (weighted.T @ columns) * unscaled.sqrt()[None, :])
    assert overlap.max() > 1.0  # the unscaled diagonal approximation would be indefinite here
    precondition = two_level_preconditioner(inverse_diagonal, modes)
    matrix = torch.stack([precondition(e) for e in torch.eye(len(atoms), dtype=F64)], dim=1)
    torch.testing.assert_close(matrix, matrix.T, rtol=0, atol=1e-12)
    assert float(torch.linalg.eigvalsh(matrix).min()) > 0
