"""The accuracy study's scripts (scripts/): the parts that decide what a measurement measures."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes

from hipqeq.config import load_config
from hipqeq.data import read_table
from hipqeq.data.io import label_pbc, read_records, write_dataset, write_table
from hipqeq.plan import training_dataset
from hipqeq.structures.transform import strain
from hipqeq.training.data import file_sha256

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def learning_curve():
    return load_script("learning_curve")


@pytest.fixture(scope="module")
def study_sanity():
    return load_script("study_sanity")


@pytest.fixture
def labels(tmp_path, frames):
    """Four parents of three frames (parent3's last one failed)."""
    return write_dataset(frames, tmp_path / "xtb.parquet")


SPLITS = {"members": [{"train": ["parent0", "parent1", "parent3"], "valid": ["parent2"], "test": []}]}


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_subsample_keeps_a_frame_of_every_training_parent(learning_curve, labels, tmp_path, fraction):
    n_train = learning_curve.subset_dataset(labels, SPLITS, 0, fraction, seed=3, output=tmp_path / "sub.parquet")
    sub = read_table(tmp_path / "sub.parquet").to_pandas()
    kept = sub[sub.parent_id != "parent2"]
    # parent0 and parent1: 3 ok frames each, parent3: 2 ok; the fraction of each, at least one
    expected = {p: max(1, round(fraction * n)) for p, n in (("parent0", 3), ("parent1", 3), ("parent3", 2))}
    assert kept.groupby("parent_id").size().to_dict() == expected
    assert (kept.status == "ok").all()
    assert n_train == sum(expected.values())
    assert (sub.parent_id == "parent2").sum() == 3  # the other parents keep every row


def test_subsample_draws_frames_within_each_parent(learning_curve, labels, tmp_path):
    drawn = set()
    for seed in range(8):
        learning_curve.subset_dataset(labels, SPLITS, 0, 0.25, seed=seed, output=tmp_path / "sub.parquet")
        sub = read_table(tmp_path / "sub.parquet").to_pandas()
        drawn.add(tuple(np.round(sub[sub.parent_id == "parent0"].energy, 6)))
    assert len(drawn) > 1


@pytest.mark.parametrize("text", ["0", "1", "1.0", "1.5", "-0.2"])
def test_a_fraction_outside_zero_and_one_is_refused(learning_curve, text):
    with pytest.raises(argparse.ArgumentTypeError, match="strictly between 0 and 1"):
        learning_curve.subsample_fraction(text)
    assert learning_curve.subsample_fraction("0.25") == 0.25


def test_a_model_of_another_subsample_is_not_reused(learning_curve, labels, tmp_path):
    model = tmp_path / "4g"
    model.mkdir()
    assert not learning_curve.trained_on(model, labels)
    (model / "model.json").write_text(json.dumps({"dataset": {"sha256": file_sha256(labels)}}))
    assert learning_curve.trained_on(model, labels)
    learning_curve.subset_dataset(labels, SPLITS, 0, 0.5, seed=3, output=labels)
    assert not learning_curve.trained_on(model, labels)


class CubicWell(Calculator):
    """E/atom = k (V^(1/3) - a0)^2 in eV, no forces: a lattice constant of ``a0`` A."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, a0_A: float, k: float = 0.5):
        super().__init__()
        self.a0_A, self.k = a0_A, k

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms.get_volume() ** (1 / 3)
        self.results = {"energy": len(self.atoms) * self.k * (a - self.a0_A) ** 2,
                        "forces": np.zeros((len(self.atoms), 3))}


def test_cubic_scan_finds_the_lattice_constant(study_sanity):
    seed, a_seed = study_sanity.cubic_seed()
    assert len(seed) == 5 and a_seed == pytest.approx(seed.get_volume() ** (1 / 3))
    scan = study_sanity.lattice_scan(seed, a_seed, partial(strain, mode="isotropic"), [-2, 0, 2, 4, 6],
                                     CubicWell(a_seed * 1.021), labeller=None)
    assert scan["a0_model_A"] == pytest.approx(a_seed * 1.021, rel=1e-6)
    assert [p["a_A"] for p in scan["points"]] == pytest.approx([a_seed * (1 + s / 100) for s in (-2, 0, 2, 4, 6)])
    assert "a0_reference_A" not in scan


class TetheredWell(CubicWell):
    """:class:`CubicWell` plus springs (eV/A^2) pulling every atom to z = 0: only positions
    relaxed to z = 0 have the well's energy."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        z = self.atoms.positions[:, 2]
        self.results["energy"] += 0.5 * float(np.sum(z ** 2))
        self.results["forces"][:, 2] = -z


def test_the_reference_relaxes_its_own_geometries(study_sanity):
    seed, a_seed = study_sanity.cubic_seed()
    assert np.abs(seed.positions[:, 2]).max() > 1.0  # the springs hold energy before relaxing
    scan = study_sanity.lattice_scan(seed, a_seed, partial(strain, mode="isotropic"), [-2, 0, 2, 4, 6],
                                     CubicWell(a_seed * 1.021), reference_calc=TetheredWell(a_seed * 1.005),
                                     reference={"method": "well", "software": ["test"]})
    assert scan["a0_model_A"] == pytest.approx(a_seed * 1.021, rel=1e-6)
    assert scan["a0_reference_A"] == pytest.approx(a_seed * 1.005, rel=1e-4)
    assert all(p["reference_relaxed"] for p in scan["points"])
    well = [0.5 * (p["a_A"] - a_seed * 1.005) ** 2 for p in scan["points"]]
    assert [p["energy_reference_eV_per_atom"] for p in scan["points"]] == pytest.approx(well, abs=1e-4)
    assert scan["reference"] == {"method": "well", "software": ["test"], "geometries": "its own relaxation"}


def test_no_lattice_constant_outside_the_scan_or_from_a_ragged_curve(study_sanity):
    a = np.linspace(6.0, 6.5, 6)
    assert study_sanity.parabola_minimum(a, (a - 6.2) ** 2)[0] == pytest.approx(6.2)
    assert study_sanity.parabola_minimum(a, (a - 7.0) ** 2)[0] is None  # minimum beyond the scan
    assert study_sanity.parabola_minimum(a, -(a - 6.2) ** 2)[0] is None  # a maximum
    ragged = (a - 6.2) ** 2 + np.array([0.1, -0.1, 0.1, -0.1, 0.1, -0.1])
    value, r2 = study_sanity.parabola_minimum(a, ragged)
    assert value is None and r2 < 0.9


def test_the_lattice_constant_comes_from_the_points_near_the_minimum(study_sanity):
    a = np.arange(5.8, 7.0, 0.05)
    morse = (1 - np.exp(-2 * (a - 6.4))) ** 2  # steep below 6.4 A, soft above: no parabola overall
    c2, c1, _ = np.polyfit(a, morse, 2)
    assert abs(-c1 / (2 * c2) - 6.4) > 0.1  # a parabola through the whole scan misses it
    assert study_sanity.parabola_minimum(a, morse)[0] == pytest.approx(6.4, abs=0.01)


@pytest.fixture(scope="module")
def charged_siblings():
    return load_script("charged_siblings")


def test_sibling_config_builds_only_the_siblings(charged_siblings, tmp_path):
    study_yaml = SCRIPTS.parent / "config" / "study.yaml"
    path = charged_siblings.sibling_config(study_yaml, [charged_siblings.DEFAULT_DEFECT], 5, tmp_path / "s.yaml")
    config = load_config(path)
    assert charged_siblings.sibling_names(config) == ["rp1_slab__vac_I_equatorial_qp1"]
    assert config["selection"]["n_xtb"] == 5 and config["selection"]["n_dft"] == 0
    study = load_config(study_yaml)
    for section in ("xtb", "sampling"):  # labelled and sampled as the study's own parents
        assert config[section] == study[section]


def test_strained_siblings_strain_every_seed(charged_siblings, tmp_path):
    study_yaml = SCRIPTS.parent / "config" / "study.yaml"
    path = charged_siblings.sibling_config(study_yaml, [], 6, tmp_path / "s.yaml", strains_percent=[-2.25, 2.25])
    names = charged_siblings.sibling_names(load_config(path))
    seeds = [seed["name"] for seed in load_config(study_yaml)["structures"]["seeds"]]
    assert len(names) == 2 * len(seeds) and all("biaxial" in name for name in names)
    assert {name.split("__")[0] for name in names} == set(seeds)
    assert len(set(names)) == len(names)  # -2.25 and +2.25 % are two parents of each seed


def study_rows_and_siblings(labels, work):
    """The labels' rows but parent3's, for the study; parent3's (two labelled frames, one
    failed) as the siblings' ``work/xtb.parquet``."""
    rows = read_table(labels)
    keep = np.array([p != "parent3" for p in rows.column("parent_id").to_pylist()])
    work.mkdir()
    write_table(rows.filter(~keep), work / "xtb.parquet")
    return rows.filter(keep)


def test_siblings_join_every_members_training_split(charged_siblings, labels, tmp_path):
    study, work = tmp_path / "study", tmp_path / "work"
    config = {"active_learning": {"enabled": False}}
    (study / training_dataset(config)).parent.mkdir(parents=True)
    study_rows = study_rows_and_siblings(labels, work)
    write_table(study_rows, study / training_dataset(config))
    splits = {"test": ["parent0"], "members": [{"train": ["parent1"], "valid": ["parent2"]},
                                               {"train": ["parent2"], "valid": ["parent1"]}]}
    (study / "results" / "splits.json").write_text(json.dumps(splits))
    dataset, split_path = charged_siblings.training_files(study, config, work)
    joined = read_table(dataset)
    assert joined.num_rows == study_rows.num_rows + 2, "the failed sibling frame is left out"
    assert joined.column("parent_id").to_pylist().count("parent3") == 2
    written = json.loads(split_path.read_text())
    assert written["test"] == ["parent0"]
    assert [m["train"] for m in written["members"]] == [["parent1", "parent3"], ["parent2", "parent3"]]
    assert [m["valid"] for m in written["members"]] == [["parent2"], ["parent1"]]


def test_siblings_join_the_study_rows_they_are_given(charged_siblings, labels, tmp_path):
    """--study-rows (e.g. a later round's labels) in place of the study models' dataset."""
    study, work = tmp_path / "study", tmp_path / "work"
    write_table(study_rows_and_siblings(labels, work).slice(0, 2), tmp_path / "later_round.parquet")
    (study / "results").mkdir(parents=True)
    (study / "results" / "splits.json").write_text(json.dumps({"test": [], "members": [{"train": [], "valid": []}]}))
    dataset, _ = charged_siblings.training_files(study, {"active_learning": {"enabled": False}}, work,
                                                 tmp_path / "later_round.parquet")
    assert read_table(dataset).num_rows == 2 + 2


def test_a_first_stage_of_other_weights_is_refused(charged_siblings, tmp_path):
    base = tmp_path / charged_siblings.BASE / "4g_0"
    base.mkdir(parents=True)
    (base / "model.json").write_text(json.dumps({"init_from": {"sha256": "0" * 64}}))
    restored = tmp_path / "stage_one"
    restored.mkdir()
    (restored / "weights.pt").write_bytes(b"other weights")
    with pytest.raises(SystemExit, match="not the base member's first stage"):
        charged_siblings.restore_stage_one(tmp_path, 0, "HEAD", restored)


def test_every_sibling_gets_its_own_selection_and_labels(charged_siblings, labels, tmp_path, monkeypatch):
    calls = []

    def fake_hipqeq(*args):  # writes each step's output as the verb would (a selection: 5 frames)
        calls.append(args)
        output = Path(args[args.index("--output-xtb" if args[0] == "select" else "--output") + 1])
        output.parent.mkdir(parents=True, exist_ok=True)
        if args[0] == "select":
            write_table(read_table(labels).slice(0, 5), output)
        else:
            output.touch()

    monkeypatch.setattr(charged_siblings, "hipqeq", fake_hipqeq)
    settings = {"sampling": {"temperatures_K": [150, 450]}, "xtb": {"chunk_size": 2}}
    work = tmp_path / "work"
    chunks = charged_siblings.label_sibling(Path("s.yaml"), settings, Path("structures.parquet"), "sib_a", work)
    assert chunks == [work / f"labels/sib_a/chunk_{k}.parquet" for k in range(3)]  # 5 frames in pairs
    select = next(c for c in calls if c[0] == "select")
    assert select[select.index("--output-xtb") + 1] == work / "selection/sib_a.parquet"
    assert sorted(map(str, select[select.index("--output-xtb") + 2:])) == sorted(
        str(work / f"sampling/sib_a/{name}.parquet") for name in ("T150", "T450", "rattle"))
    calls.clear()
    assert charged_siblings.label_sibling(Path("s.yaml"), settings, Path("structures.parquet"), "sib_a", work) == chunks
    assert calls == [], "a step whose output exists is not run again"
    charged_siblings.label_sibling(Path("s.yaml"), settings, Path("structures.parquet"), "sib_b", work)
    assert all("sib_a" not in str(arg) for call in calls for arg in call), "another sibling reads none of its files"


def test_signed_errors_are_per_parent_means_per_atom_under_each_labels_boundary(charged_siblings, labels,
                                                                               monkeypatch):
    records = [r for r in read_records(labels) if r["status"] == "ok"]
    seen = {}

    def fake_predict(models, atoms_list, device, progress, charge_pbc):  # parent p: p meV/atom too high
        seen["pbc"] = charge_pbc
        assert all(atoms.calc is None for atoms in atoms_list), "the labels must not reach the model"
        return [{"energy": r["energy"] + 1e-3 * int(r["parent_id"][-1]) * len(r["numbers"])} for r in records]

    monkeypatch.setattr(charged_siblings, "predict", fake_predict)
    splits = {"test": ["parent0"], "members": [{"train": ["parent1", "parent3"], "valid": ["parent2"]}]}
    errors = charged_siblings.signed_errors(["m"], records, splits, 0)
    n_atoms = {r["structure_name"]: len(r["numbers"]) for r in records}
    assert errors == {f"s{k}": {"split": split, "n": n, "signed_energy_mev_per_atom": float(k),
                                "signed_energy_eV": pytest.approx(1e-3 * k * n_atoms[f"s{k}"], abs=1e-3)}
                      for k, split, n in ((0, "test", 3), (1, "train", 3), (2, "valid", 3), (3, "train", 2))}
    assert [list(p) for p in seen["pbc"]] == [list(label_pbc(r)) for r in records]


def test_a_parents_error_against_its_seed_is_the_error_of_making_it_from_the_seed(charged_siblings, labels,
                                                                                   monkeypatch):
    """A vacancy parent's energy error less its seed's, per structure: the model 0.5 eV too
    high on the seed's rows and 2 eV on the vacancy's puts the vacancy's formation 1.5 eV
    too high, whatever the cells' sizes."""
    records = [r for r in read_records(labels) if r["status"] == "ok"]
    names = {"parent0": "slab", "parent1": "slab__vac_I", "parent2": "slab__vac_I_qp1", "parent3": "other__vac_I"}
    offsets_eV = {"slab": 0.5, "slab__vac_I": 2.0, "slab__vac_I_qp1": -1.0, "other__vac_I": 3.0}
    for record in records:
        record["structure_name"] = names[record["parent_id"]]
    monkeypatch.setattr(charged_siblings, "predict", lambda models, atoms_list, **kwargs: [
        {"energy": r["energy"] + offsets_eV[r["structure_name"]]} for r in records])
    splits = {"test": [], "members": [{"train": list(names), "valid": []}]}
    errors = charged_siblings.signed_errors(["m"], records, splits, 0)
    assert errors["slab__vac_I"]["against_seed_eV"] == pytest.approx(1.5)
    assert errors["slab__vac_I_qp1"]["against_seed_eV"] == pytest.approx(-1.5)
    assert "against_seed_eV" not in errors["slab"] and "against_seed_eV" not in errors["other__vac_I"]


def test_each_stage_two_option_trains_into_a_folder_of_its_own(charged_siblings, tmp_path):
    args = argparse.Namespace(study=tmp_path, experiment="twins", stage_two_force_weight=0.1, stage_two_l2_weight=None,
                              stage_two_learning_rate=5e-5, charge_energy=None, charge_hardness=True)
    assert charged_siblings.stage_two_overrides(args) == {"force_weight": 0.1, "learning_rate": 5e-5}
    assert charged_siblings.run_dir(args) == tmp_path / "results/twins/stage_two_fw0.1_lr5e-05_charge_hardness"
    args.stage_two_force_weight, args.stage_two_learning_rate, args.charge_hardness = None, None, False
    assert charged_siblings.run_dir(args) == tmp_path / "results/twins"


@pytest.fixture(scope="module")
def common_benchmark():
    sys.path.insert(0, str(SCRIPTS))  # it imports charged_siblings, as `python scripts/...` lets it
    try:
        return load_script("common_benchmark")
    finally:
        sys.path.remove(str(SCRIPTS))


def test_no_run_trained_on_a_benchmark_parent(common_benchmark, tmp_path):
    """Every parent the benchmark labels is a variant that neither study's plan nor the
    shipped potential's siblings build, by name (a variant of a seed, as the plan names it)
    and by structure (the same atoms under another name)."""
    from hipqeq import pretrained
    from hipqeq.data import atoms_id
    from hipqeq.structures.build import build_structures

    study_yaml = SCRIPTS.parent / "config" / "study.yaml"
    config = load_config(common_benchmark.benchmark_config(study_yaml, 3, tmp_path / "b.yaml"))
    names = common_benchmark.sibling_names(config)
    built = {atoms.info["structure_name"]: atoms for atoms in build_structures(config)}
    k72 = SCRIPTS.parent / "studies/cspbi-gfn1-k72"
    trained = [load_config(study_yaml), load_config(k72 / "study.yaml"),
               load_config(k72 / "results/charged_twins_r4/siblings.yaml")]  # the shipped potential's siblings
    seen = [atoms for trained_config in trained for atoms in build_structures(trained_config)]
    seen_names = {atoms.info["structure_name"] for atoms in seen}
    assert set(pretrained.info("cspbi-gfn1")["training_data"]["only_4g_structures"]) <= seen_names
    assert len(names) == 6 and not set(names) & seen_names
    assert not {atoms_id(built[name]) for name in names} & {atoms_id(atoms) for atoms in seen}
    assert sorted(built[name].info["total_charge"] for name in names) == [-1, 0, 0, 0, 0, 1]
    assert config["selection"]["n_xtb"] == 3 and config["xtb"] == load_config(study_yaml)["xtb"]


def test_benchmark_errors_are_per_group_under_each_labels_boundary(common_benchmark, labels, monkeypatch):
    records = [r for r in read_records(labels) if r["status"] == "ok"]
    for record in records:
        record.update(family="vacancy_I" if record["parent_id"] == "parent3" else "bulk",
                      total_charge=1.0 if record["parent_id"] == "parent3" else 0.0)
    seen = {}

    def fake_predict(models, atoms_list, device, progress, charge_pbc):  # parent p: p meV/atom too high
        seen["pbc"] = charge_pbc
        assert all(atoms.calc is None for atoms in atoms_list), "the labels must not reach the model"
        return [{"energy": r["energy"] + 1e-3 * int(r["parent_id"][-1]) * len(r["numbers"]),
                 "forces": np.asarray(r["forces"]) + 0.01, "charges": np.asarray(r["charges"]) - 0.1}
                for r in records]

    # predict_records runs the model from the module it was imported from (charged_siblings)
    monkeypatch.setattr(sys.modules[common_benchmark.predict_records.__module__], "predict", fake_predict)
    errors = common_benchmark.errors(["m"], records)
    assert errors["s3"]["energy_mae_mev_per_atom"] == pytest.approx(3) and errors["s3"]["n_frames"] == 2
    assert errors["vacancy_I, Q = +1"] == errors["s3"]
    assert errors["bulk, Q = +0"]["energy_mean_signed_mev_per_atom"] == pytest.approx(1, abs=1e-3)  # 0, 1, 2
    assert errors["overall"]["n_frames"] == 11
    assert errors["overall"]["energy_rmse_mev_per_atom"] > errors["overall"]["energy_mae_mev_per_atom"]
    assert errors["overall"]["force_mae_mev_per_A"] == pytest.approx(10)
    assert errors["overall"]["charge_mae_e"] == pytest.approx(0.1)
    assert [list(p) for p in seen["pbc"]] == [list(label_pbc(r)) for r in records]


def test_labellers_differ_by_what_no_energy_reference_absorbs(common_benchmark, labels):
    """A per-composition offset between two labellers is their mean difference, not their
    spread; a frame off its composition's offset is."""
    first = [r for r in read_records(labels) if r["status"] == "ok"]
    second = [dict(r, energy=r["energy"] - 0.5 * len(r["numbers"])) for r in first]  # 500 meV/atom lower
    assert first and len({tuple(sorted(r["numbers"])) for r in first}) == 1
    distance = common_benchmark.labeller_distance(first, second)["overall"]
    assert distance["energy_mean_mev_per_atom"] == pytest.approx(500)
    assert distance["energy_spread_mae_mev_per_atom"] == pytest.approx(0, abs=1e-6)
    assert distance["force_mae_mev_per_A"] == 0 and distance["charge_mae_e"] == 0
    second[0]["energy"] -= 0.011 * len(second[0]["numbers"])  # one frame 11 meV/atom further
    spread = common_benchmark.labeller_distance(first, second)["overall"]["energy_spread_mae_mev_per_atom"]
    assert spread == pytest.approx(2 * 11 * (len(first) - 1) / len(first) / len(first), abs=1e-3)
    assert common_benchmark.labeller_distance(first, second[1:])["overall"]["n_frames"] == len(first) - 1


def test_every_labeller_labels_every_parent_into_its_own_folder(common_benchmark, labels, tmp_path, monkeypatch):
    calls = []

    def fake_hipqeq(*args):
        calls.append(args)
        Path(args[args.index("--output") + 1]).parent.mkdir(parents=True, exist_ok=True)
        Path(args[args.index("--output") + 1]).touch()

    # label_chunks runs the verbs from the module it was imported from (charged_siblings)
    for module in {common_benchmark, sys.modules[common_benchmark.label_chunks.__module__]}:
        monkeypatch.setattr(module, "hipqeq", fake_hipqeq)
    monkeypatch.setattr(common_benchmark, "select_sibling", lambda config, settings, structures, name, work: labels)
    (tmp_path / "structures.parquet").touch()
    study_yaml = SCRIPTS.parent / "config" / "study.yaml"
    args = argparse.Namespace(labeller=[["a", str(study_yaml)], ["b", str(study_yaml)]], frames=3, work=tmp_path,
                             study_config=study_yaml)
    common_benchmark.label(args)
    names = common_benchmark.sibling_names(load_config(tmp_path / "benchmark.yaml"))
    labelled = [(c[c.index("--config") + 1], c[c.index("--output") + 1]) for c in calls if c[0] == "label"]
    n_chunks = 6  # the 12 rows of `labels` in chunks of 2
    for labeller in "ab":
        outputs = {str(o) for _, o in labelled if f"labels/{labeller}/" in str(o)}
        assert outputs == {str(tmp_path / f"labels/{labeller}/{name}/chunk_{k}.parquet")
                           for name in names for k in range(n_chunks)}
    gathers = [c for c in calls if c[0] == "gather"]
    assert [g[g.index("--output") + 1] for g in gathers] == [tmp_path / "a.parquet", tmp_path / "b.parquet"]
