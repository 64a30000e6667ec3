"""Differentiable Gaussian-charge charge equilibration (QEq), the 4G charge model.

Layout after torch-pme and hippynn:

- :mod:`~hipqeq.qeq.neighbors`: pairs within a cutoff over periodic images (vesin), Verlet lists;
- :mod:`~hipqeq.qeq.ewald`: Ewald/PME/P3M parameters from one tolerance;
- :mod:`~hipqeq.qeq.coulomb`: Coulomb matrices and matrix-free potentials of Gaussian
  charges for open, periodic and slab boundaries (pure functions);
- :mod:`~hipqeq.qeq.solvers`: dense bordered and iterative projected-CG solvers;
- :mod:`~hipqeq.qeq.shadow`: shadow (extended-Lagrangian) QEq for MD: auxiliary
  charges and adjoint propagated with the nuclei, one linearised step instead of a solve;
- :mod:`~hipqeq.qeq.layers`: the ``QEq`` torch module; :mod:`~hipqeq.qeq.nodes`: its
  hippynn node ``QEqNode`` (imports hippynn);
- :mod:`~hipqeq.qeq.api`: ``equilibrate(atoms, chi, hardness, sigma)`` and
  ``fixed_charge_electrostatics(atoms, charges, sigma)``.

Units: eV, Angstrom, e.
"""

from hipqeq.qeq.api import equilibrate, fixed_charge_electrostatics
from hipqeq.qeq.coulomb import (
    BACKGROUNDS,
    DEFAULT_BACKGROUND,
    DEFAULT_KSPACE_METHOD,
    KSPACE_METHODS,
    CoulombOperator,
    MeshReciprocal,
    boundary_from_pbc,
    coulomb_matrix,
    electrostatic_energy,
    gaussian_coulomb_kernel,
    qeq_energy,
)
from hipqeq.qeq.ewald import (
    DEFAULT_TOLERANCE,
    P3M_INTERPOLATION_NODES,
    PME_INTERPOLATION_NODES,
    EwaldParameters,
    dense_ewald_parameters,
    ewald_kvectors,
    mesh_parameters,
    mesh_points,
)
from hipqeq.qeq.layers import QEq
from hipqeq.qeq.neighbors import VerletNeighborList, neighbor_pairs, pair_vectors
from hipqeq.qeq.solvers import QEqNotConverged, solve_dense, solve_iterative

__all__ = [
    "BACKGROUNDS",
    "DEFAULT_BACKGROUND",
    "DEFAULT_KSPACE_METHOD",
    "DEFAULT_TOLERANCE",
    "KSPACE_METHODS",
    "P3M_INTERPOLATION_NODES",
    "PME_INTERPOLATION_NODES",
    "CoulombOperator",
    "MeshReciprocal",
    "EwaldParameters",
    "QEq",
    "QEqNotConverged",
    "boundary_from_pbc",
    "coulomb_matrix",
    "dense_ewald_parameters",
    "electrostatic_energy",
    "equilibrate",
    "fixed_charge_electrostatics",
    "ewald_kvectors",
    "gaussian_coulomb_kernel",
    "neighbor_pairs",
    "VerletNeighborList",
    "pair_vectors",
    "mesh_parameters",
    "mesh_points",
    "qeq_energy",
    "solve_dense",
    "solve_iterative",
]
