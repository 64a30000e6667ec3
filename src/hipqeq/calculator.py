r"""ASE calculator for trained hipqeq potentials (single models and committees).

The energy of a structure with positions :math:`\{\mathbf r_i\}`, lattice rows
:math:`\mathbf h` and total charge :math:`Q` is

.. math::

    E = E_\mathrm{short}(\{\mathbf r_i\}) + E_\mathrm{elec}(q^*), \qquad
    q^* = \operatorname*{arg\,min}_{\sum_i q_i = Q} E_\mathrm{elec}(q)
          + \sum_i \left(\chi_i q_i + \tfrac12 J_{Z_i} q_i^2\right)

with :math:`E_\mathrm{short}` a short-range HIP-NN (cutoff :math:`r_c`) and
:math:`E_\mathrm{elec}` the Gaussian-charge Coulomb energy (Ewald sums in periodic
cells, dipole-corrected for slabs, direct sum for open systems; see
:mod:`hipqeq.qeq`). A baseline model has no electrostatic term.

Forces are the negative gradient,

.. math::

    \mathbf F_i = -\frac{\partial E}{\partial \mathbf r_i},

taken by automatic differentiation through the network and the charge solve (so the
response of :math:`q^*` and of :math:`\chi` to the geometry is included). The stress
follows from a homogeneous strain :math:`\varepsilon` applied to positions and cell,
:math:`\mathbf r \to \mathbf r(1+\varepsilon)`, :math:`\mathbf h \to \mathbf h(1+\varepsilon)`:

.. math::

    \sigma_{\alpha\beta} = \frac{1}{V}\frac{\partial E}{\partial \varepsilon_{\alpha\beta}}
                          \Big|_{\varepsilon = 0},

returned in Voigt order (xx, yy, zz, yz, xz, xy), eV/Angstrom^3; only for periodic and
slab systems whose three cell vectors span space (slabs use the volume of the cell,
vacuum included, as ASE does; an open system has no stress).

Charges (e) and the dipole :math:`\sum_i q_i \mathbf r_i` (e*Angstrom) come from the
charge model, as do the energy parts ``energy_short`` and ``energy_elec`` (eV). For a
committee (several model directories) every result is the members' mean, and
``force_disagreement`` holds, per atom, the root-mean-square deviation of the members'
force vectors from the mean force (eV/Angstrom), ``energy_std`` the standard deviation of
the members' energies (eV).

The boundary of the charge solve is each structure's own (open, periodic, or slab for
pbc = T,T,F), exactly as in training. A slab read from a file often comes with pbc =
T,T,T: it is then a 3D crystal of slabs, whose electrostatics (a charged one's above all)
change with the vacuum, and the calculator warns (:class:`BoundaryWarning`, once per
calculator) when a fully periodic cell has more than :data:`VACUUM_WARN_A` of vacuum along
a cell vector, or a slab less (its dipole-corrected sum then loses accuracy). The total
charge follows ASE's conventions (:func:`hipqeq.geometry.total_charge_of`):
``atoms.info["total_charge"]``, ``atoms.info["charge"]``, the sum of the initial charges,
or the calculator's ``charge`` argument (as tblite's ASE calculator takes it);
conventions that disagree are an error, and a change of total charge is a change of the
system (the calculator's cached results are dropped, as for a change of positions). A
slab wrapped across its cell along the non-periodic direction is evaluated unwrapped
(:func:`hipqeq.geometry.unwrap_slab`; ``dipole`` then refers to the unwrapped
positions). Structures without atoms or with NaN or infinite positions or cell raise
:class:`AtomsNotUsable`.

Precision: on CPU the models run in float64 unless ``dtype`` says otherwise, whatever
precision they were trained in. Total energies of a 60-atom slab are ~10^3 eV, and
float32 keeps ~7 digits: meV differences (finite differences, the energy conservation of
MD) drown in rounding. ``benchmarks/calculator_precision.py`` measures the price (see
the README). On CUDA the stored precision is kept (float64 is slow on most GPUs).

Neighbour lists (:func:`hipqeq.qeq.neighbor_pairs`, periodic images included, so cells
shorter than twice the cutoff are handled) are Verlet lists: pairs within the cutoff
plus ``neighbor_skin_A`` are searched again only when some atom has moved more than
half the skin, or the cell changed (:class:`hipqeq.qeq.VerletNeighborList`; one list
for all committee members); ``results["neighbor_list_builds"]`` counts the searches so
far. The charge solve is dense up to
:data:`hipqeq.models.potential.DENSE_QEQ_MAX_ATOMS` atoms and iterative above (P3M
unless ``kspace_method`` says otherwise). :class:`HipQEqCalculator` warm-starts the
iterative solve from its previous call's charges (per committee member) while the
atoms keep their number and species, which is what MD needs;
``results["qeq_matvec_products"]`` counts the Coulomb
matrix-vector products the solves used (summed over members; 0 for dense solves).

Shadow charge equilibration (``qeq="shadow"``, off by default) is for MD only: each call
at new positions (or cell) is taken as the next time step, and instead of solving the
QEq the calculator propagates auxiliary charges and adjoint with the nuclei
(:mod:`hipqeq.qeq.shadow`, per committee member). ``energy`` is then the shadow energy,
whose exact gradient the forces and stress are, ``charges`` the linearised charges
q[n] and ``auxiliary_charges`` the auxiliary n; each step costs one two-column Coulomb
product plus the kernel's (``shadow_options``: ``order``, ``kernel_rank``,
``kernel_tolerance`` of :class:`~hipqeq.qeq.shadow.ExtendedLagrangianCharges`). The
first call, and any call after a change of atomic numbers, periodicity or total charge,
starts at converged charges. A baseline model has no charges: ``qeq`` does not apply.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, InputError, all_changes

from hipqeq.errors import StructureError
from hipqeq.geometry import total_charge_of, unwrap_slab, widest_gap_A

#: Results averaged over committee members.
AVERAGED = ("energy", "energy_short", "energy_elec", "forces", "stress", "charges", "dipole", "auxiliary_charges")

#: Charge equilibration per call: a full solve, or shadow QEq for MD (:mod:`hipqeq.qeq.shadow`).
QEQ_MODES = ("full", "shadow")

#: Vacuum (Angstrom) along a cell vector above which a fully periodic cell looks like a
#: slab (no bulk perovskite has an empty layer this wide) and below which a slab's
#: dipole-corrected Coulomb sum loses accuracy (a charged 27-atom slab: 15 meV at 10 A,
#: 0.1 eV at 7 A, against 21.5 A).
VACUUM_WARN_A = 10.0

#: Keywords ASE's Calculator takes; any other is refused rather than stored unread.
_ASE_CALCULATOR_KEYWORDS = frozenset(inspect.signature(Calculator.__init__).parameters) - {"self", "kwargs"}


def _as_list(model_dirs) -> list:
    if isinstance(model_dirs, (str, os.PathLike)):
        return [model_dirs]
    return list(model_dirs)


class AtomsNotUsable(StructureError, InputError):
    """A structure the calculator cannot evaluate (no atoms, NaN or infinite positions or
    cell). Also an ASE ``InputError``, so ASE drivers and ``hipqeq md`` treat it as a
    calculator failure."""


class BoundaryWarning(UserWarning):
    """The structure's periodicity and vacuum do not look like what it is meant to be
    (see :func:`boundary_warning`)."""


def boundary_warning(atoms: Atoms) -> str | None:
    """Why the boundary of ``atoms`` may not be the physical one, or None: a fully periodic
    cell with more than :data:`VACUUM_WARN_A` of vacuum along a cell vector (a slab whose
    pbc says 3D crystal), or a slab (pbc T,T,F) with less."""
    pbc = tuple(bool(p) for p in atoms.pbc)
    if pbc not in ((True, True, True), (True, True, False)) or abs(atoms.cell.volume) < 1e-9 or len(atoms) < 2:
        return None
    if pbc == (True, True, False):
        vacuum_A = widest_gap_A(atoms, 2)
        if vacuum_A < VACUUM_WARN_A:
            return (f"a slab (pbc T,T,F) with {vacuum_A:.1f} A of vacuum: its dipole-corrected electrostatics "
                    f"assume the slab's images are far apart; give it at least {VACUUM_WARN_A:g} A")
        return None
    gaps_A = [widest_gap_A(atoms, axis) for axis in range(3)]
    axis = int(np.argmax(gaps_A))
    if gaps_A[axis] <= VACUUM_WARN_A:
        return None
    return (f"pbc is (True, True, True) but the cell has {gaps_A[axis]:.1f} A of vacuum along cell vector {axis}: "
            "a slab in a 3D-periodic box, whose electrostatics (a charged slab's above all) change with the "
            "vacuum; for an isolated slab make that vector the third and set atoms.pbc = (True, True, False)")


def structure_for_model(atoms: Atoms, charge: float | None = None) -> Atoms:
    """What the model evaluates for ``atoms``: checked (:class:`AtomsNotUsable`), a slab
    wrapped across its cell unwrapped, and ``info["total_charge"]`` set from ASE's
    conventions and a calculator's ``charge`` (:func:`hipqeq.geometry.total_charge_of`).
    ``atoms`` is not modified."""
    if len(atoms) == 0:
        raise AtomsNotUsable("the Atoms object has no atoms: nothing to evaluate")
    bad = np.flatnonzero(~np.isfinite(atoms.positions).all(axis=1))
    if len(bad) or not np.isfinite(atoms.cell.array).all():
        where = f"atoms {bad[:5].tolist()}" + (" ..." if len(bad) > 5 else "") if len(bad) else "the cell"
        raise AtomsNotUsable(f"NaN or infinite coordinates in {where}: a failed optimiser or MD step upstream?")
    total_charge = total_charge_of(atoms, charge)
    structure = unwrap_slab(atoms)
    structure = structure.copy() if structure is atoms else structure
    structure.info["total_charge"] = total_charge
    return structure


def load_committee(model_dirs, device: str = "auto", dtype: str | None = None,
                   allow_charge_model: bool = False) -> list:
    """The :class:`~hipqeq.models.potential.Potential` of each model directory, on
    ``device`` ("auto", "cpu", "cuda") in ``dtype``; by default float64 on CPU and the
    stored dtype on CUDA (see the module docstring). A charge model alone is refused
    unless ``allow_charge_model`` (:func:`hipqeq.models.store.load_potential`)."""
    import torch

    from hipqeq.errors import HipqeqError
    from hipqeq.models.potential import resolve_device
    from hipqeq.models.store import load_potential

    dirs = _as_list(model_dirs)
    if not dirs:
        raise HipqeqError("no model directory given")
    torch_device = resolve_device(device)
    if dtype is None and torch_device.type == "cpu":
        dtype = "float64"
    potentials = []
    for model_dir in dirs:
        potential = load_potential(model_dir, allow_charge_model).to(torch_device)
        if dtype is not None:
            potential = potential.to(getattr(torch, dtype))
        potentials.append(potential)
    return potentials


def committee_members(potentials: Sequence, atoms, want_stress: bool = True, qeq_solver: str = "auto",
                      initial_charges: Sequence | None = None, charge_pbc=None, neighbors=None) -> list[dict]:
    """Each member's results on one structure (:func:`hipqeq.models.potential.evaluate`);
    ``initial_charges`` holds per member a warm start of its charge solve, or None;
    ``charge_pbc`` overrides the charge solve's boundary (a label's, for comparisons);
    ``neighbors`` is a shared :class:`hipqeq.qeq.VerletNeighborList` (or None: a fresh
    search per member)."""
    from hipqeq.models.potential import evaluate

    starts = initial_charges if initial_charges is not None else [None] * len(potentials)
    return [evaluate(p, atoms, want_stress=want_stress, qeq_solver=qeq_solver, initial_charges=start,
                     charge_pbc=charge_pbc, neighbors=neighbors)
            for p, start in zip(potentials, starts)]


def committee_results(potentials: Sequence, atoms, want_stress: bool = True,
                      qeq_solver: str = "auto", charge_pbc=None) -> dict:
    """Mean results of a committee on one structure (see :func:`combine_members`)."""
    return combine_members(committee_members(potentials, atoms, want_stress=want_stress, qeq_solver=qeq_solver,
                                             charge_pbc=charge_pbc))


def combine_members(members: Sequence[dict]) -> dict:
    """The members' mean results, plus ``force_disagreement`` (n_atoms,), ``energy_std``
    and ``qeq_matvec_products`` (see the module docstring)."""
    results = {key: np.mean([m[key] for m in members], axis=0)
               for key in AVERAGED if key in members[0]}
    for key in ("energy", "energy_short", "energy_elec"):
        if key in results:
            results[key] = float(results[key])
    if "qeq_matvec_products" in members[0]:
        results["qeq_matvec_products"] = sum(m["qeq_matvec_products"] for m in members)
    forces = np.stack([m["forces"] for m in members])
    deviation = forces - forces.mean(axis=0)
    results["force_disagreement"] = np.sqrt((deviation ** 2).sum(axis=2).mean(axis=0))
    results["energy_std"] = float(np.std([m["energy"] for m in members]))
    return results


class HipQEqCalculator(Calculator):
    """ASE calculator of a hipqeq potential (see the module docstring for the physics).

    :param model_dir: a model directory (``hipqeq train short-range`` or ``baseline``
        output), or a list of them for a committee.
    :param device: "auto" (CUDA when present), "cpu" or "cuda".
    :param dtype: "float32" or "float64"; default float64 on CPU, the stored precision on CUDA.
    :param qeq_solver: "auto", "dense" or "iterative" (for ``qeq="full"``).
    :param qeq: "full" (a charge solve per call) or "shadow" (extended-Lagrangian shadow
        QEq for MD, see the module docstring).
    :param shadow_options: settings of the shadow dynamics (``order``, ``kernel_rank``,
        ``kernel_tolerance``).
    :param neighbor_skin_A: Verlet skin of the neighbour list, Angstrom (0: a new search
        at every call).
    :param kspace_method: reciprocal sum of the iterative charge solve, "p3m", "pme" or
        "ewald" (:attr:`hipqeq.qeq.QEq.kspace_method`; default the layer's, P3M, whose
        smooth forces conserve energy in MD: see the README).
    :param always_stress: compute the stress at every call, not only when asked for it.
        For NPT MD: ASE's barostats ask for the stress after the forces at the same
        positions, which would cost a second evaluation; with the forces it costs ~10 %.
    :param charge: total charge (e) of every structure the calculator evaluates, as
        tblite's ASE calculator takes it; None (default): each structure's own.

    The total charge is read from ``atoms.info["total_charge"]``, ``atoms.info["charge"]``,
    the initial charges or ``charge`` (default 0 e; set ones must agree); changing it
    invalidates the results. Keywords neither this class nor ASE's ``Calculator`` takes
    are a ``TypeError`` (a misspelt one would be ignored otherwise). The
    iterative charge solve starts from the previous call's charges while the atomic
    numbers stay the same (see the module docstring); :meth:`reset_warm_start` forgets them.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "charges", "dipole"]

    def __init__(self, model_dir, device: str = "auto", dtype: str | None = None,
                 qeq_solver: str = "auto", qeq: str = "full", shadow_options: dict | None = None,
                 neighbor_skin_A: float = 1.0, kspace_method: str | None = None, always_stress: bool = False,
                 charge: float | None = None, **kwargs):
        from hipqeq.errors import HipqeqError
        from hipqeq.qeq import VerletNeighborList
        from hipqeq.qeq.shadow import ExtendedLagrangianCharges

        unknown = sorted(set(kwargs) - _ASE_CALCULATOR_KEYWORDS)
        if unknown:
            raise TypeError(f"HipQEqCalculator got unexpected keyword argument(s) {', '.join(unknown)} "
                            "(the total charge is `charge`, or atoms.info['total_charge'])")
        super().__init__(**kwargs)
        self.charge = None if charge is None else float(charge)
        self._boundary_warned = False
        if qeq not in QEQ_MODES:
            raise HipqeqError(f"qeq must be one of {QEQ_MODES}, got {qeq!r}")
        self.model_dirs = [str(d) for d in _as_list(model_dir)]
        self.potentials = load_committee(self.model_dirs, device=device, dtype=dtype)
        self.qeq_solver = qeq_solver
        self.qeq = qeq
        self.always_stress = always_stress
        self._shadow = [ExtendedLagrangianCharges(**(shadow_options or {}))
                        if qeq == "shadow" and p.charges is not None else None for p in self.potentials]
        for potential in self.potentials:
            if kspace_method is not None and potential.charges is not None:
                potential.charges.qeq.kspace_method = kspace_method
        self.neighbors = VerletNeighborList(max(p.cutoff_A for p in self.potentials), neighbor_skin_A)
        self.reset_warm_start()

    def reset_warm_start(self) -> None:
        """Start the next charge solve cold (ASE's ``reset`` keeps the warm start: it runs
        at every change of positions); in shadow mode, restart the auxiliary dynamics."""
        self._warm_numbers = None
        self._warm_charges = None
        for potential in self.potentials:
            if potential.charges is not None:
                potential.charges.qeq.adjoint_warm_starts = []
        for dynamics in self._shadow:
            if dynamics is not None:
                dynamics.reset()

    def _initial_charges(self, atoms) -> list | None:
        if self._warm_numbers is None or not np.array_equal(self._warm_numbers, atoms.numbers):
            return None
        return self._warm_charges

    def check_state(self, atoms, tol=1e-15):
        """ASE's system changes, plus ``"total_charge"`` when the total charge differs from
        the last calculation's (ASE compares positions, numbers, cell, pbc and the
        per-atom initial charges only, not ``atoms.info``)."""
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and abs(total_charge_of(atoms, self.charge)
                                          - total_charge_of(self.atoms, self.charge)) > tol:
            changes.append("total_charge")
        return changes

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        want_stress = self.always_stress or properties is None or "stress" in properties
        structure = structure_for_model(self.atoms, self.charge)
        self._warn_about_boundary(structure)
        if self.qeq == "shadow":
            members = self._shadow_members(structure, want_stress, system_changes)
        else:
            members = committee_members(self.potentials, structure, want_stress=want_stress,
                                        qeq_solver=self.qeq_solver, initial_charges=self._initial_charges(structure),
                                        neighbors=self.neighbors)
        results = combine_members(members)
        results["free_energy"] = results["energy"]
        results["neighbor_list_builds"] = self.neighbors.builds
        self.results = results
        if "charges" in members[0]:
            self._warm_numbers = self.atoms.numbers.copy()
            self._warm_charges = [m["charges"] for m in members]

    def _warn_about_boundary(self, structure) -> None:
        if not self._boundary_warned and (message := boundary_warning(structure)):
            warnings.warn(message, BoundaryWarning, stacklevel=2)
            self._boundary_warned = True

    def _shadow_members(self, structure, want_stress: bool, system_changes) -> list[dict]:
        """Each member's shadow-QEq results: one MD step on when the atoms moved, a
        restart at converged charges when the system itself changed."""
        from hipqeq.models.potential import evaluate, evaluate_shadow

        if set(system_changes) & {"numbers", "pbc", "total_charge", "initial_charges"}:
            self.reset_warm_start()
        moved = bool(set(system_changes) & {"positions", "cell"})
        return [evaluate(p, structure, want_stress=want_stress, neighbors=self.neighbors) if dynamics is None
                else evaluate_shadow(p, structure, dynamics, advance=moved, want_stress=want_stress)
                for p, dynamics in zip(self.potentials, self._shadow)]


