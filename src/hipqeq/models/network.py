"""HIP-NN pieces shared by the charge model, the short-range model and the baseline.

A model is a ``torch.nn.Module`` made of hippynn layers (one-hot species encoder,
``hippynn.networks.Hipnn``, a target head); the same module instances are wrapped in
hippynn graph nodes for training (:mod:`hipqeq.models.graphs`) and called directly on
an external neighbour list for deployment (:mod:`hipqeq.models.potential`), so the
weights a model directory stores fit both.
"""

from __future__ import annotations

import torch
from hippynn.layers.indexers import OneHotSpecies
from hippynn.networks.hipnn import Hipnn, HipnnQuad, HipnnVec

from hipqeq.qeq import pair_vectors

#: Ratio of the last sensitivity's midpoint to the hard cutoff (hippynn's examples use
#: dist_soft_max 3.5 A with dist_hard_max 4 A).
SOFT_MAX_FRACTION = 0.875

#: hippynn's network for each ``tensor_order``: HIP-NN, and HIP-NN-TS with l = 1 and l = 2.
NETWORKS = {0: Hipnn, 1: HipnnVec, 2: HipnnQuad}


def network_hyperparameters(network: dict, species: list[int]) -> dict:
    """JSON-able HIP-NN settings from the config's ``training.network`` section.

    ``species`` are the atomic numbers the model knows; hippynn's species set adds 0
    (padding) in front.
    """
    return {
        "species": sorted({int(z) for z in species} - {0}),
        "n_features": network["n_features"],
        "n_sensitivities": network["n_sensitivities"],
        "n_interaction_layers": network["n_interaction_layers"],
        "n_atom_layers": network["n_atom_layers"],
        "cutoff_A": network["cutoff_A"],
        "lower_cutoff_A": network["lower_cutoff_A"],
        "tensor_order": network.get("tensor_order", 0),
    }


def species_set(hyperparameters: dict) -> list[int]:
    """hippynn's species set: 0 for padding, then the model's atomic numbers."""
    return [0, *hyperparameters["species"]]


def tensor_order(hyperparameters: dict) -> int:
    """The network's tensor order (0 for models stored before HIP-NN-TS was an option)."""
    return int(hyperparameters.get("tensor_order", 0))


def hipnn_module(hyperparameters: dict, extra_input_features: int = 0) -> Hipnn:
    """A fresh hippynn network (:data:`NETWORKS`, by ``tensor_order``) with the given
    settings (distances in Angstrom), reading the one-hot species plus
    ``extra_input_features`` columns per atom."""
    cutoff = hyperparameters["cutoff_A"]
    n_species = len(hyperparameters["species"])
    return NETWORKS[tensor_order(hyperparameters)](
        n_features=hyperparameters["n_features"],
        n_sensitivities=hyperparameters["n_sensitivities"],
        dist_soft_min=hyperparameters["lower_cutoff_A"],
        dist_soft_max=SOFT_MAX_FRACTION * cutoff,
        dist_hard_max=cutoff,
        n_atom_layers=hyperparameters["n_atom_layers"],
        n_interaction_layers=hyperparameters["n_interaction_layers"],
        # hippynn checks possible_species against the input width: give it only for
        # one-hot inputs (the species set is then kept for hippynn's pair finders).
        possible_species=None if extra_input_features else species_set(hyperparameters),
        n_input_features=n_species + extra_input_features,
    )


def encoder_module(hyperparameters: dict) -> OneHotSpecies:
    """hippynn's one-hot species encoder for the model's species set."""
    return OneHotSpecies(species_set(hyperparameters))


def pair_geometry(positions: torch.Tensor, cell: torch.Tensor, pair_first: torch.Tensor,
                  pair_second: torch.Tensor, shifts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair vectors r_j + S @ cell - r_i (:func:`hipqeq.qeq.pair_vectors`) and their
    lengths for an external neighbour list.

    Same convention as hippynn's ``ExternalNeighbors`` and ASE's ``neighbor_list('ijS')``.

    Parameters
    ----------
    positions : (n_atoms, 3) Angstrom.
    cell : (3, 3) lattice vectors as rows, Angstrom.
    pair_first, pair_second : (n_pairs,) atom indices i, j.
    shifts : (n_pairs, 3) integer image offsets S of atom j.

    Returns
    -------
    vectors (n_pairs, 3) and distances (n_pairs,), Angstrom.
    """
    vectors = pair_vectors(positions, cell, pair_first, pair_second, shifts)
    return vectors, vectors.norm(dim=1)


class HipnnModel(torch.nn.Module):
    """The part every model shares: its hyperparameters, the one-hot species encoder and
    the HIP-NN (``encoder`` and ``network``, the state-dict names of the stored weights).
    Subclasses add their target head, and may widen the network's input by
    ``extra_input_features`` columns after the one-hot species."""

    def __init__(self, hyperparameters: dict, extra_input_features: int = 0):
        super().__init__()
        self.hyperparameters = dict(hyperparameters)
        self.encoder = encoder_module(hyperparameters)
        self.network = hipnn_module(hyperparameters, extra_input_features)

    @property
    def cutoff_A(self) -> float:
        return float(self.hyperparameters["cutoff_A"])

    def one_hot(self, species: torch.Tensor) -> torch.Tensor:
        """One-hot species (n_atoms, n_species) of one system's atomic numbers (n_atoms,)."""
        one_hot, _ = self.encoder(species.unsqueeze(0))
        return one_hot.squeeze(0)

    def features(self, one_hot: torch.Tensor, vectors: torch.Tensor, distances: torch.Tensor,
                 pair_first: torch.Tensor, pair_second: torch.Tensor, inputs=None) -> list[torch.Tensor]:
        """HIP-NN features of one system from its one-hot species (:meth:`one_hot`) and an
        external neighbour list's pair vectors and distances (Angstrom, see
        :func:`pair_geometry`): a list, one (n_atoms, n_features) tensor per layer.
        ``inputs(one_hot)`` builds the network's input features from the one-hot species
        (default: the one-hot species themselves).

        Only HIP-NN-TS reads the vectors. hippynn's own pair finders disagree on their
        sign (r_i - r_j periodic, r_j - r_i external); HIP-NN-TS features do not change
        when every vector changes sign (norms of vector sums, quadrupoles), so either
        convention gives the same features."""
        features = one_hot if inputs is None else inputs(one_hot)
        if tensor_order(self.hyperparameters):
            return self.network(features, pair_first, pair_second, distances, vectors)
        return self.network(features, pair_first, pair_second, distances)
