"""The short-range HIP-NN energy (also the whole baseline model).

.. math::

    E_\\mathrm{short} = \\sum_i \\sum_{\\ell=0}^{L} \\mathbf{w}_\\ell \\cdot \\mathbf{z}_i^{(\\ell)} + b_\\ell

plus, unless ``repulsive_core`` is null, a fixed ZBL repulsive core
:math:`E_\\mathrm{rep}` (:mod:`hipqeq.models.repulsion`) that keeps atoms apart below
the network's lower cutoff; the network learns what the core leaves. Here
:math:`\\mathbf{z}_i^{(0)}` is the input features of atom i (the one-hot species, so
the first term is a per-species energy reference fitted by least squares before
training) and
:math:`\\mathbf{z}_i^{(\\ell)}` its HIP-NN features after interaction layer
:math:`\\ell` (hippynn's hierarchical energy, ``HEnergy``). Energies in eV.

Charge-aware short range (the 4G potential's, ``charge_features`` in the
hyperparameters): the network's input features are the one-hot species *and* the
equilibrated charge :math:`q_i^*` (e) of each atom, as in 4G-HDNNP (Ko et al.,
Nat. Commun. 12, 398 (2021), where the charges enter the short-range descriptors). The
first interaction layer then mixes every atom's charge with its neighbours', weighted
by the distance sensitivities, so a neutral and a charged defect at one geometry get
different short-range energies. The total charge :math:`Q` enters through the charges
(:math:`\\sum_i q_i^* = Q`); a per-atom :math:`Q` would not be local. The zeroth energy
term reads the charge column too: :math:`\\sum_i (e_{Z_i} + \\mu_Q q_i^*) = \\sum_i e_{Z_i} +
\\mu_Q Q`, an energy per unit of total charge (eV/e) fitted by least squares with the
per-species references (:func:`hipqeq.training.stages.fit_energy_reference`). It carries
what the charge model cannot: removing an electron costs an ionisation energy, and a
periodic label of a charged cell adds its background terms (a least-squares fit of the
study's CP2K energies on composition leaves 80 meV/atom, on composition and Q 23 meV/atom,
with 11.6 eV/e), while the electronegativities are fitted to
charges, which fix them only up to a constant. Forces and stress take the charges' response
to the geometry, :math:`\\partial E_\\mathrm{short}/\\partial q \\cdot \\mathrm dq^*/\\mathrm dR`,
by autograd through the charge solve (see :mod:`hipqeq.models.potential`).

Charge hardness (``charge_hardness`` in the hyperparameters): the zeroth term is linear in
:math:`Q`, so it moves a cell at :math:`Q = +1` and one at :math:`Q = -1` in opposite
directions; the energy's curvature in the total charge, :math:`\\eta_Q Q^2 / 2` (eV/e^2, the
fundamental gap's part in :math:`E(+1) + E(-1) - 2E(0)` that the charge model's
electrostatics do not give), is a further global term (:class:`ChargeHardness`), fitted
by least squares with the per-species references and :math:`\\mu_Q` and frozen like them.
Like :math:`\\mu_Q Q` it has no force.

Environment-dependent energy of the total charge (``charge_energy: environment`` in the
hyperparameters): one global :math:`\\mu_Q` cannot hold what removing an electron costs in
slabs whose band edges differ (the n = 1 and n = 2 slabs' V_I+, docs/study/README.md "Charged twins").
The model then adds

.. math::

    E_Q = Q \\, \\frac{1}{N} \\sum_i \\mu_i, \\qquad
    \\mu_i = \\sum_{\\ell=0}^{L} \\mathbf{u}_\\ell \\cdot \\mathbf{z}_i^{(\\ell)} + c_\\ell

an energy per unit of total charge (eV/e) that is the mean of a second hierarchical head
on the same features (:class:`ChargeEnergy`): intensive, as an ionisation energy is (a
supercell of the same charged defect gets the same :math:`E_Q`), and structure-dependent.
Its weights start at zero, so it begins as the global term alone and learns from the
charged cells only (:math:`E_Q = 0` at :math:`Q = 0`). :math:`Q = \\sum_i q_i^*` is fixed by the
charge solve's constraint, so :math:`\\partial E_Q / \\partial q_i` is the same for every
atom and, since :math:`\\sum_i \\mathrm dq_i^*/\\mathrm dR = 0`, adds no force through the
charges: training may read Q from the labels' total charge.
"""

from __future__ import annotations

import torch
from hippynn.layers.targets import HEnergy

from hipqeq.models.network import HipnnModel, pair_geometry
from hipqeq.models.repulsion import ZBLRepulsion


class ChargeInputFeatures(torch.nn.Module):
    """Input features of a charge-aware network: one-hot species (n_atoms, n_species)
    and charges (n_atoms, 1) in e, side by side."""

    def forward(self, one_hot: torch.Tensor, charges: torch.Tensor) -> torch.Tensor:
        return torch.cat([one_hot.to(charges.dtype), charges.reshape(-1, 1)], dim=1)


#: ``charge_energy`` settings: one global eV/e (the zeroth energy term's charge column),
#: or that plus a structure-dependent mean over atoms (:class:`ChargeEnergy`).
CHARGE_ENERGIES = ("global", "environment")


