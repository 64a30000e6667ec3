"""The Snakemake DAG of both shipped configs, the config check at start-up, the rule
graph, and the consistency of the rules' conda environments with pyproject.

Every Snakemake call runs in its own empty temporary directory holding only a link to
the shipped configs, never in the checkout: what `make run` left there (results/,
.snakemake/) must not change what these tests see."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


@pytest.fixture(autouse=True)
def workdir(tmp_path, monkeypatch):
    """A fresh working directory per test, with config/ linked from the checkout (the
    Snakefile's default config and the tests' --configfile paths are relative to it)."""
    directory = tmp_path / "workdir"
    directory.mkdir()
    (directory / "config").symlink_to(ROOT / "config", target_is_directory=True)
    monkeypatch.chdir(directory)
    return directory


def snakemake(*args, check=True):
    result = subprocess.run(SNAKEMAKE + list(args), capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}."""
    table = output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def test_toy_dag_job_counts():
    counts = job_counts(snakemake("-n", "--configfile", "config/toy.yaml").stdout)
    structures = 4  # rp1_slab, alpha, rp1_slab__biaxial_p2, rp1_slab__vac_I
    assert counts == {
        "build_structures": 1, "split": 1,
        "check_convergence": 2,  # one xTB gate per seed (toy: allow_unconverged, no DFT gate)
        "sample_md": structures * 2 * 1,  # x 2 temperatures x 1 replica
        "sample_rattle": structures, "select": 1, "select_dft": 1,
        "label_xtb": 3,  # ceil(24 frames / 8 per chunk)
        "label_dft": 2,  # ceil(2 / 1)
        "gather_xtb": 1, "gather_dft": 1,
        # 4 more frames of the test parents, for validation only: one chunk of 8
        "select_test": 1, "label_xtb_test": 1, "gather_xtb_test": 1,
        "train_charges": 1, "train_short_range": 1, "train_baseline": 1,
        "md_check": 2 * 2,  # (4g, baseline) x 2 md_structures
        "validate": 1, "all": 1,
        "properties": 1,  # NPT properties of alpha
        # active learning, round 1 up to its checkpoint (later rounds appear once it ran):
        # a committee of 2 of its own (the study's models train after the last round, on
        # gather_active_final's dataset); its DFT-charge models serve every round
        "split_active": 1, "train_active_charges": 2, "train_active_short_range": 2,
        "explore": 1, "select_candidates": 1, "active_report": 1, "gather_active_final": 1,
    }


def test_production_dag_lists_the_whole_study():
    counts = job_counts(snakemake("-n", "--configfile", "config/config.yaml").stdout)
    structures = 54  # see tests/unit/test_plan.py
    assert counts["sample_md"] == structures * 8 * 2  # 8 temperatures x 2 replicas
    assert counts["sample_rattle"] == structures
    assert counts["label_xtb"] == 1000  # 5000 / 5 (CP2K labels take minutes to an hour each)
    assert counts["label_dft"] == 200  # 400 / 2
    assert counts["label_xtb_test"] == 80  # 400 more frames of the test parents / 5
    assert counts["check_convergence"] == (10 + 2) * 2  # per seed and V_I+ slab (rp1, rp2), and level (xtb, dft)
    for rule in ("train_charges", "train_short_range", "train_baseline"):
        assert counts[rule] == 3  # committee of three
    assert counts["md_check"] == 2 * 3
    # round 1's committee of 4 is its own: the study's three members train after the last round
    assert counts["train_active_short_range"] == counts["train_active_charges"] == 4
    assert counts["gather_active_final"] == 1
    assert counts["explore"] == counts["select_candidates"] == 1
    assert sum(counts.values()) > 1000


def test_peer_model_is_trained_and_validated_when_enabled(tmp_path):
    """training.peer.enabled adds one MACE job per peer member (off in the shipped toy:
    no train_peer there, see test_toy_dag_job_counts) and passes them to validate."""
    config = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
    config["training"].update(n_models=2, peer={"enabled": True, "n_models": 2})
    path = tmp_path / "peer.yaml"
    path.write_text(yaml.safe_dump(config))
    printed = snakemake("-n", "-p", "--configfile", str(path)).stdout
    assert job_counts(printed)["train_peer"] == 2
    trains = [line for line in printed.splitlines() if line.startswith("Shell command: hipqeq train mace")]
    assert sorted(line.split("--output ")[1].split()[0] for line in trains) == \
        ["results/models/mace_0", "results/models/mace_1"]
    (validate,) = [line for line in printed.splitlines() if line.startswith("Shell command: hipqeq validate")]
    assert "--peer results/models/mace_0 results/models/mace_1 --md" in validate


