r"""The QEq layer: per-atom electronegativities in, charges and energies out.

hippynn layer convention (tensors in, tensors out) over a flat batch of atoms: atom ``a``
belongs to system ``mol_index[a]``; systems may differ in size. Per element (atomic
number) the layer owns a hardness :math:`J_Z` (eV/e^2) and a Gaussian width
:math:`\sigma_Z` (Angstrom), kept positive by a softplus parametrisation

.. math::

    J_Z = \operatorname{softplus}(\tilde J_Z), \qquad
    \sigma_Z = \operatorname{softplus}(\tilde\sigma_Z)

and learnable unless frozen. For every system it builds the Coulomb matrix of
:mod:`hipqeq.qeq.coulomb` with that system's own boundary (open, periodic or slab, from
its ``pbc``: one batch may mix clusters, bulk cells and slabs), solves the QEq of
:mod:`hipqeq.qeq.solvers` with that system's own total charge (all dense systems of a
batch in one padded, batched ``torch.linalg.solve``) and returns

- charges :math:`q^*` (n_atoms, 1), e;
- :math:`E_{\mathrm{elec}}(q^*) = \tfrac12 q^{*\mathsf T} A q^*` (n_systems, 1), eV;
- :math:`E_{\mathrm{QEq}}(q^*)` (n_systems, 1), eV (variational: forces from it may
  treat the charges as constants, see :mod:`hipqeq.qeq.solvers`);
- dipole :math:`\sum_i q_i^* \mathbf r_i` (n_systems, 3), e*Angstrom. In periodic cells
  it depends on where the atoms sit (it is the dipole of the given, unwrapped positions);
  with :math:`Q \ne 0` it depends on the origin.

Everything is differentiable with respect to positions, cell, electronegativities and
the per-element parameters (dense: autograd through the solve; iterative: implicit
function theorem, first derivatives only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from hipqeq.errors import HipqeqError
from hipqeq.qeq.coulomb import (
    DEFAULT_BACKGROUND,
    DEFAULT_KSPACE_METHOD,
    KSPACE_METHODS,
    CoulombOperator,
    boundary_from_pbc,
    check_background,
    coulomb_matrix,
)
from hipqeq.qeq.ewald import DEFAULT_TOLERANCE
from hipqeq.qeq.solvers import solve_dense, solve_iterative

#: Defaults when no per-element values are given: hardness 5 eV/e^2, width 1.5 Angstrom.
DEFAULT_HARDNESS = 5.0
DEFAULT_SIGMA = 1.5

SOLVERS = ("dense", "iterative")


def _inverse_softplus(values: torch.Tensor) -> torch.Tensor:
    # softplus^-1(y) = y + log(1 - exp(-y)), written stably with expm1.
    return values + torch.log(-torch.expm1(-values))


def _per_species(values, species_set: Sequence[int], default: float, what: str) -> torch.Tensor:
    if values is None:
        return torch.full((len(species_set),), default, dtype=torch.float64)
    if isinstance(values, Mapping):
        missing = [z for z in species_set if z not in values]
        if missing:
            raise HipqeqError(f"{what} has no value for atomic numbers {missing}")
        values = [values[z] for z in species_set]
    tensor = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if tensor.shape[0] != len(species_set) or bool((tensor <= 0).any()):
        raise HipqeqError(
            f"{what} needs one positive value per species {list(species_set)}, got {tensor.tolist()}"
        )
    return tensor


def _check_solver(solver: str) -> str:
    if solver not in SOLVERS:
        raise HipqeqError(f"solver must be 'dense' or 'iterative', got {solver!r}")
    return solver


class QEq(torch.nn.Module):
    """Gaussian-charge charge equilibration over a flat batch of atoms.

    :param species_set: atomic numbers the layer knows (padding 0 excluded).
    :param hardness: initial :math:`J` per species (sequence aligned with
        ``species_set`` or mapping Z -> value), eV/e^2.
    :param sigma: initial Gaussian widths per species, Angstrom.
    :param total_charge: :math:`Q` of every system when :meth:`forward` gets no
        per-system total charges, e.
    :param tolerance: accuracy of the periodic Coulomb sums, and of the iterative solve
        unless ``solve_tolerance`` is given.
    :param solve_tolerance: relative KKT residual at which the iterative solve stops
        (default ``tolerance``); the sums' accuracy and the solve's convergence are
        separate errors (e.g. finite differences need a tight solve, not exact sums).
    :param solver: default solver, ``"dense"`` (batched bordered solve) or
        ``"iterative"`` (projected PCG with a P3M, PME or Ewald matrix-vector product,
        one system at a time, warm-startable); :meth:`forward` can override it per call.
    :param learnable: whether hardness and widths are trained.
    :param kspace_method: reciprocal sum of the iterative solve's matrix-vector
        product, one of :data:`~hipqeq.qeq.coulomb.KSPACE_METHODS`: ``"p3m"`` (default:
        smooth forces, the MD choice, see the README), ``"pme"`` or ``"ewald"``. The dense
        solve always sums Ewald terms exactly. A plain attribute, not saved with the model.
    :param background: a charged periodic cell's background convention, ``"point"``
        (default, that of the 3D-periodic xTB engines) or ``"gaussian"``
        (:mod:`hipqeq.qeq.coulomb`); part of the model (its hyperparameters keep it).

    After each call, :attr:`last_matvec_products` lists per system the Coulomb
    matrix-vector products the iterative solve used (0 for dense solves): a debugging
    and benchmarking aid, e.g. to see what a warm start saves. Setting
    :attr:`adjoint_warm_starts` to a list (off: None, the default) keeps per system the
    last adjoint solve of the forces (:func:`~hipqeq.qeq.solvers.solve_iterative`'s
    ``warm_adjoint``) to start the next one from: for MD, where consecutive calls see the
    same systems (the ASE calculator turns it on; clearing the list starts cold).
    """

    def __init__(
        self,
        species_set: Sequence[int],
        hardness=None,
        sigma=None,
        total_charge: float = 0.0,
        tolerance: float = DEFAULT_TOLERANCE,
        solver: str = "dense",
        learnable: bool = True,
        solve_tolerance: float | None = None,
        kspace_method: str = DEFAULT_KSPACE_METHOD,
        background: str = DEFAULT_BACKGROUND,
    ):
        super().__init__()
        check_background(background)
        self.kspace_method = kspace_method
        self.background = background
        species_set = [int(z) for z in species_set if int(z) != 0]
        self.species_set = species_set
        self.total_charge = float(total_charge)
        self.tolerance = float(tolerance)
        self.solve_tolerance = self.tolerance if solve_tolerance is None else float(solve_tolerance)
        self.solver = _check_solver(solver)
        self.last_matvec_products: list[int] = []
        self.adjoint_warm_starts: list[dict] | None = None
        lookup = torch.full((max(species_set) + 1,), -1, dtype=torch.int64)
        lookup[torch.tensor(species_set)] = torch.arange(len(species_set))
        self.register_buffer("species_lookup", lookup, persistent=False)
        raw_hardness = _inverse_softplus(_per_species(hardness, species_set, DEFAULT_HARDNESS, "hardness"))
        raw_sigma = _inverse_softplus(_per_species(sigma, species_set, DEFAULT_SIGMA, "sigma"))
        self.raw_hardness = torch.nn.Parameter(raw_hardness, requires_grad=learnable)
        self.raw_sigma = torch.nn.Parameter(raw_sigma, requires_grad=learnable)

    @property
    def kspace_method(self) -> str:
        """Reciprocal sum of the iterative solve (``"ewald"``, ``"pme"`` or ``"p3m"``)."""
        return self._kspace_method

    @kspace_method.setter
    def kspace_method(self, method: str) -> None:
        if method not in KSPACE_METHODS:
            raise HipqeqError(f"kspace_method must be one of {KSPACE_METHODS}, got {method!r}")
        self._kspace_method = method

    @property
    def hardness(self) -> torch.Tensor:
        """(n_species,) hardness :math:`J_Z`, eV/e^2, in ``species_set`` order."""
        return torch.nn.functional.softplus(self.raw_hardness)

    @property
    def sigma(self) -> torch.Tensor:
        """(n_species,) Gaussian widths :math:`\\sigma_Z`, Angstrom, in ``species_set`` order."""
        return torch.nn.functional.softplus(self.raw_sigma)

    def _species_index(self, species: torch.Tensor) -> torch.Tensor:
        species = species.reshape(-1).long()
        if bool((species < 0).any()) or int(species.max()) >= self.species_lookup.shape[0]:
            raise HipqeqError(f"atomic numbers outside the species set {self.species_set}")
        index = self.species_lookup[species]
        if bool((index < 0).any()):
            unknown = sorted(set(species[index < 0].tolist()))
            raise HipqeqError(f"atomic numbers {unknown} are not in the species set {self.species_set}")
        return index

    def atom_parameters(self, species: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-atom hardness (eV/e^2) and Gaussian width (Angstrom), (n_atoms,) each, of
        atomic numbers ``species`` (unknown ones raise :class:`HipqeqError`)."""
        index = self._species_index(species)
        return self.hardness.to(dtype)[index], self.sigma.to(dtype)[index]

    @staticmethod
    def _boundaries(n_molecules: int, cell: torch.Tensor | None, pbc: torch.Tensor | None) -> list[str]:
        """Boundary of each system: from ``pbc`` when given, else periodic with a cell
        and open without."""
        if pbc is None:
            return ["open" if cell is None else "periodic"] * n_molecules
        boundaries = [boundary_from_pbc(flags) for flags in pbc.reshape(n_molecules, 3).bool().tolist()]
        if cell is None and any(boundary != "open" for boundary in boundaries):
            raise HipqeqError("periodic and slab systems need a cell per system")
        return boundaries

    def forward(
        self,
        electronegativity: torch.Tensor,
        species: torch.Tensor,
        positions: torch.Tensor,
        mol_index: torch.Tensor,
        n_molecules: int,
        cell: torch.Tensor | None = None,
        total_charge: torch.Tensor | None = None,
        pbc: torch.Tensor | None = None,
        initial_charges: torch.Tensor | None = None,
        solver: str | None = None,
    ):
        """Solve the QEq of every system in the batch.

        :param electronegativity: (n_atoms,) or (n_atoms, 1) :math:`\\chi`, eV/e.
        :param species: (n_atoms,) or (n_atoms, 1) atomic numbers.
        :param positions: (n_atoms, 3), Angstrom.
        :param mol_index: (n_atoms,) system of each atom.
        :param n_molecules: number of systems.
        :param cell: (n_molecules, 3, 3) lattice vectors as rows, Angstrom (needed by
            periodic and slab systems; ignored for open ones).
        :param total_charge: (n_molecules,) or (n_molecules, 1) :math:`Q` per system, e;
            default the layer's :attr:`total_charge` for every system.
        :param pbc: (n_molecules, 3) bool periodic directions per system, mapped by
            :func:`hipqeq.qeq.boundary_from_pbc` (F,F,F open, T,T,T periodic, T,T,F
            slab). Default: periodic when a cell is given, open otherwise.
        :param initial_charges: (n_atoms,) or (n_atoms, 1) warm start of the iterative
            solver (e.g. the previous MD step's charges), e; the dense solver ignores it.
        :param solver: ``"dense"`` or ``"iterative"`` for this call; default the layer's.
        :return: charges (n_atoms, 1), e_elec (n_molecules, 1), e_qeq (n_molecules, 1),
            dipoles (n_molecules, 3).
        """
        solver = self.solver if solver is None else _check_solver(solver)
        chi = electronegativity.reshape(-1)
        dtype, device = positions.dtype, positions.device
        hardness, sigma = self.atom_parameters(species, dtype)
        n_molecules = int(n_molecules)
        if total_charge is None:
            total_charge = torch.full((n_molecules,), self.total_charge, dtype=dtype, device=device)
        total_charge = total_charge.reshape(n_molecules).to(dtype)
        boundaries = self._boundaries(n_molecules, cell, pbc)
        members = [torch.nonzero(mol_index == b).reshape(-1) for b in range(n_molecules)]
        systems = [
            (positions[atoms], sigma[atoms], None if boundary == "open" else cell[b], boundary)
            for b, (atoms, boundary) in enumerate(zip(members, boundaries))
        ]
        if solver == "dense":
            matrices = [coulomb_matrix(pos, sig, cel, boundary, self.tolerance, background=self.background)
                        for pos, sig, cel, boundary in systems]
            charges_per_system = self._dense_charges(matrices, members, chi, hardness, total_charge)
            potentials = [matrix @ q for matrix, q in zip(matrices, charges_per_system)]
            self.last_matvec_products = [0] * n_molecules
        else:
            initial = None if initial_charges is None else initial_charges.reshape(-1).to(dtype)
            charges_per_system, potentials = self._iterative_charges(
                systems, members, chi, hardness, total_charge, initial
            )

        charges = torch.zeros(positions.shape[0], dtype=dtype, device=device)
        charges = charges.index_copy(0, torch.cat(members), torch.cat(charges_per_system))
        e_elec = torch.stack([0.5 * (q * phi).sum() for q, phi in zip(charges_per_system, potentials)])
        e_qeq = torch.stack(
            [
                e + (chi[atoms] * q + 0.5 * hardness[atoms] * q**2).sum()
                for e, q, atoms in zip(e_elec, charges_per_system, members)
            ]
        )
        dipoles = torch.zeros((n_molecules, 3), dtype=dtype, device=device)
        dipoles = dipoles.index_add(0, mol_index, charges[:, None] * positions)
        return charges[:, None], e_elec[:, None], e_qeq[:, None], dipoles

    def _dense_charges(self, matrices, members, chi, hardness, total_charge):
        """One padded batched bordered solve for all systems."""
        sizes = [len(atoms) for atoms in members]
        largest = max(sizes)
        device = chi.device
        padded = torch.stack([torch.nn.functional.pad(m, (0, largest - m.shape[0], 0, largest - m.shape[0])) for m in matrices])
        pad = lambda values: torch.stack(  # noqa: E731
            [torch.nn.functional.pad(values[atoms], (0, largest - len(atoms))) for atoms in members]
        )
        mask = torch.arange(largest, device=device)[None, :] < torch.tensor(sizes, device=device)[:, None]
        solved = solve_dense(padded, pad(chi), pad(hardness), total_charge, atom_mask=mask)
        return [solved[b, :size] for b, size in enumerate(sizes)]

    def _iterative_charges(self, systems, members, chi, hardness, total_charge, initial):
        charges, potentials, products = [], [], []
        stores = self.adjoint_warm_starts
        if stores is not None and len(stores) != len(systems):
            stores[:] = [{} for _ in systems]
        for b, ((pos, sig, cel, boundary), atoms, charge) in enumerate(zip(systems, members, total_charge)):
            operator = CoulombOperator(pos, sig, cel, boundary, self.tolerance, method=self.kspace_method,
                                       background=self.background)
            q, used = solve_iterative(
                operator.matvec,
                (pos, sig, cel),
                chi[atoms],
                hardness[atoms],
                operator.diagonal_estimate(sig),
                float(charge),
                initial=None if initial is None else initial[atoms],
                tolerance=self.solve_tolerance,
                warm_adjoint=None if stores is None else stores[b],
                long_waves=operator.long_wave_modes(pos, sig, cel, hardness[atoms]),
            )
            charges.append(q)
            products.append(used)
            potentials.append(operator.matvec(q, pos, sig, cel))
        self.last_matvec_products = products
        return charges, potentials
