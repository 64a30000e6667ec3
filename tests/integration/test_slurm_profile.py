"""profiles/slurm without a cluster: what a dry run would submit, and how the profile
combines with the workflow profile (profiles/default) that Snakemake always loads.

The partition a job lands in is chosen by the SLURM executor plugin from
profiles/slurm/partitions.yaml and the job's resources; these tests feed the resources a
dry run prints to the plugin's own partition scoring.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "profiles" / "slurm"
GPU_RULES = ("train_charges", "train_short_range", "train_baseline", "md_check")


def dry_run(*args: str) -> str:
    command = [sys.executable, "-m", "snakemake", "-n", "--profile", str(PROFILE),
               "--configfile", "config/toy.yaml", *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def planned_resources(output: str) -> dict[str, dict[str, str]]:
    """{rule: resources} of the first job of each rule in a dry run's listing."""
    planned, rule = {}, None
    for line in output.splitlines():
        if match := re.match(r"\s*rule (\w+):$", line):
            rule = match.group(1)
        elif (match := re.match(r"\s*resources: (.*)$", line)) and rule:
            planned.setdefault(rule, dict(item.split("=", 1) for item in match.group(1).split(", ")))
            rule = None
    return planned


class PlannedJob:
    """What the plugin's partition scoring reads of a job: name, threads, resources."""

    class Resources(dict):
        __getattr__ = dict.__getitem__

    def __init__(self, name: str, resources: dict[str, str]):
        self.name = name
        self.threads = 1
        self.resources = self.Resources({key: int(value) if value.isdigit() else value
                                         for key, value in resources.items()})


def partition_of(rule: str, resources: dict[str, str]) -> str:
    partitions = read_partition_file(PROFILE / "partitions.yaml")
    return get_best_partition(partitions, PlannedJob(rule, resources), logging.getLogger("test"))


@pytest.mark.parametrize("override", [[], ["--set-resources", *(f"{r}:runtime=30" for r in GPU_RULES),
                                           "build_structures:mem_mb=1500"]])
def test_gpu_rules_go_to_the_gpu_partition_even_with_overridden_resources(override):
    planned = planned_resources(dry_run(*override))
    for rule in GPU_RULES:
        assert planned[rule]["gpu"] == "1", rule
        assert partition_of(rule, planned[rule]) == "gpu", rule
        if override:
            assert planned[rule]["runtime"] == "30", rule
    for rule in ("build_structures", "sample_md", "label_xtb", "validate"):
        assert "gpu" not in planned[rule]
        assert partition_of(rule, planned[rule]) == "cpu", rule
    if override:
        assert planned["build_structures"]["mem_mb"] == "1500"


def test_dry_run_groups_labelling_and_rattle_jobs():
    output = dry_run()
    assert "Group job xtb_labels" in output or "group: xtb_labels" in output
    assert "rattles" in output


def test_workflow_profile_never_contradicts_the_slurm_profile():
    """Snakemake loads profiles/default with --profile profiles/slurm and lets its keys
    win: it may only hold settings right for both (no cores: it would cap every cluster
    job's threads at the submitting machine's cores)."""
    default = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    cluster = yaml.safe_load((PROFILE / "config.yaml").read_text())
    for key in ("cores", "jobs", "executor", "keep-going", "latency-wait", "software-deployment-method",
                "default-resources", "set-resources", "set-threads"):
        assert key not in default, key
    for key in set(default) & set(cluster):
        assert default[key] == cluster[key], key
    assert "workflow specific profile" in dry_run()


def test_slurm_profile_runs_jobs_in_the_submitting_environment():
    cluster = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert "software-deployment-method" not in cluster and "sdm" not in cluster  # conda: --sdm conda
    assert cluster["slurm-status-command"] == "squeue"  # sacct sees nothing without accounting
