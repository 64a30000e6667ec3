"""The command line: help texts that teach, in-process runs, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hipqeq.cli import VERBS, build_parser, main
from hipqeq.data import read_table, write_dataset


def test_console_script_help_lists_every_stage():
    script = Path(sys.executable).with_name("hipqeq")  # the console script pyproject installs
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for verb, _ in VERBS:
        assert verb in result.stdout
    assert "eV, Angstrom" in result.stdout


@pytest.mark.parametrize("verb", [v for v, _ in VERBS])
def test_every_verb_has_a_teaching_help(verb, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([verb, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: hipqeq {verb}" in text
    assert "example" in text.lower(), f"`hipqeq {verb} --help` should show an example"


def test_parser_knows_the_pipeline_verbs():
    verbs = {v for v, _ in VERBS}
    assert {"build", "sample", "select", "label", "gather", "train", "validate"} <= verbs
    assert build_parser().prog == "hipqeq"


def test_gather_and_inspect_in_process(tmp_path, frames, capsys):
    for frame in frames[6:]:
        frame.info["active_round"] = 2
    a = write_dataset(frames[:6], tmp_path / "a.parquet")
    b = write_dataset(frames[6:], tmp_path / "b.parquet")
    out = tmp_path / "all.parquet"
    assert main(["gather", str(a), str(b), "-o", str(out), "--counts", str(tmp_path / "c.json")]) == 0
    assert read_table(out).num_rows == len(frames)
    assert json.loads((tmp_path / "c.json").read_text()) == {
        "total": 12, "status": {"ok": 11, "scf_not_converged": 1}}
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "12 structures" in text and "scf_not_converged 1" in text
    assert "active_round: - 6, 2 6" in text  # rows per sampling round, '-' for none


def test_errors_name_the_bad_input_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "missing.parquet"
    assert main(["inspect", str(missing)]) == 2
    assert f"{missing}: no such dataset file" in capsys.readouterr().err


def test_split_covers_every_dataset_given(tmp_path, frames):
    """An ingested external set has parents the build never made: the split must know
    them, or training and validation could not place its rows."""
    from hipqeq.data import assign_splits, read_splits

    built = write_dataset(frames[:6], tmp_path / "structures.parquet")
    external = write_dataset(frames[6:], tmp_path / "external.parquet")
    config = tmp_path / "config.yaml"
    config.write_text("structures: {seeds: [{name: a, builder: phase, phase: alpha}]}\n"
                      "selection: {n_xtb: 1, n_dft: 0}\n"
                      "training: {split_fractions: [0.5, 0.25, 0.25], n_models: 2}\n")
    output = tmp_path / "splits.json"
    assert main(["split", "--config", str(config), "--output", str(output), str(built), str(external)]) == 0
    splits = read_splits(output)
    parents = [f.info["parent_id"] for f in frames]
    for member in (0, 1):
        assert set(assign_splits(parents, splits, member)) == {"train", "valid", "test"}


def test_split_holds_out_only_parents_the_others_determine(tmp_path, frames, capsys):
    """A parent whose composition and charge no other parent combines to (``lonely``, two
    atoms short) is never drawn for the test split: its test energy would be the energy
    reference's extrapolation. ``odd`` (one atom short) has a twin, so either can be drawn;
    where the labels lack the twin, holding out ``odd`` gets a warning naming it."""
    from hipqeq.data import read_splits
    from tests.conftest import labelled

    odd, twin, lonely = (labelled(frames[0][keep], np.random.default_rng(0), parent_id=name)
                         for keep, name in ((slice(1, None), "odd"), (slice(1, None), "twin"),
                                            (slice(2, None), "lonely")))
    built = write_dataset([odd, twin, lonely] + frames[1:6], tmp_path / "structures.parquet")
    labels = write_dataset([odd, lonely] + frames[1:6], tmp_path / "labels.parquet")
    config = tmp_path / "config.yaml"
    drawn = set()
    for seed in range(30):
        config.write_text(f"seed: {seed}\n"
                          "structures: {seeds: [{name: a, builder: phase, phase: alpha}]}\n"
                          "selection: {n_xtb: 1, n_dft: 0}\n"
                          "training: {split_fractions: [0.5, 0.25, 0.25], n_models: 1}\n")
        assert main(["split", "--config", str(config), "--output", str(tmp_path / "s.json"), str(built),
                     "--labels", str(labels)]) == 0
        warnings = capsys.readouterr().err
        test = read_splits(tmp_path / "s.json")["test"]
        drawn.update(test)
        assert ("warning: test parent odd has a composition" in warnings) == ("odd" in test)
        assert "lonely" not in warnings
    assert drawn == {"odd", "twin", "parent0", "parent1"}


MD_BASE = ["md", "--config", "c.yaml", "--model", "m", "--structures", "s.parquet", "--name", "x",
           "--output", "o.json", "--trajectory", "o.traj"]


@pytest.mark.parametrize("argv, option", [
    (MD_BASE + ["--steps", "-5"], "--steps"),
    (MD_BASE + ["--steps", "0"], "--steps"),
    (MD_BASE + ["--temperature-K", "-300"], "--temperature-K"),
    (MD_BASE + ["--temperature-K", "0"], "--temperature-K"),
    (MD_BASE + ["--timestep-fs", "0"], "--timestep-fs"),
    (MD_BASE + ["--timestep-fs", "nan"], "--timestep-fs"),
    (MD_BASE + ["--friction-per-fs", "-0.01"], "--friction-per-fs"),
    (["sample", "md", "--config", "c.yaml", "--structures", "s.parquet", "--name", "x", "--output", "o",
      "--trajectory", "t", "--temperature-K", "-1"], "--temperature-K"),
    (["sample", "md", "--config", "c.yaml", "--structures", "s.parquet", "--name", "x", "--output", "o",
      "--trajectory", "t", "--temperature-K", "300", "--replica", "-1"], "--replica"),
], ids=["steps-negative", "steps-zero", "T-negative", "T-zero", "dt-zero", "dt-nan", "friction-negative",
        "sample-T-negative", "sample-replica-negative"])
def test_out_of_range_numbers_exit_2_naming_the_option(argv, option, capsys):
    """Range checks happen at parsing, before any file is read (the files here do not exist)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "must be" in err


def _disk_full(path):
    """Stands in for a write that fills the disk half-way: a partial file, then ENOSPC."""
    import errno
    import os

    Path(path).write_bytes(b"PAR1 truncated")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_full_disk_is_a_message_naming_the_file_and_leaves_nothing_behind(tmp_path, frames, capsys,
                                                                              monkeypatch):
    chunk = write_dataset(frames, tmp_path / "chunk.parquet")
    monkeypatch.setattr("pyarrow.parquet.write_table", lambda table, where: _disk_full(where))
    output = tmp_path / "out" / "gathered.parquet"
    assert main(["gather", str(chunk), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert str(output) in err and "No space left on device" in err and "free disk space" in err
    assert list(output.parent.iterdir()) == []  # neither a truncated dataset nor a temporary file
    # anything else that fills the disk (model weights, MD summaries) is a message too
    monkeypatch.setattr("hipqeq.cli.gather.run", lambda args: _disk_full(tmp_path / "weights.pt"))
    assert main(["gather", str(chunk), "--output", str(output)]) == 2
    assert f"no space left writing {tmp_path / 'weights.pt'}" in capsys.readouterr().err
