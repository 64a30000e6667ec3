"""The toy study, run once per test session and shared by the workflow and SLURM tests."""

from __future__ import annotations

import time

import pytest

from tests.integration.toy import snakemake


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory):
    """A directory holding a complete local toy run (`make run`'s command, 2 cores): the
    workflow tests inspect it and the SLURM test compares its own run with it, so CI pays
    for one local run, not two."""
    workdir = tmp_path_factory.mktemp("toy")
    start = time.monotonic()
    snakemake(workdir)
    print(f"\ntoy study locally (2 cores): {time.monotonic() - start:.0f} s")
    return workdir
