"""Cheap diversity without an engine: random displacements and small random cell strains."""

from __future__ import annotations

import numpy as np
from ase import Atoms


def rattle_frames(atoms: Atoms, n_frames: int, amplitude_A: tuple[float, float],
                  strain_percent: float, rng: np.random.Generator) -> list[Atoms]:
    """``n_frames`` copies of ``atoms``, each strained and rattled.

    Each frame draws a Gaussian displacement width uniformly from ``amplitude_A``
    (Angstrom, per Cartesian component) and a symmetric strain tensor whose components
    are uniform in +-``strain_percent`` %; strain acts along periodic directions only
    (a slab's vacuum and thickness stay), fractional coordinates follow the cell.
    """
    periodic = np.asarray(atoms.pbc, dtype=float)
    mask = np.outer(periodic, periodic)
    frames = []
    for _ in range(n_frames):
        sigma = rng.uniform(*amplitude_A)
        upper = np.triu(rng.uniform(-strain_percent, strain_percent, size=(3, 3)) / 100)
        epsilon = (upper + np.triu(upper, 1).T) * mask
        frame = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell.array, pbc=atoms.pbc)
        frame.set_cell(atoms.cell.array @ (np.eye(3) + epsilon), scale_atoms=True)
        frame.positions += rng.normal(0.0, sigma, size=(len(atoms), 3))
        frames.append(frame)
    return frames
