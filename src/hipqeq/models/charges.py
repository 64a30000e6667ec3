"""The charge model: HIP-NN electronegativities fed to charge equilibration.

.. math::

    \\chi_i = \\sum_{\\ell=0}^{L} \\mathbf{w}_\\ell \\cdot \\mathbf{z}_i^{(\\ell)} + b_\\ell
    \\qquad
    q^* = \\operatorname*{arg\\,min}_{\\sum_i q_i = Q}
          E_\\mathrm{elec}(q) + \\sum_i \\left(\\chi_i q_i + \\tfrac12 J_{Z_i} q_i^2\\right)

:math:`\\chi_i` (eV/e) comes from a hippynn ``HCharge`` head on the atom's HIP-NN
features; hardness :math:`J_Z` (eV/e^2) and Gaussian widths :math:`\\sigma_Z`
(Angstrom) are learnable per element inside :class:`hipqeq.qeq.QEq`, which also gives
:math:`E_\\mathrm{elec}(q^*)` (eV) and the dipole (e*Angstrom).

The boundary of the Coulomb sums is not a model setting: every structure's own ``pbc``
picks open, periodic or dipole-corrected slab sums, in training (the QEq node reads the
dataset's ``pbc`` column) and in deployment alike. The Coulomb-sum tolerance is a model
setting (``qeq_tolerance``), so training and deployment use the same one.
"""

from __future__ import annotations

import torch
from hippynn.layers.targets import HCharge

from hipqeq.models.network import HipnnModel
from hipqeq.qeq import QEq


def charge_hyperparameters(network_hp: dict, tolerance: float) -> dict:
    """Network settings plus the QEq setting of the model: ``qeq_tolerance``, the
    accuracy of the periodic Coulomb sums and of the iterative solve."""
    return {**network_hp, "qeq_tolerance": float(tolerance)}


class ChargeModel(HipnnModel):
    """HIP-NN + ``HCharge`` electronegativity head + QEq layer."""

    def __init__(self, hyperparameters: dict):
        super().__init__(hyperparameters)
        self.electronegativity = HCharge(feature_sizes=self.network.feature_sizes, n_target=1)
        self.qeq = QEq(hyperparameters["species"], tolerance=hyperparameters["qeq_tolerance"])

    def electronegativities(self, species, positions, cell, pair_first, pair_second, shifts) -> torch.Tensor:
        """(n_atoms, 1) electronegativities chi (eV/e) of one system."""
        chi, *_ = self.electronegativity(self.features(species, positions, cell, pair_first, pair_second, shifts))
        return chi

    def forward(self, species, positions, cell, pbc, total_charge, pair_first, pair_second, shifts,
                solver: str = "dense", initial_charges=None):
        """Charges (n_atoms,) e, E_elec (0-d) eV and dipole (3,) e*A of one system.

        ``cell`` (3, 3) is ignored for an open system; ``pbc`` (3,) bool picks the
        boundary (:func:`hipqeq.qeq.boundary_from_pbc`); ``total_charge`` is a 0-d tensor
        (e). ``solver`` ("dense" or "iterative") and ``initial_charges`` (n_atoms,) e, a
        warm start of the iterative solve, are passed to the QEq layer.
        """
        chi = self.electronegativities(species, positions, cell, pair_first, pair_second, shifts)
        mol_index = torch.zeros(species.shape[0], dtype=torch.long, device=species.device)
        charges, e_elec, _, dipole = self.qeq(chi, species, positions, mol_index, 1, cell=cell.unsqueeze(0),
                                              total_charge=total_charge.reshape(1), pbc=pbc.reshape(1, 3),
                                              initial_charges=initial_charges, solver=solver)
        return charges.reshape(-1), e_elec.reshape(()), dipole.reshape(3)
