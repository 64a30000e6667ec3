"""`run_validation` end to end on fixture datasets and a fixture potential, and the
`hipqeq validate` CLI in-process.

The fixture potential (conftest.FixturePotential) returns the xTB labels plus fixed
errors, so the expected metrics are those errors in metric units.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from hipqeq.data import read_records
from hipqeq.validation import METRIC_KEYS, METRICS_JSON_KEYS, run_validation
from hipqeq.validation.md_check import MD_REPORT_KEYS

from .conftest import ERRORS_4G, ERRORS_BASELINE, ERRORS_PEER, PARENTS, TEST_PARENTS

REPO = Path(__file__).resolve().parents[3]
BANDS_K = [0, 150, 300, 1000]
#: The fixture DFT set has charges only: its energy and force figures are not drawn.
FIXED_FIGURES = [f"parity/parity_xtb_{q}" for q in ("energy", "forces", "charges")] \
    + ["parity/parity_dft_charges", "md_stability"]


def _md_summary(directory: Path) -> Path:
    """A summary in the format of hipqeq.md (see test_md_check)."""
    path = directory / "4g_rp1_slab.json"
    path.write_text(json.dumps({
        "name": "rp1_slab", "models": ["results/models/4g_0"], "n_atoms": 14, "time_fs": [0.0, 1.0, 2.0],
        "temperature_K": [300.0, 320.0, 310.0], "total_energy_eV": [-50.0, -50.001, -50.0],
        "phase": ["nvt", "nve", "nve"], "energy_drift_eV_per_atom_ps": 1e-3, "max_force_eV_A": 0.8,
        "max_displacement_A": 0.3, "atoms_flew_off": False, "atoms_collapsed": False, "energy_fell": False,
        "mean_temperature_K": 300.0,
        "stable": True,
        "stopped_early": False, "reason": None}))
    return path


@pytest.fixture(scope="module")
def validated(tmp_path_factory, xtb_path, dft_path, splits, potential, model_dirs):
    """One validation run shared by the tests of this module (figures take seconds)."""
    directory = tmp_path_factory.mktemp("validation")
    splits_path = directory / "splits.json"
    splits_path.write_text(json.dumps(splits))
    out = directory / "out"
    result = run_validation(
        {"validation": {"temperature_bands_K": BANDS_K}}, xtb_path=xtb_path, dft_path=dft_path,
        splits_path=splits_path, model_dirs=[model_dirs["4g_0"]], baseline_dirs=[model_dirs["baseline_0"]],
        peer_dirs=[model_dirs["mace_0"]], md_paths=[_md_summary(directory)], output_dir=out, all_rows=False,
        predictor=potential)
    return result, out


def test_metrics_json_has_exactly_the_documented_keys(validated):
    result, out = validated
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result["metrics"]))
    assert tuple(metrics) == METRICS_JSON_KEYS
    assert set(metrics["metrics"]) == {"xtb", "dft"}
    for by_model in metrics["metrics"].values():
        assert set(by_model) == {"4g", "baseline", "peer"}
        for groups in by_model.values():
            assert set(groups) == {"overall", "family", "charge_state", "temperature_band"}
            blocks = [groups["overall"], *groups["family"].values(), *groups["charge_state"].values(),
                      *groups["temperature_band"].values()]
            assert all(tuple(block) == METRIC_KEYS for block in blocks)
    assert [tuple(row) for row in metrics["md"]] == [MD_REPORT_KEYS]
    assert set(metrics["models"]) == {"4g", "baseline", "peer"}
    assert all(len(h) == 64 for m in metrics["models"].values() for h in m["sha256"].values())


def test_metrics_are_the_fixture_errors(validated):
    xtb = validated[0]["metrics"]["metrics"]["xtb"]
    for model, errors in (("4g", ERRORS_4G), ("baseline", ERRORS_BASELINE), ("peer", ERRORS_PEER)):
        overall = xtb[model]["overall"]
        assert overall["energy_mae_mev_per_atom"] == pytest.approx(1000 * abs(errors["energy_per_atom"]))
        assert overall["energy_rmse_mev_per_atom"] == pytest.approx(1000 * abs(errors["energy_per_atom"]))
        assert overall["force_mae_mev_per_A"] == pytest.approx(1000 * abs(errors["force"]))
        assert overall["n_energy"] == 5, "5 ok rows of the test parents"
    assert xtb["4g"]["overall"]["charge_mae_e"] == pytest.approx(ERRORS_4G["charge"])
    assert xtb["baseline"]["overall"]["charge_mae_e"] is None, "the baseline has no charges"
    assert xtb["peer"]["overall"]["charge_mae_e"] is None, "nor has the MACE peer"
    vacancy = xtb["peer"]["charge_state"]["vacancy_I Q=0"]
    assert vacancy["energy_mae_mev_per_atom"] == pytest.approx(1000 * ERRORS_PEER["energy_per_atom"])


def test_the_fit_is_measured_on_the_non_test_rows(validated):
    """The fixture's non-test parent has 2 ok xTB rows (the test parents 5): the fit block
    is theirs, with the fixture errors, and metrics.md shows it next to the test errors."""
    result, out = validated
    fit = result["metrics"]["fit"]
    assert set(fit) == {"4g", "baseline", "peer"}
    for model, errors in (("4g", ERRORS_4G), ("baseline", ERRORS_BASELINE)):
        assert fit[model]["n_energy"] == 2
        assert fit[model]["energy_mae_mev_per_atom"] == pytest.approx(1000 * abs(errors["energy_per_atom"]))
    assert "## Fit to the non-test rows" in (out / "metrics.md").read_text()


def test_dft_charges_are_compared_and_missing_dft_energies_are_null(validated, dft_path):
    dft = validated[0]["metrics"]["metrics"]["dft"]["4g"]["overall"]
    assert dft["energy_mae_mev_per_atom"] is None and dft["force_mae_mev_per_A"] is None
    # DFT charges are 1.5 x the xTB charges, the prediction is xTB + 0.003 e
    reference = np.concatenate([r["charges"] for r in read_records(dft_path)])
    expected = np.mean(np.abs(reference / 1.5 + ERRORS_4G["charge"] - reference))
    assert dft["charge_mae_e"] == pytest.approx(expected)


def test_the_two_references_charges_are_compared_on_the_frames_both_label(validated, dft_path):
    """The fixture's DFT charges are 1.5 x the xTB ones: the gap is |q_DFT| / 3 per atom."""
    result, out = validated
    gap = result["metrics"]["datasets"]["dft"]["xtb_charge_gap"]
    q_dft = np.concatenate([r["charges"] for r in read_records(dft_path)])
    assert gap["n_structures"] == len(read_records(dft_path)) and gap["n_atoms"] == len(q_dft)
    assert gap["mae_e"] == pytest.approx(np.mean(np.abs(q_dft)) / 3)
    assert gap["slope"] == pytest.approx(1 / 1.5) and gap["pearson_r"] == pytest.approx(1.0)
    assert gap["by_element"]["Cs"]["xtb_mean_e"] == pytest.approx(gap["by_element"]["Cs"]["dft_mean_e"] / 1.5)
    assert "## Reference charges: xTB against DFT" in (out / "metrics.md").read_text()


