"""A fixed repulsive core under the short-range network: the ZBL universal screened
nuclear repulsion, switched off smoothly at the sum of the pair's covalent radii.

.. math::

    E_\\mathrm{rep} = \\frac12 \\sum_{i \\ne j} \\frac{k_e Z_i Z_j}{r_{ij}}\\,
        \\phi\\!\\left(\\frac{r_{ij}}{a_{ij}}\\right) f\\!\\left(\\frac{r_{ij}}{s\\,(R_i + R_j)}\\right),
    \\qquad a_{ij} = \\frac{0.8854\\,a_0}{Z_i^{0.23} + Z_j^{0.23}}

with :math:`\\phi` the ZBL universal screening function (Ziegler, Biersack and
Littmark, *The Stopping and Range of Ions in Solids*, 1985), :math:`R` ASE's covalent
radii (Angstrom), :math:`s` the ``radius_scale`` hyperparameter and :math:`f` the
polynomial envelope of order 6 that goes to zero with its first two derivatives at 1
(as in MACE's ``ZBLBasis``, whose cutoff is the same sum of covalent radii). Energies
in eV, distances in Angstrom.

Why: HIP-NN's sensitivities vanish below the network's lower cutoff (1.5 A by
default), and the Gaussian-charge electrostatics of a cation and an anion stay
attractive down to r = 0, so without a core nothing stops two ions from fusing once MD
pushes them closer than any training structure (seen here: ions at 0.36 A within 2 ps
of NVE). At bonded distances in CsPbI (Pb-I 3.2 A, Cs-I >= 3.9 A) the term is zero or a
small smooth offset that the network absorbs, since the model's energy is network +
core and the labels are fitted as such; below ~2.5 A it rises to tens of eV.
"""

from __future__ import annotations

import torch
from ase.data import covalent_radii

from hipqeq.units import BOHR_A, COULOMB_EV_A

#: ZBL universal screening function: phi(x) = sum_k c_k exp(-d_k x).
ZBL_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)
#: Order of the polynomial envelope.
ENVELOPE_ORDER = 6


def polynomial_envelope(x: torch.Tensor, p: int = ENVELOPE_ORDER) -> torch.Tensor:
    """1 at x = 0, falling to 0 at x = 1 with zero first and second derivatives, 0 beyond."""
    value = (1.0 - (p + 1) * (p + 2) / 2 * x ** p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2))
    return torch.where(x < 1.0, value, torch.zeros_like(x))


def zbl_pair_energy(z_first: torch.Tensor, z_second: torch.Tensor, distance_A: torch.Tensor) -> torch.Tensor:
    """Unswitched ZBL repulsion (eV) of pairs with atomic numbers ``z_first``,
    ``z_second`` (float tensors) at ``distance_A``."""
    screening_length_A = 0.8854 * BOHR_A / (z_first ** 0.23 + z_second ** 0.23)
    x = distance_A / screening_length_A
    phi = sum(c * torch.exp(-d * x) for c, d in zip(ZBL_COEFFICIENTS, ZBL_EXPONENTS))
    return COULOMB_EV_A * z_first * z_second / distance_A * phi


class ZBLRepulsion(torch.nn.Module):
    """The fixed repulsive core of a short-range model (no trainable parameters).

    Parameters
    ----------
    species : atomic numbers of the model, in the order of its one-hot columns.
    radius_scale : the core ends at ``radius_scale`` times the sum of the pair's
        covalent radii.
    """

    def __init__(self, species: list[int], radius_scale: float = 1.0):
        super().__init__()
        if radius_scale <= 0:
            raise ValueError(f"radius_scale must be positive, got {radius_scale}")
        self.radius_scale = float(radius_scale)
        self.register_buffer("atomic_numbers", torch.tensor([float(z) for z in species]))
        self.register_buffer("covalent_radii_A", torch.tensor([float(covalent_radii[z]) for z in species]))

    @property
    def range_A(self) -> float:
        """Distance beyond which the core is zero for every pair of the model's species."""
        return float(2 * self.radius_scale * self.covalent_radii_A.max())

    def pair_energies(self, one_hot: torch.Tensor, pair_first: torch.Tensor, pair_second: torch.Tensor,
                      pair_dist: torch.Tensor) -> torch.Tensor:
        """Core energy (eV) of each listed pair, (n_pairs,); ``one_hot`` (n_atoms,
        n_species) selects each atom's atomic number and covalent radius."""
        one_hot = one_hot.to(pair_dist.dtype)
        z = one_hot @ self.atomic_numbers.to(pair_dist.dtype)
        radius = one_hot @ self.covalent_radii_A.to(pair_dist.dtype)
        z_first, z_second = z[pair_first], z[pair_second]
        reach = self.radius_scale * (radius[pair_first] + radius[pair_second])
        # Pairs beyond the core never reach exp() at small x: no overflow, no NaN gradient.
        close = pair_dist < reach
        distance = torch.where(close, pair_dist, reach)
        energy = zbl_pair_energy(z_first, z_second, distance) * polynomial_envelope(distance / reach)
        return torch.where(close, energy, torch.zeros_like(energy))

    def forward(self, one_hot: torch.Tensor, pair_dist: torch.Tensor, pair_first: torch.Tensor,
                pair_second: torch.Tensor, mol_index: torch.Tensor, n_molecules: int) -> torch.Tensor:
        """Core energy (eV) per molecule, (n_molecules, 1), from a full pair list (each
        pair listed as i-j and j-i, as hippynn's pair finders give it)."""
        energies = 0.5 * self.pair_energies(one_hot, pair_first, pair_second, pair_dist)
        total = torch.zeros((n_molecules, 1), dtype=energies.dtype, device=energies.device)
        return total.index_add_(0, mol_index[pair_first], energies.unsqueeze(1))
