"""The MACE peer stage (`hipqeq train mace`) on the tiny EMT study of conftest: what it
trains on, what it writes, and that its model reloads to the same predictions."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
import torch

# not importorskip("mace"): importing mace itself would leave its process-wide
# TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD set (hipqeq._mace imports it without that)
if importlib.util.find_spec("mace") is None:
    pytest.skip("the MACE peer needs the peer extra (mace-torch)", allow_module_level=True)

from hipqeq.data import atoms_from_record, read_records, read_splits  # noqa: E402
from hipqeq.data.split import assign_splits  # noqa: E402
from hipqeq.errors import HipqeqError  # noqa: E402
from hipqeq.models.mace import (  # noqa: E402
    MODEL_FILE,
    load_mace,
    peer_calculator,
    predict_peer,
    read_peer_metadata,
)
from hipqeq.models.store import read_metadata  # noqa: E402
from hipqeq.training import train_model  # noqa: E402
from hipqeq.training.common import member_seed  # noqa: E402
from hipqeq.training.data import file_sha256  # noqa: E402

@pytest.fixture(scope="module")
def peer(study, peer_config):
    output = study["root"] / "mace_0"
    summary = train_model("mace", peer_config, study["dataset"], study["splits"], 0, output, device="cpu")
    return output, summary


def _rows_of(study, split: str) -> list[dict]:
    """The ok rows of member 0's ``split`` of the study."""
    records = [r for r in read_records(study["dataset"]) if r["status"] == "ok"]
    names = assign_splits([r["parent_id"] for r in records], read_splits(study["splits"]), 0)
    return [r for r, name in zip(records, names) if name == split]


def test_model_directory_records_what_it_was_trained_on(peer, study, peer_config):
    output, summary = peer
    assert {p.name for p in output.iterdir()} >= {"model.json", "hyperparameters.json", "weights.pt", MODEL_FILE,
                                                   "training_curves.csv", "training_curves.png"}
    meta = read_peer_metadata(output)
    assert meta["kind"] == "mace" and meta["dtype"] == "float64"
    assert meta["species"] == [29, 79]
    assert meta["dataset"]["sha256"] == file_sha256(study["dataset"])
    assert meta["split"]["sha256"] == file_sha256(study["splits"])
    assert (meta["split"]["n_train"], meta["split"]["n_valid"]) == (len(_rows_of(study, "train")),
                                                                   len(_rows_of(study, "valid")))
    assert meta["seed"] == member_seed(peer_config, "mace", 0)
    hyper = json.loads((output / "hyperparameters.json").read_text())
    assert hyper["model"]["r_max"] == peer_config["training"]["network"]["cutoff_A"]
    assert hyper["fit"]["force_weight"] == 2.0
    with open(output / "training_curves.csv") as handle:
        history = list(csv.DictReader(handle))
    assert len(history) == meta["epochs_run"] <= peer_config["training"]["peer"]["fit"]["max_epochs"]
    valid_losses = [float(row["valid_Loss"]) for row in history]
    assert meta["best_valid_loss"] == summary["best_valid_loss"] == min(valid_losses)
    assert valid_losses[meta["best_epoch"]] == min(valid_losses)


def test_reference_energies_are_refit_to_the_trained_models_training_residuals(peer, study):
    """After training the E0s are refit by least squares: the training rows' energy
    residuals are orthogonal to their element counts (the normal equations), and the
    stored E0s are the ones the model uses."""
    rows = _rows_of(study, "train")
    counts = np.array([[np.count_nonzero(np.asarray(r["numbers"]) == z) for z in (29, 79)] for r in rows])
    predicted = predict_peer([peer[0]], [atoms_from_record(r) for r in rows], device="cpu", progress=False)
    residuals = np.array([r["energy"] - p["energy"] for r, p in zip(rows, predicted)])
    scale = np.abs(counts).T @ np.abs([r["energy"] for r in rows])
    np.testing.assert_array_less(np.abs(counts.T @ residuals), 1e-6 * scale)
    meta = read_peer_metadata(peer[0])
    [refit] = meta["energy_reference_refits"]
    before, after = refit["train_rmse_meV_per_atom"]
    assert after <= before * (1 + 1e-6)
    e0s = load_mace(peer[0]).atomic_energies_fn.atomic_energies.reshape(-1).tolist()
    assert [meta["e0s_eV"]["29"], meta["e0s_eV"]["79"]] == pytest.approx(e0s, rel=1e-6)


