"""Rattle/strain sampler and seed derivation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hipqeq.cli import main
from hipqeq.data import read_atoms, write_dataset
from hipqeq.sampling import rattle_frames
from hipqeq.seeds import derive_seed
from hipqeq.structures import ruddlesden_popper

ROOT = Path(__file__).resolve().parents[3]


def test_derive_seed_is_deterministic_and_separates_jobs():
    assert derive_seed(0, "md", "rp1_slab", 300, 0) == derive_seed(0, "md", "rp1_slab", 300.0, 0)
    seeds = {derive_seed(m, "md", name, t, r) for m in (0, 1) for name in ("a", "b")
             for t in (100, 300) for r in (0, 1)}
    assert len(seeds) == 16 and all(0 <= s < 2**63 for s in seeds)


def test_rattle_strains_periodic_directions_within_bounds():
    slab = ruddlesden_popper(1, "slab", vacuum=12.0, supercell=(2, 2, 1))
    frames = rattle_frames(slab, 20, (0.02, 0.1), 3.0, np.random.default_rng(0))
    assert len(frames) == 20
    for frame in frames:
        assert frame.cell[2] == pytest.approx(slab.cell[2])  # vacuum direction untouched
        strain = np.linalg.solve(slab.cell.array, frame.cell.array) - np.eye(3)
        assert np.abs(strain).max() <= 0.03 + 1e-12
        assert np.allclose(strain, strain.T)
        displacement = frame.positions - slab.cell.scaled_positions(slab.positions) @ frame.cell.array
        assert 0.005 < displacement.std() < 0.15
    assert len({f.positions.tobytes() for f in frames}) == 20


def test_rattle_cli_is_reproducible_and_keeps_identity(tmp_path):
    atoms = ruddlesden_popper(1, "slab", vacuum=12.0)
    atoms.info.update(structure_name="rp1_slab", family="pristine", source="build", total_charge=0.0)
    structures = tmp_path / "structures.parquet"
    write_dataset([atoms], structures)
    (parent,) = read_atoms(structures)
    runs = []
    for k in range(2):
        out = tmp_path / f"rattle{k}.parquet"
        assert main(["sample", "rattle", "--config", str(ROOT / "config" / "toy.yaml"), "--structures",
                     str(structures), "--name", "rp1_slab", "--output", str(out)]) == 0
        runs.append(read_atoms(out))
    assert [f.info["structure_id"] for f in runs[0]] == [f.info["structure_id"] for f in runs[1]]
    frames = runs[0]
    assert len(frames) == 4  # toy: sampling.rattle.n_frames
    for frame in frames:
        assert frame.info["source"] == "rattle" and frame.info["status"] == "unlabelled"
        assert frame.info["parent_id"] == parent.info["structure_id"] != frame.info["structure_id"]
        assert frame.info["structure_name"] == "rp1_slab" and "temperature_K" not in frame.info
        assert frame.info["active_round"] == 0 and "trajectory" not in frame.info and "md_step" not in frame.info
        assert frame.pbc.tolist() == [True, True, False]
