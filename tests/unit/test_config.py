import copy
from pathlib import Path

import pytest
import yaml

from hipqeq.config import load_config, validate_config, validate_section
from hipqeq.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [ROOT / "config" / "toy.yaml", ROOT / "config" / "config.yaml", ROOT / "config" / "study.yaml"]


@pytest.fixture
def toy():
    return yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    config = load_config(path)
    assert config["structures"]["seeds"]


def test_study_config_is_gated_and_equals_the_running_study_copy():
    """The accuracy study labels at the gated k-point density with its gates on (the strain
    path included), its slabs' vacuum beyond the labeller's Coulomb reach (~37 A), and the
    copy its run was started with (studies/cspbi-gfn1-sr35) has the same settings."""
    study = load_config(ROOT / "config" / "study.yaml")
    assert study["convergence"]["enabled"] and not study["convergence"]["allow_unconverged"]
    assert study["convergence"]["strain_percent"] and min(study["convergence"]["vacuum_A"]) > 45.0
    assert study["xtb"]["engine"] == "cp2k" and study["xtb"]["cp2k"]["kpoint_density_A"] == 72.0
    assert study["xtb"]["cp2k"]["coulomb_sr_cut_bohr"] == 35.0
    assert all(seed["vacuum_A"] >= 40.0 for seed in study["structures"]["seeds"] if seed.get("kind") == "slab")
    assert study == load_config(ROOT / "studies" / "cspbi-gfn1-sr35" / "study.yaml")


def test_defaults_are_filled(toy):
    config = validate_config(toy)
    assert config["sampling"]["ensemble"] == "nvt"
    assert config["training"]["network"]["cutoff_A"] == 6.0
    assert config["structures"]["tilts"] == {"angles_deg": [], "seeds": []}
    assert config["convergence"]["enabled"] is True  # the toy runs its gates ...
    assert config["convergence"]["allow_unconverged"] is True  # ... and goes on when they fail
    assert config["convergence"]["tolerance"] == {"energy_meV_per_atom": 1.0, "force_meV_per_A": 10.0,
                                                  "charge_e": 0.01, "strain_residual_meV_per_atom": 1.0}
    assert config["xtb"]["cp2k"]["kpoint_density_A"] == 72.0  # the gated density (README)


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["sampling"].update(temperature=300), r"at 'sampling'.*'temperature' was unexpected"),
    (lambda c: c.update(sampler={}), r"at '\(top level\)'.*'sampler' was unexpected"),
    (lambda c: c["xtb"].update(method="GFN3-xTB"), r"at 'xtb/method'.*'GFN3-xTB' is not one of"),
    (lambda c: c["sampling"].update(temperatures_K=[-5]), r"at 'sampling/temperatures_K/0'"),
    (lambda c: c["selection"].update(n_xtb="many"), r"at 'selection/n_xtb'.*'many' is not of type 'integer'"),
    (lambda c: c.pop("selection"), r"'selection' is a required property"),
    (lambda c: c["structures"]["seeds"][0].update(name="1bad"), r"at 'structures/seeds/0/name'"),
    (lambda c: c["structures"]["seeds"][1].update(name="rp1_slab"), r"duplicate name\(s\) rp1_slab"),
    (lambda c: c["structures"]["seeds"][0].pop("n"), r"builder ruddlesden_popper needs 'n'"),
    (lambda c: c["structures"]["strains"].update(seeds=["nope"]), r"unknown seed\(s\) nope"),
    (lambda c: c["selection"].update(n_dft=1000), r"'selection/n_dft': 1000 exceeds n_xtb"),
    (lambda c: c["structures"]["defects"].append({"kind": "substitution", "species": "I"}),
     r"a substitution needs 'by'"),
    (lambda c: c["dft"].update(source="external"), r"needs dft.external.path"),
    (lambda c: c["validation"].update(md_structures=["rp9_slab"]), r"'validation/md_structures': unknown structure\(s\) rp9_slab"),
    (lambda c: c["sampling"].update(temperatures_K=[100, 300, 100.0]),
     r"'sampling/temperatures_K': 100 K listed more than once"),
    (lambda c: c["active_learning"].update(temperatures_K=[150, 300, 150]),
     r"'active_learning/temperatures_K': 150 K listed more than once"),
    (lambda c: c["active_learning"].update(structures=["rp1_slab", "alpha", "rp1_slab"]),
     r"'active_learning/structures': rp1_slab listed more than once"),
    (lambda c: c["training"].update(peer={"enabled": True, "n_models": 2}),
     r"'training/peer/n_models': 2 exceeds training.n_models = 1"),
    (lambda c: c["training"].update(peer={"max_L": 4}), r"at 'training/peer/max_L'"),
    (lambda c: c["properties"].update(structures=["alpha", "beta"]),
     r"'properties/structures': unknown structure\(s\) beta; built structures are rp1_slab, alpha"),
    (lambda c: c["properties"].update(structures=["alpha", "cifs/alpha.cif"]),
     r"'properties/structures': name\(s\) alpha listed more than once"),
    (lambda c: c["properties"].update(structures=["cifs/2d-phase.cif"]),
     r"'properties/structures': file\(s\) cifs/2d-phase.cif need a stem of letters"),
    (lambda c: c["properties"].update(structures=[]), r"'properties/structures': properties.enabled but no structure"),
    (lambda c: c["properties"].update(equilibration="detect"), r"at 'properties/equilibration'"),
    (lambda c: c["properties"].update(temperatures_K=[]), r"at 'properties/temperatures_K'"),
])
def test_invalid_config_names_the_key(toy, mutate, message):
    bad = copy.deepcopy(toy)
    mutate(bad)
    with pytest.raises(ConfigError, match=message):
        validate_config(bad, source="toy.yaml")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("structures: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(tmp_path / "list.yaml")


def test_validate_section_fills_defaults_and_name_bad_keys():
    settings = validate_section("xtb", {"method": "GFN2-xTB"})
    assert settings["method"] == "GFN2-xTB" and settings["engine"] == "tblite"
    assert settings["retry"]["enabled"] is True and settings["min_periodic_length_A"] == 18.0
    with pytest.raises(ConfigError, match="xtb/method"):
        validate_section("xtb", {"method": "GFN3-xTB"})
    with pytest.raises(ConfigError, match="xtb/retry"):
        validate_section("xtb", {"retry": {"max_iter": 3}})
