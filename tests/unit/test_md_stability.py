"""hipqeq.md.run_md's stability verdicts: atoms that collapse onto each other."""

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT

from hipqeq.md import run_md


def test_atoms_closer_than_the_collapse_distance_make_a_run_unstable(tmp_path):
    """Copper at its lattice constant (nearest neighbours 2.55 A) is stable; with one atom
    moved to 1.2 A of another the run reports the collapse and is not stable."""
    crystal = bulk("Cu", "fcc", a=3.6, cubic=True)
    fine = run_md(crystal, EMT(), steps=2, temperature_K=10.0, timestep_fs=1.0, trajectory=tmp_path / "a.traj",
                  nve_steps=2, isolation_A=4.0)
    assert fine["stable"] and not fine["atoms_collapsed"]
    assert 2.4 < fine["min_distance_A"] < 2.7 and fine["collapse_A"] == 1.5

    squeezed = crystal.copy()
    direction = squeezed.positions[1] - squeezed.positions[0]
    squeezed.positions[1] = squeezed.positions[0] + 1.2 * direction / np.linalg.norm(direction)
    broken = run_md(squeezed, EMT(), steps=2, temperature_K=10.0, timestep_fs=1.0, trajectory=tmp_path / "b.traj",
                    nve_steps=2, isolation_A=4.0)
    assert broken["atoms_collapsed"] and not broken["stable"] and not broken["stopped_early"]
    assert broken["min_distance_A"] < 1.5
    tight = run_md(squeezed, EMT(), steps=2, temperature_K=10.0, timestep_fs=1.0, trajectory=tmp_path / "c.traj",
                   nve_steps=2, isolation_A=4.0, collapse_A=1.0)
    assert not tight["atoms_collapsed"]


def test_a_potential_energy_that_falls_far_below_the_start_makes_a_run_unstable(tmp_path):
    """Under a thermostat a relaxed start gains about 3/2 k_B T per atom; copper with one
    atom squeezed to 1.6 A of another (2 eV/atom above the crystal, not yet a collapse)
    falls by far more than 0.1 eV/atom."""
    crystal = bulk("Cu", "fcc", a=3.6, cubic=True)
    fine = run_md(crystal, EMT(), steps=20, temperature_K=300.0, timestep_fs=2.0, trajectory=tmp_path / "a.traj",
                  nve_steps=2, isolation_A=4.0)
    assert fine["potential_energy_drop_eV_per_atom"] < 0 and not fine["energy_fell"] and fine["stable"]
    squeezed = crystal.copy()
    direction = squeezed.positions[1] - squeezed.positions[0]
    squeezed.positions[1] = squeezed.positions[0] + 1.6 * direction / np.linalg.norm(direction)
    fallen = run_md(squeezed, EMT(), steps=20, temperature_K=300.0, timestep_fs=2.0, trajectory=tmp_path / "b.traj",
                    nve_steps=2, isolation_A=4.0)
    assert fallen["potential_energy_drop_eV_per_atom"] > 0.1 and fallen["energy_fell"] and not fallen["stable"]
    assert not fallen["atoms_collapsed"]