def test_default_config_is_the_production_study():
    default = job_counts(snakemake("-n").stdout)
    assert default == job_counts(snakemake("-n", "--configfile", "config/config.yaml").stdout)


def test_rulegraph_draws_every_stage():
    dot = snakemake("--rulegraph", "--configfile", "config/toy.yaml").stdout
    for rule in ("build_structures", "sample_md", "select", "label_xtb", "label_dft", "gather_xtb",
                 "train_charges", "train_short_range", "train_baseline", "validate"):
        assert f'label = "{rule}"' in dot


def test_unknown_config_key_fails_at_start_up_naming_it(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
    config["sampling"]["temprature_K"] = [300]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(bad), check=False)
    assert result.returncode != 0
    assert "temprature_K" in result.stdout + result.stderr


def test_command_line_overrides_are_refused():
    result = snakemake("-n", "--configfile", "config/toy.yaml", "--config", "seed=3", check=False)
    assert result.returncode != 0
    assert "--config overrides are not supported" in result.stdout + result.stderr


# --- every rule is a thin call of the CLI, in an environment that has what it needs ---

RULE_BLOCK = re.compile(r"^(?:rule|checkpoint) (\w+):\n(.*?)(?=^rule |^checkpoint |^use rule |\Z)", re.M | re.S)
#: optional-dependency groups of pyproject each rule's verb imports
RULE_EXTRAS = {
    "build_structures": [], "split": [], "sample_rattle": [], "select": [], "select_dft": [], "select_test": [],
    "ingest_dft": [],
    "gather_xtb": [], "gather_dft": [],
    "sample_md": ["xtb"], "label_xtb": ["xtb"], "check_convergence": ["xtb"],  # and ["dft"] in dft.yaml
    "label_dft": ["dft"],
    "train_charges": ["ml"], "train_short_range": ["ml"], "train_baseline": ["ml"], "train_peer": ["ml", "peer"],
    "md_check": ["ml"], "validate": ["ml", "peer"], "properties": ["ml"],
    "split_active": [], "explore": ["ml"], "select_candidates": [], "gather_active": [], "active_report": [],
    "gather_active_final": [],
}
#: conda-forge names of PyPI packages whose names differ
CONDA_NAMES = {"tblite": "tblite-python", "xtb": "xtb-python", "matplotlib": "matplotlib-base",
               "torch": "pytorch"}


def rules() -> dict[str, str]:
    blocks = {}
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        blocks.update({m.group(1): m.group(2) for m in RULE_BLOCK.finditer(smk.read_text())})
    return blocks


def requirement_name(spec: str) -> str:
    return re.split(r"[<>=!\[ ;]", spec.strip(), maxsplit=1)[0].lower()


def env_packages(path: Path) -> set[str]:
    env = yaml.safe_load(path.read_text())
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            names |= {requirement_name(p) for p in dep["pip"] if not p.startswith("-")}
        else:
            names.add(requirement_name(dep))
    return names


def test_every_rule_calls_hipqeq_and_is_known():
    blocks = rules()
    assert set(blocks) == set(RULE_EXTRAS), "add new rules to RULE_EXTRAS"
    for name, body in blocks.items():
        shell = re.search(r'shell:\n\s+"(hipqeq [\w-]+)', body)
        assert shell, f"rule {name} must call `hipqeq VERB` in its shell directive"
        assert "log:" in body and "conda:" in body and "resources:" in body, name
        assert "runtime=" in body and "mem_mb=" in body, name
    for name in ("train_charges", "train_short_range", "train_baseline", "train_peer"):
        assert "gpu=1" in blocks[name]


