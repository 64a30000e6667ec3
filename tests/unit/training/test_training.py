"""Training stages on a tiny synthetic dataset (seconds each on one CPU core)."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch

from hipqeq.cli import main
from hipqeq.data import make_splits, read_table, write_dataset, write_splits
from hipqeq.errors import HipqeqError
from hipqeq.seeds import derive_seed
from hipqeq.training import STAGES, train_model
from hipqeq.training.data import load_stage_table, pair_cells, usable_rows
from hipqeq.training.stages import member_seed


def mixed_frames(make_frames) -> list:
    """Bulk cells (Q = 0), charged slabs (pbc T,T,F, Q = +1 e) and a neutral open
    cluster; reference charges sum to each frame's total charge. With the split of
    ``mixed_study`` the training rows are bulk (parent0) and slabs (parent1, parent3),
    the validation rows clusters (parent4)."""
    frames = make_frames(10, 5, seed=3)
    for k, atoms in enumerate(frames):
        if k % 5 in (1, 3):
            atoms.pbc = (True, True, False)
            atoms.center(vacuum=5.0, axis=2)
            atoms.info["total_charge"] = 1.0
            atoms.calc.results["charges"] = atoms.calc.results["charges"] + 1.0 / len(atoms)
        elif k % 5 == 4:
            atoms.pbc = False
            atoms.center(vacuum=5.0)
    return frames


@pytest.fixture(scope="module")
def mixed_study(tmp_path_factory, toy_config, make_frames):
    """A charge model and a 4G potential trained on :func:`mixed_frames`."""
    root = tmp_path_factory.mktemp("mixed")
    frames = mixed_frames(make_frames)
    dataset = write_dataset(frames, root / "mixed.parquet")
    splits = root / "splits.json"
    write_splits(make_splits([f"parent{i}" for i in range(5)], (0.6, 0.2, 0.2), 0, 1), splits)
    charges, potential = root / "charges", root / "4g"
    train_model("charges", toy_config, dataset, splits, 0, charges, device="cpu")
    train_model("short-range", toy_config, dataset, splits, 0, potential, charge_model=charges, device="cpu")
    return {"frames": frames, "charges": charges, "potential": potential}


@pytest.fixture(scope="module")
def charge_model(study, toy_config):
    output = study["root"] / "charges_0"
    train_model("charges", toy_config, study["dataset"], study["splits"], 0, output, device="cpu")
    return output


def test_rows_failed_or_unlabelled_are_dropped_with_a_count(tmp_path, caplog, make_frames):
    frames = make_frames(4, 2)
    frames[1].info["status"] = "scf_not_converged"
    forces = frames[2].calc.results["forces"].copy()
    forces[0, 0] = np.nan
    frames[2].calc.results["forces"] = forces
    table = read_table(write_dataset(frames, tmp_path / "d.parquet"))
    with caplog.at_level(logging.WARNING):
        keep = usable_rows(table, ("energy", "forces"), source="d.parquet")
    assert keep.tolist() == [True, False, False, True]
    assert "dropping 1 of 4 rows whose status is not ok" in caplog.text
    assert "dropping 1 ok rows whose forces is missing or not finite" in caplog.text


def test_energy_stages_warn_when_validation_rows_leave_the_training_span(tmp_path, caplog, make_frames):
    """A charged frame of a validation parent: no training rows combine to it, so its
    energy reference is extrapolated; the energy stages say so, the charge stage does not."""
    frames = make_frames(6, 3)
    splits = tmp_path / "s.json"
    write_splits({"seed": 0, "fractions": [0.6, 0.2, 0.2], "test": ["parent2"],
                  "members": [{"train": ["parent0"], "valid": ["parent1"]}]}, splits)
    dataset = write_dataset(frames, tmp_path / "d.parquet")
    with caplog.at_level(logging.WARNING):
        load_stage_table("baseline", dataset, splits, 0)
    assert "member 0: validation parent" not in caplog.text
    frames[1].info["total_charge"] = 1.0   # parent1
    dataset = write_dataset(frames, tmp_path / "charged.parquet")
    for stage, warned in (("charges", False), ("short-range", True)):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            load_stage_table(stage, dataset, splits, 0)
        assert ("member 0: validation parent(s) parent1 have compositions" in caplog.text) == warned


def test_pair_cells_keep_periodic_vectors_and_pad_the_others():
    positions = np.array([[[0.0, 0.0, 0.0], [1.0, 1.0, 3.0]]])
    cell = np.diag([4.0, 5.0, 20.0])[None]
    slab = pair_cells(positions, cell, np.array([[True, True, False]]), np.array([2]), 6.0)
    np.testing.assert_allclose(slab[0, :2], cell[0, :2])
    assert abs(slab[0, 2] @ [0, 0, 1]) == pytest.approx(3.0 + 6.0 + 1.0)
    cluster = pair_cells(positions, np.zeros((1, 3, 3)), np.zeros((1, 3), bool), np.array([2]), 6.0)
    assert abs(np.linalg.det(cluster[0])) > 0
    assert np.all(np.linalg.norm(cluster[0], axis=1) >= 7.0)


def test_charge_model_directory_is_complete(charge_model, study, toy_config):
    meta = json.loads((charge_model / "model.json").read_text())
    assert meta["kind"] == "charges" and meta["species"] == [29, 79]
    assert meta["seed"] == member_seed(toy_config, "charges", 0)
    assert meta["dataset"]["sha256"] and meta["split"]["member"] == 0
    assert meta["units"]["charges"] == "e" and meta["hipqeq_version"]
    hyper = json.loads((charge_model / "hyperparameters.json").read_text())
    assert hyper["model"]["n_features"] == 8 and hyper["fit"]["max_epochs"] == 8
    for name in ("weights.pt", "training_curves.csv", "training_curves.png"):
        assert (charge_model / name).is_file()


def test_training_lowers_the_loss(charge_model):
    with open(charge_model / "training_curves.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[0]["train_Loss"]) > min(float(r["train_Loss"]) for r in rows)
    assert float(rows[0]["valid_Loss"]) > min(float(r["valid_Loss"]) for r in rows)


def test_short_range_directory_holds_the_whole_potential(charge_model, study, toy_config, make_frames):
    from hipqeq.calculator import predict

    output = study["root"] / "4g_0"
    summary = train_model("short-range", toy_config, study["dataset"], study["splits"], 0, output,
                          charge_model=charge_model, device="cpu")
    assert summary["n_train"] > 0
    assert (output / "charge_model" / "weights.pt").is_file()
    atoms = make_frames(1, 1, seed=9)[0]
    (result,) = predict([output], [atoms], device="cpu", progress=False)
    assert np.isfinite(result["energy"]) and result["forces"].shape == (8, 3)
    assert result["charges"].sum() == pytest.approx(0.0, abs=1e-5)


def test_charge_training_mixes_total_charges_and_boundaries(mixed_study):
    """Q = 0 bulk cells, Q = +1 slabs and an open cluster train together; every
    structure's predicted charges sum to its own total charge."""
    from hipqeq.calculator import predict

    frames = mixed_study["frames"]
    assert {tuple(a.pbc) for a in frames} == {(True,) * 3, (True, True, False), (False,) * 3}
    predicted = predict([mixed_study["charges"]], frames, device="cpu", progress=False)
    for atoms, result in zip(frames, predicted):
        assert result["charges"].sum() == pytest.approx(atoms.info.get("total_charge", 0.0), abs=1e-5)
    with open(mixed_study["charges"] / "training_curves.csv") as handle:
        losses = [float(row["train_Loss"]) for row in csv.DictReader(handle)]
    assert np.all(np.isfinite(losses)) and min(losses) < losses[0]


