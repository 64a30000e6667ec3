"""Active learning: model deviation, trust window, candidate selection, stop criterion
and exploration walkers, on small random-weight committees (CuAu slabs)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from hipqeq.active.candidates import select_candidates, select_round
from hipqeq.active.deviation import deviation_table, frame_deviation, read_deviations, write_deviations
from hipqeq.active.explore import explore_round, walker_plan
from hipqeq.active.stop import CONTINUE, CONVERGED, MAX_ROUNDS, NO_CANDIDATES, ends_loop, stop_decision, stopped_by
from hipqeq.active.trust import ACCURATE, CANDIDATE, FAILED, TrustWindow, classify
from hipqeq.calculator import committee_members, load_committee
from hipqeq.config import load_config
from hipqeq.data import read_table, table_from_records, record_from_atoms, write_dataset
from hipqeq.errors import ConfigError
from tests.unit.test_calculator import slab, write_model

WINDOW = TrustWindow(0.05, 0.15, 0.02, 0.1)


@pytest.fixture(scope="module")
def committees(tmp_path_factory):
    root = tmp_path_factory.mktemp("committees")
    return {"different": [write_model(root / "a", 1), write_model(root / "b", 2)],
            "identical": [write_model(root / "c", 1), write_model(root / "d", 1)]}


def test_deviation_is_the_largest_per_atom_force_and_charge_spread(committees):
    atoms = slab()
    potentials = load_committee(committees["different"], device="cpu")
    members = committee_members(potentials, atoms, want_stress=False)
    forces = np.stack([m["forces"] for m in members])
    per_atom = np.sqrt(((forces - forces.mean(0)) ** 2).sum(-1).mean(0))
    charges = np.stack([m["charges"] for m in members])
    deviation = frame_deviation(potentials, atoms)
    assert deviation["force_deviation_eV_A"] == pytest.approx(per_atom.max()) and per_atom.max() > 0
    assert deviation["charge_deviation_e"] == pytest.approx(charges.std(0).max()) and charges.std(0).max() > 0


def test_classify_follows_the_trust_window():
    force = [0.01, 0.05, 0.10, 0.15, 0.30, np.nan, 0.01, 0.01]
    charge = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.05, 0.2]
    assert classify(force, charge, WINDOW).tolist() == [
        ACCURATE, CANDIDATE, CANDIDATE, FAILED, FAILED, FAILED, CANDIDATE, FAILED]
    # without charge bounds the charge spread plays no part
    assert classify(force, charge, TrustWindow(0.05, 0.15)).tolist()[6:] == [ACCURATE, ACCURATE]


@pytest.mark.parametrize("bounds", [(0.2, 0.1, None, None), (0.05, 0.15, 0.02, None), (0.05, 0.15, 0.2, 0.1)])
def test_trust_window_refuses_inverted_or_half_bounds(bounds):
    with pytest.raises(ConfigError, match="trust window"):
        TrustWindow(*bounds)


def test_a_round_converges_on_its_accurate_fraction():
    mostly_accurate = [ACCURATE] * 19 + [CANDIDATE]
    assert stop_decision(mostly_accurate, 1, 0.95, 1).reason == CONVERGED
    decision = stop_decision(mostly_accurate, 1, 0.96, 1)
    assert not decision.stop and decision.reason == CONTINUE and decision.accurate_fraction == 0.95
    nothing = stop_decision([], 1, 0.5, 0)
    assert nothing.n_frames == 0 and nothing.reason != CONVERGED  # no frame at all is not convergence


def test_a_round_with_nothing_to_label_ends_the_loop_without_converging():
    """Every frame that is not accurate failed (or a budget of 0): the next round would
    retrain the same committee on the same labels, so the loop ends, and says why."""
    decision = stop_decision([ACCURATE, FAILED, FAILED], 2, 0.95, 0)
    assert decision.stop and decision.reason == NO_CANDIDATES and decision.accurate_fraction == pytest.approx(1 / 3)
    as_json = dataclasses.asdict(decision)
    assert ends_loop(as_json) and stopped_by([dataclasses.asdict(stop_decision([CANDIDATE], 1, 0.95, 1)), as_json]) == NO_CANDIDATES


def test_the_round_limit_is_the_workflows_not_a_rounds_decision():
    """A decision never bakes in max_rounds: raising it continues a finished study. A
    decision file written when it did (reason max_rounds) does not stop the loop either;
    the rounds end by convergence or by running out."""
    not_yet = dataclasses.asdict(stop_decision([CANDIDATE], 5, 0.5, 1))
    done = dataclasses.asdict(stop_decision([ACCURATE], 2, 0.5, 0))
    old_style = {"round": 1, "stop": True, "reason": MAX_ROUNDS}
    assert not ends_loop(not_yet) and not ends_loop(old_style) and ends_loop(done)
    assert stopped_by([old_style, not_yet]) == MAX_ROUNDS and stopped_by([not_yet, done]) == CONVERGED
    assert stopped_by([]) is None


def explored(n: int, force_deviation, family: str = "pristine"):
    """``n`` rattled CuAu slabs as unlabelled frames, and their deviation rows."""
    frames, rows = [], []
    for k in range(n):
        atoms = slab(seed=k)
        atoms.rattle(0.02 * (k + 1), seed=100 + k)
        atoms.info.update(family=family, structure_name="cuau_slab", source="active")
        record = record_from_atoms(atoms)
        frames.append(record)
        rows.append({"round": 1, "walker": "w", "step": k, "structure_id": record["structure_id"],
                     "structure_name": "cuau_slab", "family": family, "temperature_K": 300.0,
                     "force_deviation_eV_A": force_deviation[k], "charge_deviation_e": 0.0,
                     "energy_std_eV": 0.0, "classification": ""})
    return table_from_records(frames), deviation_table(rows)


def test_selection_takes_candidates_only_most_uncertain_first():
    force = [0.01, 0.06, 0.14, 0.30, 0.09, 0.12, 0.02, 0.5]
    frames, deviations = explored(len(force), force)
    selected, classified = select_candidates(frames, deviations, WINDOW, budget=2)
    candidates = {sid for sid, f in zip(frames.column("structure_id").to_pylist(), force) if 0.05 <= f < 0.15}
    chosen = selected.column("structure_id").to_pylist()
    assert len(chosen) == 2 and set(chosen) <= candidates
    assert chosen[0] == frames.column("structure_id")[2].as_py()  # 0.14 eV/A: the most uncertain candidate
    assert classified.column("classification").to_pylist() == [
        ACCURATE, CANDIDATE, CANDIDATE, FAILED, CANDIDATE, CANDIDATE, ACCURATE, FAILED]
    everything, _ = select_candidates(frames, deviations, WINDOW, budget=100)
    assert set(everything.column("structure_id").to_pylist()) == candidates


def test_a_committee_of_identical_members_selects_nothing(committees, tmp_path):
    potentials = load_committee(committees["identical"], device="cpu")
    frames, _ = explored(4, [0.0] * 4)
    force = [frame_deviation(potentials, a)["force_deviation_eV_A"]
             for a in (slab(seed=k) for k in range(4))]
    assert force == [0.0] * 4
    _, deviations = explored(4, force)
    selected, classified = select_candidates(frames, deviations, WINDOW, budget=10)
    assert selected.num_rows == 0 and set(classified.column("classification").to_pylist()) == {ACCURATE}


CONFIG = """\
seed: 3
structures: {seeds: [{name: cuau_slab, builder: phase, phase: alpha}, {name: cuau_bad, builder: phase, phase: alpha}]}
selection: {n_xtb: 1, n_dft: 0}
active_learning:
  enabled: true
  max_rounds: 2
  structures: [cuau_slab, cuau_bad]
  temperatures_K: [100]
  steps: 4
  frame_interval: 2
  budget: 2
  trust_lo_force_eV_A: 0.0
  trust_hi_force_eV_A: 1000.0
  trust_lo_charge_e: null
  trust_hi_charge_e: null
