"""The charge model: HIP-NN electronegativities fed to charge equilibration.

.. math::

    \\chi_i = \\sum_{\\ell=0}^{L} \\mathbf{w}_\\ell \\cdot \\mathbf{z}_i^{(\\ell)} + b_\\ell
    \\qquad
    q^* = \\operatorname*{arg\\,min}_{\\sum_i q_i = Q}
          E_\\mathrm{elec}(q) + \\sum_i \\left(\\chi_i q_i + \\tfrac12 J_{Z_i} q_i^2\\right)

:math:`\\chi_i` (eV/e) comes from a hippynn ``HCharge`` head on the atom's HIP-NN
features; hardness :math:`J_Z` (eV/e^2) and Gaussian widths :math:`\\sigma_Z`
(Angstrom) are learnable per element, starting from physical values per element
(:func:`qeq_parameters`), inside :class:`hipqeq.qeq.QEq`, which also gives
:math:`E_\\mathrm{elec}(q^*)` (eV) and the dipole (e*Angstrom).

The boundary of the Coulomb sums is not a model setting: in training each structure's
charges are solved under the boundary its label was computed with (the QEq node reads
the dataset's ``label_boundary`` as ``label_pbc``: tblite's slabs are 3D-periodic cells),
in deployment under the structure's own ``pbc`` (open, periodic or dipole-corrected
slab). The Coulomb-sum tolerance is a model
setting (``qeq_tolerance``), so training and deployment use the same one.
"""

from __future__ import annotations

import torch
from ase.data import chemical_symbols
from hippynn.layers.targets import HCharge

from hipqeq.errors import HipqeqError
from hipqeq.models.network import HipnnModel, pair_geometry
from hipqeq.qeq import QEq
from hipqeq.qeq.coulomb import DEFAULT_BACKGROUND


def element_hardness_eV(number: int) -> float:
    """Initial QEq hardness of an element: :math:`J_Z = I_Z - A_Z` (eV/e^2), the first
    ionisation energy minus the electron affinity of the free atom (pymatgen's element
    data), i.e. twice Parr and Pearson's absolute hardness, the curvature of the atom's
    energy in its charge that :math:`\tfrac12 J_Z q^2` models (Rappe and Goddard,
    J. Phys. Chem. 95, 3358 (1991)). Cs 3.42, Pb 7.06, I 7.39, Br 8.45 eV."""
    from pymatgen.core import Element

    element = Element.from_Z(int(number))
    ionisation, affinity = element.ionization_energies[0], element.electron_affinity
    if ionisation is None or affinity is None or ionisation <= affinity:
        raise HipqeqError(f"no ionisation energy / electron affinity for {element.symbol}: set "
                          f"training.qeq_parameters.hardness_eV.{element.symbol} in the config")
    return float(ionisation - affinity)


def element_sigma_A(number: int) -> float:
    """Initial Gaussian charge width of an element: its covalent radius (Angstrom; ASE's
    table of Cordero et al. 2008), the choice of Ko et al., Nat. Commun. 12, 398 (2021).
    Cs 2.44, Pb 1.46, I 1.39, Br 1.20 A."""
    from ase.data import covalent_radii

    return float(covalent_radii[int(number)])


def qeq_parameters(species: list[int], overrides: dict | None = None) -> dict:
    """Initial per-species hardness (``hardness_eV``, eV/e^2) and widths (``sigma_A``,
    Angstrom), lists aligned with ``species``: :func:`element_hardness_eV` and
    :func:`element_sigma_A`, unless ``overrides`` (the config's
    ``training.qeq_parameters``: ``{"hardness_eV": {"Cs": 3.4}, "sigma_A": {...}}``, keyed
    by element symbol) sets an element's value. Both stay learnable in training."""
    overrides = overrides or {}
    defaults = {"hardness_eV": element_hardness_eV, "sigma_A": element_sigma_A}
    values = {}
    for key, default in defaults.items():
        given = overrides.get(key, {})
        unknown = sorted(set(given) - {chemical_symbols[z] for z in species})
        if unknown:
            raise HipqeqError(f"training.qeq_parameters.{key} names {unknown}, not among the model's "
                              f"elements {[chemical_symbols[z] for z in species]}")
        values[key] = [float(given.get(chemical_symbols[z], 0.0)) or default(z) for z in species]
    return values


def charge_hyperparameters(network_hp: dict, tolerance: float, qeq_overrides: dict | None = None) -> dict:
    """Network settings plus the QEq settings of the model: ``qeq_tolerance``, the
    accuracy of the periodic Coulomb sums and of the iterative solve, ``qeq_background``,
    the background convention of charged periodic cells (``"point"``, that of the
    3D-periodic xTB engines; :mod:`hipqeq.qeq.coulomb`), and the initial per-species
    ``hardness_eV`` and ``sigma_A`` (:func:`qeq_parameters`)."""
    return {**network_hp, "qeq_tolerance": float(tolerance), "qeq_background": DEFAULT_BACKGROUND,
            **qeq_parameters(network_hp["species"], qeq_overrides)}


class ChargeModel(HipnnModel):
    """HIP-NN + ``HCharge`` electronegativity head + QEq layer."""

    def __init__(self, hyperparameters: dict):
        super().__init__(hyperparameters)
        self.electronegativity = HCharge(feature_sizes=self.network.feature_sizes, n_target=1)
        # models of format <= 5 have no qeq_background: they were trained with the Gaussian one
        self.qeq = QEq(hyperparameters["species"], hardness=hyperparameters["hardness_eV"],
                       sigma=hyperparameters["sigma_A"], tolerance=hyperparameters["qeq_tolerance"],
                       background=hyperparameters.get("qeq_background", "gaussian"))

    def electronegativities(self, species, positions, cell, pair_first, pair_second, shifts) -> torch.Tensor:
        """(n_atoms, 1) electronegativities chi (eV/e) of one system."""
        vectors, distances = pair_geometry(positions, cell, pair_first, pair_second, shifts)
        features = self.features(self.one_hot(species), vectors, distances, pair_first, pair_second)
        chi, *_ = self.electronegativity(features)
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