def test_failed_rows_are_excluded_and_counted(validated):
    datasets = validated[0]["metrics"]["datasets"]
    xtb = datasets["xtb"]
    assert xtb["subset"] == "test" and xtb["warning"] is None
    assert (xtb["rows_total"], xtb["rows_in_subset"], xtb["rows_used"]) == (10, 7, 5)
    assert xtb["excluded"] == {"error": 1, "scf_not_converged": 1}
    assert xtb["method"] == "GFN1-xTB" and xtb["charge_scheme"] == "Mulliken"
    assert datasets["dft"]["charge_scheme"] == "Mulliken"


def test_groups_are_the_families_and_bands_of_the_test_rows(validated):
    xtb = validated[0]["metrics"]["metrics"]["xtb"]["4g"]
    test_families = {family for parent, family, _ in PARENTS if parent in TEST_PARENTS}
    assert set(xtb["family"]) == test_families
    assert set(xtb["charge_state"]) == {f"{family} Q=0" for family in test_families}, "neutral fixture rows"
    assert list(xtb["temperature_band"]) == ["0-150K", "150-300K", "static"]


def test_every_figure_is_a_non_empty_image(validated):
    _, out = validated
    for stem in FIXED_FIGURES:
        assert matplotlib.image.imread(out / f"{stem}.png").shape[0] > 300
        assert (out / f"{stem}.pdf").stat().st_size > 1000
    families = {p.name for p in (out / "families").iterdir()}
    for family in ("pristine", "vacancy_I"):
        for quantity in ("energy", "forces", "charges"):
            assert {f"parity_xtb_{quantity}_{family}.png", f"parity_xtb_{quantity}_{family}.pdf"} <= families
        assert f"parity_dft_charges_{family}.png" in families
    assert "parity_xtb_energy_band_0-150K.png" in families
    assert not any("strained" in name for name in families), "strained is a training family only"
    assert not any(name.startswith("parity_dft_energy") for name in families), "no DFT energies"
    assert sorted(p.stem for p in (out / "parity").glob("*.png")) == sorted(
        f.split("/")[1] for f in FIXED_FIGURES if f.startswith("parity/"))
    for name in families:
        if name.endswith(".png"):
            assert matplotlib.image.imread(out / "families" / name).size > 0


