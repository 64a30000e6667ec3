"""MD: frames, temperatures, resume, failures, NPT masks; the `sample md` verb."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.calculators.calculator import CalculationFailed
from ase.calculators.lj import LennardJones
from ase.io.trajectory import Trajectory

from hipqeq.cli import main
from hipqeq.data import read_atoms, write_dataset
from hipqeq.sampling import MDSettings, run_md, sample_md_job
from hipqeq.structures import phase, ruddlesden_popper

ROOT = Path(__file__).resolve().parents[3]


class FailingLJ(LennardJones):
    """Lennard-Jones (sigma 3 A, so the perovskite stays put) that raises ``error`` (by
    default like a failed SCF) from its ``fail_after``-th calculation on."""

    def __init__(self, fail_after: int, error: Exception = CalculationFailed("SCF did not converge in 250 iterations")):
        super().__init__(sigma=3.0, epsilon=0.01, rc=6.0)
        self.fail_after, self.calls, self.error = fail_after, 0, error

    def calculate(self, *args, **kwargs):
        self.calls += 1
        if self.calls >= self.fail_after:
            raise self.error
        super().calculate(*args, **kwargs)


def _toy_config(tmp_path: Path, **sampling) -> Path:
    config = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
    config["sampling"].update(sampling)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _built(tmp_path: Path, atoms, name: str) -> Path:
    atoms.info.update(structure_name=name, family="pristine", source="build", total_charge=0.0)
    path = tmp_path / "structures.parquet"
    write_dataset([atoms], path)
    return path


def test_frame_steps_follow_equilibration_and_interval():
    settings = MDSettings(300.0, equilibration_steps=15, production_steps=40, frame_interval=10)
    assert settings.frame_steps() == [25, 35, 45, 55]
    assert settings.snapshot_steps() == [10, 15, 25, 35, 45, 55]


@pytest.mark.slow
def test_short_tblite_md_gives_sane_frames(tmp_path):
    """7-atom n = 1 slab, GFN1-xTB, 300 K through the CLI: four frames, thermalised."""
    structures = _built(tmp_path, ruddlesden_popper(1, "slab", vacuum=12.0), "rp1_slab")
    config = _toy_config(tmp_path, friction_per_fs=0.05)
    out, traj = tmp_path / "T300_r0.parquet", tmp_path / "T300_r0.traj"
    assert main(["sample", "md", "--config", str(config), "--structures", str(structures), "--name", "rp1_slab",
                 "--temperature-K", "300", "--replica", "0", "--output", str(out), "--trajectory", str(traj)]) == 0
    frames = read_atoms(out)
    assert len(frames) == 4
    assert {f.info["source"] for f in frames} == {"md"} and {f.info["status"] for f in frames} == {"unlabelled"}
    assert {f.info["temperature_K"] for f in frames} == {300.0}
    parent = read_atoms(structures)[0]
    assert {f.info["parent_id"] for f in frames} == {parent.info["structure_id"]}
    assert len({f.info["structure_id"] for f in frames}) == 4
    assert all(f.calc is None for f in frames)  # MD energies are not labels
    with Trajectory(traj) as trajectory:
        snapshots = list(trajectory)[1:]  # the step-0 snapshot has no energy yet
    # each frame's provenance locates it in its trajectory file
    assert {(f.info["active_round"], f.info["trajectory"]) for f in frames} == {(0, str(traj))}
    at_step = {s.info["md_step"]: s for s in snapshots}
    for frame in frames:
        np.testing.assert_allclose(frame.positions, at_step[frame.info["md_step"]].positions, rtol=0, atol=1e-9)
    temperatures = [s.get_temperature() for s in snapshots]
    energies = [s.get_potential_energy() for s in snapshots]
    # 7 atoms fluctuate strongly; a sane thermostat keeps them well within a factor ~3
    assert 100 < np.mean(temperatures) < 700 and max(temperatures) < 1500
    assert np.ptp(energies) < 2.0  # eV: no explosion
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["n_frames"] == 4 and not summary["stopped_early"]


def test_resume_continues_and_matches_an_uninterrupted_run(tmp_path):
    atoms = phase("alpha")
    short = MDSettings(200.0, timestep_fs=2.0, equilibration_steps=2, production_steps=4, frame_interval=2, seed=7)
    long = MDSettings(200.0, timestep_fs=2.0, equilibration_steps=2, production_steps=8, frame_interval=2, seed=7)
    first = run_md(atoms, FailingLJ(10**6), short, tmp_path / "a.traj")
    assert first.steps_done == 6 and len(first.frames) == 2
    counting = FailingLJ(10**6)
    resumed = run_md(atoms, counting, long, tmp_path / "a.traj")
    assert resumed.resumed_from_step == 6 and resumed.steps_done == 10
    assert counting.calls <= 5  # 4 new steps (+1 initial force call), not 10
    straight = run_md(atoms, FailingLJ(10**6), long, tmp_path / "b.traj")
    assert len(resumed.frames) == len(straight.frames) == 4
    for a, b in zip(resumed.frames, straight.frames):
        assert a.info["md_step"] == b.info["md_step"]
        assert np.array_equal(a.positions, b.positions)  # bit for bit: the RNG state is restored
    assert np.array_equal(first.frames[1].positions, straight.frames[1].positions)
    # asking again for fewer steps runs nothing and returns those frames
    again = run_md(atoms, FailingLJ(1), short, tmp_path / "a.traj")
    assert again.steps_done == 10 and len(again.frames) == 2 and not again.stopped_early


def test_resume_after_a_kill_mid_write(tmp_path):
    """A truncated last snapshot (killed while writing) is dropped, the rest resumed."""
    atoms = phase("alpha")
    settings = MDSettings(200.0, equilibration_steps=2, production_steps=6, frame_interval=2, seed=2)
    straight = run_md(atoms, FailingLJ(10**6), settings, tmp_path / "a.traj")
    path = tmp_path / "a.traj"
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 100)
    resumed = run_md(atoms, FailingLJ(10**6), settings, path)
    assert resumed.resumed_from_step == 6
    assert [f.positions.tobytes() for f in resumed.frames] == [f.positions.tobytes() for f in straight.frames]


def test_trajectory_of_another_run_is_not_resumed(tmp_path):
    atoms = phase("alpha")
    settings = MDSettings(200.0, equilibration_steps=2, production_steps=2, frame_interval=2, seed=1)
    run_md(atoms, FailingLJ(10**6), settings, tmp_path / "t.traj")
    other = MDSettings(300.0, equilibration_steps=2, production_steps=2, frame_interval=2, seed=1)
    outcome = run_md(atoms, FailingLJ(10**6), other, tmp_path / "t.traj")
    assert outcome.resumed_from_step == 0


@pytest.mark.parametrize("error", [CalculationFailed("SCF did not converge in 250 iterations"),
                                   torch.OutOfMemoryError("CUDA out of memory"),
                                   torch.linalg.LinAlgError("linalg.solve: singular matrix")],
                         ids=["scf", "cuda-oom", "singular-solve"])
def test_engine_failure_ends_trajectory_with_frames_so_far(tmp_path, error):
    settings = MDSettings(300.0, equilibration_steps=2, production_steps=8, frame_interval=2, seed=3)
    outcome = run_md(phase("alpha"), FailingLJ(6, error), settings, tmp_path / "t.traj")
    assert outcome.stopped_early and type(error).__name__ in outcome.reason and str(error) in outcome.reason
    assert 0 < len(outcome.frames) < 4
    assert all(f.info["md_step"] <= outcome.steps_done for f in outcome.frames)


def test_sample_md_job_survives_immediate_failure(tmp_path, monkeypatch):
    """An engine that fails on the first force call: the job writes zero frames, exits 0."""
    import hipqeq.engines

    monkeypatch.setattr(hipqeq.engines, "xtb_calculator", lambda **kwargs: FailingLJ(1))
    from hipqeq.config import load_config

    structures = _built(tmp_path, phase("alpha"), "alpha")
    out = tmp_path / "alpha" / "T100_r0.parquet"
    summary = sample_md_job(load_config(ROOT / "config" / "toy.yaml"), structures, "alpha", 100.0, 0,
                            out, tmp_path / "alpha" / "T100_r0.traj")
    assert summary["stopped_early"] and summary["n_frames"] == 0
    assert read_atoms(out) == []


def test_npt_breathes_along_periodic_directions_only(tmp_path):
    slab = ruddlesden_popper(1, "slab", vacuum=12.0, supercell=(2, 2, 1))
    settings = MDSettings(300.0, equilibration_steps=0, production_steps=10, frame_interval=10,
                          ensemble="npt", seed=5)
    outcome = run_md(slab, FailingLJ(10**6), settings, tmp_path / "npt.traj")
    (frame,) = outcome.frames
    assert frame.cell[2, 2] == pytest.approx(slab.cell[2, 2])
    assert not np.allclose(frame.cell.lengths()[:2], slab.cell.lengths()[:2])


def test_unknown_structure_name_is_named(tmp_path, capsys):
    structures = _built(tmp_path, phase("alpha"), "alpha")
    assert main(["sample", "rattle", "--config", str(ROOT / "config" / "toy.yaml"), "--structures",
                 str(structures), "--name", "beta", "--output", str(tmp_path / "r.parquet")]) == 2
    assert "no structure named 'beta' (has alpha)" in capsys.readouterr().err


def test_a_trajectory_of_another_engine_is_not_resumed():
    """The checkpoint fingerprint covers the level of theory and the engine settings."""
    from hipqeq.config import load_config
    from hipqeq.sampling.jobs import md_settings
    from tests.conftest import cubic_cspbi3

    config = load_config(Path(__file__).resolve().parents[3] / "config" / "toy.yaml")
    atoms = cubic_cspbi3()
    gfn1 = md_settings(config, "alpha", 300.0, 0).fingerprint(atoms)
    config["sampling"]["method"] = "GFN2-xTB"
    assert md_settings(config, "alpha", 300.0, 0).fingerprint(atoms) != gfn1
    config["sampling"]["method"] = "GFN1-xTB"
    config["xtb"]["electronic_temperature_K"] = 1000.0
    assert md_settings(config, "alpha", 300.0, 0).fingerprint(atoms) != gfn1


def test_barostat_settings_tell_npt_runs_apart_but_not_nvt_runs():
    """NVT runs never read the barostat settings: their checkpoints stay resumable."""
    from tests.conftest import cubic_cspbi3

    atoms = cubic_cspbi3()
    nvt, npt = MDSettings(300.0), MDSettings(300.0, ensemble="npt")
    assert MDSettings(300.0, pressure_GPa=1.0, taup_fs=50.0).fingerprint(atoms) == nvt.fingerprint(atoms)
    assert MDSettings(300.0, ensemble="npt", pressure_GPa=1.0).fingerprint(atoms) != npt.fingerprint(atoms)
    assert MDSettings(300.0, ensemble="npt", taut_fs=50.0).fingerprint(atoms) != npt.fingerprint(atoms)


def test_frames_carry_their_potential_energy_and_temperature(tmp_path):
    atoms = phase("alpha")
    settings = MDSettings(300.0, equilibration_steps=0, production_steps=6, frame_interval=3, ensemble="npt", seed=1)
    frames = run_md(atoms, FailingLJ(10**6), settings, tmp_path / "npt.traj").frames
    assert [f.info["md_step"] for f in frames] == [3, 6]
    for frame in frames:
        assert frame.info["md_potential_energy_eV"] == pytest.approx(
            FailingLJ(10**6).get_potential_energy(frame), abs=1e-10)
        kinetic = frame.info["md_temperature_K"] * (3 * len(frame) - 3) / 2 * 8.617333262e-5
        with Trajectory(tmp_path / "npt.traj") as traj:
            snapshot = next(s for s in traj if s.info["md_step"] == frame.info["md_step"])
        assert kinetic == pytest.approx(snapshot.get_kinetic_energy()), "3N - 3 degrees of freedom (COM fixed)"