def test_short_range_stage_subtracts_the_deployed_electrostatics(mixed_study):
    """For every frame, the deployed 4G potential's E - E_short equals the E_elec the
    short-range stage subtracted: same boundary, tolerance, solver and dtype."""
    from hipqeq.calculator import predict
    from hipqeq.training.stages import electrostatic_labels

    frames = mixed_study["frames"]
    subtracted = electrostatic_labels(mixed_study["charges"], frames)
    # in the stored precision the stage used (the calculator's CPU default is float64)
    predicted = predict([mixed_study["potential"]], frames, device="cpu", dtype="float32", progress=False)
    for atoms, labels, result in zip(frames, subtracted, predicted):
        rounding = 4 * float(np.finfo(np.float32).eps) * max(1.0, abs(result["energy"]))  # float32 models
        assert result["energy"] - result["energy_short"] == pytest.approx(labels["energy"], abs=rounding)
        assert result["energy_elec"] == labels["energy"]
        np.testing.assert_array_equal(result["charges"], labels["charges"])


def test_training_is_deterministic_on_cpu(study, toy_config, tmp_path):
    weights = []
    for run in ("a", "b"):
        output = tmp_path / run
        train_model("baseline", toy_config, study["dataset"], study["splits"], 0, output, device="cpu")
        weights.append(torch.load(output / "weights.pt", weights_only=True))
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=0, atol=0)


