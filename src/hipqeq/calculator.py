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
charge model. For a committee (several model directories) every result is the members'
mean, and ``force_disagreement`` holds, per atom, the root-mean-square deviation of the
members' force vectors from the mean force (eV/Angstrom), ``energy_std`` the standard
deviation of the members' energies (eV).

Neighbour lists are rebuilt every call (:func:`hipqeq.qeq.neighbor_pairs`, periodic
images included, so cells shorter than twice the cutoff are handled). The charge solve
is dense up to :data:`hipqeq.models.potential.DENSE_QEQ_MAX_ATOMS` atoms and iterative
(PME) above; the QEq layer (``hipqeq.qeq.QEq``) takes no initial charges yet, so the
iterative solve starts from its default guess at every call rather than from the
previous step's charges.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

#: Results averaged over committee members.
AVERAGED = ("energy", "forces", "stress", "charges", "dipole")


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


def committee_results(potentials: Sequence, atoms, want_stress: bool = True,
                      qeq_solver: str = "auto") -> dict:
    """Mean results of a committee on one structure, plus ``force_disagreement``
    (n_atoms,) and ``energy_std`` (see the module docstring)."""
    from hipqeq.models.potential import evaluate

    members = [evaluate(p, atoms, want_stress=want_stress, qeq_solver=qeq_solver) for p in potentials]
    results = {key: np.mean([m[key] for m in members], axis=0)
               for key in AVERAGED if key in members[0]}
    results["energy"] = float(results["energy"])
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

    The total charge is read from ``atoms.info["total_charge"]`` (default 0 e).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "charges", "dipole"]

    def __init__(self, model_dir, device: str = "auto", dtype: str | None = None,
                 qeq_solver: str = "auto", **kwargs):
        super().__init__(**kwargs)
        self.model_dirs = [str(d) for d in _as_list(model_dir)]
        self.potentials = load_committee(self.model_dirs, device=device, dtype=dtype)
        self.qeq_solver = qeq_solver

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        want_stress = properties is None or "stress" in properties
        results = committee_results(self.potentials, self.atoms, want_stress=want_stress,
                                    qeq_solver=self.qeq_solver)
        results["free_energy"] = results["energy"]
        self.results = results


def predict(model_dirs, atoms_list: Sequence, device: str = "auto", dtype: str | None = None,
            progress: bool = True) -> list[dict]:
    """Predictions of a model (or committee) for many structures, models loaded once.

    Returns one dict per structure with ``energy`` (eV), ``forces`` (n, 3, eV/A),
    ``charges`` (n, e; models with a charge model), ``dipole``, ``force_disagreement``
    and ``energy_std`` (committees).
    """
    from tqdm.auto import tqdm

    potentials = load_committee(model_dirs, device=device, dtype=dtype)
    return [committee_results(potentials, atoms, want_stress=False)
            for atoms in tqdm(atoms_list, desc="predict", unit="structure", disable=not progress, leave=False)]
