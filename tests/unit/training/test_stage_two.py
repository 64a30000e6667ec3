"""The energy-weighted second stage (``stage_two`` of a fit section) and ``--init-from``:
a run from scratch is the main schedule, then stage two from its best weights; stage
two run on its own from that model (``init_from``) gives the same weights."""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch

from hipqeq.calculator import predict
from hipqeq.config import ConfigError, validate_config
from hipqeq.data import atoms_from_record, read_records, read_splits
from hipqeq.data.split import assign_splits
from hipqeq.errors import HipqeqError
from hipqeq.models.store import load_model
from hipqeq.training import train_model

STAGE_TWO = {"max_epochs": 6, "learning_rate": 0.002, "force_weight": 0.0}


def with_stage_two(config: dict, section: str = "short_range") -> dict:
    config = copy.deepcopy(config)
    fit = config["training"]["peer"]["fit"] if section == "peer" else config["training"][section]
    fit["stage_two"] = dict(STAGE_TWO)
    return config


def curves(model_dir) -> list[dict]:
    with open(model_dir / "training_curves.csv") as handle:
        return list(csv.DictReader(handle))


def weights(model_dir) -> dict:
    return torch.load(model_dir / "weights.pt", weights_only=True)


@pytest.fixture(scope="module")
def baselines(study, toy_config, tmp_path_factory):
    """The toy baseline trained with the main schedule only ("main"), with stage two
    ("whole"), and stage two alone from the first ("refined")."""
    root = tmp_path_factory.mktemp("stage_two")
    config = with_stage_two(toy_config)
    runs = {name: root / name for name in ("main", "whole", "refined")}
    train_model("baseline", toy_config, study["dataset"], study["splits"], 0, runs["main"], device="cpu")
    train_model("baseline", config, study["dataset"], study["splits"], 0, runs["whole"], device="cpu")
    train_model("baseline", config, study["dataset"], study["splits"], 0, runs["refined"], device="cpu",
                init_from=runs["main"])
    return runs


def test_stage_two_from_a_trained_model_is_the_second_stage_of_a_whole_run(baselines):
    whole, refined = weights(baselines["whole"]), weights(baselines["refined"])
    assert whole.keys() == refined.keys()
    for key in whole:  # the loaded model's reference is refit once more: float32 rounding apart
        torch.testing.assert_close(whole[key], refined[key], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(whole[key], weights(baselines["main"])[key]) for key in whole)
    rows = {name: curves(baselines[name]) for name in ("main", "whole", "refined")}
    n_main = len(rows["main"])
    assert [r["stage"] for r in rows["whole"]] == ["1"] * n_main + ["2"] * STAGE_TWO["max_epochs"]
    assert [r["stage"] for r in rows["refined"]] == ["2"] * STAGE_TWO["max_epochs"]
    assert ([float(r["valid_F-RMSE"]) for r in rows["whole"][n_main:]]
            == pytest.approx([float(r["valid_F-RMSE"]) for r in rows["refined"]], rel=1e-5))


def test_stage_two_keeps_its_best_epoch_under_its_own_loss(baselines):
    """force_weight 0: stage two's loss is the energy alone; the kept weights are its best
    epoch's, whose validation energy error is below the main schedule's kept epoch's."""
    meta = json.loads((baselines["whole"] / "model.json").read_text())
    rows = curves(baselines["whole"])
    n_main = len(curves(baselines["main"]))
    best = meta["best_epoch"]
    assert rows[best]["stage"] == "2"
    stage_two = [float(r["valid_Loss"]) for r in rows[n_main:]]
    assert meta["best_valid_loss"] == pytest.approx(min(stage_two))
    assert float(rows[best]["valid_Loss"]) == pytest.approx(float(rows[best]["valid_E_per_atom-RMSE"]) ** 2,
                                                            rel=1e-5)
    main = json.loads((baselines["main"] / "model.json").read_text())
    main_rows = curves(baselines["main"])
    assert float(rows[best]["valid_E_per_atom-RMSE"]) < float(main_rows[main["best_epoch"]]["valid_E_per_atom-RMSE"])
    assert meta["stage_two"] == {**{k: v for k, v in meta["stage_two"].items() if k not in STAGE_TWO}, **STAGE_TWO}


