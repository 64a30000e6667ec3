r"""Charge-equilibration solvers: minimise :math:`E_{\mathrm{QEq}}` at fixed total charge.

.. math::

    E_{\mathrm{QEq}}(q) = \tfrac12 q^{\mathsf T} A q + \sum_i \big(\chi_i q_i + \tfrac12 J_i q_i^2\big),
    \qquad \sum_i q_i = Q

Stationarity with a Lagrange multiplier :math:`\lambda` gives the bordered system

.. math::

    \begin{pmatrix} H & \mathbf 1 \\ \mathbf 1^{\mathsf T} & 0 \end{pmatrix}
    \begin{pmatrix} q \\ \lambda \end{pmatrix}
    = \begin{pmatrix} -\chi \\ Q \end{pmatrix},
    \qquad H = A + \operatorname{diag}(J)

Units: :math:`A, J` in eV/e^2, :math:`\chi, \lambda` in eV/e, :math:`q, Q` in e.

- :func:`solve_dense` factorises the bordered matrix (``torch.linalg.solve``, batched,
  differentiable to any order through autograd).
- :func:`solve_iterative` runs a projected preconditioned conjugate gradient that never
  forms :math:`A` (Gould, Hribar and Nocedal, SIAM J. Sci. Comput. 23, 1376 (2001)): every
  iterate satisfies the constraint, the search directions lie in
  :math:`\mathbf 1^{\mathsf T} p = 0`, and the matrix-vector product is a PME/Ewald
  potential evaluation. Its gradient uses the implicit function theorem (one adjoint
  solve of the same system, see :class:`_ImplicitSolve`), to any order. Its
  preconditioner is Jacobi plus, for periodic cells and slabs, the long-wavelength
  charge modes in closed form (:func:`two_level_preconditioner`), which keeps the
  iteration count from growing with the cell as the Jacobi one does.

Both finish by adding :math:`(Q - \sum_i q_i)/N` to every charge, so the constraint holds to
rounding (the solve leaves a residual of its own accuracy; this is a projection, not a
penalty).

Forces and the variational property: at the solution, :math:`\partial E_{\mathrm{QEq}} /
\partial q = -\lambda \mathbf 1`, and :math:`\mathbf 1^{\mathsf T} \mathrm dq^* = 0`, so

.. math::

    \frac{\mathrm d E_{\mathrm{QEq}}(q^*(R), R)}{\mathrm d R}
    = \frac{\partial E_{\mathrm{QEq}}}{\partial R}\Big|_{q = q^*}

(including the dependence of :math:`\chi` on :math:`R` through a network): forces of the
QEq energy can be taken with the charges detached. :math:`E_{\mathrm{elec}}(q^*)` alone is
*not* stationary; its forces need :math:`\mathrm dq^*/\mathrm dR`, which both solvers
provide through autograd.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from hipqeq.errors import HipqeqError
from hipqeq.qeq.coulomb import LongWaveModes


class QEqNotConverged(HipqeqError):
    """The iterative charge-equilibration solve did not reach its tolerance."""


def _enforce_total_charge(charges, total_charge, atom_mask=None):
    """Add the same amount to each (real) atom so that the charges sum to ``total_charge``."""
    if atom_mask is None:
        return charges + (total_charge - charges.sum(-1))[..., None] / charges.shape[-1]
    weights = atom_mask.to(charges.dtype)
    missing = total_charge - (charges * weights).sum(-1)
    return charges + missing[..., None] * weights / weights.sum(-1, keepdim=True)


def solve_dense(
    matrix: torch.Tensor,
    electronegativity: torch.Tensor,
    hardness: torch.Tensor,
    total_charge: torch.Tensor | float = 0.0,
    atom_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Charges from the bordered linear system, for one system or a padded batch.

    :param matrix: (..., n, n) Coulomb matrix :math:`A`, eV/e^2.
    :param electronegativity: (..., n) :math:`\\chi`, eV/e.
    :param hardness: (..., n) :math:`J`, eV/e^2.
    :param total_charge: (...) or scalar :math:`Q`, e.
    :param atom_mask: (..., n) bool, False for padding atoms (their charge is 0 and they
        take no part in the constraint); ``None`` means all real.
    :return: (..., n) charges, e; differentiable in every input through autograd.
    """
    n = matrix.shape[-1]
    dtype, device = matrix.dtype, matrix.device
    total_charge = torch.as_tensor(total_charge, dtype=dtype, device=device).expand(matrix.shape[:-2])
    ones = torch.ones(matrix.shape[:-1], dtype=dtype, device=device)
    if atom_mask is not None:
        ones = atom_mask.to(dtype)
    hessian = matrix + torch.diag_embed(hardness)
    if atom_mask is not None:
        # Padding rows/columns become identity rows with zero right-hand side: q = 0.
        pair_mask = atom_mask[..., :, None] & atom_mask[..., None, :]
        hessian = torch.where(pair_mask, hessian, torch.diag_embed(1.0 - ones))
    corner = torch.zeros((*matrix.shape[:-2], 1), dtype=dtype, device=device)
    bordered = torch.cat(
        [
            torch.cat([hessian, ones[..., :, None]], dim=-1),
            torch.cat([ones, corner], dim=-1)[..., None, :],
        ],
        dim=-2,
    )
    rhs = torch.cat([-electronegativity * ones, total_charge[..., None]], dim=-1)
    solution = torch.linalg.solve(bordered, rhs)
    return _enforce_total_charge(solution[..., :n], total_charge, atom_mask)


