"""The toy study end to end through Snakemake: every rule runs, every expected output
exists, the metrics follow their schema, figures are real images, a re-run does
nothing, and deleting one label chunk re-runs only what depends on it.

This is the slowest test (a few minutes on 2 cores); it runs the same command as
`make run`, in a temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import matplotlib.image
import pytest
import yaml

from tests.integration.toy import TOY_CONFIG, planned_jobs, snakemake, snakemake_command

METRIC_KEYS = {"energy_mae_mev_per_atom", "energy_rmse_mev_per_atom", "force_mae_mev_per_A",
               "force_rmse_mev_per_A", "charge_mae_e", "charge_rmse_e"}


@pytest.mark.slow
def test_every_stage_produced_its_outputs(toy_run):
    results = toy_run / "results"
    for path in ["structures/structures.parquet", "splits.json", "selection/xtb.parquet",
                 "selection/dft.parquet", "datasets/xtb.parquet", "datasets/dft.parquet",
                 "models/charges_0", "models/4g_0", "models/baseline_0",
                 "validation/metrics.json", "validation/metrics.md"]:
        assert (results / path).exists(), path
    assert len(list((results / "sampling").rglob("T*_r0.parquet"))) == 8
    assert len(list((results / "labels" / "xtb").glob("chunk_*.parquet"))) == 3
    # the toy's tblite labels fail their convergence gates, and allow_unconverged lets them through
    for seed in ("rp1_slab", "alpha"):
        gate = json.loads((results / "convergence" / "xtb" / f"{seed}.json").read_text())
        assert gate["passed"] is False and gate["failures"] and gate["allow_unconverged"] is True


@pytest.mark.slow
def test_every_job_records_its_time(toy_run):
    from hipqeq.timings import read_benchmarks, stage_rows

    logs = {p.relative_to(toy_run / "logs").as_posix().removesuffix(".log")
            for p in (toy_run / "logs").rglob("*.log")}
    jobs = read_benchmarks(toy_run)
    assert set(jobs.job) <= logs
    assert set(jobs.stage) == {log.split("/")[0] for log in logs}
    per_stage = jobs.stage.value_counts()
    assert per_stage["sample_md"] == 8 and per_stage["label_xtb"] == 3 and per_stage["validate"] == 1
    assert (jobs.wall_s > 0).all()
    assert stage_rows(jobs)[-1]["jobs"] == len(jobs)


@pytest.mark.slow
def test_counts_are_conserved_from_selection_to_gather(toy_run):
    from hipqeq.data import read_table

    results = toy_run / "results"
    for level in ("xtb", "dft"):
        selected = read_table(results / "selection" / f"{level}.parquet").num_rows
        gathered = read_table(results / "datasets" / f"{level}.parquet")
        assert gathered.num_rows == selected
        counts = json.loads((results / "datasets" / f"{level}_counts.json").read_text())
        assert counts["total"] == selected
    assert json.loads((results / "datasets" / "xtb_counts.json").read_text())["status"].get("ok", 0) > 0


@pytest.mark.slow
def test_every_round_of_labels_is_gathered_under_the_failure_limit(toy_run):
    """Each active-learning round's gather ran with selection.max_failed_fraction, its
    earlier rounds' dataset passed as --base (not counted against the round's labels)."""
    summary = snakemake(toy_run, "--detailed-summary").stdout.splitlines()
    header = summary[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in summary[1:]]
    rounds = [row for row in rows if row["rule"] == "gather_active" and row["output_file"].endswith("xtb.parquet")]
    assert rounds, "the toy run gathered no active-learning round"
    for row in rounds:
        assert "--max-failed-fraction 0.5" in row["shellcmd"], row["shellcmd"]
        assert row["shellcmd"].startswith("hipqeq gather --base results/"), row["shellcmd"]


@pytest.mark.slow
def test_metrics_follow_their_schema(toy_run):
    from hipqeq.validation import METRICS_JSON_KEYS

    report = json.loads((toy_run / "results" / "validation" / "metrics.json").read_text())
    assert set(report) == set(METRICS_JSON_KEYS)
    metrics = report["metrics"]
    for reference in ("xtb", "dft"):
        for model in ("4g", "baseline"):
            assert METRIC_KEYS <= set(metrics[reference][model]["overall"])
    assert metrics["xtb"]["4g"]["overall"]["energy_mae_mev_per_atom"] >= 0
    assert metrics["xtb"]["4g"]["overall"]["charge_mae_e"] >= 0
    assert metrics["xtb"]["baseline"]["overall"]["charge_mae_e"] is None
    assert metrics["dft"]["4g"]["overall"]["charge_mae_e"] >= 0
    assert len(report["md"]) == 4  # (4g, baseline) x 2 md_structures
    assert all(isinstance(run["flew_off"], bool) for run in report["md"])


@pytest.mark.slow
def test_figures_are_non_empty_images(toy_run):
    figures = sorted((toy_run / "results" / "validation").rglob("*.png"))
    assert len(figures) >= 5
    for figure in figures:
        image = matplotlib.image.imread(figure)
        assert image.shape[0] > 100 and image.shape[1] > 100, figure
        assert image.std() > 0, f"{figure} is blank"


@pytest.mark.slow
def test_a_raised_max_rounds_continues_the_finished_rounds(toy_run, tmp_path):
    """Raising active_learning.max_rounds on a finished run and forcing the report (README
    "Active learning") schedules the next round (its committee, walkers and selection) and
    redoes no finished round's selection or labels; after a converged round it schedules
    none. (Before the rerun test below, which deletes a label chunk.)"""
    config = yaml.safe_load(TOY_CONFIG.read_text())
    config["active_learning"]["max_rounds"] += 1
    raised = tmp_path / "toy.yaml"
    raised.write_text(yaml.safe_dump(config, sort_keys=False))  # params compare as ordered dicts
    # another config path changes every rule's command line: leave the code trigger out
    jobs = planned_jobs(snakemake(toy_run, "-n", "--configfile", str(raised), "--forcerun", "active_report",
                                  "--rerun-triggers", "mtime", "params", "input").stdout)
    summary = json.loads((toy_run / "results" / "active" / "summary.json").read_text())
    if summary["stopped_by"] in ("accurate_fraction", "no_candidates"):
        assert "explore" not in jobs and "select_candidates" not in jobs
        return
    n_models = config["active_learning"]["n_models"]
    assert jobs.get("explore") == 1 and jobs.get("select_candidates") == 1  # the new round's only
    assert jobs.get("train_active_short_range") == n_models
    assert "sample_md" not in jobs and "label_xtb" not in jobs
    if summary["rounds"][-1]["n_selected"]:  # else its (empty) label chunks are still to make
        assert "label_active" not in jobs
    assert jobs.get("gather_active_final") == 1


@pytest.mark.slow
def test_enabling_the_peer_trains_only_the_peer(toy_run, tmp_path):
    """Turning training.peer on in a finished run schedules the MACE peer and the
    validation that compares it, and retrains no HIP-NN model (their jobs do not depend
    on the peer's section)."""
    config = yaml.safe_load(TOY_CONFIG.read_text())
    config["training"]["peer"] = {"enabled": True, "n_models": 1, "fit": {"max_epochs": 3}}
    with_peer = tmp_path / "toy.yaml"
    with_peer.write_text(yaml.safe_dump(config, sort_keys=False))
    jobs = planned_jobs(snakemake(toy_run, "-n", "--configfile", str(with_peer),
                                  "--rerun-triggers", "mtime", "params", "input").stdout)
    assert jobs == {"train_peer": 1, "validate": 1, "all": 1}


def test_raising_n_dft_labels_dft_frames_only(toy_run, tmp_path):
    """More DFT frames (selection.n_dft) take a longer prefix of the same xTB selection
    (rule select_dft): no frame is selected, and none labelled with xTB, again (the toy's
    charge model learns the DFT charges, so the models retrain)."""
    config = yaml.safe_load(TOY_CONFIG.read_text())
    config["selection"]["n_dft"] += 1
    more_dft = tmp_path / "toy.yaml"
    more_dft.write_text(yaml.safe_dump(config, sort_keys=False))
    jobs = planned_jobs(snakemake(toy_run, "-n", "--configfile", str(more_dft),
                                  "--rerun-triggers", "mtime", "params", "input").stdout)
    assert jobs["select_dft"] == 1 and jobs["label_dft"] == config["selection"]["n_dft"]  # chunks of 1
    assert not {"sample_md", "sample_rattle", "select", "label_xtb", "gather_xtb"} & set(jobs)


def test_a_killed_training_job_resumes_from_its_checkpoint(toy_run, tmp_path):
    """A training job killed outright (a SLURM time limit, a lost node, the end of a
    session) and run again with --rerun-incomplete continues from the checkpoint it left
    beside its output (Snakemake deleted the incomplete output, not the checkpoint)."""
    run = tmp_path / "toy"
    shutil.copytree(toy_run, run, symlinks=True)
    model = run / "results" / "models" / "baseline_0"
    checkpoint = model.with_name("baseline_0.resume.pt")
    shutil.rmtree(model)
    command, env = snakemake_command(run, "results/models/baseline_0")
    head = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and head.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(head.pid, signal.SIGKILL)  # the head and its job, as a node loss would
    head.wait()
    assert checkpoint.exists(), "the training job saved no checkpoint before it was killed"
    assert not (model / "model.json").exists()

    snakemake(run, "--unlock")
    snakemake(run, "--rerun-incomplete", "results/models/baseline_0")
    meta = json.loads((model / "model.json").read_text())
    assert meta["epochs_resumed"] >= 1
    assert meta["epochs_run"] > meta["epochs_resumed"]
    assert not checkpoint.exists()


def test_rerun_does_nothing_and_one_chunk_reruns_only_its_dependents(toy_run):
    assert planned_jobs(snakemake(toy_run, "-n").stdout) == {}
    (toy_run / "results" / "labels" / "xtb" / "chunk_1.parquet").unlink()
    jobs = planned_jobs(snakemake(toy_run, "-n").stdout)
    assert jobs.get("label_xtb") == 1
    assert "sample_md" not in jobs and "select" not in jobs and "label_dft" not in jobs
    # every model shares the split, which waits for the xTB labels (each member's training
    # rows must span the energy reference of the labelled parents), so all retrain
    assert {"gather_xtb", "split", "train_charges", "train_short_range", "train_baseline", "validate"} <= set(jobs)


@pytest.mark.slow
def test_report_builds(toy_run):
    import zipfile

    snakemake(toy_run, "--report", str(toy_run / "results" / "report.zip"))
    names = [Path(n).name for n in zipfile.ZipFile(toy_run / "results" / "report.zip").namelist()]
    for figure in ("training_curves.png", "parity_xtb_forces.png", "parity_dft_charges.png",
                   "md_stability.png", "metrics.md", "rp1_slab.csv", "rp1_slab.png", "alpha.csv",
                   "rounds.md", "fractions.md", "deviation_histogram.png", "volume.png", "energy.png", "tilts.png"):
        assert figure in names, f"{figure} missing from the report"


@pytest.mark.slow
def test_property_rules_give_finite_values_with_error_bars(toy_run):
    """The toy's NPT properties of alpha: a row per temperature with finite means and
    positive, finite error bars, and the slopes' fits (whatever the toy model's physics)."""
    import numpy as np
    import pandas as pd

    directory = toy_run / "results" / "properties" / "alpha"
    table = pd.read_parquet(directory / "properties.parquet")
    assert table["temperature_K"].tolist() == [150.0, 300.0]
    for value, error in (("volume_per_atom_A3", "volume_per_atom_err_A3"),
                         ("potential_energy_per_atom_eV", "potential_energy_per_atom_err_eV")):
        assert np.isfinite(table[value]).all() and np.isfinite(table[error]).all() and (table[error] > 0).all()
    assert (table["n_equilibrated_frames"] >= 8).all() and np.isfinite(table["tilt_mean_deg"]).all()
    summary = json.loads((directory / "summary.json").read_text())
    assert np.isfinite(summary["thermal_expansion_per_K"]) and summary["thermal_expansion_err_per_K"] > 0
    assert np.isfinite(summary["dU_dT_kB_per_atom"]) and summary["dU_dT_err_kB_per_atom"] > 0


@pytest.mark.slow
def test_active_learning_rounds_run_until_their_stop(toy_run):
    """The toy's rounds (max_rounds 2): each round explored, classified and decided; the
    loop stopped by accuracy or at round 2; every round that labelled grew the dataset."""
    from hipqeq.data import read_table

    active = toy_run / "results" / "active"
    summary = json.loads((active / "summary.json").read_text())
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, len(rounds) + 1)) and 1 <= len(rounds) <= 2
    assert summary["stopped_by"] == (rounds[-1]["reason"] if rounds[-1]["stop"] else "max_rounds")
    assert len(rounds) == 2 or summary["stopped_by"] in ("accurate_fraction", "no_candidates")
    assert not any(r["stop"] for r in rounds[:-1])  # a round that stops ends the loop
    previous = read_table(toy_run / "results" / "datasets" / "xtb.parquet")
    for r in rounds:
        assert r["n_frames"] == sum(r["counts"].values()) > 0
        assert r["validation"]["force_mae_mev_per_A"] > 0
        if r["n_selected"]:
            dataset = read_table(active / f"r{r['round']}" / "xtb.parquet")
            assert set(previous.column("structure_id").to_pylist()) < set(dataset.column("structure_id").to_pylist())
            assert dataset.num_rows == previous.num_rows + r["n_selected"]
            previous = dataset
    assert not (active / f"r{len(rounds) + 1}").exists()  # no round after the stop
    assert len((active / "rounds.md").read_text().splitlines()) == 2 + len(rounds)


