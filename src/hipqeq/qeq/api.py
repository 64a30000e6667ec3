"""Convenience entry point: charge equilibration of one ``ase.Atoms`` with numpy in and out."""

from __future__ import annotations

import numpy as np
import torch

from hipqeq.errors import HipqeqError
from hipqeq.qeq.coulomb import DEFAULT_BACKGROUND, CoulombOperator, boundary_from_pbc, coulomb_matrix
from hipqeq.qeq.ewald import DEFAULT_TOLERANCE
from hipqeq.qeq.solvers import solve_dense, solve_iterative


def _per_atom(values, n_atoms: int, name: str) -> torch.Tensor:
    """A float64 tensor with one value per atom; a scalar applies to every atom."""
    array = np.array(values, dtype=np.float64)  # a copy: the caller's array stays untouched
    if array.ndim == 0:
        array = np.full(n_atoms, float(array))
    if array.shape != (n_atoms,) or not np.all(np.isfinite(array)):
        raise HipqeqError(f"{name} must be {n_atoms} finite values (one per atom), got shape {array.shape}")
    return torch.from_numpy(array)


def equilibrate(
    atoms,
    chi,
    hardness,
    sigma,
    total_charge: float = 0.0,
    tolerance: float = DEFAULT_TOLERANCE,
    solver: str = "dense",
    initial_charges=None,
) -> tuple[np.ndarray, float]:
    r"""Solve the Gaussian-charge QEq of one structure (float64, CPU).

    :param atoms: ``ase.Atoms``; its ``pbc`` picks the boundary: (F,F,F) open, (T,T,T)
        periodic, (T,T,F) slab with vacuum along the third cell vector. Other
        combinations raise :class:`hipqeq.errors.HipqeqError`.
    :param chi: electronegativities :math:`\chi_i`, eV/e, one per atom (or a scalar).
    :param hardness: :math:`J_i`, eV/e^2, one per atom (or a scalar).
    :param sigma: Gaussian widths :math:`\sigma_i`, Angstrom, one per atom (or a scalar).
    :param total_charge: :math:`Q`, e.
    :param tolerance: accuracy of the periodic sums and of the iterative solve.
    :param solver: ``"dense"`` (bordered solve, up to a few thousand atoms) or
        ``"iterative"`` (projected CG with PME potentials for periodic and slab cells).
    :param initial_charges: warm start for the iterative solver, e.
    :return: charges (n_atoms,) in e, summing to ``total_charge``, and
        :math:`E_{\mathrm{elec}}(q^*) = \tfrac12 q^{*\mathsf T} A q^*` in eV.
    """
    boundary = boundary_from_pbc(atoms.pbc)
    n_atoms = len(atoms)
    if n_atoms == 0:
        raise HipqeqError("cannot equilibrate charges of an empty structure")
    chi_t = _per_atom(chi, n_atoms, "chi")
    hardness_t = _per_atom(hardness, n_atoms, "hardness")
    sigma_t = _per_atom(sigma, n_atoms, "sigma")
    if bool((sigma_t <= 0).any()):
        raise HipqeqError("sigma (Gaussian widths) must be positive")
    positions = torch.as_tensor(np.array(atoms.positions, dtype=np.float64))
    cell = None if boundary == "open" else torch.as_tensor(np.array(atoms.cell.array, dtype=np.float64))
    with torch.no_grad():
        if solver == "dense":
            matrix = coulomb_matrix(positions, sigma_t, cell, boundary, tolerance)
            charges = solve_dense(matrix, chi_t, hardness_t, total_charge)
            potential = matrix @ charges
        elif solver == "iterative":
            operator = CoulombOperator(positions, sigma_t, cell, boundary, tolerance, method="pme")
            initial = None if initial_charges is None else _per_atom(initial_charges, n_atoms, "initial_charges")
            charges, _ = solve_iterative(
                operator.matvec,
                (positions, sigma_t, cell),
                chi_t,
                hardness_t,
                operator.diagonal_estimate(sigma_t),
                total_charge,
                initial=initial,
                tolerance=tolerance,
                long_waves=operator.long_wave_modes(positions, sigma_t, cell, hardness_t),
            )
            potential = operator.matvec(charges, positions, sigma_t, cell)
        else:
            raise HipqeqError(f"solver must be 'dense' or 'iterative', got {solver!r}")
    return charges.numpy(), float(0.5 * (charges * potential).sum())


def fixed_charge_electrostatics(atoms, charges, sigma, tolerance: float = DEFAULT_TOLERANCE,
                                background: str = DEFAULT_BACKGROUND) -> tuple[float, np.ndarray]:
    r"""Coulomb energy and forces of given charges (no equilibration; float64, CPU, dense).

    What a label's own charges contribute to it, e.g. to see which part of a label's
    dependence on the cell is electrostatic.

    :param atoms: ``ase.Atoms``; its ``pbc`` picks the boundary as in :func:`equilibrate`
        (a charged cell has the neutralising background).
    :param charges: e, one per atom.
    :param sigma: Gaussian widths, Angstrom, one per atom (or a scalar).
    :param tolerance: accuracy of the periodic sums.
    :param background: a charged periodic cell's background convention (:mod:`hipqeq.qeq.coulomb`).
    :return: :math:`E_{\mathrm{elec}} = \tfrac12 q^{\mathsf T} A q` in eV and the forces
        :math:`-\partial E_{\mathrm{elec}} / \partial R` at fixed charges, (n_atoms, 3) eV/Angstrom.
    """
    boundary = boundary_from_pbc(atoms.pbc)
    n_atoms = len(atoms)
    charges_t = _per_atom(charges, n_atoms, "charges")
    sigma_t = _per_atom(sigma, n_atoms, "sigma")
    positions = torch.tensor(np.array(atoms.positions, dtype=np.float64), requires_grad=True)
    cell = None if boundary == "open" else torch.as_tensor(np.array(atoms.cell.array, dtype=np.float64))
    matrix = coulomb_matrix(positions, sigma_t, cell, boundary, tolerance, background=background)
    energy = 0.5 * charges_t @ matrix @ charges_t
    (gradient,) = torch.autograd.grad(energy, positions)
    return float(energy.detach()), -gradient.numpy()