def _projected_pcg(
    hessian_matvec: Callable[[torch.Tensor], torch.Tensor],
    linear: torch.Tensor,
    precondition: Callable[[torch.Tensor], torch.Tensor],
    total_charge: float,
    initial: torch.Tensor | None,
    tolerance: float,
    max_iterations: int,
) -> tuple[torch.Tensor, int]:
    r"""Minimise :math:`\tfrac12 q^{\mathsf T} H q + c^{\mathsf T} q` s.t. :math:`\mathbf 1^{\mathsf T} q = Q`.

    The preconditioned projection
    :math:`P = M^{-1} - M^{-1}\mathbf 1 (\mathbf 1^{\mathsf T} M^{-1} \mathbf 1)^{-1} \mathbf 1^{\mathsf T} M^{-1}`
    (``precondition`` applies the symmetric positive definite :math:`M^{-1}`) keeps
    every search direction in the constraint's null space. Stops when the KKT
    residual :math:`\| H q + c + \lambda \mathbf 1 \|_2` (with the best :math:`\lambda`)
    falls below ``tolerance`` times that of the cold start :math:`q = Q/N`.
    :return: charges and the number of matrix-vector products.
    """
    n = linear.shape[0]
    weights = precondition(torch.ones_like(linear))  # M^-1 1
    total_weight = weights.sum()

    def project(vector):
        return precondition(vector) - weights * ((weights * vector).sum() / total_weight)

    def without_multiplier(gradient):
        # Remove the constraint-normal part lambda 1 (P 1 = 0, so iterates are unchanged in
        # exact arithmetic); otherwise it grows and the projections lose all precision
        # ("residual update" of Gould, Hribar and Nocedal).
        return gradient - (weights * gradient).sum() / total_weight

    def kkt_residual_norm(gradient):
        return torch.linalg.norm(without_multiplier(gradient))

    cold = torch.full_like(linear, total_charge / n)
    scale = kkt_residual_norm(hessian_matvec(cold) + linear)
    products = 1
    if scale == 0:
        return cold, products
    charges = cold if initial is None else _enforce_total_charge(initial.detach().to(linear), total_charge)
    gradient = without_multiplier(hessian_matvec(charges) + linear)
    products += 1
    projected = project(gradient)
    direction = -projected
    curvature_product = (gradient * projected).sum()
    for _ in range(max_iterations):
        if kkt_residual_norm(gradient) <= tolerance * scale:
            return charges, products
        curved = hessian_matvec(direction)
        products += 1
        step = curvature_product / (direction * curved).sum()
        charges = charges + step * direction
        gradient = without_multiplier(gradient + step * curved)
        projected = project(gradient)
        new_product = (gradient * projected).sum()
        direction = -projected + (new_product / curvature_product) * direction
        curvature_product = new_product
    if kkt_residual_norm(gradient) <= tolerance * scale:
        return charges, products
    raise QEqNotConverged(
        f"projected CG did not converge in {max_iterations} iterations: relative KKT "
        f"residual {float(kkt_residual_norm(gradient) / scale):.3e} > tolerance {tolerance:.1e}"
    )


#: Largest eigenvalue allowed for the long-wave correction of the preconditioner
#: (below 1 keeps :math:`M^{-1}` positive definite), and the power iterations that estimate it.
_CORRECTION_BOUND = 0.9
_POWER_ITERATIONS = 30


