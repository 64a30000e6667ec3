"""Which elements a trained model knows: every element of its dataset file, rows that do
not train included, so the workflow can evaluate the model on all of its data."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from hipqeq.data import make_splits, write_dataset, write_splits
from hipqeq.errors import HipqeqError
from hipqeq.models.charges import ChargeModel, charge_hyperparameters
from hipqeq.models.network import network_hyperparameters
from hipqeq.models.store import load_model, save_model
from hipqeq.qeq import QEq
from hipqeq.training import train_model

AG, PT = 47, 78


def substitute(atoms, z: int):
    """``atoms`` with its first atom replaced by element ``z`` (labels kept: the test
    is about which elements a model knows, not what it learns)."""
    atoms.numbers[0] = z
    return atoms


@pytest.fixture(scope="module")
def rare_study(tmp_path_factory, toy_config, make_frames):
    """A DFT-like charge set where Ag occurs only in a test-split row and Pt only in a
    failed training row, and an xTB-like set where Ag also occurs in a training row (the
    DFT selection is a subset of the xTB selection); and the charge model of the first."""
    root = tmp_path_factory.mktemp("rare")
    parents = [f"parent{i}" for i in range(5)]
    split = make_splits(parents, (0.6, 0.2, 0.2), 0, 1)
    splits = root / "splits.json"
    write_splits(split, splits)
    (test_parent,) = split["test"]
    train_parent = split["members"][0]["train"][0]
    frames = make_frames(10, 5, seed=7)
    test_row = next(k for k, a in enumerate(frames) if a.info["parent_id"] == test_parent)
    train_rows = [k for k, a in enumerate(frames) if a.info["parent_id"] == train_parent]
    dft = []
    for frame in frames:
        dft.append(frame.copy())
        dft[-1].calc = frame.calc  # Atoms.copy drops the calculator that holds the labels
    substitute(dft[test_row], AG)
    substitute(dft[train_rows[0]], PT)
    dft[train_rows[0]].info["status"] = "error"
    xtb = frames
    substitute(xtb[test_row], AG)
    substitute(xtb[train_rows[1]], AG)
    dft_path, xtb_path = write_dataset(dft, root / "dft.parquet"), write_dataset(xtb, root / "xtb.parquet")
    return {"root": root, "splits": splits, "dft": dft_path, "xtb": xtb_path, "frames": frames}


@pytest.fixture(scope="module")
def rare_charge_model(rare_study, toy_config):
    output = rare_study["root"] / "charges"
    train_model("charges", toy_config, rare_study["dft"], rare_study["splits"], 0, output, device="cpu")
    return output


def test_charge_model_knows_elements_of_test_and_failed_rows(rare_study, toy_config, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        train_model("charges", toy_config, rare_study["dft"], rare_study["splits"], 0, tmp_path / "c",
                    device="cpu")
    assert json.loads((tmp_path / "c" / "model.json").read_text())["species"] == [29, AG, PT, 79]
    assert "Ag (Z=47), Pt (Z=78) occur only in rows that do not train" in caplog.text


def test_untrained_elements_keep_their_initial_qeq_parameters(rare_charge_model, toy_config):
    """Ag and Pt never reach the loss, so their hardness and width stay at the initial
    values (Adam leaves a parameter with zero gradient where it is); Cu's move."""
    model = load_model(rare_charge_model, kind="charges")
    initial = QEq(model.qeq.species_set).to(getattr(torch, toy_config["training"]["dtype"]))
    untrained = [model.qeq.species_set.index(z) for z in (AG, PT)]
    for name in ("raw_hardness", "raw_sigma"):
        trained, start = getattr(model.qeq, name).detach(), getattr(initial, name).detach()
        torch.testing.assert_close(trained[untrained], start[untrained], rtol=0, atol=0)
    copper = model.qeq.species_set.index(29)
    assert model.qeq.raw_hardness[copper] != initial.raw_hardness[copper]


def test_charge_model_evaluates_structures_with_test_only_elements(rare_charge_model, make_frames):
    from hipqeq.calculator import predict

    atoms = make_frames(1, 1, seed=11)[0]
    atoms.numbers[[0, 1, 2]] = AG, PT, AG
    atoms.info["total_charge"] = 1.0
    (result,) = predict([rare_charge_model], [atoms], device="cpu", progress=False)
    assert np.all(np.isfinite(result["charges"])) and np.isfinite(result["energy"])
    assert result["charges"].sum() == pytest.approx(1.0, abs=1e-5)


def test_short_range_trains_on_elements_the_charge_set_held_out(rare_study, rare_charge_model, toy_config):
    """The xTB set has Ag in a training row, the charge model saw Ag only in a test row:
    the E_elec subtraction over the xTB rows works and the potential knows the union."""
    from hipqeq.calculator import predict

    output = rare_study["root"] / "4g"
    summary = train_model("short-range", toy_config, rare_study["xtb"], rare_study["splits"], 0, output,
                          charge_model=rare_charge_model, device="cpu")
    assert summary["n_train"] > 0
    assert json.loads((output / "model.json").read_text())["species"] == [29, AG, PT, 79]
    (result,) = predict([output], [rare_study["frames"][0]], device="cpu", progress=False)
    assert np.isfinite(result["energy"])


def test_short_range_refuses_an_element_the_charge_model_does_not_know(toy_config, tmp_path, rare_study):
    """A charge model without Ag cannot compute E_elec of an Ag row: the error names the
    element and says where to add it, before any training."""
    charges = tmp_path / "charges"
    hp = charge_hyperparameters(network_hyperparameters(toy_config["training"]["network"], [29, 79]), 1e-6)
    save_model(charges, "charges", ChargeModel(hp), {"dtype": "float32"}, {})
    with pytest.raises(HipqeqError, match=r"Ag \(Z=47\), unknown to the charge model.*include .* DFT"):
        train_model("short-range", toy_config, rare_study["xtb"], rare_study["splits"], 0, tmp_path / "4g",
                    charge_model=charges, device="cpu")
    assert not (tmp_path / "4g").exists()
