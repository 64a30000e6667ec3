"""The accuracy study's scripts (scripts/): the parts that decide what a measurement measures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from hipqeq.data import read_table
from hipqeq.data.io import write_dataset
from hipqeq.training.data import file_sha256

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def learning_curve():
    spec = importlib.util.spec_from_file_location("learning_curve", SCRIPTS / "learning_curve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def labels(tmp_path, frames):
    """Four parents of three frames (parent3's last one failed)."""
    return write_dataset(frames, tmp_path / "xtb.parquet")


SPLITS = {"members": [{"train": ["parent0", "parent1", "parent3"], "valid": ["parent2"], "test": []}]}


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_subsample_keeps_a_frame_of_every_training_parent(learning_curve, labels, tmp_path, fraction):
    n_train = learning_curve.subset_dataset(labels, SPLITS, 0, fraction, seed=3, output=tmp_path / "sub.parquet")
    sub = read_table(tmp_path / "sub.parquet").to_pandas()
    kept = sub[sub.parent_id != "parent2"]
    # parent0 and parent1: 3 ok frames each, parent3: 2 ok; the fraction of each, at least one
    expected = {p: max(1, round(fraction * n)) for p, n in (("parent0", 3), ("parent1", 3), ("parent3", 2))}
    assert kept.groupby("parent_id").size().to_dict() == expected
    assert (kept.status == "ok").all()
    assert n_train == sum(expected.values())
    assert (sub.parent_id == "parent2").sum() == 3  # the other parents keep every row


def test_subsample_draws_frames_within_each_parent(learning_curve, labels, tmp_path):
    drawn = set()
    for seed in range(8):
        learning_curve.subset_dataset(labels, SPLITS, 0, 0.25, seed=seed, output=tmp_path / "sub.parquet")
        sub = read_table(tmp_path / "sub.parquet").to_pandas()
        drawn.add(tuple(np.round(sub[sub.parent_id == "parent0"].energy, 6)))
    assert len(drawn) > 1


def test_a_model_of_another_subsample_is_not_reused(learning_curve, labels, tmp_path):
    model = tmp_path / "4g"
    model.mkdir()
    assert not learning_curve.trained_on(model, labels)
    (model / "model.json").write_text(json.dumps({"dataset": {"sha256": file_sha256(labels)}}))
    assert learning_curve.trained_on(model, labels)
    learning_curve.subset_dataset(labels, SPLITS, 0, 0.5, seed=3, output=labels)
    assert not learning_curve.trained_on(model, labels)