def predict(model_dirs, atoms_list: Sequence, device: str = "auto", dtype: str | None = None,
            progress: bool = True, charge_pbc: Sequence | None = None) -> list[dict]:
    """Predictions of a model (or committee) for many structures, models loaded once.

    The charge solve of each structure runs under its physical boundary (``atoms.pbc``),
    or under ``charge_pbc[k]`` where given: the boundary of a label to compare with
    (:func:`hipqeq.data.label_pbc`; tblite labels slabs as 3D-periodic cells).

    Returns one dict per structure with ``energy`` (eV), ``forces`` (n, 3, eV/A),
    ``force_disagreement`` and ``energy_std`` (committees), and for models with a
    charge model ``charges`` (n, e; summing to each structure's total charge, see
    :func:`structure_for_model`), ``dipole``, ``energy_short`` and ``energy_elec``
    (eV) and ``qeq_matvec_products``. The charge solve of every structure starts cold.
    A charge model alone is accepted here (for its charges; its ``energy`` is then
    E_elec only): callers that need a potential check with
    :func:`hipqeq.models.store.require_potential`.
    """
    from tqdm.auto import tqdm

    potentials = load_committee(model_dirs, device=device, dtype=dtype, allow_charge_model=True)
    boundaries = [None] * len(atoms_list) if charge_pbc is None else charge_pbc
    return [committee_results(potentials, structure_for_model(atoms), want_stress=False, charge_pbc=pbc)
            for atoms, pbc in tqdm(zip(atoms_list, boundaries), total=len(atoms_list), desc="predict",
                                   unit="structure", disable=not progress, leave=False)]
