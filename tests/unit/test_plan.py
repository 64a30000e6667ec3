from pathlib import Path

import pytest

from hipqeq import plan
from hipqeq.config import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def production():
    return load_config(ROOT / "config" / "config.yaml")


def test_toy_structures():
    config = load_config(ROOT / "config" / "toy.yaml")
    specs = plan.structure_plan(config)
    assert [s.name for s in specs] == ["rp1_slab", "alpha", "rp1_slab__biaxial_p2", "rp1_slab__vac_I"]
    assert [s.family for s in specs] == ["pristine", "pristine", "strained", "vacancy_I"]
    assert specs[3].transform == {"type": "defect", "kind": "vacancy", "species": "I", "total_charge": 0}


def test_a_defect_site_names_its_structure():
    config = load_config(ROOT / "config" / "toy.yaml")
    config["structures"]["defects"] = [{"kind": "vacancy", "species": "I", "total_charge": 1, "site": "equatorial",
                                        "seeds": ["rp1_slab"]}]
    (spec,) = [s for s in plan.structure_plan(config) if s.transform and s.transform["type"] == "defect"]
    assert spec.name == "rp1_slab__vac_I_equatorial_qp1" and spec.transform["site"] == "equatorial"
    assert spec.family == "vacancy_I" and spec.total_charge == 1


def test_property_structures_are_built_names_or_files_named_by_stem():
    config = {"properties": {"structures": ["alpha", "cifs/CsPbI3_delta.CIF", "../mine.extxyz", "rp1_slab"]}}
    assert plan.property_structures(config) == {"alpha": None, "CsPbI3_delta": "cifs/CsPbI3_delta.CIF",
                                                "mine": "../mine.extxyz", "rp1_slab": None}


def test_peer_members_only_when_the_peer_is_enabled(production):
    assert plan.peer_members(production) == []
    production["training"]["peer"].update(enabled=True, n_models=2)
    assert plan.peer_members(production) == [0, 1]
    assert plan.model_members(production) == [0, 1, 2], "the 4G committee is unchanged"


def test_production_structure_count(production):
    names = plan.structure_names(production)
    # 10 seeds; strains 6 x 4 seeds; tilts 2 x 3 seeds; defects 4 + 5 x 2 seeds
    assert len(names) == 10 + 24 + 6 + 14
    assert len(set(names)) == len(names)
    assert "rp1_slab__vac_I_qp1" in names and "rp2_slab__sub_Sn_Pb" in names
    assert "rp1_bulk__uniaxial_m3" in names and "rp2_slab__tilt_8" in names
    charged = [s for s in plan.structure_plan(production) if s.total_charge]
    assert {s.name for s in charged} == {"rp1_slab__vac_I_qp1", "rp2_slab__vac_I_qp1"}
    assert all(s.total_charge == 1 for s in charged)


@pytest.mark.parametrize("value, tag", [(2, "p2"), (-1.5, "m1p5"), (300, "p300"), (0.25, "p0p25")])
def test_number_tag(value, tag):
    assert plan.number_tag(value) == tag


def test_temperature_tags(production):
    assert plan.temperature_tags(production) == ["50", "100", "150", "200", "250", "300", "350", "500"]


@pytest.mark.parametrize("n, size, chunks", [(24, 8, 3), (25, 8, 4), (1, 8, 1), (0, 8, 1)])
def test_n_chunks(n, size, chunks):
    assert plan.n_chunks(n, size) == chunks


def test_chunks_cover_every_row_once():
    n, size = 23, 5
    rows = [i for c in range(plan.n_chunks(n, size)) for i in range(*plan.chunk_bounds(c, size, n))]
    assert rows == list(range(n))
    assert plan.chunk_bounds(10, size, n) == (23, 23)


