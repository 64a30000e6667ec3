"""Shared fixtures: small structures and records that follow the dataset contract."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator


def cubic_cspbi3(a: float = 6.29) -> Atoms:
    """Cubic alpha-CsPbI3, Pm-3m (Pb 1a, Cs 1b, I 3d), a in Angstrom."""
    return Atoms("PbCsI3", cell=[a, a, a], pbc=True,
                 scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]])


def labelled(atoms: Atoms, rng: np.random.Generator, **info) -> Atoms:
    """``atoms`` with random labels attached and ``info`` set (a fake labelled frame)."""
    atoms = atoms.copy()
    atoms.info.update(info)
    charges = rng.normal(size=len(atoms))
    atoms.calc = SinglePointCalculator(
        atoms, energy=float(rng.normal()), forces=rng.normal(size=(len(atoms), 3)),
        stress=rng.normal(size=6), charges=charges - charges.mean())
    atoms.info.setdefault("method", "GFN1-xTB")
    atoms.info.setdefault("charge_scheme", "Mulliken")
    return atoms


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture
def frames(rng):
    """Twelve labelled rattled frames of four parents, one of them failed."""
    out = []
    for p in range(4):
        for k in range(3):
            atoms = cubic_cspbi3()
            atoms.rattle(0.05, seed=10 * p + k)
            out.append(labelled(atoms, rng, parent_id=f"parent{p}", structure_name=f"s{p}",
                                source="md", temperature_K=100.0 * (k + 1)))
    failed = out[-1]
    failed.calc = None
    failed.info.update(status="scf_not_converged", error="SCF did not converge in 250 iterations")
    return out
