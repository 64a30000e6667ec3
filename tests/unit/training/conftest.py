"""A tiny synthetic study: EMT energies/forces of rattled CuAu cells with made-up
charges, written through hipqeq.data so that training reads the real dataset path."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from hipqeq.config import validate_config
from hipqeq.data import make_splits, write_dataset, write_splits

TOY_CONFIG = """
structures: {seeds: [{name: cuau, builder: phase, phase: alpha}]}
selection: {n_xtb: 12, n_dft: 2}
training:
  split_fractions: [0.6, 0.2, 0.2]
  network: {n_features: 8, n_sensitivities: 6, n_interaction_layers: 1, n_atom_layers: 1, cutoff_A: 4.0, lower_cutoff_A: 1.0}
  charges: {max_epochs: 8, batch_size: 4, learning_rate: 0.01}
  short_range: {max_epochs: 8, batch_size: 4, learning_rate: 0.01}
validation: {md_steps: 4, md_nve_steps: 4, md_frame_interval: 2}
"""

#: A MACE peer small enough to train three epochs in seconds on one core.
PEER = {"num_channels": 8, "max_L": 1, "num_interactions": 2, "correlation": 2,
        "fit": {"max_epochs": 3, "batch_size": 4, "learning_rate": 0.01, "force_weight": 2.0}}


def emt_frames(n_frames: int, n_parents: int, seed: int = 0, gold_counts: tuple[int, ...] = (3,)) -> list:
    """Rattled 8-atom CuAu cells with EMT labels, frame i with gold_counts[i % len] Au;
    charges -0.2 e on Au, neutralised on Cu."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_frames):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (1, 1, 2)
        atoms.numbers[rng.choice(len(atoms), gold_counts[i % len(gold_counts)], replace=False)] = 79
        atoms.rattle(0.08, seed=seed * 100 + i)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        charges = np.where(atoms.numbers == 79, -0.2, 0.0)
        charges -= charges.mean()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, charges=charges)
        atoms.info["parent_id"] = f"parent{i % n_parents}"
        frames.append(atoms)
    return frames


@pytest.fixture(scope="session")
def make_frames():
    """:func:`emt_frames`, for tests that need their own small datasets."""
    return emt_frames


@pytest.fixture(scope="session")
def toy_config_text() -> str:
    return TOY_CONFIG


@pytest.fixture(scope="session")
def toy_config() -> dict:
    return validate_config(yaml.safe_load(TOY_CONFIG))


@pytest.fixture(scope="session")
def peer_config(toy_config) -> dict:
    """The toy config with the small MACE peer of :data:`PEER`."""
    config = copy.deepcopy(toy_config)
    config["training"]["peer"].update({k: v for k, v in PEER.items() if k != "fit"})
    config["training"]["peer"]["fit"].update(PEER["fit"])
    return config


@pytest.fixture(scope="session")
def study(tmp_path_factory, toy_config):
    """Paths of a 16-frame dataset over 8 parents and its split."""
    root = tmp_path_factory.mktemp("study")
    dataset = write_dataset(emt_frames(16, 8), root / "emt.parquet")
    splits = root / "splits.json"
    parents = [f"parent{i}" for i in range(8)]
    write_splits(make_splits(parents, toy_config["training"]["split_fractions"], 0, 1), splits)
    return {"root": root, "dataset": dataset, "splits": splits}
