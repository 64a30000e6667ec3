"""The short range's terms in the total charge beyond the global energy per unit of charge:
the environment-dependent one (``training.network.charge_energy: environment``), trained by
the charged cells alone, and the charge hardness (``training.network.charge_hardness``),
fitted with the energy reference; a short range with them can start from one without
(``--init-from``)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from hipqeq.data import make_splits, write_dataset, write_splits
from hipqeq.errors import HipqeqError
from hipqeq.models.store import load_model
from hipqeq.training import train_model


def charged_frames(make_frames) -> list:
    """16 of :func:`make_frames`' rattled 8-atom CuAu cells with 2-5 Au, pairs of frames in
    turn at Q = -1, 0 and +1 e (charges shifted to sum to Q), whose EMT energy gets
    Q (2 + 6 x_Au) + 0.9 Q^2 eV: an energy per unit of charge that depends on the
    composition, which one global eV/e cannot fit, and a curvature in Q."""
    frames = make_frames(16, 8, gold_counts=(2, 3, 4, 5))
    for i, atoms in enumerate(frames):
        total_charge = float((i // 2) % 3 - 1)
        x_gold = np.mean(atoms.numbers == 79)
        atoms.info["total_charge"] = total_charge
        atoms.calc.results["charges"] = atoms.calc.results["charges"] + total_charge / len(atoms)
        atoms.calc.results["energy"] += total_charge * (2.0 + 6.0 * x_gold) + 0.9 * total_charge ** 2
    return frames


def with_charge_energy(config: dict, charge_energy: str = "environment") -> dict:
    config = copy.deepcopy(config)
    config["training"]["network"]["charge_energy"] = charge_energy
    return config


def head_weights(model_dir) -> list[torch.Tensor]:
    return [w.detach() for w in load_model(model_dir).charge_energy.parameters()]


@pytest.fixture(scope="module")
def charged_study(toy_config, tmp_path_factory, make_frames):
    """The charged frames' dataset and split, a charge model and a short range with
    neither term ("plain") trained on them."""
    root = tmp_path_factory.mktemp("charged")
    dataset = write_dataset(charged_frames(make_frames), root / "charged.parquet")
    splits = root / "splits.json"
    write_splits(make_splits([f"parent{i}" for i in range(8)], toy_config["training"]["split_fractions"], 0, 1),
                 splits)
    charges, plain = root / "charges", root / "plain"
    train_model("charges", toy_config, dataset, splits, 0, charges, device="cpu")
    train_model("short-range", toy_config, dataset, splits, 0, plain, charge_model=charges, device="cpu")
    return {"root": root, "dataset": dataset, "splits": splits, "charges": charges, "plain": plain}


def test_only_charged_cells_train_the_charge_energy(study, charged_study, toy_config, tmp_path):
    """Its head starts at zero and stays there on neutral cells (E_Q = 0 at Q = 0, no
    gradient), while charged ones move it."""
    config = with_charge_energy(toy_config)
    neutral_charges = tmp_path / "neutral_charges"
    train_model("charges", toy_config, study["dataset"], study["splits"], 0, neutral_charges, device="cpu")
    train_model("short-range", config, study["dataset"], study["splits"], 0, tmp_path / "neutral",
                charge_model=neutral_charges, device="cpu")
    assert all(torch.count_nonzero(w) == 0 for w in head_weights(tmp_path / "neutral"))
    train_model("short-range", config, charged_study["dataset"], charged_study["splits"], 0, tmp_path / "charged",
                charge_model=charged_study["charges"], device="cpu")
    assert max(float(w.abs().max()) for w in head_weights(tmp_path / "charged")) > 1e-2


def test_a_short_range_with_the_charge_energy_starts_from_one_without(charged_study, toy_config, tmp_path):
    """--init-from a global-charge-energy model: its weights load, the head starts at zero
    and stage two trains it; the other way round is refused (the stored head would be
    dropped)."""
    config = with_charge_energy(toy_config)
    config["training"]["short_range"]["stage_two"] = {"max_epochs": 4, "learning_rate": 0.01, "force_weight": 0.1}
    refined = tmp_path / "environment"
    train_model("short-range", config, charged_study["dataset"], charged_study["splits"], 0, refined,
                charge_model=charged_study["charges"], device="cpu", init_from=charged_study["plain"])
    assert load_model(refined).hyperparameters["charge_energy"] == "environment"
    assert max(float(w.abs().max()) for w in head_weights(refined)) > 1e-2
    with pytest.raises(HipqeqError, match="weights do not fit"):
        train_model("short-range", with_charge_energy(config, "global"), charged_study["dataset"],
                    charged_study["splits"], 0, tmp_path / "back", charge_model=charged_study["charges"],
                    device="cpu", init_from=refined)


def test_the_charge_hardness_is_fitted_with_the_energy_reference(charged_study, toy_config, tmp_path):
    """Not trained, but set by the least-squares reference and each refit (recorded as the
    last weight of the refits' shifts), and a short range with it starts from one
    without (--init-from: the refit before stage two sets it)."""
    config = copy.deepcopy(toy_config)
    config["training"]["network"]["charge_hardness"] = True
    trained = tmp_path / "hardness"
    train_model("short-range", config, charged_study["dataset"], charged_study["splits"], 0, trained,
                charge_model=charged_study["charges"], device="cpu")
    model = load_model(trained)
    assert abs(float(model.charge_hardness.eta)) > 0.1
    meta = json.loads((trained / "model.json").read_text())
    [refit] = meta["energy_reference_refits"]
    assert len(refit["shift"]) == len(model.hyperparameters["species"]) + 2
    config["training"]["short_range"]["stage_two"] = {"max_epochs": 2, "learning_rate": 0.01, "force_weight": 0.1}
    refined = tmp_path / "refined"
    train_model("short-range", config, charged_study["dataset"], charged_study["splits"], 0, refined,
                charge_model=charged_study["charges"], device="cpu", init_from=charged_study["plain"])
    first_refit = json.loads((refined / "model.json").read_text())["energy_reference_refits"][0]
    assert first_refit["shift"][-1] != 0.0 and abs(float(load_model(refined).charge_hardness.eta)) > 0.1
