"""hipqeq.pretrained: packaging a finished study and loading it back, and the potentials
that ship with the package."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import yaml

from hipqeq import pretrained
from hipqeq.cli import main
from hipqeq.data import read_records, write_dataset
from hipqeq.data.split import make_splits, write_splits
from hipqeq.errors import HipqeqError
from tests.conftest import labelled
from tests.unit.test_calculator import slab, write_model

ROOT = Path(__file__).resolve().parents[2]
BLOCK = {"energy_mae_mev_per_atom": 12.5, "force_mae_mev_per_A": 80.0, "charge_mae_e": 0.05}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished study's results: untrained 4G and baseline members, labelled CuAu slab
    frames of four parents (one held out), a split and validation metrics."""
    directory = tmp_path_factory.mktemp("study")
    results = directory / "results"
    for k in range(2):
        write_model(results / "models" / f"4g_{k}", 10 + k)
        (results / "models" / f"4g_{k}" / "hippynn").mkdir()
        (results / "models" / f"4g_{k}" / "hippynn" / "hippynn.log").write_text("training log\n")
        write_model(results / "models" / f"baseline_{k}", 20 + k, with_charges=False)
    write_model(results / "models" / "charges_0", 30)  # not a potential: not shipped
    # the checkpoint an interrupted retraining leaves beside a model: not a model, not shipped
    (results / "models" / "4g_1.resume.pt").write_bytes(b"")
    rng = np.random.default_rng(3)
    frames = [labelled(slab(seed=k), rng, parent_id=f"p{k % 4}", structure_name=f"s{k % 4}", family="pristine",
                       total_charge=0.0) for k in range(8)]
    # the toy config learns actively: the models train on every round's labels (8), not
    # round 0's (6), and that is what ships
    write_dataset(frames[:6], results / "datasets" / "xtb.parquet")
    write_dataset(frames, results / "active" / "xtb.parquet")
    write_dataset(frames[:4], results / "datasets" / "dft.parquet")
    splits = make_splits([f"p{k}" for k in range(4)], (0.5, 0.25, 0.25), seed=1, n_members=2)
    write_splits(splits, results / "splits.json")
    # the toy config labels more frames of the test parents (selection.n_xtb_test): they ship too
    held_out = [labelled(slab(seed=10 + k), rng, parent_id=splits["test"][0], structure_name="t", family="pristine",
                         total_charge=0.0) for k in range(3)]
    write_dataset(held_out, results / "datasets" / "xtb_test.parquet")
    blocks = {"xtb": BLOCK, "dft": {**BLOCK, "charge_mae_e": 0.02}}
    metrics = {"metrics": {ref: {"4g": {"overall": block}, "baseline": {"overall": {**block, "charge_mae_e": None}}}
                           for ref, block in blocks.items()}}
    (results / "validation").mkdir()
    (results / "validation" / "metrics.json").write_text(json.dumps(metrics))
    return directory