"""


@pytest.fixture
def explore_inputs(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    rows = []
    for name in ("cuau_slab", "cuau_bad"):
        atoms = slab()
        atoms.info.update(structure_name=name, parent_id=name, family="pristine")
        rows.append(atoms)
    return {"config": load_config(config), "config_path": config, "structures": write_dataset(rows, tmp_path / "structures.parquet"),
            "root": tmp_path}


def test_a_walker_that_blows_up_is_recorded_and_the_round_goes_on(committees, explore_inputs, monkeypatch):
    import hipqeq.active.explore as explore

    real_run_md = explore.run_md

    def run_md(atoms, *args, **kwargs):
        if atoms.info["structure_name"] == "cuau_bad":
            raise RuntimeError("neighbour list overflow")
        return real_run_md(atoms, *args, **kwargs)

    monkeypatch.setattr(explore, "run_md", run_md)
    root = explore_inputs["root"]
    config = explore_inputs["config"]
    assert [w.name for w in walker_plan(config)] == ["cuau_slab_T100_w0", "cuau_bad_T100_w0"]
    summary = explore_round(config, committees["different"], explore_inputs["structures"], 1,
                            root / "frames.parquet", root / "deviations.parquet", root / "walkers.json",
                            root / "traj", device="cpu")
    good, bad = summary["walkers"]
    assert bad["stopped_early"] and bad["reason"] == "RuntimeError: neighbour list overflow" and bad["n_frames"] == 0
    assert not good["stopped_early"] and good["n_frames"] == 2
    deviations = read_deviations([root / "deviations.parquet"])
    frames = read_table(root / "frames.parquet")
    assert deviations.column("step").to_pylist() == [2, 4]
    assert deviations.column("walker").to_pylist() == ["cuau_slab_T100_w0"] * 2
    assert (deviations.column("force_deviation_eV_A").to_numpy() > 0).all()
    assert frames.column("structure_id").to_pylist() == deviations.column("structure_id").to_pylist()
    assert set(frames.column("source").to_pylist()) == {"active"}
    assert json.loads((root / "walkers.json").read_text())["walkers"][1]["reason"] == bad["reason"]

    # the round's selection: both frames are candidates under the wide window: not converged
    decision = select_round(config, root / "frames.parquet", [root / "deviations.parquet"], 1,
                            root / "selection.parquet", root / "decision.json")
    assert decision["counts"] == {ACCURATE: 0, CANDIDATE: 2, FAILED: 0} and decision["n_selected"] == 2
    assert decision["reason"] == CONTINUE and not decision["stop"]
    no_budget = {**config, "active_learning": {**config["active_learning"], "budget": 0}}
    decision = select_round(no_budget, root / "frames.parquet", [root / "deviations.parquet"], 1,
                            root / "selection.parquet", root / "decision.json")
    assert decision["n_selected"] == 0 and decision["stop"] and decision["reason"] == NO_CANDIDATES


def test_deviation_table_round_trip(tmp_path):
    _, deviations = explored(3, [0.1, 0.2, 0.3])
    write_deviations(deviations, tmp_path / "d.parquet")
    assert read_deviations([tmp_path / "d.parquet"]).equals(deviations)


def test_explore_and_select_candidates_verbs(committees, explore_inputs, capsys):
    from hipqeq.cli import main

    root, config = explore_inputs["root"], str(explore_inputs["config_path"])
    models = [str(m) for m in committees["different"]]
    args = ["explore", "--config", config, "--round", "2", "--model", *models, "--structures",
            str(explore_inputs["structures"]), "--output", str(root / "f.parquet"), "--deviations",
            str(root / "d.parquet"), "--summary", str(root / "w.json"), "--trajectory-dir", str(root / "t"),
            "--device", "cpu"]
    assert main(args) == 0
    assert "round 2: 4 frame(s) from 2 walker(s), 0 stopped early" in capsys.readouterr().out
    assert main(args[:7] + args[8:]) == 2  # one model is no committee
    assert main(["select-candidates", "--config", config, "--round", "2", "--frames", str(root / "f.parquet"),
                 "--deviations", str(root / "d.parquet"), "--output", str(root / "s.parquet"),
                 "--decision", str(root / "dec.json")]) == 0
    assert "candidate 4" in capsys.readouterr().out
    decision = json.loads((root / "dec.json").read_text())
    assert not decision["stop"] and decision["reason"] == CONTINUE and decision["n_selected"] == 2


def test_each_rounds_dataset_contains_the_previous_one(tmp_path, rng):
    """gather_active's call: the previous round's dataset (--base) plus the round's label
    chunks (one failed row of two, at the limit; one empty chunk) keeps every previous row
    and adds the new ones."""
    from hipqeq.cli import main
    from tests.conftest import labelled

    previous = [labelled(slab(seed=k), rng, source="md") for k in range(3)]
    new = [labelled(slab(seed=10 + k), rng, source="active") for k in range(2)]
    new[1].calc = None
    new[1].info.update(status="scf_not_converged", error="SCF did not converge")
    write_dataset(previous, tmp_path / "r0.parquet")
    write_dataset(new, tmp_path / "chunk_0.parquet")
    write_dataset([], tmp_path / "chunk_1.parquet")
    assert main(["gather", "--base", str(tmp_path / "r0.parquet"), str(tmp_path / "chunk_0.parquet"),
                 str(tmp_path / "chunk_1.parquet"), "--output", str(tmp_path / "r1.parquet"),
                 "--counts", str(tmp_path / "counts.json"), "--max-failed-fraction", "0.5"]) == 0
    before = read_table(tmp_path / "r0.parquet").column("structure_id").to_pylist()
    after = read_table(tmp_path / "r1.parquet")
    assert set(before) < set(after.column("structure_id").to_pylist()) and after.num_rows == 5
    assert sorted(after.column("status").to_pylist()) == ["ok"] * 4 + ["scf_not_converged"]


def test_report_holds_fractions_labels_errors_and_the_stop_reason(tmp_path):
    from hipqeq.active.report import fraction_table, labels_added, write_active_report

    _, first = explored(4, [0.01, 0.1, 0.1, 0.3], family="pristine")
    frames, second = explored(2, [0.01, 0.02], family="vacancy_I")
    second = second.set_column(0, "round", pa.array([2, 2], pa.int32()))
    window_config = {"active_learning": {"trust_lo_force_eV_A": 0.05, "trust_hi_force_eV_A": 0.15,
                                         "trust_lo_charge_e": None, "trust_hi_charge_e": None}}
    from hipqeq.active.candidates import classify_table

    first, second = (classify_table(t, TrustWindow.from_config(window_config)) for t in (first, second))
    write_deviations(first, tmp_path / "d1.parquet")
    write_deviations(second, tmp_path / "d2.parquet")
    table = fraction_table(pa.concat_tables([first, second]))
    assert [(r["round"], r["family"], r["n_frames"]) for r in table] == [(1, "pristine", 4), (2, "vacancy_I", 2)]
    assert table[0]["candidate_fraction"] == 0.5 and table[0]["failed_fraction"] == 0.25
    assert table[1]["accurate_fraction"] == 1.0
    # the round-2 frames were labelled (explored() reuses seeds: the ids are shared by both rounds'
    # first two frames, and a frame is one label, counted in the first round that explored it)
    dataset = table_from_records([{**r, "status": "ok"} for r in frames.to_pylist()])
    assert labels_added(pa.concat_tables([first, second]), dataset) == {1: {"ok": 2}, 2: {}}
    decisions, walkers, validations = [], [], []
    for round_, stop, reason, counts in ((1, False, CONTINUE, {ACCURATE: 1, CANDIDATE: 2, FAILED: 1}),
                                         (2, True, CONVERGED, {ACCURATE: 2, CANDIDATE: 0, FAILED: 0})):
        for name, content in (("decision", {"round": round_, "stop": stop, "reason": reason, "n_frames": 4,
                                            "accurate_fraction": 0.25, "n_selected": 2, "counts": counts}),
                              ("walkers", {"walkers": [{"stopped_early": round_ == 1}]}),
                              ("validation", {"force_mae_mev_per_A": 100.0 / round_, "energy_mae_mev_per_atom": 5.0,
                                              "subset": "test" if round_ == 1 else "all"})):
            path = tmp_path / f"{name}{round_}.json"
            path.write_text(json.dumps(content))
            {"decision": decisions, "walkers": walkers, "validation": validations}[name].append(path)
    write_dataset([], tmp_path / "empty.parquet")
    summary = write_active_report(window_config, [tmp_path / "d1.parquet", tmp_path / "d2.parquet"], decisions,
                                  walkers, validations, tmp_path / "empty.parquet", tmp_path / "report")
    assert summary["stopped_by"] == CONVERGED
    rounds_md = (tmp_path / "report" / "rounds.md").read_text().splitlines()
    assert len(rounds_md) == 4 and "| 2 | 4 | 0.5 |" in rounds_md[3] and rounds_md[3].endswith("accurate_fraction |")
    # round 2's errors were measured on every row (no ok test row): the table says so
    assert "| errors_on |" in rounds_md[0] and "| test | 100 |" in rounds_md[2] and "| all | 50 |" in rounds_md[3]
    assert (tmp_path / "report" / "deviation_histogram.png").stat().st_size > 1000
    assert "vacancy_I" in (tmp_path / "report" / "fractions.md").read_text()


def test_a_rerun_resumes_finished_walkers_without_new_md(committees, explore_inputs):
    """The walkers' trajectories are checkpoints: a second run of the round (e.g. after
    a kill before its outputs were written) runs no MD step again and gives the same
    frames and deviations."""
    root, config = explore_inputs["root"], explore_inputs["config"]

    def explore(tag):
        summary = explore_round(config, committees["different"], explore_inputs["structures"], 1,
                                root / f"{tag}.parquet", root / f"{tag}_dev.parquet", root / f"{tag}.json",
                                root / "traj", device="cpu")
        return summary, read_deviations([root / f"{tag}_dev.parquet"])

    first, deviations = explore("first")
    again, deviations_again = explore("again")
    assert [w["resumed_from_step"] for w in first["walkers"]] == [0, 0]
    assert [w["resumed_from_step"] for w in again["walkers"]] == [4, 4]  # the last step: nothing to run
    assert deviations_again.equals(deviations) and deviations.num_rows == 4


@pytest.mark.parametrize("charge_reference, ok", [("dft", False), ("xtb", True)])
def test_charge_bounds_need_charge_models_that_learn_between_rounds(charge_reference, ok):
    from hipqeq.config import validate_config
    import yaml

    config = yaml.safe_load(CONFIG)
    config["active_learning"].update(trust_lo_charge_e=0.02, trust_hi_charge_e=0.1)
    config["training"] = {"charge_reference": charge_reference}
    if ok:
        assert validate_config(config)["active_learning"]["trust_hi_charge_e"] == 0.1
    else:
        with pytest.raises(ConfigError, match="charge_reference xtb"):
            validate_config(config)


def test_walkers_on_a_supercell_scale_the_total_charge_and_refuse_the_vacuum_axis():
    from hipqeq.active.explore import walker_start

    parent = slab()
    parent.info.update(structure_name="cuau_slab", total_charge=1.0)
    start = walker_start(parent, [2, 2, 1])
    assert len(start) == 4 * len(parent) and start.info["total_charge"] == 4.0
    assert parent.info["total_charge"] == 1.0
    assert walker_start(parent, [1, 1, 1]) is parent
    with pytest.raises(ConfigError, match="not periodic along axis 2"):
        walker_start(parent, [1, 1, 2])
    parent.info["unpaired_electrons"] = 0
    holes = walker_start(parent, [2, 2, 1], charge_offset_e=1)
    assert holes.info["total_charge"] == 5.0 and "unpaired_electrons" not in holes.info
    assert walker_start(parent, [1, 1, 1], charge_offset_e=-1).info["total_charge"] == 0.0
    assert parent.info == {"structure_name": "cuau_slab", "total_charge": 1.0, "unpaired_electrons": 0}


def test_walkers_explore_the_configured_charge_offsets(committees, explore_inputs):
    config = {**explore_inputs["config"], "active_learning": {**explore_inputs["config"]["active_learning"],
                                                               "charge_offsets_e": [0, 1],
                                                               "structures": ["cuau_slab"]}}
    assert [w.name for w in walker_plan(config)] == ["cuau_slab_T100_w0", "cuau_slab_T100_qp1_w0"]
    root = explore_inputs["root"]
    summary = explore_round(config, committees["different"], explore_inputs["structures"], 1,
                            root / "frames.parquet", root / "deviations.parquet", root / "walkers.json",
                            root / "traj", device="cpu")
    assert [w["n_frames"] for w in summary["walkers"]] == [2, 2]
    frames = read_table(root / "frames.parquet").to_pylist()
    walkers = dict(zip(read_deviations([root / "deviations.parquet"]).column("structure_id").to_pylist(),
                       read_deviations([root / "deviations.parquet"]).column("walker").to_pylist()))
    charges = {walkers[f["structure_id"]]: f["total_charge"] for f in frames}
    assert charges == {"cuau_slab_T100_w0": 0.0, "cuau_slab_T100_qp1_w0": 1.0}
    assert {f["structure_name"] for f in frames} == {"cuau_slab"}
    assert {f["active_round"] for f in frames} == {1}
    assert {f["trajectory"] for f in frames} == {str(root / "traj" / f"{w}.traj") for w in charges}
    assert all(Path(f["trajectory"]).exists() for f in frames)


def test_a_walker_restarts_from_its_last_trusted_frame(committees, explore_inputs, monkeypatch):
    """Segment 0 fails at its second frame (step 4): that frame is kept as failed, the
    walker goes on from step 2 (the last trusted frame) with a new random stream, and
    the restarted segment's frame at step 4 is a different geometry."""
    import hipqeq.active.explore as explore

    config = {**explore_inputs["config"], "active_learning": {**explore_inputs["config"]["active_learning"],
                                                               "trust_hi_force_eV_A": 0.5, "restarts": 1,
                                                               "structures": ["cuau_slab"]}}
    calls = iter([0.1, 1.0, 0.1])  # force deviations, in evaluation order

    def deviation(potentials, frame):
        return {"force_deviation_eV_A": next(calls), "charge_deviation_e": 0.0, "energy_std_eV": 0.0}

    monkeypatch.setattr(explore, "frame_deviation", deviation)
    root = explore_inputs["root"]
    summary = explore_round(config, committees["different"], explore_inputs["structures"], 1,
                            root / "frames.parquet", root / "deviations.parquet", root / "walkers.json",
                            root / "traj", device="cpu")
    (walker,) = summary["walkers"]
    assert walker["restarts"] == [{"failed_step": 4, "restarted_from_step": 2}]
    assert walker["steps_done"] == 4 and walker["n_frames"] == 3
    deviations = read_deviations([root / "deviations.parquet"])
    assert deviations.column("step").to_pylist() == [2, 4, 4]
    assert deviations.column("classification").to_pylist() == [CANDIDATE, FAILED, CANDIDATE]
    ids = deviations.column("structure_id").to_pylist()
    assert len(set(ids)) == 3
    assert (root / "traj" / "cuau_slab_T100_w0.restart1.traj").exists()
    # a frame names its walker's trajectory and the step counted from the walker's start
    frames = {f["structure_id"]: f for f in read_table(root / "frames.parquet").to_pylist()}
    assert [frames[i]["md_step"] for i in ids] == [2, 4, 4]
    assert {f["trajectory"] for f in frames.values()} == {str(root / "traj" / "cuau_slab_T100_w0.traj")}


def test_no_walker_starts_from_a_held_out_test_parent(explore_inputs):
    """Test parents are never explored, named in active_learning.structures or not (their
    labels would land in the test split, unlearnt), and a plan of test parents only is
    refused."""
    from hipqeq.active.explore import held_out_names
    from hipqeq.errors import ConfigError
    from hipqeq.plan import structure_names

    config = explore_inputs["config"]
    assert held_out_names(explore_inputs["structures"], ["cuau_bad", "elsewhere"]) == ["cuau_bad"]
    assert [w.name for w in walker_plan(config, held_out=["cuau_bad"])] == ["cuau_slab_T100_w0"]
    with pytest.raises(ConfigError, match="every structure to explore is a held-out test parent"):
        walker_plan(config, held_out=["cuau_slab", "cuau_bad"])
    config["active_learning"]["structures"] = []
    names = [w.structure_name for w in walker_plan(config)]
    assert names and set(names) == set(structure_names(config))
    kept = [w.structure_name for w in walker_plan(config, held_out=names[:1])]
    assert names[0] not in kept and set(kept) == set(names) - {names[0]}
