r"""Shadow (extended-Lagrangian) charge equilibration for molecular dynamics.

A full QEq solve per MD step costs tens of Coulomb matrix-vector products, and the
forces of the 4G energy :math:`G(R, q^*) = E_\mathrm{short}(R, q^*) + \tfrac12 q^{*\mathsf T} C q^*`
need as many again for the adjoint solve (:math:`G` is not the minimised functional
:math:`E_\mathrm{QEq}`). Extended-Lagrangian Born-Oppenheimer MD (Niklasson, Phys. Rev.
Lett. 100, 123004 (2008); the "shadow" form: Niklasson, J. Chem. Phys. 147, 054103
(2017); for charge equilibration: Goff, Zhang, Negre, Rohskopf and Niklasson, J. Chem.
Theory Comput. 19, 4255 (2023)) instead carries auxiliary variables with the nuclei and
replaces the solves by one linearised step around them. Here there are two: auxiliary
charges :math:`n` (:math:`\sum n = Q`) and an auxiliary adjoint :math:`m`
(:math:`\sum m = 0`), the Lagrange multipliers that make :math:`G` stationary.

**Shadow Lagrangian.** With :math:`C` the Coulomb matrix, :math:`U = \operatorname{diag}(J)`
the hardness, :math:`\chi(R)` the electronegativities and :math:`\phi_n = C n`,
:math:`\phi_m = C m` (one Coulomb product of two columns), the Coulomb terms of the
exact Lagrangian :math:`G(R, q) + z^{\mathsf T}[(C + U) q + \chi]` are linearised around
:math:`(n, m)`:

.. math::

    \Lambda(R, q, z; n, m) = E_\mathrm{short}(R, q) + q^{\mathsf T}\phi_n - \tfrac12 n^{\mathsf T}\phi_n
        + (z - m)^{\mathsf T}\phi_n + q^{\mathsf T}\phi_m + z^{\mathsf T}(U q + \chi)

It is linear in :math:`z`, and its stationary point in :math:`(q, z)` is one linearised
step from the auxiliaries (no solve; the hardness is diagonal):

.. math::

    q[n] = \operatorname*{arg\,min}_{\sum q = Q} \chi^{\mathsf T} q + \tfrac12 q^{\mathsf T} U q + q^{\mathsf T}\phi_n,
    \qquad
    z[n, m] = -U^{-1}\big(\partial_q E_\mathrm{short}(R, q[n]) + \phi_n + \phi_m + \nu\big),\ \sum z = 0

The shadow potential energy is :math:`\mathcal U(R, n, m) = \Lambda(R, q[n], z[n, m]; n, m)`.
Because :math:`\Lambda` is stationary in :math:`q` and :math:`z` there, its gradient at
fixed auxiliaries is the explicit partial derivative (no :math:`\mathrm dq/\mathrm dR`):

.. math::

    \mathbf F = -\frac{\partial \Lambda}{\partial R}\Big|_{q, z, n, m}

so the forces are exact gradients of the shadow energy, and
:math:`\partial\mathcal U / \partial n = C(q[n] - n + z - m)`,
:math:`\partial\mathcal U / \partial m = C(q[n] - n)` are first order in the residuals:
:math:`\mathcal U` + kinetic energy is the conserved shadow Hamiltonian. At the
converged point (:math:`n = q^*`, :math:`m = z^*`) :math:`\mathcal U = G(R, q^*)`; near it
the difference is second order in :math:`q[n] - n` and :math:`z - m`.

**Propagation** (:class:`ExtendedLagrangianCharges`). Both auxiliaries follow
:math:`\ddot x = \omega^2 K (x[\cdot] - x)` with the kernel :math:`K \approx (I - \mathcal J)^{-1}`,
:math:`\mathcal J = \partial q[n] / \partial n = \partial z / \partial m = -U^{-1} P C`
(:math:`P` keeps the sums), integrated by the time-reversible Verlet scheme with
dissipation of Niklasson, Steneteg, Odell, Bock, Challacombe, Tymczak, Holmstrom, Zheng
and Weber, J. Chem. Phys. 130, 214109 (2009), Table I:

.. math::

    x_{k+1} = 2 x_k - x_{k-1} + \kappa K (x[\cdot]_k - x_k) + \alpha \sum_{l=0}^{K} c_l\, x_{k-l}

(:data:`XL_COEFFICIENTS`, :math:`\kappa = \omega^2 \delta t^2`). The kernel is Niklasson's
low-rank Krylov approximation (J. Chem. Phys. 152, 104103 (2020)) over the Jacobi
preconditioner :math:`K_0 = (I + U^{-1}\operatorname{diag} C)^{-1}`, one Coulomb product
per rank (:func:`krylov_kernel`). The coefficients :math:`c_l` sum to zero, so
:math:`\sum n = Q` and :math:`\sum m = 0` are kept exactly (and re-imposed against
rounding), and :math:`\sum q[n] = Q` holds by construction at every step.

Units: charges e, potentials eV/e, :math:`C, U` eV/e^2, energies eV.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import torch

from hipqeq.errors import HipqeqError

#: Dissipation order K -> (kappa, alpha, (c_0 .. c_K)): Niklasson et al., J. Chem. Phys.
#: 130, 214109 (2009), Table I.
XL_COEFFICIENTS: dict[int, tuple[float, float, tuple[int, ...]]] = {
    3: (1.69, 0.150, (-2, 3, 0, -1)),
    4: (1.75, 0.057, (-3, 6, -2, -2, 1)),
    5: (1.82, 0.018, (-6, 14, -8, -3, 4, -1)),
    6: (1.84, 0.0055, (-14, 36, -27, -2, 12, -6, 1)),
    7: (1.86, 0.0016, (-36, 99, -88, 11, 32, -25, 8, -1)),
}


def diagonal_constrained_minimum(linear: torch.Tensor, hardness: torch.Tensor, total: float | torch.Tensor
                                 ) -> torch.Tensor:
    r"""Minimiser of :math:`\sum_i (a_i x_i + \tfrac12 J_i x_i^2)` subject to
    :math:`\sum_i x_i = T`: :math:`x = -(a + \mu)/J` with :math:`\mu` fixing the sum.

    :param linear: (n,) or (n, c) :math:`a`, eV/e.
    :param hardness: (n,) :math:`J > 0`, eV/e^2.
    :param total: :math:`T`, e (per column when ``linear`` has columns).
    :return: same shape as ``linear``, e; the sum is exact up to rounding.
    """
    inverse = (1.0 / hardness).reshape(-1, *([1] * (linear.dim() - 1)))
    unconstrained = -linear * inverse
    shift = (total - unconstrained.sum(0)) / inverse.sum(0)
    return unconstrained + shift * inverse


def shadow_lagrangian(energy_short: torch.Tensor, electronegativity: torch.Tensor, hardness: torch.Tensor,
                      charges: torch.Tensor, adjoint: torch.Tensor, auxiliary_charges: torch.Tensor,
                      auxiliary_adjoint: torch.Tensor, potential_charges: torch.Tensor,
                      potential_adjoint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`\Lambda(R, q, z; n, m)` of the module docstring (eV), and its linearised
    electrostatic part :math:`q^{\mathsf T}\phi_n - \tfrac12 n^{\mathsf T}\phi_n` (eV).

    All per-atom arguments are (n_atoms,): ``charges`` q and ``adjoint`` z at the shadow
    stationary point (e; pass them detached, the forces are partial derivatives at fixed
    q, z), the auxiliaries n and m (e), ``potential_charges`` :math:`\phi_n = C n` and
    ``potential_adjoint`` :math:`\phi_m = C m` (eV/e, carrying the geometry's graph),
    ``electronegativity`` :math:`\chi` (eV/e) and ``hardness`` J (eV/e^2).
    """
    energy_elec = (charges * potential_charges).sum() - 0.5 * (auxiliary_charges * potential_charges).sum()
    coupling = ((adjoint - auxiliary_adjoint) * potential_charges).sum() + (charges * potential_adjoint).sum()
    stationarity = (adjoint * (hardness * charges + electronegativity)).sum()
    return energy_short + energy_elec + coupling + stationarity, energy_elec


