"""Pieces of shadow QEq: the linearised step, the Krylov kernel, the extended-Lagrangian step."""

from __future__ import annotations

import pytest
import torch

from hipqeq.errors import HipqeqError
from hipqeq.qeq.shadow import (
    XL_COEFFICIENTS,
    ExtendedLagrangianCharges,
    charge_response,
    diagonal_constrained_minimum,
    krylov_kernel,
)


def random_problem(n: int = 7, seed: int = 0):
    """A symmetric positive definite 'Coulomb' matrix (eV/e^2) and hardness (eV/e^2)."""
    generator = torch.Generator().manual_seed(seed)
    root = torch.randn(n, n, generator=generator, dtype=torch.float64)
    coulomb = root @ root.T + 3.0 * torch.eye(n, dtype=torch.float64)
    hardness = 2.0 + torch.rand(n, generator=generator, dtype=torch.float64) * 5.0
    return coulomb, hardness, generator


def test_linearised_step_is_the_constrained_minimum():
    """KKT: the sum is exact and the gradient a + J x is the same on every atom."""
    _, hardness, generator = random_problem()
    linear = torch.randn(7, generator=generator, dtype=torch.float64)
    x = diagonal_constrained_minimum(linear, hardness, 1.5)
    assert float(x.sum()) == pytest.approx(1.5, abs=1e-14)
    gradient = linear + hardness * x
    assert float(gradient.max() - gradient.min()) < 1e-12


def test_full_rank_krylov_kernel_inverts_the_response():
    """With as many ranks as the sum-zero subspace has dimensions, the kernel applied to a
    residual f is exactly x with (I - J) x = f, sum x = 0 (J the linearised step's
    response), for each of two columns at once."""
    coulomb, hardness, generator = random_problem()
    n = hardness.shape[0]
    response = charge_response(lambda v: coulomb @ v, hardness)
    residuals = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    residuals = residuals - residuals.mean(0)
    preconditioner = hardness / (hardness + torch.diagonal(coulomb))
    kernel, rank = krylov_kernel(residuals, response, preconditioner, max_rank=n - 1, tolerance=0.0)
    assert rank == n - 1
    projector = torch.eye(n, dtype=torch.float64) - 1.0 / n
    operator = torch.eye(n, dtype=torch.float64) - response(projector)
    system = torch.cat([operator, torch.ones(1, n, dtype=torch.float64)])
    exact = torch.linalg.lstsq(system, torch.cat([residuals, torch.zeros(1, 2, dtype=torch.float64)])).solution
    torch.testing.assert_close(kernel, exact, atol=1e-9, rtol=0)
    assert float(kernel.sum(0).abs().max()) < 1e-12
    # a loose tolerance stops earlier and gives an approximation of the same direction
    rough, rough_rank = krylov_kernel(residuals, response, preconditioner, max_rank=n - 1, tolerance=0.5)
    assert rough_rank < n - 1
    assert float(torch.nn.functional.cosine_similarity(rough, exact, dim=0).min()) > 0.8


def test_extended_lagrangian_step_keeps_the_sums_and_the_fixed_point():
    """Charges keep their total Q and the adjoint 0 through steps with arbitrary (sum-zero)
    kernel residuals; at rest with zero residuals nothing moves."""
    dynamics = ExtendedLagrangianCharges(order=5)
    assert dynamics.auxiliary(advance=True) is None
    start = torch.stack([torch.tensor([0.7, -0.2, 0.5], dtype=torch.float64),
                         torch.tensor([0.1, -0.3, 0.2], dtype=torch.float64)], dim=1)
    dynamics.observe(start, torch.zeros_like(start), lambda v: torch.zeros_like(v), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(dynamics.auxiliary(advance=True), start, atol=1e-15, rtol=0)
    generator = torch.Generator().manual_seed(3)
    for _ in range(20):
        residual = torch.randn(3, 2, generator=generator, dtype=torch.float64)
        dynamics.kernel_residuals = residual - residual.mean(0)
        following = dynamics.auxiliary(advance=True)
        torch.testing.assert_close(following.sum(0), torch.tensor([1.0, 0.0], dtype=torch.float64),
                                   atol=1e-13, rtol=0)
    assert not torch.allclose(following, start)


def test_dissipation_coefficients_and_bad_settings():
    for kappa, alpha, coefficients in XL_COEFFICIENTS.values():
        assert sum(coefficients) == 0 and 0 < alpha < 1 and 1 < kappa < 2
    with pytest.raises(HipqeqError, match="order"):
        ExtendedLagrangianCharges(order=2)
    with pytest.raises(HipqeqError, match="rank"):
        ExtendedLagrangianCharges(kernel_rank=0)