def test_every_stage_ends_with_the_energy_reference_refit(baselines, study):
    """The zeroth energy term is refit by least squares after each stage: the training
    rows' energy residuals are orthogonal to their species counts (normal equations)."""
    records = [r for r in read_records(study["dataset"]) if r["status"] == "ok"]
    names = assign_splits([r["parent_id"] for r in records], read_splits(study["splits"]), 0)
    rows = [r for r, name in zip(records, names) if name == "train"]
    counts = np.array([[np.count_nonzero(np.asarray(r["numbers"]) == z) for z in (29, 79)] for r in rows])
    scale = counts.T @ np.abs([r["energy"] for r in rows])
    for name, refits in (("main", 1), ("whole", 2), ("refined", 2)):
        predicted = predict([baselines[name]], [atoms_from_record(r) for r in rows], device="cpu", progress=False)
        residuals = np.array([r["energy"] - p["energy"] for r, p in zip(rows, predicted)])
        np.testing.assert_array_less(np.abs(counts.T @ residuals), 1e-5 * scale)
        meta = json.loads((baselines[name] / "model.json").read_text())
        assert len(meta["energy_reference_refits"]) == refits
        for refit in meta["energy_reference_refits"]:
            before, after = refit["train_rmse_meV_per_atom"]
            assert after <= before * (1 + 1e-6)


def test_the_model_records_what_it_started_from(baselines):
    meta = json.loads((baselines["refined"] / "model.json").read_text())
    assert meta["init_from"]["path"] == str(baselines["main"])
    assert json.loads((baselines["whole"] / "model.json").read_text())["init_from"] is None
    assert json.loads((baselines["main"] / "model.json").read_text())["stage_two"] is None


def test_without_stage_two_init_from_runs_the_main_schedule_from_the_weights(baselines, study, toy_config, tmp_path):
    output = tmp_path / "fine_tuned"
    train_model("baseline", toy_config, study["dataset"], study["splits"], 0, output, device="cpu",
                init_from=baselines["main"])
    rows = curves(output)
    assert len(rows) == toy_config["training"]["short_range"]["max_epochs"] and "stage" not in rows[0]
    # it starts where the trained model ended, not from fresh weights: a lower first loss
    assert float(rows[0]["train_Loss"]) < float(curves(baselines["main"])[0]["train_Loss"])
    meta = json.loads((output / "model.json").read_text())
    assert meta["stage_two"] is None and meta["init_from"]["path"] == str(baselines["main"])


def test_stage_two_weighs_the_l2_penalty_by_its_own_weight(baselines, study, toy_config, tmp_path):
    """The L2 penalty on the network's weights is in the training loss with the weight the
    config gives: stage two from one model under a strong penalty ends with smaller weights
    than without one, and the model records the weight it trained with."""
    def squared_weights(model_dir) -> float:
        network = load_model(model_dir).network
        return float(sum((p.detach().double() ** 2).sum() for p in network.regularization_params()))

    runs = {}
    for l2_weight in (0.0, 1.0):
        config = with_stage_two(toy_config)
        config["training"]["short_range"]["stage_two"]["l2_weight"] = l2_weight
        runs[l2_weight] = tmp_path / f"l2_{l2_weight:g}"
        train_model("baseline", config, study["dataset"], study["splits"], 0, runs[l2_weight], device="cpu",
                    init_from=baselines["main"])
        assert json.loads((runs[l2_weight] / "model.json").read_text())["stage_two"]["l2_weight"] == l2_weight
    assert squared_weights(runs[1.0]) < 0.9 * squared_weights(runs[0.0])
    assert toy_config["training"]["short_range"]["l2_weight"] == 1e-6  # the schema's default


def test_finishing_a_first_stage_model_gives_the_whole_run(baselines, study, toy_config, tmp_path):
    """A model trained before its settings had a stage two (the learning curve's, the other
    charge mode's) is finished in place, its first stage kept beside it, into the whole
    run's weights; one that has its stage two, or settings without one, are left alone."""
    from hipqeq.training.stages import finish_stage_two, stage_one_dir

    model = tmp_path / "baseline"
    shutil.copytree(baselines["main"], model)
    settings = dict(dataset=study["dataset"], splits=study["splits"], member=0, device="cpu")
    assert finish_stage_two("baseline", toy_config, model, **settings) is None
    assert not stage_one_dir(model).exists()

    summary = finish_stage_two("baseline", with_stage_two(toy_config), model, **settings)
    assert summary["best_epoch"] >= 0
    assert weights(stage_one_dir(model)).keys() == weights(baselines["main"]).keys()
    for key, value in weights(baselines["whole"]).items():
        torch.testing.assert_close(weights(model)[key], value, rtol=1e-5, atol=1e-6)
    assert json.loads((model / "model.json").read_text())["init_from"]["path"] == str(stage_one_dir(model))

    finished = (model / "weights.pt").read_bytes()
    assert finish_stage_two("baseline", with_stage_two(toy_config), model, **settings) is None
    assert (model / "weights.pt").read_bytes() == finished

    shutil.rmtree(model)  # stopped after the move: goes on from the kept first stage
    finish_stage_two("baseline", with_stage_two(toy_config), model, **settings)
    assert (model / "weights.pt").read_bytes() == finished
    with pytest.raises(HipqeqError, match="no trained baseline model"):
        finish_stage_two("baseline", with_stage_two(toy_config), tmp_path / "nothing", **settings)


