"""The deployable potential: E = E_short(R, q*) + E_elec(q*), forces and stress by autograd.

.. math::

    E(\\{\\mathbf r\\}, \\mathbf h) = E_\\mathrm{short}(\\{\\mathbf r\\}, q^*) + E_\\mathrm{elec}(q^*), \\qquad
    \\mathbf F_i = -\\frac{\\partial E}{\\partial \\mathbf r_i}, \\qquad
    \\sigma_{\\alpha\\beta} = \\frac{1}{V}
        \\left.\\frac{\\partial E}{\\partial \\varepsilon_{\\alpha\\beta}}\\right|_{\\varepsilon=0}

where the strain :math:`\\varepsilon` deforms positions and cell rows alike,
:math:`\\mathbf r \\to \\mathbf r (1 + \\varepsilon)`, :math:`\\mathbf h \\to \\mathbf h (1 + \\varepsilon)`
(the construction of hippynn's ``StrainInducer``). A 4G short range reads the charges
(:mod:`hipqeq.models.short_range`). The derivative runs through the charge solve
(autograd through the dense one, an adjoint solve for the iterative one), so forces are
exact gradients of the energy also where the charges respond to the geometry. The charge
solve's boundary is the structure's physical one unless a label's is asked for
(:func:`evaluate`). A baseline potential has no charge model (E = E_short); a
charge model on its own gives E = E_elec(q*) (used to predict charges).
"""

from __future__ import annotations

import torch

