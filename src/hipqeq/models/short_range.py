"""The short-range HIP-NN energy (also the whole baseline model).

.. math::

    E_\\mathrm{short} = \\sum_i \\sum_{\\ell=0}^{L} \\mathbf{w}_\\ell \\cdot \\mathbf{z}_i^{(\\ell)} + b_\\ell

with :math:`\\mathbf{z}_i^{(0)}` the one-hot species of atom i (so the first term is a
per-species energy reference, fitted by least squares before training) and
:math:`\\mathbf{z}_i^{(\\ell)}` its HIP-NN features after interaction layer
:math:`\\ell` (hippynn's hierarchical energy, ``HEnergy``). Energies in eV.
"""

from __future__ import annotations

import torch
from hippynn.layers.targets import HEnergy

from hipqeq.models.network import HipnnModel


class ShortRangeModel(HipnnModel):
    """HIP-NN with a hierarchical energy head.

    ``hyperparameters`` come from :func:`hipqeq.models.network.network_hyperparameters`.
    """

    def __init__(self, hyperparameters: dict):
        super().__init__(hyperparameters)
        self.energy = HEnergy(feature_sizes=self.network.feature_sizes, first_is_interacting=False)

    def forward(self, species: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor,
                pair_first: torch.Tensor, pair_second: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """Short-range energy (eV, 0-d tensor) of one system from an external neighbour list
        (see :func:`hipqeq.models.network.pair_geometry`)."""
        features = self.features(species, positions, cell, pair_first, pair_second, shifts)
        mol_index = torch.zeros(species.shape[0], dtype=torch.long, device=species.device)
        total, *_ = self.energy(features, mol_index, 1)
        return total.reshape(())
