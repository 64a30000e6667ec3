"""Injected label failures: below the configured maximum fraction every structure is
counted through gather; above it the study stops at gather with a message (DP-GEN's
ratio_failed guard), before a dataset is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hipqeq.cli import main
from hipqeq.config import validate_section
from hipqeq.data import read_table, write_dataset
from hipqeq.errors import SCFNotConverged
from hipqeq.labels.common import Labels, label_file
from tests.conftest import cubic_cspbi3


class FaultyLabeller:
    """A labeller without an engine whose SCF "fails" for the structures named in ``failing``."""

    method = "fake-xTB"
    software = {"fake": "0"}
    kmesh = (1, 1, 1)

    def __init__(self, failing: set[str]):
        self.settings = validate_section("xtb", {"allow_small_cells": True, "chunk_size": 5})
        self.parameters = {"failing": sorted(failing)}
        self.failing = failing

    def supports(self, number: int) -> bool:
        return True

    def check(self, atoms) -> None:
        pass

    def label(self, atoms, safer: bool = False) -> Labels:
        if atoms.info["structure_name"] in self.failing:
            raise SCFNotConverged("injected failure")
        n = len(atoms)
        return Labels(energy=-3.5 * n, forces=np.zeros((n, 3)), charges=np.zeros(n), charge_scheme="Mulliken")


def rattled_selection(path: Path, prefix: str, seeds) -> Path:
    """A selection file of rattled cubic cells named ``{prefix}{k}``, one per seed k."""
    frames = []
    for k, seed in enumerate(seeds):
        atoms = cubic_cspbi3()
        atoms.rattle(0.05, seed=seed)
        atoms.info["structure_name"] = f"{prefix}{k}"
        frames.append(atoms)
    return write_dataset(frames, path)


@pytest.fixture
def selection(tmp_path):
    return rattled_selection(tmp_path / "selection.parquet", "frame", range(10))


def label_chunks(selection, failing: set[str]) -> list:
    chunks = []
    for chunk in (0, 1):
        output = selection.with_name(f"chunk_{chunk}.parquet")
        label_file(selection, output, FaultyLabeller(failing), chunk=chunk, progress=False)
        chunks.append(str(output))
    return chunks


def test_failures_below_the_maximum_complete_with_every_structure_counted(selection, tmp_path):
    chunks = label_chunks(selection, {"frame1", "frame6"})  # 20 %
    output, counts = tmp_path / "xtb.parquet", tmp_path / "counts.json"
    assert main(["gather", *chunks, "--output", str(output), "--counts", str(counts),
                 "--max-failed-fraction", "0.3"]) == 0
    assert read_table(output).num_rows == 10
    assert json.loads(counts.read_text()) == {"total": 10, "status": {"ok": 8, "scf_not_converged": 2}}


def test_failures_above_the_maximum_stop_the_study_with_a_message(selection, tmp_path, capsys):
    chunks = label_chunks(selection, {"frame0", "frame2", "frame5", "frame7"})  # 40 %
    output = tmp_path / "xtb.parquet"
    assert main(["gather", *chunks, "--output", str(output), "--max-failed-fraction", "0.3"]) == 2
    err = capsys.readouterr().err
    assert "4 of 10 labels in 2 file(s) failed (40%: scf_not_converged 4)" in err
    assert "selection.max_failed_fraction = 0.3" in err
    assert not output.exists()  # no dataset, so nothing downstream runs


def test_a_round_is_checked_on_its_own_labels_not_on_the_base_dataset(selection, tmp_path, capsys):
    """An active-learning round gathers the earlier rounds' dataset (--base) with its own
    chunks: 40 % of its labels failing stops it at a limit of 0.3, though the base's 10 ok
    rows would dilute that to 20 %; the base's own failures do not count against a round."""
    base = tmp_path / "previous.parquet"
    assert main(["gather", *label_chunks(selection, set()), "--output", str(base)]) == 0
    round_selection = rattled_selection(tmp_path / "round_selection.parquet", "round_frame", range(100, 105))
    failing = tmp_path / "failing.parquet"
    label_file(round_selection, failing, FaultyLabeller({"round_frame0", "round_frame3"}), chunk=0,
               progress=False)
    output = tmp_path / "round.parquet"
    assert main(["gather", "--base", str(base), str(failing), "--output", str(output),
                 "--max-failed-fraction", "0.3"]) == 2
    assert "2 of 5 labels in 1 file(s) failed (40%" in capsys.readouterr().err
    assert not output.exists()

    failing_base = tmp_path / "failing_base.parquet"  # 40 % failed, gathered and kept before
    assert main(["gather", *label_chunks(selection, {"frame0", "frame2", "frame5", "frame7"}),
                 "--output", str(failing_base)]) == 0
    fine = tmp_path / "fine.parquet"
    label_file(round_selection, fine, FaultyLabeller({"round_frame4"}), chunk=0, progress=False)
    assert main(["gather", "--base", str(failing_base), str(fine), "--output", str(output),
                 "--max-failed-fraction", "0.3"]) == 0
    assert read_table(output).num_rows == 15