from hipqeq.models.charges import ChargeModel
from hipqeq.models.network import pair_geometry
from hipqeq.models.short_range import ShortRangeModel


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device of a ``--device`` value: ``auto`` (CUDA when available, else CPU),
    ``cpu``, ``cuda`` or ``cuda:N``. Anything else, or CUDA without such a GPU, raises
    :class:`~hipqeq.errors.HipqeqError`."""
    from hipqeq.errors import HipqeqError

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda"):
        raise HipqeqError(f"device {device!r}: choose auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise HipqeqError(f"device {device}: no CUDA device is available")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise HipqeqError(f"device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    return resolved


#: Above this many atoms the QEq uses the iterative (mesh Ewald) solver instead of the dense one
#: (measured on one CPU core, 972-atom RP slab, production network: dense 1.5 s,
#: iterative 2.9 s per energy+forces call; the dense matrix grows as N^2 in memory).
DENSE_QEQ_MAX_ATOMS = 1000


def qeq_solver_for(n_atoms: int, qeq_solver: str = "auto") -> str:
    """The charge solver a call uses: ``qeq_solver`` itself, or for ``"auto"`` dense up
    to :data:`DENSE_QEQ_MAX_ATOMS` atoms and iterative above. Training (the short-range
    stage's E_elec subtraction) and deployment both go through this choice."""
    if qeq_solver == "auto":
        return "dense" if n_atoms <= DENSE_QEQ_MAX_ATOMS else "iterative"
    return qeq_solver


def _strained_geometry(positions, cell, pair_first, pair_second, shifts, want_stress: bool):
    """Positions as a leaf to differentiate, the strain (3, 3) (a leaf when the stress is
    wanted), strained positions and cell, and ``within(cutoff)``: the neighbour list cut
    to ``cutoff`` (Angstrom) at the strained geometry."""
    positions = positions.detach().requires_grad_(True)
    strain = torch.zeros((3, 3), dtype=positions.dtype, device=positions.device, requires_grad=want_stress)
    deformation = torch.eye(3, dtype=positions.dtype, device=positions.device) + strain
    strained_positions = positions @ deformation
    strained_cell = cell @ deformation
    _, distances = pair_geometry(strained_positions, strained_cell, pair_first, pair_second, shifts)

    def within(cutoff):
        keep = distances < cutoff
        return pair_first[keep], pair_second[keep], shifts[keep]

    return positions, strain, strained_positions, strained_cell, within


def _with_derivatives(out: dict, energy, positions, strain, cell, want_stress: bool) -> dict:
    """``out`` detached, plus ``energy``, ``forces`` = -dE/dR and (when asked) the stress
    (1/V) dE/d(strain), symmetrised (eV/A^3)."""
    wrt = [positions, strain] if want_stress else [positions]
    gradients = torch.autograd.grad(energy, wrt)
    out = {key: value.detach() for key, value in out.items()}
    out["energy"] = energy.detach()
    out["forces"] = -gradients[0]
    if want_stress:
        virial = gradients[1]
        out["stress"] = 0.5 * (virial + virial.T) / torch.linalg.det(cell).abs()
    return out


class Potential(torch.nn.Module):
    """A short-range model and/or a frozen charge model, for one system per call."""

    def __init__(self, short_range: ShortRangeModel | None, charges: ChargeModel | None = None):
        super().__init__()
        if short_range is None and charges is None:
            raise ValueError("a potential needs a short-range model, a charge model or both")
        if short_range is not None and short_range.charge_features and charges is None:
            raise ValueError("a charge-aware short-range model needs its charge model")
        self.short_range = short_range
        self.charges = charges

    def _models(self) -> list[torch.nn.Module]:
        return [m for m in (self.short_range, self.charges) if m is not None]

    @property
    def cutoff_A(self) -> float:
        """Largest neighbour cutoff the models need (Angstrom)."""
        return max(m.cutoff_A for m in self._models())

    @property
    def species(self) -> list[int]:
        """Atomic numbers every model of the potential knows."""
        known = [set(m.hyperparameters["species"]) for m in self._models()]
        return sorted(set.intersection(*known))

    def forward(self, species: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor,
                pbc: torch.Tensor, total_charge: torch.Tensor, pair_first: torch.Tensor,
                pair_second: torch.Tensor, shifts: torch.Tensor, want_stress: bool = True,
                qeq_solver: str = "auto", initial_charges: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Energy and its derivatives for one system.

        Parameters
        ----------
        species : (n_atoms,) atomic numbers.
        positions : (n_atoms, 3) Angstrom.
        cell : (3, 3) lattice vectors as rows, Angstrom (any full-rank cell for open systems).
        pbc : (3,) bool periodic directions; the charge solve's boundary (open, periodic
            or slab) follows from them (:func:`hipqeq.qeq.boundary_from_pbc`).
        total_charge : 0-d tensor, e.
        pair_first, pair_second, shifts : neighbour list within :attr:`cutoff_A`
            (:func:`hipqeq.qeq.neighbor_pairs` convention).
        want_stress : also return the stress (needs a full-rank cell).
        qeq_solver : "dense", "iterative" or "auto" (:func:`qeq_solver_for`).
        initial_charges : (n_atoms,) e, warm start of the iterative charge solve.

        Returns
        -------
        dict with ``energy`` (0-d, eV), ``energy_short`` and ``energy_elec`` (eV),
        ``forces`` (n_atoms, 3, eV/A), ``stress`` (3, 3, eV/A^3, when asked), and when
        there is a charge model ``charges`` (n_atoms, e), ``dipole`` (3, e*A) and
        ``qeq_matvec_products`` (0-d int: Coulomb matrix-vector products of the
        iterative solve, 0 for the dense one).
        """
        positions, strain, strained_positions, strained_cell, within = _strained_geometry(
            positions, cell, pair_first, pair_second, shifts, want_stress)
        energy = torch.zeros((), dtype=positions.dtype, device=positions.device)
        out = {}
        charges = None
        if self.charges is not None:
            charges, energy_elec, dipole = self.charges(
                species, strained_positions, strained_cell, pbc, total_charge, *within(self.charges.cutoff_A),
                solver=qeq_solver_for(species.shape[0], qeq_solver), initial_charges=initial_charges)
            products = sum(self.charges.qeq.last_matvec_products)
            out.update(energy_elec=energy_elec, charges=charges, dipole=dipole,
                       qeq_matvec_products=torch.tensor(products))
            energy = energy + energy_elec
        if self.short_range is not None:
            # The charges keep their graph: a charge-aware short range's forces include
            # dE_short/dq . dq*/dR (autograd through the solve, or its adjoint solve).
            out["energy_short"] = self.short_range(
                species, strained_positions, strained_cell, *within(self.short_range.cutoff_A),
                charges=charges if self.short_range.charge_features else None)
            energy = energy + out["energy_short"]
        return _with_derivatives(out, energy, positions, strain, cell, want_stress)

    def forward_shadow(self, species: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor,
                       pbc: torch.Tensor, total_charge: torch.Tensor, pair_first: torch.Tensor,
                       pair_second: torch.Tensor, shifts: torch.Tensor, auxiliary: torch.Tensor | None,
                       want_stress: bool = True) -> dict:
        """Shadow energy and its exact derivatives at fixed auxiliary charges and adjoint
        (:mod:`hipqeq.qeq.shadow`), for one system; needs a charge model.

        Parameters as :meth:`forward`, and ``auxiliary`` (n_atoms, 2): the auxiliary
        charges n (e, summing to the total charge) and adjoint m (summing to 0) as
        columns, or ``None`` to start from the converged ones (two iterative solves, at
        the QEq layer's ``solve_tolerance``).

        Returns the keys of :meth:`forward` (``energy`` is the shadow energy, eV;
        ``charges`` the linearised charges q[n]; ``energy_elec`` the linearised
        electrostatic energy), plus ``auxiliary`` (n_atoms, 2) used, ``residuals``
        (n_atoms, 2) = (q[n] - n, z - m) in e, ``preconditioner`` (n_atoms,) and
        ``response``, the map v -> J v at this geometry (:func:`hipqeq.qeq.shadow.charge_response`),
        for the propagation's kernel. ``qeq_matvec_products`` counts Coulomb products
        (of one or two columns).
        """
        from hipqeq.qeq import CoulombOperator, boundary_from_pbc, solve_iterative
        from hipqeq.qeq.shadow import charge_response, diagonal_constrained_minimum, shadow_lagrangian

        if self.charges is None:
            raise ValueError("shadow charge equilibration needs a charge model")
        positions, strain, strained_positions, strained_cell, within = _strained_geometry(
            positions, cell, pair_first, pair_second, shifts, want_stress)
        qeq = self.charges.qeq
        hardness, sigma = qeq.atom_parameters(species, positions.dtype)
        hardness, sigma = hardness.detach(), sigma.detach()
        chi = self.charges.electronegativities(species, strained_positions, strained_cell,
                                               *within(self.charges.cutoff_A)).reshape(-1)
        boundary = boundary_from_pbc(pbc.tolist())
        fixed_cell = None if boundary == "open" else cell.detach()
        operator = CoulombOperator(positions.detach(), sigma, fixed_cell, boundary, qeq.tolerance,
                                   method=qeq.kspace_method, background=qeq.background)
        fixed = (positions.detach(), sigma, fixed_cell)

        def coulomb(vectors):
            with torch.no_grad():
                return operator.matvec(vectors, *fixed)

        def short_range_energy(charges):
            if self.short_range is None:
                return torch.zeros((), dtype=positions.dtype, device=positions.device)
            return self.short_range(species, strained_positions, strained_cell, *within(self.short_range.cutoff_A),
                                    charges=charges if self.short_range.charge_features else None)

        def short_range_charge_gradient(energy_short, charges):
            if self.short_range is None or not self.short_range.charge_features:
                return torch.zeros_like(charges)
            return torch.autograd.grad(energy_short, charges, retain_graph=True)[0]

        products = 0
        if auxiliary is None:
            solve = dict(matvec=operator.matvec, operands=fixed, hardness=hardness, diagonal=operator.diagonal_estimate(sigma),
                         tolerance=qeq.solve_tolerance, long_waves=operator.long_wave_modes(*fixed, hardness))
            with torch.no_grad():
                start, used = solve_iterative(electronegativity=chi.detach(),
                                              total_charge=float(total_charge), **solve)
            leaf = start.requires_grad_(True)
            gradient = short_range_charge_gradient(short_range_energy(leaf), leaf).detach()
            with torch.no_grad():
                adjoint, used_adjoint = solve_iterative(electronegativity=gradient + coulomb(start),
                                                        total_charge=0.0, **solve)
            auxiliary = torch.stack([start.detach(), adjoint], dim=1)
            products += used + used_adjoint + 1
        auxiliary = auxiliary.detach().to(positions.dtype)
        potentials = operator.matvec(auxiliary, strained_positions, sigma, None if fixed_cell is None else strained_cell)
        products += 1
        with torch.no_grad():
            charges = diagonal_constrained_minimum(chi + potentials[:, 0], hardness, total_charge)
        charges.requires_grad_(True)
        energy_short = short_range_energy(charges)
        gradient = short_range_charge_gradient(energy_short, charges)
        with torch.no_grad():
            adjoint = diagonal_constrained_minimum(gradient + potentials.sum(1), hardness, 0.0)
        charges = charges.detach()
        energy, energy_elec = shadow_lagrangian(energy_short, chi, hardness, charges, adjoint, auxiliary[:, 0],
                                                auxiliary[:, 1], potentials[:, 0], potentials[:, 1])
        out = {"energy_elec": energy_elec, "charges": charges, "dipole": charges @ positions.detach(),
               "qeq_matvec_products": torch.tensor(products), "auxiliary": auxiliary,
               "residuals": torch.stack([charges, adjoint], dim=1) - auxiliary}
        if self.short_range is not None:
            out["energy_short"] = energy_short
        out = _with_derivatives(out, energy, positions, strain, cell, want_stress)
        out["response"] = charge_response(coulomb, hardness)
        out["preconditioner"] = hardness / (hardness + operator.diagonal_estimate(sigma))
        return out


def _system_tensors(potential: Potential, atoms, charge_pbc=None, neighbors=None) -> dict:
    """The tensors :meth:`Potential.forward` takes for one ``ase.Atoms`` (device and dtype
    of the potential's parameters; see :func:`evaluate`). The pairs come from
    ``neighbors`` (a :class:`hipqeq.qeq.VerletNeighborList` reaching at least the
    potential's cutoff) or a fresh search; the search runs on the potential's device."""
    import numpy as np

    from hipqeq.errors import HipqeqError
    from hipqeq.qeq import boundary_from_pbc, neighbor_pairs

    parameter = next(p for p in potential.parameters() if p.is_floating_point())
    device, dtype = parameter.device, parameter.dtype
    unknown = sorted(set(atoms.numbers.tolist()) - set(potential.species))
    if unknown:
        raise HipqeqError(f"elements with atomic numbers {unknown} are unknown to the model "
                          f"(it knows {potential.species})")
    boundary = boundary_from_pbc(atoms.pbc)
    cell = np.array(atoms.cell.array, dtype=float)
    full_rank = abs(np.linalg.det(cell)) > 1e-9
    if not full_rank:
        if boundary != "open":
            raise HipqeqError(f"a {boundary} system needs three cell vectors spanning space")
        cell = np.eye(3)  # open systems: any full-rank cell; no images are used
    as_float = lambda a: torch.as_tensor(np.asarray(a, dtype=float), dtype=dtype, device=device)  # noqa: E731
    positions, cell = as_float(atoms.positions), as_float(cell)
    if neighbors is None:
        first, second, shifts = neighbor_pairs(positions, cell, atoms.pbc, potential.cutoff_A)
    elif neighbors.cutoff < potential.cutoff_A:
        raise HipqeqError(f"the neighbour list reaches {neighbors.cutoff} A, short of the model's cutoff "
                          f"{potential.cutoff_A} A")
    else:
        first, second, shifts = neighbors.pairs(positions, cell, atoms.pbc)
    return {"species": torch.as_tensor(atoms.numbers, dtype=torch.long, device=device),
            "positions": positions, "cell": cell,
            "pbc": torch.as_tensor(np.asarray(atoms.pbc if charge_pbc is None else charge_pbc, dtype=bool),
                                   device=device),
            "total_charge": as_float(atoms.info.get("total_charge", 0.0)),
            "pair_first": first.to(device), "pair_second": second.to(device), "shifts": shifts.to(device),
            # the stress of an open system would divide by an arbitrary box's volume
            "stress_defined": full_rank and boundary != "open", "as_float": as_float}


def charge_response(charge_model: ChargeModel, atoms, charge_pbc=None) -> tuple:
    r"""Charges :math:`q^*` (n,) e and their Jacobian :math:`\partial q^*_j / \partial
    \mathbf r_i`, (n, n, 3) in e/Angstrom indexed [j, i, xyz], of a charge model for one
    structure (boundary of the solve: ``charge_pbc`` or ``atoms.pbc``; dense solve).

    The charge-aware short-range stage trains on these: with the charge model frozen, its
    forces :math:`-\partial E_\mathrm{short}/\partial \mathbf r|_q -
    \sum_j \partial E_\mathrm{short}/\partial q_j \, \partial q^*_j/\partial \mathbf r`
    need only this fixed Jacobian, not a QEq solve and its second derivatives per batch.
    Cost: one backward pass per atom, once per structure.
    """
    inputs = _system_tensors(Potential(None, charge_model), atoms, charge_pbc)

    def charges_of(positions):
        charges, _, _ = charge_model(inputs["species"], positions, inputs["cell"], inputs["pbc"],
                                     inputs["total_charge"], inputs["pair_first"], inputs["pair_second"],
                                     inputs["shifts"], solver="dense")
        return charges

    positions = inputs["positions"]
    with torch.no_grad():
        charges = charges_of(positions)
    jacobian = torch.autograd.functional.jacobian(charges_of, positions)
    return charges.cpu().numpy().astype(float), jacobian.cpu().numpy().astype(float)


def evaluate(potential: Potential, atoms, want_stress: bool = False, qeq_solver: str = "auto",
             initial_charges=None, charge_pbc=None, neighbors=None) -> dict:
    """Run ``potential`` on one ``ase.Atoms`` (total charge from ``atoms.info``, boundary
    of the charge solve from ``atoms.pbc``, the physical one).

    ``charge_pbc`` (3 bools) overrides the boundary of the charge solve only, not the
    neighbour list: a reference engine's boundary, e.g. (T,T,T) to reproduce what tblite
    computed for a slab (:func:`hipqeq.data.label_pbc`), when comparing with or
    subtracting from its labels.

    The neighbour list (:func:`hipqeq.qeq.neighbor_pairs`) handles cells shorter than
    twice the cutoff and slabs; ``neighbors`` (a :class:`hipqeq.qeq.VerletNeighborList`)
    reuses one between calls (MD). The potential's parameters fix device and dtype.
    ``initial_charges`` (n,) e warm-starts the iterative charge solve.

    Returns numpy values: ``energy`` (float, eV), ``forces`` (n, 3) eV/A, ``stress``
    (Voigt xx yy zz yz xz xy, eV/A^3, when asked for a periodic or slab system whose cell
    has full rank; an open system has none), and the
    energy parts ``energy_short`` / ``energy_elec`` (eV); with a charge model also
    ``charges`` (n,) e, ``dipole`` (3,) e*A and ``qeq_matvec_products`` (int, see
    :meth:`Potential.forward`).
    """
    inputs = _system_tensors(potential, atoms, charge_pbc, neighbors)
    as_float = inputs["as_float"]
    out = potential(
        inputs["species"], inputs["positions"], inputs["cell"], inputs["pbc"], inputs["total_charge"],
        inputs["pair_first"], inputs["pair_second"], inputs["shifts"],
        want_stress=bool(want_stress and inputs["stress_defined"]), qeq_solver=qeq_solver,
        initial_charges=None if initial_charges is None else as_float(initial_charges))
    return _numpy_results(out)


def evaluate_shadow(potential: Potential, atoms, dynamics, advance: bool, want_stress: bool = False) -> dict:
    """Shadow-QEq results of ``potential`` on one ``ase.Atoms`` (:meth:`Potential.forward_shadow`)
    at the auxiliaries of ``dynamics`` (a :class:`hipqeq.qeq.shadow.ExtendedLagrangianCharges`),
    advanced by one MD step first when ``advance``; ``dynamics`` then observes the result.

    Returns what :func:`evaluate` returns (``energy`` is the shadow energy, ``charges``
    the linearised charges q[n]), with ``qeq_matvec_products`` including the kernel's
    products, plus ``auxiliary_charges`` (n,) e, the auxiliary n.
    """
    inputs = _system_tensors(potential, atoms)
    out = potential.forward_shadow(
        inputs["species"], inputs["positions"], inputs["cell"], inputs["pbc"], inputs["total_charge"],
        inputs["pair_first"], inputs["pair_second"], inputs["shifts"], auxiliary=dynamics.auxiliary(advance),
        want_stress=bool(want_stress and inputs["stress_defined"]))
    rank = dynamics.observe(out.pop("auxiliary"), out.pop("residuals"), out.pop("response"),
                            out.pop("preconditioner"))
    out["qeq_matvec_products"] = out["qeq_matvec_products"] + rank
    out["auxiliary_charges"] = dynamics.auxiliary(advance=False)[:, 0]
    return _numpy_results(out)


def _numpy_results(out: dict) -> dict:
    """Results of :meth:`Potential.forward` or :meth:`Potential.forward_shadow` as numpy
    values and floats (stress in Voigt order)."""
    import numpy as np

    products = out.pop("qeq_matvec_products", None)
    result = {key: value.cpu().numpy().astype(float) for key, value in out.items()}
    for key in ("energy", "energy_short", "energy_elec"):
        if key in result:
            result[key] = float(result[key])
    if products is not None:
        result["qeq_matvec_products"] = int(products)
    if "stress" in result:
        s = result["stress"]
        result["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    return result
