"""Model directory hashes, the strict JSON writer and the metric table cells."""

from __future__ import annotations

import json

from hipqeq.validation.metrics import METRIC_KEYS
from hipqeq.validation.report import _metric_cells, _metric_header, directory_hash, write_metrics_json


def test_directory_hash_follows_names_and_contents(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        (d / "sub").mkdir(parents=True)
        (d / "model.json").write_text("{}")
        (d / "sub" / "weights.pt").write_bytes(b"\x00\x01")
    assert directory_hash(a) == directory_hash(b), "same files, same hash, wherever they are"
    (b / "sub" / "weights.pt").write_bytes(b"\x00\x02")
    assert directory_hash(a) != directory_hash(b)
    (b / "sub" / "weights.pt").write_bytes(b"\x00\x01")
    (b / "sub" / "weights.pt").rename(b / "weights.pt")
    assert directory_hash(a) != directory_hash(b), "a moved file changes the hash"


def test_directory_hash_ignores_training_working_files(tmp_path):
    """A model committed without hippynn's experiment files or MACE's pickled copy (a fresh
    clone) hashes as it did where it was trained."""
    (tmp_path / "model.json").write_text("{}")
    (tmp_path / "charge_model").mkdir()
    (tmp_path / "charge_model" / "weights.pt").write_bytes(b"\x00")
    before = directory_hash(tmp_path)
    for working in ("hippynn", "charge_model/hippynn"):
        (tmp_path / working).mkdir()
        (tmp_path / working / "experiment_log.txt").write_text("epoch 1")
    (tmp_path / "mace.model").write_bytes(b"pickle")
    assert directory_hash(tmp_path) == before
    (tmp_path / "charge_model" / "weights.pt").write_bytes(b"\x01")
    assert directory_hash(tmp_path) != before, "the charge model's weights are part of the model"


def test_metrics_json_writes_non_finite_numbers_as_null(tmp_path):
    path = write_metrics_json({"x": float("nan"), "y": [float("inf"), 1.0], "z": {"w": 2}}, tmp_path / "m.json")
    assert json.loads(path.read_text()) == {"x": None, "y": [None, 1.0], "z": {"w": 2}}


def test_metric_rows_show_every_count_and_an_r2_short_of_one():
    """Per-atom energies of different compositions spread by eV/atom: an R^2 of 0.99998
    (a model meV/atom off) must not print as 1, and a group whose forces or charges rest
    on fewer structures than its energies must show it."""
    block = dict.fromkeys(METRIC_KEYS)
    block.update(energy_mae_mev_per_atom=10.0, energy_r2=0.99998, n_energy=4, n_force=324, n_charge=0)
    cells = dict(zip(_metric_header([]), _metric_cells(block)))
    assert cells["E R²"] == "0.99998" and cells["E MAE (meV/atom)"] == "10"
    assert (cells["n E (structures)"], cells["n F (components)"], cells["n q (atoms)"]) == ("4", "324", "–")