class ChargeEnergy(torch.nn.Module):
    """The environment-dependent energy of the total charge, :math:`E_Q = Q \\bar\\mu`
    (eV), with :math:`\\bar\\mu` (eV/e) the mean over a system's atoms of a hierarchical
    head on the network's features (hippynn's ``HEnergy``), started at zero."""

    def __init__(self, feature_sizes):
        super().__init__()
        self.head = HEnergy(feature_sizes=feature_sizes, first_is_interacting=False)
        for layer in self.head.layers:
            torch.nn.init.zeros_(layer.weight)
            if layer.bias is not None:
                torch.nn.init.zeros_(layer.bias)

    def forward(self, features, mol_index, n_molecules, total_charge):
        """``features``: the network's per-layer features of the atoms of ``n_molecules``
        systems (``mol_index``: each atom's system); ``total_charge`` (n_molecules, 1) e.
        Returns (n_molecules, 1) eV."""
        mu_sum, *_ = self.head(features, mol_index, n_molecules)
        n_atoms = torch.bincount(mol_index, minlength=n_molecules).to(mu_sum.dtype).reshape(-1, 1)
        return total_charge * mu_sum / n_atoms


class ChargeHardness(torch.nn.Module):
    """The energy's curvature in the total charge, :math:`E = \\eta_Q Q^2 / 2` (eV), with
    :math:`\\eta_Q` (eV/e^2, ``eta``) set by least squares with the energy reference
    (:func:`hipqeq.training.common.energy_reference_weights`) and not trained."""

    def __init__(self):
        super().__init__()
        self.eta = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, total_charge: torch.Tensor) -> torch.Tensor:
        """``total_charge`` (n_molecules, 1) e; returns (n_molecules, 1) eV."""
        return self.eta * total_charge ** 2 / 2


class ShortRangeModel(HipnnModel):
    """HIP-NN with a hierarchical energy head; charge-aware when
    ``hyperparameters["charge_features"]`` is true.

    ``hyperparameters`` come from :func:`hipqeq.models.network.network_hyperparameters`.
    """

    def __init__(self, hyperparameters: dict):
        super().__init__(hyperparameters, extra_input_features=1 if hyperparameters.get("charge_features") else 0)
        if self.charge_features:
            self.inputs = ChargeInputFeatures()
        self.energy = HEnergy(feature_sizes=self.network.feature_sizes, first_is_interacting=False)
        charge_energy = hyperparameters.get("charge_energy", "global")
        if charge_energy not in CHARGE_ENERGIES:
            raise ValueError(f"charge_energy {charge_energy!r}: choose one of {', '.join(CHARGE_ENERGIES)}")
        if charge_energy == "environment" and not self.charge_features:
            raise ValueError("an environment-dependent charge energy needs a charge-aware model (charge_features)")
        self.charge_energy = ChargeEnergy(self.network.feature_sizes) if charge_energy == "environment" else None
        if hyperparameters.get("charge_hardness") and not self.charge_features:
            raise ValueError("a charge hardness needs a charge-aware model (charge_features)")
        self.charge_hardness = ChargeHardness() if hyperparameters.get("charge_hardness") else None
        scale = hyperparameters.get("repulsive_core")
        self.core = None if scale is None else ZBLRepulsion(hyperparameters["species"], scale)
        if self.core is not None and self.core.range_A > self.cutoff_A:
            raise ValueError(f"the repulsive core reaches {self.core.range_A:.2f} A, beyond the network's "
                             f"cutoff of {self.cutoff_A} A: raise cutoff_A or lower repulsive_core")

    @property
    def charge_features(self) -> bool:
        """Whether the network reads the equilibrated charges."""
        return bool(self.hyperparameters.get("charge_features", False))

    def forward(self, species: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor,
                pair_first: torch.Tensor, pair_second: torch.Tensor, shifts: torch.Tensor,
                charges: torch.Tensor | None = None) -> torch.Tensor:
        """Short-range energy (eV, 0-d tensor) of one system from an external neighbour list
        (see :func:`hipqeq.models.network.pair_geometry`); ``charges`` (n_atoms,) e are
        required by a charge-aware model and refused by a charge-blind one."""
        if self.charge_features != (charges is not None):
            raise ValueError("a charge-aware short-range model needs the charges, a charge-blind one takes none")
        inputs = None if charges is None else (lambda one_hot_: self.inputs(one_hot_, charges))
        vectors, distances = pair_geometry(positions, cell, pair_first, pair_second, shifts)
        one_hot = self.one_hot(species)
        features = self.features(one_hot, vectors, distances, pair_first, pair_second, inputs=inputs)
        mol_index = torch.zeros(species.shape[0], dtype=torch.long, device=species.device)
        total, *_ = self.energy(features, mol_index, 1)
        if self.charge_energy is not None:
            total = total + self.charge_energy(features, mol_index, 1, charges.sum().reshape(1, 1))
        if self.charge_hardness is not None:
            total = total + self.charge_hardness(charges.sum().reshape(1, 1))
        if self.core is not None:
            total = total + self.core(one_hot, distances, pair_first, pair_second, mol_index, 1)
        return total.reshape(())