@pytest.fixture(scope="module")
def packaged(study, tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    pretrained.package_study(study, ROOT / "config" / "toy.yaml", "toy", "toy study", root=root)
    return root


def test_a_packaged_study_lists_and_describes_itself(packaged, study):
    assert pretrained.names(packaged) == ["toy"]
    manifest = pretrained.info("toy", packaged)
    assert manifest["models"] == {"4g": ["models/4g_0", "models/4g_1"], "2g": ["models/baseline_0", "models/baseline_1"]}
    assert manifest["training_data"]["n_xtb_labels"] == 8 and manifest["training_data"]["n_dft_labels"] == 4
    assert manifest["training_data"]["n_xtb_test_labels"] == 3 and manifest["training_data"]["n_dft_test_labels"] == 0
    assert manifest["training_data"]["label_boundaries"] == ["slab"]  # rows without label_boundary: their pbc
    assert "label's electrostatic boundary" in manifest["test_errors_boundary"]
    assert len(read_records(pretrained.dataset("toy", "xtb_test", packaged))) == 3
    assert manifest["test_errors"]["4g"]["xtb"] == BLOCK
    assert manifest["level_of_theory"]["energy, forces"].startswith("GFN1-xTB (tblite")
    shipped = [p.relative_to(packaged) for p in (packaged / "toy").rglob("*") if p.is_file()]
    assert not any("hippynn" in p.parts or "charges_0" in p.parts for p in shipped)
    assert (packaged / "toy" / "models" / "4g_0" / "charge_model" / "weights.pt").exists()
    assert pretrained.dataset("toy", "dft", packaged).exists()


def test_the_dft_labels_of_the_test_frames_ship_where_the_study_made_them(study, tmp_path):
    """selection.dft_test: the DFT charges the shipped test errors against DFT rest on."""
    config = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
    config["selection"]["dft_test"] = True
    config_path = tmp_path / "toy.yaml"
    config_path.write_text(yaml.safe_dump(config))
    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    with pytest.raises(HipqeqError, match="dft_test.parquet missing"):
        pretrained.package_study(copy, config_path, "toy", "toy study", root=tmp_path / "refused")
    held_out = read_records(copy / "results" / "datasets" / "xtb_test.parquet")[:2]
    write_dataset(held_out, copy / "results" / "datasets" / "dft_test.parquet")
    pretrained.package_study(copy, config_path, "toy", "toy study", root=tmp_path / "out")
    assert pretrained.info("toy", tmp_path / "out")["training_data"]["n_dft_test_labels"] == 2
    assert len(read_records(pretrained.dataset("toy", "dft_test", tmp_path / "out"))) == 2


@pytest.mark.parametrize("kind", ["4g", "2g"])
def test_the_calculator_reproduces_the_stored_check_results_without_the_study(packaged, study, tmp_path, kind):
    copy = tmp_path / "installed"
    shutil.copytree(packaged, copy)  # the study's folder plays no part in loading
    atoms, reference = pretrained.check_structure("toy", copy)
    assert atoms.info["parent_id"] in json.loads((study / "results" / "splits.json").read_text())["test"]
    atoms.calc = pretrained.calculator("toy", kind=kind, root=copy, device="cpu", dtype="float64")
    assert atoms.get_potential_energy() == pytest.approx(reference[kind]["energy_eV"], abs=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), reference[kind]["forces_eV_A"], atol=1e-9)
    assert len(atoms.calc.model_dirs) == 2


def test_the_two_kinds_are_different_models(packaged):
    _, reference = pretrained.check_structure("toy", packaged)
    assert reference["4g"]["energy_eV"] != pytest.approx(reference["2g"]["energy_eV"])


def test_a_caveat_warns_on_every_load_and_is_listed(study, tmp_path, capsys):
    pretrained.package_study(study, ROOT / "config" / "toy.yaml", "rough", "rough study", root=tmp_path,
                             caveat="test errors far above the targets")
    assert pretrained.info("rough", tmp_path)["caveat"] == "test errors far above the targets"
    for kind in ("4g", "2g"):
        with pytest.warns(pretrained.PretrainedCaveat, match="'rough': test errors far above the targets"):
            pretrained.calculator("rough", kind=kind, root=tmp_path, device="cpu")
    assert main(["models", "list", "--root", str(tmp_path)]) == 0
    assert "  CAVEAT: test errors far above the targets" in capsys.readouterr().out


def test_models_list_prints_level_data_and_test_errors(packaged, capsys):
    assert main(["models", "list", "--root", str(packaged)]) == 0
    out = capsys.readouterr().out
    assert "toy: toy study" in out and "8 labelled frames of the train, valid and test parents" in out
    assert "3 more labels of the test parents" in out and "with DFT charges)" not in out
    assert "test errors under the labels' boundaries (slab)" in out
    assert ("4g (2 members), test vs xTB: energy MAE 12.5 meV/atom, force MAE 80.0 meV/A; "
            "charge MAE 0.050 e vs xTB, 0.020 e vs DFT\n") in out
    assert "2g (2 members), test vs xTB: energy MAE 12.5 meV/atom, force MAE 80.0 meV/A\n" in out  # no charges


def record_training(model: Path, dataset: Path, split: Path, run_in: Path | None = None) -> None:
    """Write into ``model``'s model.json the dataset and split it trained on, as training
    does (the paths as given to a run in ``run_in``, e.g. a study's Snakemake run)."""
    from hipqeq.training.data import file_sha256

    meta = json.loads((model / "model.json").read_text())
    for key, path in (("dataset", dataset), ("split", split)):
        meta[key] = {"path": str(path if run_in is None else path.relative_to(run_in)),
                     "sha256": file_sha256(path)}
    (model / "model.json").write_text(json.dumps(meta))


