"""The toy study through `snakemake --profile profiles/slurm` on a real SLURM cluster
(CI starts a one-node one with scripts/slurm-one-node.sh), against a local run.

The run starts the way a user's second attempt does: a first head process is killed
with SIGKILL while its first job waits in the queue (a job holding the whole node keeps
it there), the directory is unlocked, and the rerun must cancel that orphan, say so,
and submit the job once. Then every job completes, the datasets and metrics equal the
local run's, labelling and rattle jobs share allocations (groups), the GPU rules land
in the gpu partition, and the report is built at the end.

Skipped, with the reason, where no SLURM cluster answers; .ci/run sets
HIPQEQ_REQUIRE_SLURM=1 after starting one, and then a missing cluster is a failure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hipqeq import slurm
from hipqeq.data import read_table

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
            str(workdir), "--configfile", str(ROOT / "config" / "toy.yaml"), *args]


def slurm_command(workdir: Path, *args: str) -> list[str]:
    return snakemake_command(workdir, "--profile", str(ROOT / "profiles" / "slurm"), *args)


def squeue_state(job_id: str) -> str:
    return subprocess.run(["squeue", "--noheader", "--states=all", "--jobs", job_id, "--format", "%T"],
                          capture_output=True, text=True).stdout.strip()


def leaves(tree, path=()):
    """(path, value) of every leaf of nested dicts."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from leaves(value, (*path, key))
    else:
        yield path, tree


def wait_until(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture(scope="module")
def cluster():
    try:
        states = subprocess.run(["sinfo", "--noheader", "--format", "%t"], capture_output=True, text=True,
                                timeout=30).stdout.split()
    except (OSError, subprocess.TimeoutExpired) as exc:
        states = [f"sinfo failed: {exc}"]
    if not {"idle", "mix", "alloc"} & set(states):
        message = f"no SLURM cluster answers here (sinfo: {states}); start one with scripts/slurm-one-node.sh"
        if os.environ.get("HIPQEQ_REQUIRE_SLURM"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def local_run(cluster, toy_run):
    """The session's local toy run (tests/integration/conftest.py)."""
    return toy_run


@pytest.fixture(scope="module")
def slurm_run(local_run, tmp_path_factory):
    """(workdir, log of the rerun, the orphan's SLURM job id and its state after the rerun's start)."""
    workdir = tmp_path_factory.mktemp("slurm")
    blocker = subprocess.run(["sbatch", "--parsable", "--exclusive", "--partition", "cpu", "--output",
                              "/dev/null", "--wrap", "sleep 1800"], capture_output=True, text=True,
                             check=True).stdout.strip().split(";")[0]
    try:
        wait_until(lambda: squeue_state(blocker) == "RUNNING", 60, "the node-filling job to start")
        with open(workdir / "killed_head.log", "w") as log:
            head = subprocess.Popen(slurm_command(workdir), stdout=log, stderr=subprocess.STDOUT, env=ENV,
                                    start_new_session=True)

        def queued_orphans():
            listing = subprocess.run(["squeue", "--noheader", "--format", slurm.SQUEUE_FORMAT],
                                     capture_output=True, text=True).stdout
            return slurm.workflow_jobs(slurm.parse_squeue(listing), workdir)

        orphan = wait_until(queued_orphans, 180, "the first head process to submit a job")[0]
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        subprocess.run(slurm_command(workdir, "--unlock"), check=True, capture_output=True, env=ENV)
        rerun_log = workdir / "rerun.log"
        with open(rerun_log, "w") as log:
            rerun = subprocess.Popen(slurm_command(workdir), stdout=log, stderr=subprocess.STDOUT, env=ENV)
        wait_until(lambda: "Cancelling them" in rerun_log.read_text(), 180, "the rerun's orphan check")
        orphan_state = squeue_state(orphan.job_id)
    finally:
        subprocess.run(["scancel", blocker])
    start = time.monotonic()
    returncode = rerun.wait(timeout=2400)
    log_text = rerun_log.read_text()
    assert returncode == 0, log_text[-6000:]
    print(f"\ntoy study through the one-node SLURM: {time.monotonic() - start:.0f} s, "
          f"{len(SUBMITTED.findall(log_text))} submissions")
    return workdir, log_text, orphan.job_id, orphan_state


def test_orphan_of_a_killed_head_is_cancelled_and_its_job_submitted_once(slurm_run):
    workdir, log, orphan_id, orphan_state = slurm_run
    assert orphan_state in ("CANCELLED", "COMPLETING")
    assert re.search(rf"{orphan_id} \(rule_build_structures, PENDING\)", log)
    build_jobs = [m for m in SUBMITTED.finditer(log) if "rule_build_structures" in m.group(3)]
    assert len(build_jobs) == 1


def test_every_job_completed(slurm_run):
    workdir, log, *_ = slurm_run
    steps = re.findall(r"(\d+) of (\d+) steps \(100%\) done", log)
    assert steps and steps[-1][0] == steps[-1][1]
    dry = subprocess.run(snakemake_command(workdir, "-n"), capture_output=True, text=True, env=ENV)
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_row_counts_and_metrics_equal_the_local_run(slurm_run, local_run):
    workdir = slurm_run[0]
    for table in ("selection/xtb", "selection/dft", "datasets/xtb", "datasets/dft"):
        rows = [read_table(run / "results" / f"{table}.parquet").num_rows for run in (workdir, local_run)]
        assert rows[0] == rows[1] > 0, table
    metrics = [json.loads((run / "results" / "validation" / "metrics.json").read_text())
               for run in (workdir, local_run)]
    # the datasets block holds the xTB vs DFT charge gap: floats too
    cluster, local = (dict(leaves({"datasets": m["datasets"], "metrics": m["metrics"]})) for m in metrics)
    assert cluster.keys() == local.keys()
    for key, value in local.items():
        # SLURM jobs get the profile's thread counts (4 for training), the local
        # run 2: sums run in another order, so floats agree to ~1e-12, not bit for bit
        expected = pytest.approx(value, rel=1e-9, abs=1e-12) if isinstance(value, float) else value
        assert cluster[key] == expected, key


def test_labelling_and_rattle_jobs_were_grouped(slurm_run):
    logs = [m.group(3) for m in SUBMITTED.finditer(slurm_run[1])]
    assert any("/group_" in path for path in logs), logs


def test_gpu_rules_ran_in_the_gpu_partition(slurm_run):
    log = slurm_run[1]
    for rule in ("train_charges", "train_short_range", "train_baseline", "md_check"):
        assert f"Auto-selected partition 'gpu' for job {rule}" in log, rule
    assert "Auto-selected partition 'cpu' for job build_structures" in log


def test_report_is_built_at_the_end(slurm_run):
    workdir, log, *_ = slurm_run
    report = workdir / "results" / "report.html"
    assert report.stat().st_size > 100_000
    assert "Report: results/report.html" in log


def test_a_missing_partition_stops_the_run_before_any_submission(cluster, tmp_path):
    partitions = tmp_path / "partitions.yaml"
    partitions.write_text("partitions:\n  cpu: {max_gpu: 0}\n  a100: {max_gpu: 4}\n")
    result = subprocess.run(slurm_command(tmp_path, "--slurm-partition-config", str(partitions)),
                            capture_output=True, text=True, timeout=300, env=ENV)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "partition(s) a100 named in" in output and str(partitions) in output
    assert not SUBMITTED.search(output)
