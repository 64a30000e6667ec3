"""The command line: help texts that teach, in-process runs, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def test_errors_name_the_bad_input_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "missing.parquet"
    assert main(["inspect", str(missing)]) == 2
    assert f"{missing}: no such dataset file" in capsys.readouterr().err
