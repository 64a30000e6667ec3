"""Shared structures for the QEq tests (units: eV, Angstrom, e); imported by the tests."""

import numpy as np
from ase import Atoms

#: Cubic CsPbI3 (a = 6.29 A) and illustrative QEq parameters per element:
#: chi (eV/e), J (eV/e^2), sigma (A). Cs is the electropositive cation, I the anion.
CSPBI3_A = 6.29
CHI = {55: -2.0, 82: 0.0, 53: 1.5}
HARDNESS = {55: 4.0, 82: 6.0, 53: 7.0}
SIGMA = {55: 1.8, 82: 1.6, 53: 1.9}


def cspbi3(repeat=(1, 1, 1), rattle=0.0, seed=0) -> Atoms:
    atoms = Atoms(
        "PbCsI3",
        scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]],
        cell=np.eye(3) * CSPBI3_A,
        pbc=True,
    ) * repeat
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


def parameters(atoms):
    """Per-atom chi, J, sigma arrays for ``atoms``."""
    pick = lambda table: np.array([table[z] for z in atoms.numbers])  # noqa: E731
    return pick(CHI), pick(HARDNESS), pick(SIGMA)


def water_like() -> Atoms:
    """A bent, polar three-atom molecule (open boundaries)."""
    return Atoms("OHH", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]], pbc=False)
