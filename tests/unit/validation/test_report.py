"""Model directory hashes and the strict JSON writer."""

from __future__ import annotations

import json

from hipqeq.validation.report import directory_hash, write_metrics_json


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


def test_metrics_json_writes_non_finite_numbers_as_null(tmp_path):
    path = write_metrics_json({"x": float("nan"), "y": [float("inf"), 1.0], "z": {"w": 2}}, tmp_path / "m.json")
    assert json.loads(path.read_text()) == {"x": None, "y": [None, 1.0], "z": {"w": 2}}