def other_committee(study: Path, seed: int) -> Path:
    """Two 4G members beside the study's, with a validation of their own (force MAE 49.7)."""
    other = study / "results" / "charge_reference" / "mulliken"
    for k in range(2):
        write_model(other / f"4g_{k}", seed + k)
    block = {**BLOCK, "force_mae_mev_per_A": 49.7}
    (other / "validation_xtb").mkdir()
    (other / "validation_xtb" / "metrics.json").write_text(json.dumps(
        {"metrics": {"xtb": {"4g": {"overall": block}, "baseline": {"overall": BLOCK}}}}))
    return other


def test_another_charge_modes_committee_ships_with_its_own_metrics(study, tmp_path):
    """--committee: the 4G members of the study's other charge mode (and not the first
    stages kept beside them), their validation's test errors and charge reference; the
    study's own baselines."""
    study = shutil.copytree(study, tmp_path / "study")
    other = other_committee(study, 40)
    write_model(other / "4g_0_stage_one", 50)
    for k in range(2):  # the study's labels and split, the paths as a study's run records them
        record_training(other / f"4g_{k}", study / "results" / "active" / "xtb.parquet",
                        study / "results" / "splits.json", run_in=study)
    with pytest.raises(HipqeqError, match="charge_reference"):
        pretrained.package_study(study, ROOT / "config" / "toy.yaml", "x", "x", root=tmp_path / "out", committee=other)
    with pytest.raises(HipqeqError, match="validation_dft/metrics.json missing"):
        pretrained.package_study(study, ROOT / "config" / "toy.yaml", "x", "x", root=tmp_path / "out", committee=other,
                                 charge_reference="dft")
    pretrained.package_study(study, ROOT / "config" / "toy.yaml", "xq", "other mode", root=tmp_path / "out",
                             committee=other, charge_reference="xtb")
    manifest = pretrained.info("xq", tmp_path / "out")
    assert manifest["models"] == {"4g": ["models/4g_0", "models/4g_1"], "2g": ["models/baseline_0", "models/baseline_1"]}
    for k in range(2):
        assert ((tmp_path / "out" / "xq" / "models" / f"4g_{k}" / "weights.pt").read_bytes()
                == (other / f"4g_{k}" / "weights.pt").read_bytes())
    assert manifest["test_errors"]["4g"]["xtb"]["force_mae_mev_per_A"] == 49.7
    assert manifest["level_of_theory"]["charge model learns"] == "xtb charges"
    assert manifest["training_data"]["only_4g_structures"] == []


def test_a_committee_trained_on_more_ships_its_own_labels(study, tmp_path):
    """A committee trained with extra parents (scripts/charged_siblings.py) ships the labels
    and split it trained on, names the structures the baselines did not see, and is refused
    when those files are not the ones it recorded or hold out other test parents."""
    study = shutil.copytree(study, tmp_path / "study")
    other = other_committee(study, 60)
    rows = read_records(study / "results" / "active" / "xtb.parquet")
    extra = [labelled(slab(seed=30 + k), np.random.default_rng(k), parent_id="sibling", structure_name="s_sibling",
                      family="pristine", total_charge=0.0) for k in range(2)]
    write_dataset(rows + extra, other / "xtb_with_siblings.parquet")
    splits = json.loads((study / "results" / "splits.json").read_text())
    for member in splits["members"]:
        member["train"].append("sibling")
    write_splits(splits, other / "splits.json")
    for k in range(2):
        record_training(other / f"4g_{k}", other / "xtb_with_siblings.parquet", other / "splits.json")
    package = partial(pretrained.package_study, study, ROOT / "config" / "toy.yaml", "xs", "with a sibling",
                      committee=other, charge_reference="xtb")
    package(root=tmp_path / "out")
    manifest = pretrained.info("xs", tmp_path / "out")
    assert manifest["training_data"]["n_xtb_labels"] == len(rows) + 2
    assert manifest["training_data"]["only_4g_structures"] == ["s_sibling"]
    assert "sibling" in json.loads((tmp_path / "out" / "xs" / "data" / "splits.json").read_text())["members"][0]["train"]
    assert any("s_sibling" in line for line in pretrained.summary_lines("xs", tmp_path / "out"))

    write_dataset(rows + extra[:1], other / "xtb_with_siblings.parquet")  # not what the members trained on
    with pytest.raises(HipqeqError, match="the dataset it trained on .* is not there as it was"):
        package(root=tmp_path / "changed")
    write_dataset(rows + extra, other / "xtb_with_siblings.parquet")
    splits["test"] = ["sibling"]
    write_splits(splits, other / "splits.json")
    for k in range(2):
        record_training(other / f"4g_{k}", other / "xtb_with_siblings.parquet", other / "splits.json")
    with pytest.raises(HipqeqError, match="other test parents"):
        package(root=tmp_path / "other_test")