def test_markdown_table_lists_overall_first(validated):
    _, out = validated
    text = (out / "metrics.md").read_text()
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[:5] == ["## Overall", "## Fit to the non-test rows", "## Per family",
                            "## Per family and charge state", "## Per temperature band"]
    assert "| xtb | 4g | 10 | 10 |" in text, "E MAE and RMSE of the fixture 4G model, meV/atom"
    assert "| xtb | peer | 30 | 30 |" in text, "and of the fixture MACE peer"
    assert "| xtb | peer | vacancy_I Q=0 | 30 | 30 |" in text
    assert "error 1, scf_not_converged 1" in text


def test_each_model_predicts_each_structure_once(validated, potential):
    # 5 test rows in xTB, the DFT rows are two of them (same structure ids), and the 2 fit
    # rows of the non-test parent; 3 models
    assert sorted(n for _, n in potential.calls) == [7, 7, 7]


def test_cli_runs_in_process(tmp_path, monkeypatch, xtb_path, dft_path, splits, potential, model_dirs):
    calculator = pytest.importorskip(
        "hipqeq.calculator", reason="hipqeq.calculator (the models engineer's predict) is not there yet")
    from hipqeq.cli import main

    monkeypatch.setattr(calculator, "predict", potential)
    splits_path = tmp_path / "splits.json"
    splits_path.write_text(json.dumps(splits))
    out = tmp_path / "validation"
    status = main(["validate", "--config", str(REPO / "config" / "toy.yaml"), "--xtb", str(xtb_path),
                   "--dft", str(dft_path), "--splits", str(splits_path), "--model", str(model_dirs["4g_0"]),
                   "--baseline", str(model_dirs["baseline_0"]), "--output-dir", str(out), "--all-rows"])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"]["requested"] == "all"
    assert metrics["datasets"]["xtb"]["rows_used"] == 7
    assert metrics["datasets"]["xtb"]["excluded"] == {"error": 2, "scf_not_converged": 1}
    assert any("--all-rows" in w for w in metrics["warnings"])
    assert (out / "md_stability.png").exists() and metrics["md"] == []
    assert metrics["models"]["peer"]["dirs"] == [] and "| peer |" not in (out / "metrics.md").read_text(), \
        "a model kind not given has no rows in metrics.md"