def test_active_rounds_chain_their_datasets():
    """Round r trains on the dataset after round r-1 (round 0: the xTB-driven one) and
    gathers into its own; charges follow training.charge_reference."""
    config = {"active_learning": {"enabled": True, "max_rounds": 3, "budget": 10},
              "xtb": {"chunk_size": 4}, "training": {"charge_reference": "dft"}}
    assert plan.active_rounds(config) == [1, 2, 3]
    assert plan.active_rounds({"active_learning": {"enabled": False, "max_rounds": 3}}) == []
    assert [plan.active_dataset(r) for r in (0, 1, 2)] == [
        "results/datasets/xtb.parquet", "results/active/r1/xtb.parquet", "results/active/r2/xtb.parquet"]
    assert plan.active_charge_dataset(config, 2) == "results/datasets/dft.parquet"
    config["training"]["charge_reference"] = "xtb"
    assert plan.active_charge_dataset(config, 2) == plan.active_dataset(1)
    assert plan.active_chunks(config) == [0, 1, 2]  # ceil(10 / 4)


def test_active_committees_are_their_own_and_the_study_trains_on_every_round():
    """Round committees never reuse the study's models (those train after the last round
    on every label); DFT-charge models serve every round, xTB-charge ones follow it."""
    config = {"training": {"n_models": 1, "charge_reference": "dft"},
              "active_learning": {"enabled": True, "max_rounds": 2}}
    assert plan.active_model_dir(config, 1, 0, "4g") == "results/active/r1/models/4g_0"
    assert plan.active_model_dir(config, 2, 0, "4g") == "results/active/r2/models/4g_0"
    assert plan.active_model_dir(config, 1, 0, "charges") == plan.active_model_dir(config, 3, 0, "charges") \
        == "results/active/models/charges_0"
    config["training"]["charge_reference"] = "xtb"
    assert plan.active_model_dir(config, 1, 0, "charges") == "results/active/r1/models/charges_0"
    assert plan.active_model_dir(config, 2, 0, "charges") == "results/active/r2/models/charges_0"
    assert plan.training_dataset(config) == "results/active/xtb.parquet"
    config["active_learning"]["enabled"] = False
    assert plan.training_dataset(config) == "results/datasets/xtb.parquet"


def test_only_slabs_count_as_charged_slabs(production):
    # phase seeds take the schema's default kind (slab), yet build 3D cells
    production["structures"]["defects"].append({"kind": "vacancy", "species": "Cs", "total_charge": -1,
                                                "seeds": ["alpha", "rp1_slab", "rp1_bulk"]})
    assert plan.charged_slab_names(production) == ["rp1_slab__vac_I_qp1", "rp1_slab__vac_Cs_qm1",
                                                   "rp2_slab__vac_I_qp1"]


def test_validation_reads_the_held_out_labels_only_where_the_config_makes_them():
    config = load_config(ROOT / "config" / "study.yaml")
    inputs = plan.validation_inputs(config, "studies/s")
    assert inputs == {"xtb": f"studies/s/{plan.training_dataset(config)}",
                      "xtb_test": "studies/s/results/datasets/xtb_test.parquet",
                      "dft": "studies/s/results/datasets/dft.parquet",
                      "dft_test": "studies/s/results/datasets/dft_test.parquet",
                      "splits": "studies/s/results/splits.json"}
    assert plan.validate_options(inputs)[:4] == ["--xtb", inputs["xtb"], "--xtb-test", inputs["xtb_test"]]
    config["selection"].update(n_xtb_test=0)  # no held-out frames: neither their xTB nor their DFT labels
    assert set(plan.validation_inputs(config)) == {"xtb", "dft", "splits"}
    config["selection"].update(n_xtb_test=4, dft_test=False)
    assert set(plan.validation_inputs(config)) == {"xtb", "xtb_test", "dft", "splits"}


def test_study_config_is_the_given_file_or_the_studys_own(tmp_path):
    assert plan.study_config(tmp_path, tmp_path / "other.yaml") == tmp_path / "other.yaml"
    assert plan.study_config(tmp_path) == tmp_path / "study.yaml"


@pytest.mark.parametrize("study", ["cspbi-gfn1", "cspbi-gfn1-k72", "cspbi-gfn1-sr35"])
def test_each_committed_study_keeps_the_config_it_ran_with(study):
    """The scripts and `hipqeq models package` read a study with STUDY/study.yaml by default."""
    root = Path(__file__).resolve().parents[2] / "studies" / study
    assert load_config(plan.study_config(root))["xtb"]["engine"] == "cp2k"
