"""Small structures shared by the labelling tests (each xTB point takes ~0.1 s)."""

from ase import Atoms

#: Pseudo-cubic lattice parameter of alpha-CsPbI3 (Angstrom; PHYSICS.md, ~634 K).
A_CUBIC = 6.289


def cubic_cspbi3(rattle: float = 0.0, seed: int = 0) -> Atoms:
    """The 5-atom cubic CsPbI3 cell (Pm-3m), optionally rattled (Gaussian width, Angstrom)."""
    atoms = Atoms("PbCsI3", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]],
                  cell=[A_CUBIC] * 3, pbc=True)
    if rattle:
        atoms.rattle(rattle, seed=seed)
    return atoms


def pbi2_molecule() -> Atoms:
    """A bent PbI2 molecule (finite cluster, pbc all False) in a general orientation.

    Not axis-aligned on purpose: with the Pb-I bond exactly along x, xtb-python 22.1
    returns forces off by ~0.45 eV/Angstrom (finite differences of its own energy
    disagree; tblite agrees to 1e-7; measured here), an upstream bug the labeller
    cannot repair.
    """
    atoms = Atoms("PbI2", positions=[[0, 0, 0], [2.9, 0, 0], [-0.9, 2.8, 0.1]])
    atoms.rotate(37, (0.3, 0.5, 0.8))
    return atoms
