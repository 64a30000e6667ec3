"""Running the toy study through Snakemake from the tests (`make run`'s command)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOY_CONFIG = ROOT / "config" / "toy.yaml"


def snakemake_command(workdir: Path, *args: str) -> tuple[list[str], dict]:
    """The command line and environment of Snakemake on the toy config in ``workdir``
    with 2 cores."""
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
               "--directory", str(workdir), "--configfile", str(TOY_CONFIG),
               "--cores", "2", *args]
    # the rules call the `hipqeq` console script installed beside this interpreter
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    return command, env


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """Snakemake on the toy config in ``workdir`` with 2 cores; a failure raises with the
    tails of stderr and of every rule's log."""
    command, env = snakemake_command(workdir, *args)
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=env)
    if result.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in (workdir / "logs").rglob("*.log"))
        raise AssertionError(f"snakemake failed:\n{result.stderr[-4000:]}\n{logs[-12000:]}")
    return result


def planned_jobs(output: str) -> dict[str, int]:
    """Jobs per rule in a dry run's "Job stats" table ({} when nothing is to be done)."""
    if "Job stats:" not in output:
        return {}
    table = output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}