def two_level_preconditioner(inverse_diagonal: torch.Tensor, long_waves: LongWaveModes | None
                             ) -> Callable[[torch.Tensor], torch.Tensor]:
    r""":math:`v \mapsto M^{-1} v` for :math:`M = D + Z \operatorname{diag}(\gamma) Z^{\mathsf T}`:
    the Jacobi diagonal :math:`D` plus the long-wave part of the Coulomb matrix
    (:class:`~hipqeq.qeq.coulomb.LongWaveModes`), the modes that make :math:`D^{-1}H`
    ill-conditioned, so that PCG's iteration count stops growing with the cell.

    By Woodbury, :math:`M^{-1} = D^{-1} - D^{-1} Z (\Gamma^{-1} + Z^{\mathsf T} D^{-1} Z)^{-1}
    Z^{\mathsf T} D^{-1}`; plane waves over atoms that fill the cell (or, for slabs, its
    plane) are nearly :math:`D^{-1}`-orthogonal, so the inner matrix is taken diagonal,
    :math:`\Lambda_k = 1 / (\gamma_k^{-1} + \sum_i z_{ik}^2 / D_i)`: each application costs
    two (n, m) products, no factorisation. Where the waves overlap (atoms filling little
    of the cell) that approximation could make :math:`M^{-1}` indefinite: :math:`\Lambda` is
    scaled so that the correction's largest eigenvalue (power iteration) stays below
    :data:`_CORRECTION_BOUND`. It only changes how fast CG converges, never its answer.

    :param inverse_diagonal: (n,) :math:`1/D_i`, e^2/eV.
    :param long_waves: the modes, or ``None`` for Jacobi alone.
    """
    if long_waves is None:
        return lambda vector: inverse_diagonal * vector
    columns = long_waves.columns.to(inverse_diagonal)
    weighted = inverse_diagonal[:, None] * columns
    inner = 1.0 / (1.0 / long_waves.couplings.to(inverse_diagonal) + (weighted * columns).sum(0))
    scale = inner.sqrt()

    def correction(vector):  # Lambda^1/2 Z^T D^-1 Z Lambda^1/2, symmetric positive semidefinite
        return scale * (weighted.T @ (columns @ (scale * vector)))

    largest = _largest_eigenvalue(correction, inner)
    if largest > _CORRECTION_BOUND:
        inner = inner * (_CORRECTION_BOUND / largest)

    def precondition(vector):
        return inverse_diagonal * vector - weighted @ (inner * (weighted.T @ vector))

    return precondition


def _largest_eigenvalue(operator: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor) -> float:
    """Power iteration's Rayleigh quotient of a symmetric positive semidefinite ``operator``,
    raised by 5 % for the iteration's underestimate."""
    vector = torch.ones_like(like) / like.shape[0] ** 0.5
    estimate = 0.0
    for _ in range(_POWER_ITERATIONS):
        image = operator(vector)
        estimate = float((vector * image).sum())
        norm = torch.linalg.norm(image)
        if norm == 0:
            return 0.0
        vector = image / norm
    return 1.05 * estimate


class _ImplicitSolve(torch.autograd.Function):
    r"""Iterative QEq solve with implicit-function-theorem gradients, to any order.

    With the adjoint :math:`(u, \nu)` solving
    :math:`H u + \nu \mathbf 1 = \bar q,\ \mathbf 1^{\mathsf T} u = 0` for the incoming
    gradient :math:`\bar q`:

    .. math::

        \bar\chi = -u, \qquad \bar J_i = -u_i q_i, \qquad
        \bar\theta = -\frac{\partial}{\partial\theta}\big(u^{\mathsf T} A(\theta)\, q\big)

    for every operand :math:`\theta` of the matrix-vector product (positions, sigma,
    cell); the last term is one autograd pass through a single potential evaluation.
    The adjoint is itself a QEq solve (electronegativities :math:`-\bar q`, total
    charge 0) through this same function, and the backward pass is written in
    differentiable operations, so second derivatives (Hessians, force losses trained
    with a double backward) are exact as well: each further order costs one more solve.
    """

    @staticmethod
    def forward(ctx, matvec, options, electronegativity, hardness, initial, *operands):
        def hessian_matvec(vector):
            return matvec(vector, *operands) + hardness * vector

        # The adjoint solve of the backward pass has the same matrix: it inherits the
        # preconditioner through the options rather than building it again.
        if "precondition" not in options:
            options["precondition"] = two_level_preconditioner(1.0 / (options["diagonal"] + hardness.detach()),
                                                               options["long_waves"])
        charges, products = _projected_pcg(
            hessian_matvec,
            electronegativity.detach(),
            options["precondition"],
            options["total_charge"],
            initial,
            options["tolerance"],
            options["max_iterations"],
        )
        options["products"] = products
        ctx.matvec, ctx.options = matvec, options
        ctx.save_for_backward(charges, hardness, *operands)
        return charges

    @staticmethod
    def backward(ctx, grad_charges):
        charges, hardness, *operands = ctx.saved_tensors
        options, matvec = ctx.options, ctx.matvec
        # Under create_graph (double backward) grad mode is on here: keep every product
        # differentiable; otherwise work on detached copies and build no graph.
        higher_order = torch.is_grad_enabled()
        adjoint_options = {**options, "total_charge": 0.0, "warm_adjoint": None}
        store = options.get("warm_adjoint")
        start = None if store is None else store.get("adjoint")
        if start is not None and start.shape != grad_charges.shape:
            start = None
        adjoint = _ImplicitSolve.apply(matvec, adjoint_options, -grad_charges, hardness, start, *operands)
        if store is not None:
            store.update(adjoint=adjoint.detach(), products=adjoint_options["products"])
        grad_operands = [None] * len(operands)
        wanted = [i for i, operand in enumerate(operands) if ctx.needs_input_grad[5 + i]]
        if wanted:
            with torch.enable_grad():
                if higher_order:
                    # Aliases: the partial derivative in theta at fixed u and q (autograd
                    # only walks paths that reach the aliases, never back into this solve),
                    # still connected to theta, u and q for the next order.
                    leaves = [operand.view_as(operand) if i in wanted else operand
                              for i, operand in enumerate(operands)]
                else:
                    leaves = [None if operand is None else operand.detach().requires_grad_(i in wanted)
                              for i, operand in enumerate(operands)]
                    charges, adjoint = charges.detach(), adjoint.detach()
                bilinear = (adjoint * matvec(charges, *leaves)).sum()
                grads = torch.autograd.grad(bilinear, [leaves[i] for i in wanted], allow_unused=True,
                                            create_graph=higher_order)
            for i, grad in zip(wanted, grads):
                grad_operands[i] = None if grad is None else -grad
        return (None, None, -adjoint, -adjoint * charges, None, *grad_operands)