@pytest.mark.slow
def test_the_study_models_learn_every_label_of_every_round(toy_run):
    """With active learning the validated models (results/models) train on every label
    after the last round (results/active/xtb.parquet), not on round 0's alone, and no
    walker started from a held-out test parent."""
    from hipqeq.data import read_splits, read_table
    from hipqeq.training.data import file_sha256

    results = toy_run / "results"
    final = results / "active" / "xtb.parquet"
    rounds = json.loads((results / "active" / "summary.json").read_text())["rounds"]
    labelled = [r["round"] for r in rounds if r["n_selected"]]
    last = results / "active" / f"r{labelled[-1]}" / "xtb.parquet" if labelled else results / "datasets" / "xtb.parquet"
    assert read_table(final).column("structure_id").to_pylist() == read_table(last).column("structure_id").to_pylist()
    for model in ("4g_0", "baseline_0"):
        dataset = json.loads((results / "models" / model / "model.json").read_text())["dataset"]
        assert dataset["path"] == "results/active/xtb.parquet" and dataset["sha256"] == file_sha256(final)
    structures = read_table(results / "structures" / "structures.parquet")
    test_names = {name for name, parent in zip(structures.column("structure_name").to_pylist(),
                                               structures.column("parent_id").to_pylist())
                  if parent in set(read_splits(results / "splits.json")["test"])}
    assert test_names  # the toy holds a test parent out
    for r in rounds:
        walkers = json.loads((results / "active" / f"r{r['round']}" / "walkers.json").read_text())["walkers"]
        assert walkers and not {w["structure_name"] for w in walkers} & test_names
