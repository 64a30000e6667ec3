"""Geometry helpers shared by the structure checks, the labelling pre-checks and MD."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list


def closest_pair(atoms: Atoms, cutoff_A: float) -> tuple[int, int, float] | None:
    """The two closest atoms (indices ``i``, ``j`` and their distance in Angstrom) among
    pairs closer than ``cutoff_A``, periodic images included; ``None`` when no pair is
    that close (always for ``cutoff_A <= 0`` or no atoms). An atom close to its own
    periodic image gives ``i == j``."""
    if cutoff_A <= 0 or len(atoms) == 0:
        return None
    i, j, d = neighbor_list("ijd", atoms, cutoff_A)
    if not len(d):
        return None
    k = int(np.argmin(d))
    return int(i[k]), int(j[k]), float(d[k])