def test_unknown_names_kinds_and_unfinished_studies_are_refused(packaged, study, tmp_path):
    with pytest.raises(HipqeqError, match="available: toy"):
        pretrained.calculator("nope", root=packaged)
    with pytest.raises(HipqeqError, match="kind must be"):
        pretrained.model_dirs("toy", "3g", packaged)
    with pytest.raises(HipqeqError, match=r"no 'pbe' dataset \(shipped: dft, xtb, xtb_test\)"):
        pretrained.dataset("toy", "pbe", packaged)
    with pytest.raises(HipqeqError, match="exists"):
        pretrained.package_study(study, ROOT / "config" / "toy.yaml", "toy", "again", root=packaged)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(study, unfinished)
    (unfinished / "results" / "validation" / "metrics.json").unlink()
    with pytest.raises(HipqeqError, match="validation"):
        pretrained.package_study(unfinished, ROOT / "config" / "toy.yaml", "x", "x", root=tmp_path / "out")
    (unfinished / "results" / "validation" / "metrics.json").write_text("{}")
    (unfinished / "results" / "datasets" / "xtb_test.parquet").unlink()
    with pytest.raises(HipqeqError, match="xtb_test.parquet missing"):
        pretrained.package_study(unfinished, ROOT / "config" / "toy.yaml", "x", "x", root=tmp_path / "out2")
    assert not (tmp_path / "out2" / "x").exists(), "a refused study leaves no half-made folder"


#: The potential that ships in the package (README "Pretrained potentials").
SHIPPED = "cspbi-gfn1"


def test_the_shipped_potential_is_listed_and_describes_its_study():
    assert SHIPPED in pretrained.names()
    manifest = pretrained.info(SHIPPED)
    data = manifest["training_data"]
    rows = read_records(pretrained.dataset(SHIPPED, "xtb"))
    assert data["n_xtb_labels"] == sum(r["status"] == "ok" for r in rows) > 0  # what the models trained on
    assert data["total_charges_e"] == [-1.0, 0.0, 1.0]
    assert manifest["level_of_theory"]["energy, forces"].startswith("GFN1-xTB (cp2k, k-point density 72")  # gated
    assert "CP2K, k-point density 36.0 A" in manifest["level_of_theory"]["charges"]  # the study's dft.source
    # the study's other charge mode ships (docs/study/README.md "Both charge modes"): its charges are GFN1's
    assert manifest["level_of_theory"]["charge model learns"] == "xtb charges"
    assert manifest["test_errors"]["4g"]["xtb"]["charge_mae_e"] < 0.1 < manifest["test_errors"]["4g"]["dft"]["charge_mae_e"]
    dft_rows = read_records(pretrained.dataset(SHIPPED, "dft"))
    assert data["n_dft_labels"] == sum(r["status"] == "ok" for r in dft_rows) > 0  # what the charge models learned
    assert manifest["test_errors"]["4g"]["dft"]["n_charge"] > 0  # its held-out frames have DFT charges
    assert {kind: len(members) for kind, members in manifest["models"].items()} == {"4g": 2, "2g": 2}
    splits = json.loads(pretrained.dataset(SHIPPED, "xtb").with_name("splits.json").read_text())
    assert set(data["test_parents"]) == set(splits["test"])


@pytest.mark.parametrize("kind", ["4g", "2g"])
def test_the_shipped_potential_reproduces_its_stored_check_values(kind):
    """Loads from the installed package alone (no study folder) and gives, on the
    shipped test-split structure, the energy and forces stored when it was packaged."""
    atoms, reference = pretrained.check_structure(SHIPPED)
    with pytest.warns(pretrained.PretrainedCaveat, match="not for production"):  # README: its test errors
        atoms.calc = pretrained.calculator(SHIPPED, kind=kind, device="cpu", dtype="float64")
    # 1e-6: float64 sums in another order (threads) move single force components by ~2e-8 eV/A
    assert atoms.get_potential_energy() == pytest.approx(reference[kind]["energy_eV"], abs=1e-6)
    np.testing.assert_allclose(atoms.get_forces(), reference[kind]["forces_eV_A"], atol=1e-6)
    if kind == "4g":
        assert atoms.get_charges().sum() == pytest.approx(atoms.info["total_charge"], abs=1e-8)