def test_member_seeds_are_derived_per_stage_and_member(toy_config):
    seeds = {member_seed(toy_config, stage, member) for stage in STAGES for member in range(3)}
    assert len(seeds) == 3 * len(STAGES)
    assert member_seed(toy_config, "baseline", 2) == derive_seed(toy_config["seed"], "train", "baseline", 2)
    # --seed replaces the master seed; members still differ
    assert member_seed(toy_config, "baseline", 2, seed=5) == derive_seed(5, "train", "baseline", 2)
    assert member_seed(toy_config, "baseline", 1, seed=5) != member_seed(toy_config, "baseline", 2, seed=5)


def test_charge_training_without_validation_rows_validates_on_train(tmp_path, toy_config, caplog, make_frames):
    """Two DFT-like frames from two parents: one goes to test, none is left for valid."""
    dataset = write_dataset(make_frames(2, 2), tmp_path / "dft.parquet")
    splits = tmp_path / "splits.json"
    write_splits(make_splits(["parent0", "parent1"], (0.6, 0.2, 0.2), 0, 1), splits)
    with caplog.at_level(logging.WARNING):
        summary = train_model("charges", toy_config, dataset, splits, 0, tmp_path / "m", device="cpu")
    assert summary["n_valid"] == 0
    assert "validating on the 1 training rows" in caplog.text
    assert json.loads((tmp_path / "m" / "model.json").read_text())["split"]["valid_is_train"]


def test_cli_train_baseline_and_its_errors(study, tmp_path, capsys, toy_config, toy_config_text):
    config = tmp_path / "config.yaml"
    config.write_text(toy_config_text)
    args = ["train", "baseline", "--config", str(config), "--dataset", str(study["dataset"]),
            "--splits", str(study["splits"]), "--member", "0", "--output", str(tmp_path / "b"),
            "--device", "cpu"]
    assert main(args) == 0
    assert "trained baseline model" in capsys.readouterr().out
    assert main(["train", "short-range", *args[2:]]) == 2
    assert "needs --charge-model" in capsys.readouterr().err
    assert main([*args, "--charge-model", str(tmp_path / "b")]) == 2
    assert "--charge-model is only used by short-range, not baseline" in capsys.readouterr().err
    assert main([*args[:-1], "gpu0"]) == 2
    assert "device 'gpu0': choose auto, cpu, cuda or cuda:N" in capsys.readouterr().err
    with pytest.raises(HipqeqError, match="no committee member 3"):
        train_model("baseline", toy_config, study["dataset"], study["splits"], 3, tmp_path / "c")


def test_cli_lists_the_library_stages_without_importing_torch():
    code = "import sys; from hipqeq.cli.train import STAGES; print('torch' in sys.modules, ','.join(STAGES))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", ",".join(STAGES)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_training_on_cuda(study, toy_config, tmp_path):
    summary = train_model("baseline", toy_config, study["dataset"], study["splits"], 0, tmp_path / "g",
                          device="cuda")
    assert json.loads((tmp_path / "g" / "model.json").read_text())["device"].startswith("cuda")
    assert np.isfinite(summary["best_valid_loss"])


def test_the_charge_aware_energy_reference_fits_an_energy_per_unit_of_total_charge(mixed_study, make_frames):
    """The 4G short range's zeroth energy term starts as the least-squares fit of its
    targets (E_ref - E_elec - E_core, the fixed repulsive core's energy taken off first)
    on the training rows over composition *and* total charge: an energy per unit of
    charge (eV/e) the charge model cannot give; training then adds its refit to the
    residuals (model.json). At one geometry, neutral and +1 e then differ in E_short by
    the stored energy per unit of charge plus what the network makes of the shifted
    charges (a tenth of it here, after the initial down-scaling of the layers)."""
    from hipqeq.calculator import predict
    from hipqeq.models.store import load_model
    from hipqeq.data import record_from_atoms, table_from_records
    from hipqeq.training.data import training_arrays
    from hipqeq.training.stages import core_energies, electrostatic_labels

    frames = mixed_study["frames"]
    splits = json.loads((mixed_study["potential"].parent / "splits.json").read_text())
    train = [a for a in frames if a.info["parent_id"] in splits["members"][0]["train"]]
    elec = electrostatic_labels(mixed_study["charges"], [a.copy() for a in train])
    model = load_model(mixed_study["potential"], "short-range")
    arrays = training_arrays(table_from_records([record_from_atoms(a) for a in train]), model.cutoff_A, dtype=np.float64)
    core = core_energies(model, arrays)
    assert core.max() > 1e-3  # the fit has a core to take off
    targets = [a.calc.results["energy"] - e["energy"] - c for a, e, c in zip(train, elec, core)]
    species = sorted({int(z) for a in frames for z in a.numbers})
    design = np.array([[np.sum(a.numbers == z) for z in species] + [a.info.get("total_charge", 0.0)] for a in train])
    expected = np.linalg.lstsq(design, np.array(targets), rcond=None)[0]
    stored = model.energy.layers[0].weight.detach().double().numpy().ravel()
    # what training added after its schedule: the refit to the trained model's residuals
    meta = json.loads((mixed_study["potential"] / "model.json").read_text())
    shift = np.sum([refit["shift"] for refit in meta["energy_reference_refits"]], axis=0)
    np.testing.assert_allclose(stored - shift, expected, rtol=1e-4, atol=1e-4)
    assert abs(expected[-1]) > 0.1
    mu_q = stored[-1]

    neutral = make_frames(1, 1, seed=9)[0]
    charged = neutral.copy()
    charged.info["total_charge"] = 1.0
    (e0, e1) = predict([mixed_study["potential"]], [neutral, charged], device="cpu", progress=False)
    assert e1["energy_short"] - e0["energy_short"] == pytest.approx(mu_q, rel=0.1)