def charge_response(coulomb: Callable[[torch.Tensor], torch.Tensor], hardness: torch.Tensor
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
    r""":math:`v \mapsto \mathcal J v = -U^{-1}(C v + \mu)` with :math:`\sum \mathcal J v = 0`:
    how the linearised charges :math:`q[n]` (and the adjoint :math:`z` in :math:`m`) move when
    the auxiliary moves by a sum-zero ``v``; ``coulomb(v)`` is :math:`C v` (n, c) in eV/e."""

    def respond(vectors: torch.Tensor) -> torch.Tensor:
        return diagonal_constrained_minimum(coulomb(vectors), hardness, 0.0)

    return respond


def krylov_kernel(residuals: torch.Tensor, response: Callable[[torch.Tensor], torch.Tensor],
                  preconditioner: torch.Tensor, max_rank: int, tolerance: float) -> tuple[torch.Tensor, int]:
    r"""Low-rank Krylov approximation of :math:`(I - \mathcal J)^{-1} f` per column of ``residuals``.

    Niklasson, J. Chem. Phys. 152, 104103 (2020): from :math:`v_1 \propto K_0 f`, build
    orthonormal :math:`V = [v_1 .. v_r]` with :math:`v_{k+1} \propto K_0 (\mathcal J - I) v_k`
    orthogonalised, :math:`W = K_0(\mathcal J - I) V`, and return :math:`V c` with
    :math:`c = -(W^{\mathsf T} W)^{-1} W^{\mathsf T} K_0 f`, which minimises
    :math:`\|K_0 f + W c\|`. Stops at ``max_rank`` or when that residual is below
    ``tolerance`` times :math:`\|K_0 f\|` for every column.

    :param residuals: (n, c) sum-zero columns :math:`f = x[\cdot] - x`, e.
    :param response: :math:`v \mapsto \mathcal J v` on (n, c) (:func:`charge_response`);
        one Coulomb product per rank.
    :param preconditioner: (n,) diagonal of :math:`K_0`, dimensionless.
    :return: (n, c) kernel times residual, sum-zero columns (e), and the rank used.
    """
    def precondition(vectors):
        scaled = preconditioner[:, None] * vectors
        return scaled - scaled.mean(0, keepdim=True)  # stay in the sum-zero subspace

    target = precondition(residuals)
    target_norm = torch.linalg.norm(target, dim=0)
    if bool((target_norm == 0).all()):
        return torch.zeros_like(residuals), 0
    basis, images = [], []
    direction = target
    coefficients = None
    for _ in range(max_rank):
        for previous in basis:
            direction = direction - (previous * direction).sum(0, keepdim=True) * previous
        norm = torch.linalg.norm(direction, dim=0, keepdim=True)
        direction = torch.where(norm > 0, direction / torch.where(norm > 0, norm, 1.0), 0.0)
        basis.append(direction)
        images.append(precondition(response(direction) - direction))
        stacked_images = torch.stack(images, dim=-1).permute(1, 0, 2)  # (c, n, r)
        gram = stacked_images.transpose(1, 2) @ stacked_images
        # A column whose Krylov space closed early has zero images: regularise its Gram
        # matrix on the diagonal (its coefficient for those directions is then 0).
        gram = gram + torch.diag_embed((torch.diagonal(gram, dim1=1, dim2=2) == 0).to(gram.dtype))
        coefficients = -torch.linalg.solve(gram, (stacked_images.transpose(1, 2) @ target.T[:, :, None]))
        misfit = torch.linalg.norm(target.T[:, :, None] + stacked_images @ coefficients, dim=1)[:, 0]
        if bool((misfit <= tolerance * target_norm).all()):
            break
        direction = images[-1]
    stacked_basis = torch.stack(basis, dim=-1).permute(1, 0, 2)  # (c, n, r)
    return (stacked_basis @ coefficients)[:, :, 0].T, len(basis)


class ExtendedLagrangianCharges:
    r"""Auxiliary charges :math:`n` and adjoint :math:`m` of one system through an MD run:
    their history, the dissipative Verlet step and the kernel (module docstring).

    Use: :meth:`auxiliary` before each evaluation of the shadow energy (``None`` at the
    start: the evaluation then begins at the converged charges), :meth:`observe` after it.

    :param order: dissipation order K, a key of :data:`XL_COEFFICIENTS`.
    :param kernel_rank: largest rank of the Krylov kernel (Coulomb products per step
        beyond the one of the energy).
    :param kernel_tolerance: relative misfit at which the kernel stops adding ranks.
    """

    def __init__(self, order: int = 5, kernel_rank: int = 2, kernel_tolerance: float = 0.1):
        if order not in XL_COEFFICIENTS:
            raise HipqeqError(f"shadow QEq dissipation order must be one of {sorted(XL_COEFFICIENTS)}, got {order}")
        if kernel_rank < 1:
            raise HipqeqError(f"shadow QEq kernel rank must be at least 1, got {kernel_rank}")
        self.kappa, self.alpha, coefficients = XL_COEFFICIENTS[order]
        self.coefficients = torch.tensor(coefficients, dtype=torch.float64)
        self.kernel_rank, self.kernel_tolerance = int(kernel_rank), float(kernel_tolerance)
        self.history: deque[torch.Tensor] = deque(maxlen=order + 1)
        self.kernel_residuals: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget the run: the next evaluation starts at converged charges."""
        self.history.clear()
        self.kernel_residuals = None

    def auxiliary(self, advance: bool) -> torch.Tensor | None:
        r"""(n_atoms, 2) auxiliaries (columns n, m; e) for the next evaluation: the next
        step's :math:`x_{k+1}` when ``advance`` (the atoms moved), else the latest again;
        ``None`` before the first :meth:`observe`."""
        if not self.history:
            return None
        if advance:
            self.history.append(self._step())
        return self.history[-1]

    def observe(self, auxiliary: torch.Tensor, residuals: torch.Tensor,
                response: Callable[[torch.Tensor], torch.Tensor], preconditioner: torch.Tensor) -> int:
        r"""Take an evaluation's auxiliaries (which start the history at rest on the first
        call), residuals :math:`(q[n] - n, z - m)` (n_atoms, 2) e, and its response map
        and preconditioner (:meth:`hipqeq.models.potential.Potential.forward_shadow`);
        computes the kernel for the next step. Returns the kernel's rank (its Coulomb
        products)."""
        if not self.history:
            self.history.extend([auxiliary.detach()] * self.history.maxlen)
        self.kernel_residuals, rank = krylov_kernel(residuals.detach(), response, preconditioner,
                                                    self.kernel_rank, self.kernel_tolerance)
        return rank

    def _step(self) -> torch.Tensor:
        latest = self.history[-1]
        coefficients = self.coefficients.to(latest)
        dissipation = sum(c * past for c, past in zip(coefficients, reversed(self.history)))
        following = (2.0 * latest - self.history[-2] + self.kappa * self.kernel_residuals
                     + self.alpha * dissipation)
        # The step keeps the sums (c sums to 0) in exact arithmetic; remove rounding drift.
        return following + (self.history[0].sum(0) - following.sum(0)) / following.shape[0]