def test_conda_envs_hold_what_each_rule_needs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {requirement_name(d) for d in project["dependencies"]}
    extras = {k: {requirement_name(d) for d in v} for k, v in project["optional-dependencies"].items()}
    xtb_envs = ["../../envs/xtb.yaml", "../../envs/cp2k.yaml"]
    for name, body in rules().items():
        env = re.search(r'conda:\n\s+(?:"([^"]+)"|(XTB_ENV)|(lambda wildcards: LABEL_ENVS\[wildcards.level\])|(DFT_ENV))',
                        body)
        # XTB_ENV (common.smk) is the xTB engine family's env: cp2k.yaml for engine cp2k, else xtb.yaml;
        # DFT_ENV the DFT engine's: dft.yaml (PySCF) or, for dft.source cp2k, cp2k.yaml, which needs no
        # PySCF; LABEL_ENVS holds both for the gates
        dft_envs = [("../../envs/dft.yaml", ["dft"]), ("../../envs/cp2k.yaml", [])]
        if env.group(3):
            envs = [(f, RULE_EXTRAS[name]) for f in xtb_envs] + dft_envs
        elif env.group(4):
            envs = dft_envs
        else:
            envs = [(f, RULE_EXTRAS[name]) for f in (xtb_envs if env.group(2) else [env.group(1)])]
        for env_file, rule_extras in envs:
            env_path = (ROOT / "workflow" / "rules" / env_file).resolve()
            assert env_path.exists(), f"rule {name}: {env_file} does not exist"
            have = env_packages(env_path)
            needed = core | set().union(*(extras[e] for e in rule_extras))
            missing = sorted(p for p in needed if CONDA_NAMES.get(p, p) not in have and p not in have)
            assert not missing, f"rule {name}: {env_path.name} lacks {missing}"
            # hipqeq itself comes from the checkout, installed after the env is created
            post_deploy = env_path.with_name(env_path.stem + ".post-deploy.sh")
            assert "pip install --no-deps --editable \"${HIPQEQ_SOURCE" in post_deploy.read_text(), post_deploy
    assert "cp2k" in env_packages(ROOT / "envs" / "cp2k.yaml")
    assert 'os.environ["HIPQEQ_SOURCE"] = workflow.basedir' in (ROOT / "workflow/rules/common.smk").read_text()


def test_leftovers_of_a_previous_run_in_the_checkout_do_not_matter(workdir):
    """The DAG tests run where no results exist, whatever the checkout holds: the dry run
    of the toy study lists every job even if `make run` has filled ROOT/results."""
    assert Path.cwd() == workdir != ROOT
    assert not (workdir / "results").exists() and not (workdir / ".snakemake").exists()
    assert "Nothing to be done" not in snakemake("-n", "--configfile", "config/toy.yaml").stdout


def test_gather_rules_pass_the_configured_failure_limit():
    """The guard of `hipqeq gather` is wired to selection.max_failed_fraction (0.5 by default)."""
    printed = snakemake("-n", "-p", "--configfile", "config/toy.yaml").stdout
    gathers = [line for line in printed.splitlines() if line.startswith("Shell command: hipqeq gather")
               and "results/labels/" in line]  # not gather_active_final: it re-gathers a gathered dataset
    assert len(gathers) == 3 and all("--max-failed-fraction 0.5" in line for line in gathers)  # xtb, xtb_test, dft


def test_study_config_passes_the_schema_and_lists_every_stage():
    """config/study.yaml (the accuracy study): its convergence gates before any label, CP2K
    labels, the DFT charges, the committee and validation."""
    counts = job_counts(snakemake("-n", "--configfile", "config/study.yaml").stdout)
    for rule in ("build_structures", "sample_md", "sample_rattle", "select", "label_xtb",
                 "label_dft", "gather_xtb", "gather_dft", "split", "train_charges", "train_short_range",
                 "train_baseline", "md_check", "validate"):
        assert counts.get(rule, 0) >= 1, rule
    assert counts["label_xtb"] == 18  # 36 labels in chunks of 2
    assert counts["label_xtb_test"] == 8  # 16 more frames of the test parents
    assert counts["label_dft_test"] == 16 and counts["gather_dft_test"] == 1  # and their DFT charges, one a job
    dft_shell = [line for line in snakemake("-n", "-p", "--configfile", "config/study.yaml").stdout.splitlines()
                 if "hipqeq validate" in line]
    assert dft_shell and "--dft-test results/datasets/dft_test.parquet" in dft_shell[0]
    assert counts["sample_md"] == 22 * 2  # 22 structures (several parents per family) x 2 temperatures
    assert counts["train_short_range"] == 2
    assert counts["check_convergence"] == 2  # rp1_slab and rp2_slab, the seeds the study labels