def test_the_energy_reference_fits_the_energys_curvature_in_the_total_charge():
    """With a charge hardness the least-squares reference has a Q^2 / 2 column: cells at
    Q = -1, 0 and +1 give mu_Q and eta_Q apart, where the linear fit alone moves the
    cells at +1 and -1 in opposite directions and leaves eta_Q's share in the residuals."""
    from hipqeq.training.stages import energy_reference_weights

    counts = torch.tensor([[8, 4, 16], [8, 4, 15], [7, 4, 16], [12, 8, 28], [12, 8, 27], [8, 4, 15]],
                          dtype=torch.float64)
    charge = torch.tensor([0.0, 1.0, -1.0, 0.0, 1.0, 0.0])
    charge = charge.double()
    energy = counts @ torch.tensor([-3.0, -2.0, -4.0], dtype=torch.float64) + 11.6 * charge + 1.8 * charge ** 2 / 2
    weights = energy_reference_weights(counts, energy, charge, charge_hardness=True)
    np.testing.assert_allclose(weights.numpy(), [-3.0, -2.0, -4.0, 11.6, 1.8], atol=1e-9)
    linear = energy_reference_weights(counts, energy, charge)
    residuals = energy - torch.cat([counts, charge[:, None]], 1) @ linear
    assert residuals.abs().max() > 0.1


def test_an_energy_reference_a_charge_state_does_not_determine_stays_finite_and_warns(caplog):
    """Training rows whose only charged ones share one composition (a V_Cs- cell, Q = -1)
    cannot split their energy between Q and that composition: with charges summed in
    float32 (off by ~1e-7 e) an unrounded fit found weights of 7e4 eV (measured on the
    study); the fit must give the minimum-norm solution of the exact design instead."""
    from hipqeq.training.stages import energy_reference_weights

    counts = torch.tensor([[8, 4, 16], [8, 4, 16], [7, 4, 16], [12, 8, 28], [12, 8, 28]], dtype=torch.float32)
    charge = torch.tensor([0.0, 0.0, -1.0, 0.0, 0.0])
    reference = torch.tensor([-3.0, -2.0, -4.0])
    energy = counts.double() @ reference.double() + 11.6 * charge.double() + torch.tensor([0, 0.01, 0, 0.02, 0])
    noisy = charge + torch.tensor([0.0, 1e-7, -1.2e-7, 0.0, 6e-8])  # float32 sums of per-atom charges
    weights = energy_reference_weights(counts, energy, noisy)
    exact = np.linalg.lstsq(np.c_[counts.double().numpy(), charge.double().numpy()], energy.numpy(), rcond=None)[0]
    np.testing.assert_allclose(weights.numpy(), exact, atol=1e-6)
    assert np.abs(weights.numpy()).max() < 20
    np.testing.assert_allclose((torch.cat([counts.double(), charge.double()[:, None]], 1) @ weights).numpy(),
                               energy.numpy(), atol=0.02)
    assert "determine 3 of 4 weights" in caplog.text
    caplog.clear()
    determined = torch.cat([counts, torch.tensor([[8.0, 4.0, 16.0]])])   # a hole in a pristine cell
    energy_reference_weights(determined, torch.cat([energy, energy[:1] + 11.6]), torch.cat([charge, torch.ones(1)]))
    assert "energy reference" not in caplog.text
