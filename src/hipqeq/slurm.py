"""Start-up checks of a SLURM run (``snakemake --profile profiles/slurm``).

The SLURM executor plugin submits and polls jobs; three things it does not check, and
that made a new user's first run fail or hang, are checked here before any submission:

- every partition named in the partitions file exists (``sinfo``);
- no job asks for more CPUs or memory than the largest node has (SLURM would accept it
  and leave it pending forever);
- the status command can see finished jobs: ``sacct`` needs an accounting database,
  ``squeue`` needs finished jobs to stay listed (``MinJobAge``) longer than the
  plugin's longest pause between two status queries; otherwise the run would wait
  forever for jobs that have long finished;
- jobs of an earlier run of the same workflow directory (its head process killed) are
  still queued or running: they are cancelled and listed, so that this run does not
  submit a second copy of a job next to a live one.

The Snakefile calls :func:`check_before_submitting` from its ``onstart`` handler; the
pure functions below take SLURM's answers as text so that they can be tested without
a cluster.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import yaml

from hipqeq.errors import HipqeqError

#: the plugin's longest pause between two status queries (seconds;
#: snakemake-executor-plugin-slurm 2.x, ``max_sleep_time`` in ``check_active_jobs``)
PLUGIN_MAX_STATUS_INTERVAL_S = 180
#: the comment the plugin gives every job it submits starts with this
PLUGIN_COMMENT_PREFIX = "rule_"


class ClusterError(HipqeqError):
    """The SLURM cluster cannot run this workflow as configured; the message says why."""


@dataclasses.dataclass(frozen=True)
class SlurmJob:
    """One line of ``squeue``: job id, state, working directory, comment, name."""

    job_id: str
    state: str
    workdir: str
    comment: str
    name: str


#: ``squeue --format`` giving :class:`SlurmJob`'s fields, ``|``-separated
SQUEUE_FORMAT = "%i|%T|%Z|%k|%j"


def run_slurm_command(*args: str) -> str:
    """stdout of a SLURM command; :class:`ClusterError` naming it if it fails."""
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterError(f"`{' '.join(args)}` could not run: {exc}") from None
    if result.returncode != 0:
        raise ClusterError(f"`{' '.join(args)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def partition_names(partitions_file: str | Path) -> list[str]:
    """Partition names of a plugin partitions file (``partitions: {name: {limits}}``)."""
    path = Path(partitions_file)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ClusterError(f"partitions file {path}: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("partitions"), dict):
        raise ClusterError(f"partitions file {path}: expected a mapping `partitions: {{name: {{limits}}}}`")
    return [str(name) for name in document["partitions"]]


def cluster_partitions(sinfo_output: str) -> set[str]:
    """Partition names from ``sinfo -h -o %P`` (the default one carries a ``*``)."""
    return {line.strip().rstrip("*") for line in sinfo_output.splitlines() if line.strip()}


def check_partitions(wanted: list[str], available: set[str], source: str) -> None:
    """Raise :class:`ClusterError` naming every partition of ``wanted`` the cluster lacks."""
    missing = [name for name in wanted if name not in available]
    if missing:
        raise ClusterError(
            f"partition(s) {', '.join(missing)} named in {source} do not exist on this cluster "
            f"(sinfo lists: {', '.join(sorted(available)) or 'none'}); edit {source}")


def largest_node(sinfo_output: str) -> tuple[int, int]:
    """(CPUs, memory in MB) of the largest node, from ``sinfo -h -o "%c %m"``."""
    sizes = [tuple(int(field.rstrip("+")) for field in line.split()) for line in sinfo_output.splitlines()
             if line.strip()]
    if not sizes:
        raise ClusterError("sinfo lists no nodes")
    return max(cpus for cpus, _ in sizes), max(mem_mb for _, mem_mb in sizes)


def oversized_jobs(requests: dict[str, tuple[int, int]], node: tuple[int, int]) -> list[str]:
    """Rules whose jobs ask for more than the largest node has, with the override to give.

    ``requests`` maps a rule to (threads, mem_mb) of its largest job. SLURM accepts such
    a job and leaves it pending forever (reason PartitionConfig or Resources).
    """
    cpus, mem_mb = node
    problems = []
    for rule, (threads, memory) in sorted(requests.items()):
        if threads > cpus:
            problems.append(f"{rule} asks for {threads} threads, the largest node has {cpus} CPUs "
                            f"(--set-threads {rule}={cpus})")
        if memory > mem_mb:
            problems.append(f"{rule} asks for {memory} MB, the largest node has {mem_mb} MB "
                            f"(--set-resources {rule}:mem_mb={mem_mb})")
    return problems


def slurm_config(scontrol_output: str) -> dict[str, str]:
    """``scontrol show config`` as {key: value}."""
    config = {}
    for line in scontrol_output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip()
    return config


def seconds(value: str) -> int:
    """A SLURM duration as scontrol writes it ('300 sec', '1h', '600') in seconds."""
    match = re.match(r"\s*(\d+)\s*([A-Za-z]*)", value)
    if not match:
        raise ClusterError(f"cannot read the duration {value!r} from scontrol show config")
    return int(match.group(1)) * (3600 if match.group(2).lower().startswith("h") else 1)


def status_polling_problem(status_command: str, init_seconds: int, config: dict[str, str],
                           sacct_installed: bool) -> str | None:
    """Why the plugin's status queries would never see jobs finish, or None if they will.

    ``sacct`` answers from the accounting database; without one it sees no job.
    ``squeue`` lists a finished job for ``MinJobAge`` seconds only: a job that finishes
    and disappears between two queries (up to 180 s apart) is waited for forever. The
    plugin itself swaps ``squeue`` for an installed ``sacct`` when MinJobAge is under
    three times its first wait (``init_seconds``); the command checked is the one it
    will really use.
    """
    accounting = config.get("AccountingStorageType", "accounting_storage/none") != "accounting_storage/none"
    min_job_age_s = seconds(config.get("MinJobAge", "300"))
    command = status_command
    if command == "squeue" and min_job_age_s < 3 * init_seconds and sacct_installed:
        command = "sacct"
    if command == "sacct" and not accounting:
        return (f"status queries would use sacct (slurm-status-command {status_command!r}, MinJobAge "
                f"{min_job_age_s} s) but this cluster has no accounting database "
                "(AccountingStorageType=accounting_storage/none): sacct never reports a job as finished. "
                f"Ask for MinJobAge > {PLUGIN_MAX_STATUS_INTERVAL_S} s in slurm.conf and keep "
                "`slurm-status-command: squeue` in profiles/slurm/config.yaml.")
    if command == "squeue" and min_job_age_s <= PLUGIN_MAX_STATUS_INTERVAL_S:
        remedy = ("set `slurm-status-command: sacct` in profiles/slurm/config.yaml (this cluster has "
                  "accounting)" if accounting else
                  f"ask for MinJobAge > {PLUGIN_MAX_STATUS_INTERVAL_S} s or slurmdbd accounting")
        return (f"status queries use squeue, but finished jobs leave squeue after MinJobAge = "
                f"{min_job_age_s} s, which can be shorter than the {PLUGIN_MAX_STATUS_INTERVAL_S} s "
                f"between two status queries: finished jobs could be waited for forever; {remedy}.")
    return None


def parse_squeue(output: str) -> list[SlurmJob]:
    """Jobs from ``squeue -h -o SQUEUE_FORMAT``."""
    jobs = []
    for line in output.splitlines():
        fields = line.strip().split("|", 4)
        if len(fields) == 5:
            jobs.append(SlurmJob(*(f.strip() for f in fields)))
    return jobs


def workflow_jobs(jobs: list[SlurmJob], workdir: str | Path) -> list[SlurmJob]:
    """The jobs the Snakemake SLURM plugin submitted from ``workdir``."""
    workdir = os.path.realpath(workdir)
    return [job for job in jobs if job.comment.startswith(PLUGIN_COMMENT_PREFIX)
            and os.path.realpath(job.workdir) == workdir]


def cancel_orphans(workdir: str | Path, log: Callable[[str], None]) -> list[SlurmJob]:
    """Cancel the queued or running jobs an earlier head process submitted from ``workdir``.

    Called before this run submits anything, so every such job is an orphan: its head
    process died (Snakemake's directory lock keeps two live heads apart). Its outputs
    are incomplete, so this run resubmits it; MD sampling resumes from its checkpoint.
    """
    # without --states, squeue lists only jobs still queued, running or completing
    listing = run_slurm_command("squeue", "--noheader", "--user", getpass.getuser(), "--format", SQUEUE_FORMAT)
    orphans = workflow_jobs(parse_squeue(listing), workdir)
    if orphans:
        log(f"{len(orphans)} SLURM job(s) of an earlier run of this workflow are still queued or running: "
            + ", ".join(f"{job.job_id} ({job.comment}, {job.state})" for job in orphans)
            + ". Cancelling them so that no job runs twice; this run resubmits what is still needed.")
        run_slurm_command("scancel", *(job.job_id for job in orphans))
    return orphans


def check_before_submitting(executor_settings, requests: dict[str, tuple[int, int]], workdir: str | Path,
                            log: Callable[[str], None]) -> None:
    """Every start-up check of a SLURM run; raises :class:`ClusterError` on the first problem.

    ``requests``: {rule: (threads, mem_mb)} of the largest job of each rule to run.
    """
    partitions_file = executor_settings.partition_config or os.environ.get("SNAKEMAKE_SLURM_PARTITIONS")
    if partitions_file:
        check_partitions(partition_names(partitions_file),
                         cluster_partitions(run_slurm_command("sinfo", "--noheader", "--format", "%P")),
                         str(partitions_file))
    too_large = oversized_jobs(requests, largest_node(run_slurm_command("sinfo", "--noheader", "--format", "%c %m")))
    if too_large:
        raise ClusterError("jobs no node can run would wait in the queue forever: " + "; ".join(too_large))
    problem = status_polling_problem(executor_settings.status_command,
                                     executor_settings.init_seconds_before_status_checks,
                                     slurm_config(run_slurm_command("scontrol", "show", "config")),
                                     sacct_installed=shutil.which("sacct") is not None)
    if problem:
        raise ClusterError(problem)
    cancel_orphans(workdir, log)