def test_best_validation_loss_is_that_of_the_stored_model(peer, study, peer_config):
    """The stored weights are the best epoch's and the E0s' refit: their loss on the
    validation rows, recomputed from predictions with the refit's shift taken off,
    MSE(E/N) + w_F MSE(F), is the recorded best loss."""
    rows = _rows_of(study, "valid")
    predicted = predict_peer([peer[0]], [atoms_from_record(r) for r in rows], device="cpu", progress=False)
    [refit] = read_peer_metadata(peer[0])["energy_reference_refits"]
    counts = [[np.count_nonzero(np.asarray(r["numbers"]) == z) for z in (29, 79)] for r in rows]
    energy = [(p["energy"] - float(np.dot(n, refit["shift"])) - r["energy"]) / len(r["numbers"])
              for p, r, n in zip(predicted, rows, counts)]
    forces = np.concatenate([(p["forces"] - np.reshape(r["forces"], (-1, 3))).ravel()
                             for p, r in zip(predicted, rows)])
    force_weight = peer_config["training"]["peer"]["fit"]["force_weight"]
    loss = np.mean(np.square(energy)) + force_weight * np.mean(forces**2)
    assert loss == pytest.approx(read_peer_metadata(peer[0])["best_valid_loss"], rel=1e-8)


# mace.model holds e3nn's generated code as TorchScript, which unpickling loads
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_reloaded_model_files_predict_the_same(peer, study):
    """weights.pt (rebuilt by hipqeq) and mace.model (MACE's pickled module) are the same
    model; forces are minus the energy gradient (central differences, float64); the total
    charge does not change a local model's energy."""
    output = peer[0]
    atoms = atoms_from_record(read_records(study["dataset"])[0])
    atoms.calc = None
    rebuilt = predict_peer([output], [atoms], device="cpu", progress=False)[0]
    pickled = torch.load(output / MODEL_FILE, map_location="cpu", weights_only=False)
    calculator = peer_calculator(output, device="cpu")
    calculator.models = [pickled]
    probe = atoms.copy()
    probe.calc = calculator
    assert probe.get_potential_energy() == pytest.approx(rebuilt["energy"], abs=1e-10)
    np.testing.assert_allclose(probe.get_forces(), rebuilt["forces"], atol=1e-10)

    step = 1e-4
    for index, axis in ((0, 0), (5, 2)):
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[index, axis] += sign * step
            energies.append(predict_peer([output], [moved], device="cpu", progress=False)[0]["energy"])
        assert -(energies[0] - energies[1]) / (2 * step) == pytest.approx(rebuilt["forces"][index, axis], abs=1e-6)

    charged = atoms.copy()
    charged.info["total_charge"] = 1.0
    assert predict_peer([output], [charged], device="cpu", progress=False)[0]["energy"] == rebuilt["energy"]
    assert torch.get_default_dtype() == torch.float32, "training and loading leave torch's default dtype alone"


def test_peer_directories_are_told_apart_from_potentials(peer, study, peer_config, tmp_path):
    with pytest.raises(HipqeqError, match="MACE peer model.*validate --peer"):
        read_metadata(peer[0])
    (tmp_path / "model.json").write_text(json.dumps({"format_version": 3, "kind": "baseline"}))
    with pytest.raises(HipqeqError, match="expected a MACE peer model"):
        load_mace(tmp_path)
    with pytest.raises(HipqeqError, match="--charge-model is only used by short-range, not mace"):
        train_model("mace", peer_config, study["dataset"], study["splits"], 0, tmp_path / "out",
                    charge_model=peer[0], device="cpu")
    (peer[0] / "weights.pt").rename(tmp_path / "weights.pt")
    try:
        with pytest.raises(HipqeqError, match="weights.pt: missing"):
            load_mace(peer[0])
    finally:
        (tmp_path / "weights.pt").rename(peer[0] / "weights.pt")