@pytest.mark.skipif(importlib.util.find_spec("mace") is None, reason="needs the peer extra (mace-torch)")
def test_cli_predicts_peer_directories_with_the_peer_predictor(tmp_path, monkeypatch, xtb_path, dft_path, splits,
                                                               potential, model_dirs):
    """`--peer DIR`: the directory is checked as a MACE peer model and predicted by
    hipqeq.models.mace.predict_peer (no charge boundaries), the potentials by
    hipqeq.calculator.predict."""
    from hipqeq import calculator
    from hipqeq.cli import main
    from hipqeq.models import mace

    peer_calls = []

    def predict_peer(model_dirs, atoms_list, device="auto", progress=True):
        peer_calls.append([str(d) for d in model_dirs])
        return potential(model_dirs, atoms_list)

    monkeypatch.setattr(calculator, "predict", potential)
    monkeypatch.setattr(mace, "predict_peer", predict_peer)
    splits_path = tmp_path / "splits.json"
    splits_path.write_text(json.dumps(splits))
    out = tmp_path / "validation"
    args = ["validate", "--config", str(REPO / "config" / "toy.yaml"), "--xtb", str(xtb_path), "--dft", str(dft_path),
            "--splits", str(splits_path), "--model", str(model_dirs["4g_0"]), "--output-dir", str(out)]
    assert main(args + ["--peer", str(model_dirs["mace_0"])]) == 0
    assert peer_calls == [[str(model_dirs["mace_0"])]]
    peer = json.loads((out / "metrics.json").read_text())["metrics"]["xtb"]["peer"]["overall"]
    assert peer["force_mae_mev_per_A"] == pytest.approx(1000 * ERRORS_PEER["force"])
    assert main(args + ["--peer", str(model_dirs["4g_0"])]) != 0, "a 4G potential is not a peer model"


def test_label_failures_are_counted_per_split_and_warned_about(validated):
    """The fixture has failed rows of both test parents and of the training parent
    slab_strained: the training failure must be reported too."""
    result, out = validated
    failed = result["metrics"]["datasets"]["xtb"]["failed_by_split"]
    assert failed == {"train": {"error": 1}, "valid": {}, "test": {"error": 1, "scf_not_converged": 1}}
    (warning,) = [w for w in result["warnings"] if "failed label" in w]
    assert "3 failed label(s)" in warning and "train 1 (error 1), valid 0, test 2" in warning
    assert warning in (out / "metrics.md").read_text()


def test_figures_without_data_are_left_out_and_explained(validated):
    """No empty "no data" figures: the DFT set has no energies or forces, so those two
    parity figures are not drawn, and metrics.json / metrics.md say why."""
    result, out = validated
    omitted = result["metrics"]["figures_omitted"]
    assert sorted(omitted) == ["parity_dft_energy", "parity_dft_forces"]
    assert "no energy per atom to compare" in omitted["parity_dft_energy"]
    assert "dft.energy_forces" in omitted["parity_dft_energy"]
    assert not list(out.rglob("parity_dft_energy*")) and not list(out.rglob("parity_dft_forces*"))
    text = (out / "metrics.md").read_text()
    assert "Parity figures not drawn (no data):" in text and f"- parity_dft_forces: {omitted['parity_dft_forces']}" in text


def test_each_label_is_compared_under_its_own_boundary():
    """A slab labelled by a 3D-periodic engine is predicted with a 3D-periodic charge
    solve; the same structure labelled with a slab-corrected engine is predicted again,
    under the slab boundary; rows without a recorded boundary use their own pbc."""
    from hipqeq.validation.pipeline import _predict

    slab = {"structure_id": "s", "pbc": [True, True, False], "numbers": [1], "positions": [[0.0, 0.0, 1.0]],
            "cell": [[3.0, 0, 0], [0, 3.0, 0], [0, 0, 20.0]], "total_charge": 0.0}
    rows = {"xtb": [{**slab, "label_boundary": "periodic"}],
            "dft": [{**slab, "label_boundary": "slab"}, {**slab, "structure_id": "t", "label_boundary": None}]}
    seen = []

    def predictor(model_dirs, atoms_list, charge_pbc):
        seen.extend(tuple(bool(x) for x in pbc) for pbc in charge_pbc)
        return [{"energy": float(k)} for k in range(len(atoms_list))]

    predicted = _predict(predictor, ["m"], rows)
    assert seen == [(True, True, True), (True, True, False), (True, True, False)]
    assert predicted["xtb"][0]["energy"] != predicted["dft"][0]["energy"]


