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

returned in Voigt order (xx, yy, zz, yz, xz, xy), eV/Angstrom^3; only for cells whose
three vectors span space (slabs use the volume of the cell, vacuum included, as ASE does).

Charges (e) and the dipole :math:`\sum_i q_i \mathbf r_i` (e*Angstrom) come from the
charge model, as do the energy parts ``energy_short`` and ``energy_elec`` (eV). For a
committee (several model directories) every result is the members' mean, and
``force_disagreement`` holds, per atom, the root-mean-square deviation of the members'
force vectors from the mean force (eV/Angstrom), ``energy_std`` the standard deviation of
the members' energies (eV).

The boundary of the charge solve is each structure's own (open, periodic, or slab for
pbc = T,T,F) and the total charge is ``atoms.info["total_charge"]``, exactly as in
training.

Neighbour lists are rebuilt every call (:func:`hipqeq.qeq.neighbor_pairs`, periodic
images included, so cells shorter than twice the cutoff are handled). The charge solve
is dense up to :data:`hipqeq.models.potential.DENSE_QEQ_MAX_ATOMS` atoms and iterative
(PME) above. :class:`HipQEqCalculator` warm-starts the iterative solve from its previous
call's charges (per committee member) while the atoms keep their number and species,
which is what MD needs; ``results["qeq_matvec_products"]`` counts the Coulomb
matrix-vector products the solves used (summed over members; 0 for dense solves).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

#: Results averaged over committee members.
AVERAGED = ("energy", "energy_short", "energy_elec", "forces", "stress", "charges", "dipole")


def _as_list(model_dirs) -> list:
    if isinstance(model_dirs, (str, os.PathLike)):
        return [model_dirs]
    return list(model_dirs)


def load_committee(model_dirs, device: str = "auto", dtype: str | None = None) -> list:
    """The :class:`~hipqeq.models.potential.Potential` of each model directory, on
    ``device`` ("auto", "cpu", "cuda") in the stored dtype or ``dtype``."""
    import torch

    from hipqeq.errors import HipqeqError
    from hipqeq.models.potential import resolve_device
    from hipqeq.models.store import load_potential

    dirs = _as_list(model_dirs)
    if not dirs:
        raise HipqeqError("no model directory given")
    torch_device = resolve_device(device)
    potentials = []
    for model_dir in dirs:
        potential = load_potential(model_dir).to(torch_device)
        if dtype is not None:
            potential = potential.to(getattr(torch, dtype))
        potentials.append(potential)
    return potentials


def committee_members(potentials: Sequence, atoms, want_stress: bool = True, qeq_solver: str = "auto",
                      initial_charges: Sequence | None = None, charge_pbc=None) -> list[dict]:
    """Each member's results on one structure (:func:`hipqeq.models.potential.evaluate`);
    ``initial_charges`` holds per member a warm start of its charge solve, or None;
    ``charge_pbc`` overrides the charge solve's boundary (a label's, for comparisons)."""
    from hipqeq.models.potential import evaluate

    starts = initial_charges if initial_charges is not None else [None] * len(potentials)
    return [evaluate(p, atoms, want_stress=want_stress, qeq_solver=qeq_solver, initial_charges=start,
                     charge_pbc=charge_pbc)
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
    :param dtype: "float32" or "float64" to override the stored precision.
    :param qeq_solver: "auto", "dense" or "iterative".

    The total charge is read from ``atoms.info["total_charge"]`` (default 0 e). The
    iterative charge solve starts from the previous call's charges while the atomic
    numbers stay the same (see the module docstring); :meth:`reset_warm_start` forgets them.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "charges", "dipole"]

    def __init__(self, model_dir, device: str = "auto", dtype: str | None = None,
                 qeq_solver: str = "auto", **kwargs):
        super().__init__(**kwargs)
        self.model_dirs = [str(d) for d in _as_list(model_dir)]
        self.potentials = load_committee(self.model_dirs, device=device, dtype=dtype)
        self.qeq_solver = qeq_solver
        self.reset_warm_start()

    def reset_warm_start(self) -> None:
        """Start the next charge solve cold (ASE's ``reset`` keeps the warm start: it runs
        at every change of positions)."""
        self._warm_numbers = None
        self._warm_charges = None

    def _initial_charges(self, atoms) -> list | None:
        if self._warm_numbers is None or not np.array_equal(self._warm_numbers, atoms.numbers):
            return None
        return self._warm_charges

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        want_stress = properties is None or "stress" in properties
        members = committee_members(self.potentials, self.atoms, want_stress=want_stress,
                                    qeq_solver=self.qeq_solver, initial_charges=self._initial_charges(self.atoms))
        results = combine_members(members)
        results["free_energy"] = results["energy"]
        self.results = results
        if "charges" in members[0]:
            self._warm_numbers = self.atoms.numbers.copy()
            self._warm_charges = [m["charges"] for m in members]


def predict(model_dirs, atoms_list: Sequence, device: str = "auto", dtype: str | None = None,
            progress: bool = True, charge_pbc: Sequence | None = None) -> list[dict]:
    """Predictions of a model (or committee) for many structures, models loaded once.

    The charge solve of each structure runs under its physical boundary (``atoms.pbc``),
    or under ``charge_pbc[k]`` where given: the boundary of a label to compare with
    (:func:`hipqeq.data.label_pbc`; tblite labels slabs as 3D-periodic cells).

    Returns one dict per structure with ``energy`` (eV), ``forces`` (n, 3, eV/A),
    ``force_disagreement`` and ``energy_std`` (committees), and for models with a
    charge model ``charges`` (n, e; summing to each structure's
    ``atoms.info["total_charge"]``), ``dipole``, ``energy_short`` and ``energy_elec``
    (eV) and ``qeq_matvec_products``. The charge solve of every structure starts cold.
    """
    from tqdm.auto import tqdm

    potentials = load_committee(model_dirs, device=device, dtype=dtype)
    boundaries = [None] * len(atoms_list) if charge_pbc is None else charge_pbc
    return [committee_results(potentials, atoms, want_stress=False, charge_pbc=pbc)
            for atoms, pbc in tqdm(zip(atoms_list, boundaries), total=len(atoms_list), desc="predict",
                                   unit="structure", disable=not progress, leave=False)]
