"""Start-up checks of a SLURM run, on SLURM's answers as text (no cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hipqeq import slurm

ROOT = Path(__file__).resolve().parents[2]

# `scontrol show config` lines as Slurm 22.05 prints them
NO_ACCOUNTING = {"AccountingStorageType": "accounting_storage/none", "MinJobAge": "600 sec"}


def test_shipped_partitions_file_names_a_cpu_and_a_gpu_partition():
    assert slurm.partition_names(ROOT / "profiles" / "slurm" / "partitions.yaml") == ["cpu", "gpu"]


def test_partitions_file_without_its_section_is_refused(tmp_path):
    bad = tmp_path / "partitions.yaml"
    bad.write_text("cpu: {max_gpu: 0}\n")
    with pytest.raises(slurm.ClusterError, match="partitions.yaml.*partitions:"):
        slurm.partition_names(bad)


def test_missing_partition_is_named_with_the_file_to_edit():
    available = slurm.cluster_partitions("cpu*\ngpu\n")
    assert available == {"cpu", "gpu"}
    slurm.check_partitions(["cpu", "gpu"], available, "partitions.yaml")
    with pytest.raises(slurm.ClusterError, match=r"a100 .*partitions\.yaml.*cpu, gpu"):
        slurm.check_partitions(["cpu", "a100"], available, "partitions.yaml")


def test_scontrol_config_and_durations():
    config = slurm.slurm_config("MinJobAge               = 300 sec\nClusterName = onenode\nno equals sign\n")
    assert config == {"MinJobAge": "300 sec", "ClusterName": "onenode"}
    assert slurm.seconds("300 sec") == 300
    assert slurm.seconds("1h") == 3600
    assert slurm.seconds("600") == 600
    with pytest.raises(slurm.ClusterError):
        slurm.seconds("soon")


def test_squeue_without_accounting_works_when_finished_jobs_stay_listed():
    assert slurm.status_polling_problem("squeue", 20, NO_ACCOUNTING, sacct_installed=True) is None


def test_sacct_without_accounting_is_refused():
    problem = slurm.status_polling_problem("sacct", 20, NO_ACCOUNTING, sacct_installed=True)
    assert "no accounting database" in problem and "squeue" in problem


def test_short_min_job_age_without_accounting_is_refused_whichever_command_runs():
    # 100 s < 3 x 20 s? no: squeue stays, and misses jobs finishing between 180 s-apart queries
    short = {**NO_ACCOUNTING, "MinJobAge": "100 sec"}
    assert "MinJobAge = 100 s" in slurm.status_polling_problem("squeue", 20, short, sacct_installed=True)
    # 100 s < 3 x 40 s: the plugin swaps in sacct, which sees nothing without accounting
    assert "no accounting database" in slurm.status_polling_problem("squeue", 40, short, sacct_installed=True)


def test_short_min_job_age_with_accounting_points_to_sacct():
    config = {"AccountingStorageType": "accounting_storage/slurmdbd", "MinJobAge": "150 sec"}
    assert "slurm-status-command: sacct" in slurm.status_polling_problem("squeue", 20, config, sacct_installed=True)
    assert slurm.status_polling_problem("sacct", 20, config, sacct_installed=True) is None


SQUEUE = """\
101|RUNNING|/scratch/study|rule_sample_md_wildcards_alpha_p300_0|7d78166d
102|PENDING|/scratch/study|rule_label_xtb_wildcards_3|7d78166d
103|RUNNING|/scratch/other|rule_select|0a1b2c3d
104|RUNNING|/scratch/study|(null)|interactive
"""


def test_workflow_jobs_are_the_plugins_jobs_of_this_directory():
    jobs = slurm.parse_squeue(SQUEUE)
    assert [job.job_id for job in jobs] == ["101", "102", "103", "104"]
    assert jobs[0] == slurm.SlurmJob("101", "RUNNING", "/scratch/study", "rule_sample_md_wildcards_alpha_p300_0",
                                     "7d78166d")
    assert [job.job_id for job in slurm.workflow_jobs(jobs, "/scratch/study")] == ["101", "102"]
    assert slurm.workflow_jobs(jobs, "/scratch/nowhere") == []


def test_jobs_larger_than_every_node_are_named_with_their_override():
    node = slurm.largest_node("8 32000\n2 4000+\n")
    assert node == (8, 32000)
    assert slurm.oversized_jobs({"sample_md": (4, 4000), "train_charges": (4, 16000)}, node) == []
    problems = slurm.oversized_jobs({"sample_md": (4, 4000), "train_charges": (4, 16000)}, (2, 8000))
    assert problems == [
        "sample_md asks for 4 threads, the largest node has 2 CPUs (--set-threads sample_md=2)",
        "train_charges asks for 4 threads, the largest node has 2 CPUs (--set-threads train_charges=2)",
        "train_charges asks for 16000 MB, the largest node has 8000 MB (--set-resources train_charges:mem_mb=8000)",
    ]