def test_more_labels_of_the_test_parents_join_the_test_rows_and_others_are_refused(
        tmp_path, xtb_path, dft_path, splits, model_dirs):
    """`--xtb-test` rows (hipqeq select-test) count as test rows, not as fit rows; a row
    of a parent the split does not hold out, or a frame the xTB dataset labels too, stops
    the validation naming the file (it would pass for a test row, or count twice)."""
    from hipqeq.errors import DatasetError
    from hipqeq.data import write_dataset

    from .conftest import FixturePotential, _frame

    rng = np.random.default_rng(11)
    extra = [_frame("slab_vac_I", "vacancy_I", 350.0, 20 + k, rng, method="GFN1-xTB", charge_scheme="Mulliken")
             for k in range(3)]
    extra_path = write_dataset(extra, tmp_path / "xtb_test.parquet")
    potential = FixturePotential(xtb_path)
    potential.labels.update(FixturePotential(extra_path).labels)
    splits_path = tmp_path / "splits.json"
    splits_path.write_text(json.dumps(splits))

    def validate(test_path, out, dft_test_path=None):
        return run_validation(
            {"validation": {"temperature_bands_K": BANDS_K}}, xtb_path=xtb_path, xtb_test_path=test_path,
            dft_path=dft_path, splits_path=splits_path, model_dirs=[model_dirs["4g_0"]], baseline_dirs=[],
            md_paths=[], output_dir=tmp_path / out, all_rows=False, predictor=potential,
            dft_test_path=dft_test_path)

    metrics = validate(extra_path, "out")["metrics"]
    overall = metrics["metrics"]["xtb"]["4g"]["overall"]
    assert overall["n_energy"] == 5 + 3
    assert overall["energy_mae_mev_per_atom"] == pytest.approx(1000 * ERRORS_4G["energy_per_atom"])
    assert metrics["metrics"]["xtb"]["4g"]["charge_state"]["vacancy_I Q=0"]["n_energy"] == 2 + 3
    assert metrics["fit"]["4g"]["n_energy"] == 2, "the fit rows are unchanged"
    assert metrics["datasets"]["xtb"]["test_labels_path"] == str(extra_path)

    stray = write_dataset([_frame("slab_strained", "strained", 350.0, 30, rng, method="GFN1-xTB")],
                          tmp_path / "stray.parquet")
    with pytest.raises(DatasetError, match="stray.parquet: rows of parent.s. slab_strained"):
        validate(stray, "stray")
    twice = write_dataset(read_records(xtb_path)[:1], tmp_path / "twice.parquet")
    with pytest.raises(DatasetError, match="labelled in the dataset it joins too"):
        validate(twice, "twice")

    # the DFT labels of the same held-out frames (selection.dft_test) join the DFT rows
    n_dft = metrics["metrics"]["dft"]["4g"]["overall"]["n_charge"]
    dft_extra = [dict(r, energy=None, forces=None, method="PBE/gth-szv", charges=(1.5 * np.asarray(r["charges"])).tolist())
                 for r in read_records(extra_path)]
    dft_extra_path = write_dataset(dft_extra, tmp_path / "dft_test.parquet")
    with_dft = validate(extra_path, "dft_test", dft_extra_path)["metrics"]
    assert with_dft["metrics"]["dft"]["4g"]["overall"]["n_charge"] == n_dft + sum(len(r["charges"]) for r in dft_extra)
    assert with_dft["datasets"]["dft"]["test_labels_path"] == str(dft_extra_path)
    with pytest.raises(DatasetError, match="dft_twice.parquet: 1 frame.s. labelled in the dataset it joins too"):
        validate(extra_path, "dft_twice", write_dataset(read_records(dft_path)[:1], tmp_path / "dft_twice.parquet"))

    # test labels of another level: their errors pool with the others', so the report warns
    assert metrics["datasets"]["xtb"]["mixed_levels"] is None
    gfn2 = [_frame("slab_vac_I", "vacancy_I", 350.0, 40 + k, rng, method="GFN2-xTB", charge_scheme="Mulliken")
            for k in range(2)]
    gfn2_path = write_dataset(gfn2, tmp_path / "xtb_gfn2.parquet")
    potential.labels.update(FixturePotential(gfn2_path).labels)
    mixed = validate(gfn2_path, "mixed")["metrics"]
    assert mixed["datasets"]["xtb"]["method"] == "GFN1-xTB, GFN2-xTB"
    assert any("the validated rows mix method GFN1-xTB / GFN2-xTB" in w for w in mixed["warnings"])