def solve_iterative(
    matvec: Callable[..., torch.Tensor],
    operands: Sequence[torch.Tensor],
    electronegativity: torch.Tensor,
    hardness: torch.Tensor,
    diagonal: torch.Tensor,
    total_charge: float = 0.0,
    initial: torch.Tensor | None = None,
    tolerance: float = 1e-8,
    max_iterations: int = 1000,
    warm_adjoint: dict | None = None,
    long_waves: LongWaveModes | None = None,
) -> tuple[torch.Tensor, int]:
    r"""Charges of one system by projected preconditioned CG, warm-startable.

    :param matvec: ``matvec(charges, *operands) -> A q`` (eV/e), e.g.
        :meth:`hipqeq.qeq.coulomb.CoulombOperator.matvec`.
    :param operands: tensors ``matvec`` depends on (positions, sigma, cell); gradients
        flow to them through the implicit function theorem.
    :param electronegativity: (n,) :math:`\chi`, eV/e.
    :param hardness: (n,) :math:`J`, eV/e^2.
    :param diagonal: (n,) estimate of :math:`\operatorname{diag} A` (eV/e^2) for the
        Jacobi preconditioner :math:`D = \operatorname{diag}(A) + J`.
    :param total_charge: :math:`Q`, e.
    :param initial: (n,) warm-start charges (e.g. the previous MD step's); shifted onto
        the constraint first.
    :param tolerance: relative KKT residual at which to stop; raised to 50 machine
        epsilons of the dtype (float32 cannot go below about 1e-5).
    :param max_iterations: CG iteration limit; :class:`QEqNotConverged` beyond it.
    :param warm_adjoint: a dict that warm-starts the adjoint solve of the backward pass
        as ``initial`` does the charges: its ``"adjoint"`` (when the shape fits) starts
        that solve, which writes its solution back (consecutive MD steps' adjoints are as
        close as their charges), with the products it used (``"products"``). The stopping
        test is relative to a cold start either way.
    :param long_waves: the long-wavelength part of :math:`A` in closed form
        (:meth:`hipqeq.qeq.coulomb.CoulombOperator.long_wave_modes`), which makes the
        preconditioner two-level (:func:`two_level_preconditioner`): the iterations then
        no longer grow with the cell. ``None``: Jacobi alone.
    :return: charges (n,) in e, and the number of matrix-vector products used.
    """
    tolerance = max(tolerance, 50.0 * torch.finfo(electronegativity.dtype).eps)
    options = {
        "diagonal": diagonal.detach(),
        "total_charge": float(total_charge),
        "tolerance": tolerance,
        "max_iterations": max_iterations,
        "warm_adjoint": warm_adjoint,
        "long_waves": long_waves,
    }
    charges = _ImplicitSolve.apply(matvec, options, electronegativity, hardness, initial, *operands)
    return _enforce_total_charge(charges, float(total_charge)), options["products"]
