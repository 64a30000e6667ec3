"""Interrupted training runs resume from their checkpoint (``<output>.resume.pt``)."""

from __future__ import annotations

import importlib.util
import json
import logging

import pytest
import torch

from hipqeq.cli import main
from hipqeq.errors import HipqeqError
from hipqeq.training import train_model
from hipqeq.training.checkpoint import TrainingCheckpoint, checkpoint_path


class Killed(BaseException):
    """What the end of a SLURM time limit does to a run: it stops, nothing is caught."""


def interrupt_after(monkeypatch, epochs: int, error: type[BaseException] = Killed) -> None:
    """Make the next training run stop right after saving its checkpoint of ``epochs`` epochs."""
    save = TrainingCheckpoint.save

    def save_then_stop(self, history, **state):
        save(self, history, **state)
        if len(history) == epochs:
            raise error()

    monkeypatch.setattr(TrainingCheckpoint, "save", save_then_stop)


def assert_same_weights(first, second, rtol: float = 0.0) -> None:
    weights = [torch.load(d / "weights.pt", weights_only=True) for d in (first, second)]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=rtol, atol=0)


def train_until_killed(stage, config, study, output, monkeypatch, epochs, **kwargs) -> None:
    """Train ``stage`` into ``output`` and kill the run after ``epochs`` epochs."""
    with monkeypatch.context() as patch:
        interrupt_after(patch, epochs)
        with pytest.raises(Killed):
            train_model(stage, config, study["dataset"], study["splits"], 0, output, device="cpu", **kwargs)


def train_interrupted_then_resumed(stage, config, study, output, monkeypatch, epochs, **kwargs) -> dict:
    """Train ``stage`` into ``output``, stopped after ``epochs`` epochs, then run it again."""
    train_until_killed(stage, config, study, output, monkeypatch, epochs, **kwargs)
    assert checkpoint_path(output).exists()
    assert not (output / "model.json").exists()
    return train_model(stage, config, study["dataset"], study["splits"], 0, output, device="cpu", **kwargs)


@pytest.fixture(scope="module")
def charge_model(study, toy_config):
    output = study["root"] / "resume_charges"
    train_model("charges", toy_config, study["dataset"], study["splits"], 0, output, device="cpu")
    return output


@pytest.mark.parametrize("stage, epochs", [("charges", 3), ("short-range", 3), ("baseline", 3), ("mace", 1)])
def test_an_interrupted_run_resumes_to_the_model_of_an_uninterrupted_one(stage, epochs, study, toy_config, peer_config,
                                                                        charge_model, tmp_path, monkeypatch):
    if stage == "mace" and importlib.util.find_spec("mace") is None:
        pytest.skip("the MACE peer needs the peer extra (mace-torch)")
    config = peer_config if stage == "mace" else toy_config
    kwargs = {"charge_model": charge_model} if stage == "short-range" else {}
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train_model(stage, config, study["dataset"], study["splits"], 0, whole, device="cpu", **kwargs)
    assert not checkpoint_path(whole).exists()
    train_interrupted_then_resumed(stage, config, study, resumed, monkeypatch, epochs, **kwargs)

    assert not checkpoint_path(resumed).exists()
    # hippynn's CPU training repeats bit for bit; MACE's does not (two whole runs differ in
    # the last bit of some weights), so its resumed weights are compared to 1e-12
    assert_same_weights(whole, resumed, rtol=1e-12 if stage == "mace" else 0.0)
    meta = {d: json.loads((d / "model.json").read_text()) for d in (whole, resumed)}
    assert (meta[whole]["epochs_resumed"], meta[resumed]["epochs_resumed"]) == (0, epochs)
    assert meta[resumed]["best_epoch"] == meta[whole]["best_epoch"]
    if stage != "mace":
        assert (resumed / "training_curves.csv").read_text() == (whole / "training_curves.csv").read_text()


def test_a_checkpoint_of_other_inputs_is_not_resumed(study, toy_config, tmp_path, monkeypatch, caplog):
    """A run stopped under another seed leaves a checkpoint the rerun must not continue."""
    whole, output = tmp_path / "whole", tmp_path / "baseline"
    train_model("baseline", toy_config, study["dataset"], study["splits"], 0, whole, device="cpu")
    train_until_killed("baseline", toy_config, study, output, monkeypatch, 3, seed=1)
    with caplog.at_level(logging.WARNING):
        train_model("baseline", toy_config, study["dataset"], study["splits"], 0, output, device="cpu")
    assert f"{checkpoint_path(output)} was written for other training inputs" in caplog.text
    assert json.loads((output / "model.json").read_text())["epochs_resumed"] == 0
    assert_same_weights(whole, output)


def test_an_unreadable_checkpoint_is_set_aside(study, toy_config, tmp_path, caplog):
    whole, output = tmp_path / "whole", tmp_path / "baseline"
    train_model("baseline", toy_config, study["dataset"], study["splits"], 0, whole, device="cpu")
    checkpoint_path(output).write_bytes(b"not a torch file")
    with caplog.at_level(logging.WARNING):
        train_model("baseline", toy_config, study["dataset"], study["splits"], 0, output, device="cpu")
    assert f"{checkpoint_path(output)} cannot be read" in caplog.text
    assert_same_weights(whole, output)
    assert not checkpoint_path(output).exists()


def test_ctrl_c_writes_no_half_trained_model(study, toy_config, toy_config_text, tmp_path, monkeypatch, capsys):
    """hippynn ends training quietly on Ctrl-C (KeyboardInterrupt) and restores its best
    weights; hipqeq must not store that as a finished model. The output is a relative
    path, as the workflow gives it (hippynn trains in a directory of its own); the same
    command resumes and says so."""
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "results" / "models" / "baseline"
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2, KeyboardInterrupt)
        with pytest.raises(HipqeqError, match=f"interrupted after 2 epochs, no model written; rerun to "
                                              f"resume from {checkpoint_path(output)}"):
            train_model("baseline", toy_config, study["dataset"], study["splits"], 0,
                        output.relative_to(tmp_path), device="cpu")
    assert not (output / "model.json").exists()
    (tmp_path / "config.yaml").write_text(toy_config_text)
    assert main(["train", "baseline", "--config", "config.yaml", "--dataset", str(study["dataset"]),
                 "--splits", str(study["splits"]), "--output", "results/models/baseline", "--device", "cpu"]) == 0
    assert "trained baseline model in results/models/baseline (resumed after 2 epochs)" in capsys.readouterr().out
    assert json.loads((output / "model.json").read_text())["epochs_resumed"] == 2
    assert not checkpoint_path(output).exists()