def test_init_from_refuses_another_stage_or_network(baselines, study, toy_config, tmp_path):
    charges = tmp_path / "charges"
    train_model("charges", toy_config, study["dataset"], study["splits"], 0, charges, device="cpu")
    with pytest.raises(HipqeqError, match="holds a baseline model, not a short-range one"):
        train_model("short-range", toy_config, study["dataset"], study["splits"], 0, tmp_path / "4g",
                    charge_model=charges, device="cpu", init_from=baselines["main"])
    with pytest.raises(HipqeqError, match="not the charge model"):
        train_model("charges", toy_config, study["dataset"], study["splits"], 0, tmp_path / "c",
                    device="cpu", init_from=charges)
    wider = copy.deepcopy(toy_config)
    wider["training"]["network"]["n_features"] = 10
    with pytest.raises(HipqeqError, match="--init-from needs a model of this config's network"):
        train_model("baseline", wider, study["dataset"], study["splits"], 0, tmp_path / "b", device="cpu",
                    init_from=baselines["main"])


def test_a_short_range_starts_only_from_one_of_the_same_charge_model(study, toy_config, tmp_path):
    charges = [tmp_path / f"charges_{k}" for k in (0, 1)]
    for seed, output in enumerate(charges):
        train_model("charges", toy_config, study["dataset"], study["splits"], 0, output, device="cpu", seed=seed)
    trained = tmp_path / "4g"
    train_model("short-range", toy_config, study["dataset"], study["splits"], 0, trained,
                charge_model=charges[0], device="cpu")
    config = with_stage_two(toy_config)
    train_model("short-range", config, study["dataset"], study["splits"], 0, tmp_path / "refined",
                charge_model=charges[0], device="cpu", init_from=trained)
    with pytest.raises(HipqeqError, match="trained with another charge model"):
        train_model("short-range", config, study["dataset"], study["splits"], 0, tmp_path / "other",
                    charge_model=charges[1], device="cpu", init_from=trained)


def test_the_charge_model_has_no_stage_two(toy_config):
    config = with_stage_two(toy_config, "charges")
    with pytest.raises(ConfigError, match="training/charges/stage_two"):
        validate_config(config)


@pytest.mark.skipif(importlib.util.find_spec("mace") is None, reason="the MACE peer needs the peer extra")
def test_the_peer_has_the_same_stage_two(study, peer_config, tmp_path):
    config = with_stage_two(peer_config, "peer")
    main, whole, refined = (tmp_path / name for name in ("main", "whole", "refined"))
    train_model("mace", peer_config, study["dataset"], study["splits"], 0, main, device="cpu")
    train_model("mace", config, study["dataset"], study["splits"], 0, whole, device="cpu")
    train_model("mace", config, study["dataset"], study["splits"], 0, refined, device="cpu", init_from=main)
    first, second = weights(whole), weights(refined)
    for key in first:  # mace's CPU training is not bit for bit (test_checkpoint)
        torch.testing.assert_close(first[key], second[key], rtol=1e-6, atol=1e-9)
    n_main = len(curves(main))
    assert [r["stage"] for r in curves(whole)] == ["1"] * n_main + ["2"] * STAGE_TWO["max_epochs"]
    assert json.loads((refined / "model.json").read_text())["init_from"]["path"] == str(main)
    narrower = copy.deepcopy(config)
    narrower["training"]["peer"]["num_channels"] = 4
    with pytest.raises(HipqeqError, match="a MACE of other hyperparameters"):
        train_model("mace", narrower, study["dataset"], study["splits"], 0, tmp_path / "x", device="cpu",
                    init_from=main)
