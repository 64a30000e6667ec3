"""Properties from NPT MD: blocking errors, equilibration detection, tilt angles, fits,
and whole runs (EMT copper; the CLI through a fixture 4G potential)."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write

from hipqeq.cli import main
from hipqeq.config import validate_section
from hipqeq.data import write_dataset
from hipqeq.errors import ConfigError
from hipqeq.properties import (
    ROW_KEYS,
    blocking_standard_error,
    detect_equilibration,
    read_structure_file,
    run_properties,
    statistical_inefficiency,
    summarise,
    tilt_angles_deg,
    weighted_line,
)
from hipqeq.structures import ruddlesden_popper
from tests.conftest import cubic_cspbi3
from tests.unit.test_calculator import write_model


def ar1(phi: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """x_t = phi x_{t-1} + e_t with unit-variance noise, started in its stationary state."""
    noise = rng.standard_normal(n)
    x = np.empty(n)
    x[0] = noise[0] / np.sqrt(1.0 - phi ** 2)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + noise[t]
    return x


@pytest.mark.parametrize("phi", [0.0, 0.8, 0.95])
def test_blocking_error_of_ar1_series_matches_the_analytic_error(phi):
    """Standard error of the mean of AR(1): sqrt(var / N * (1 + phi) / (1 - phi)), var = 1 / (1 - phi^2)."""
    n = 2 ** 16
    x = ar1(phi, n, np.random.default_rng(11))
    analytic = np.sqrt(1.0 / (1.0 - phi ** 2) / n * (1.0 + phi) / (1.0 - phi))
    error, plateau = blocking_standard_error(x)
    assert plateau
    assert error == pytest.approx(analytic, rel=0.15)
    if phi:
        assert x.std() / np.sqrt(n) < 0.5 * analytic, "the naive error would have been far too small"


def test_blocking_claims_no_plateau_on_a_short_series():
    """20 samples of a strongly correlated series: no level has enough blocks to judge a
    plateau; the error is the largest level's, above the naive one."""
    x = ar1(0.95, 20, np.random.default_rng(4))
    error, plateau = blocking_standard_error(x)
    assert not plateau and error >= x.std(ddof=1) / np.sqrt(20)
    assert np.isnan(blocking_standard_error(x[:3])[0])


def test_statistical_inefficiency_of_ar1_series():
    """g = (1 + phi) / (1 - phi) for AR(1); 1 for white noise."""
    rng = np.random.default_rng(3)
    assert statistical_inefficiency(ar1(0.9, 20000, rng)) == pytest.approx(19.0, rel=0.15)
    assert statistical_inefficiency(rng.standard_normal(20000)) == pytest.approx(1.0, abs=0.1)


def test_equilibration_detection_finds_a_known_transient():
    """A transient decaying as 20 exp(-t / 40) over correlated noise: the detected start
    lies where the transient has fallen to the noise, not at 0 nor late in the run."""
    rng = np.random.default_rng(5)
    t = np.arange(3000)
    noise = ar1(0.5, len(t), rng)
    start, g, n_effective = detect_equilibration(20.0 * np.exp(-t / 40.0) + noise)
    assert 80 <= start <= 400, start  # 20 exp(-t / 40) is 2 at t = 92 and 0.1 at t = 212
    assert g == pytest.approx(3.0, rel=0.3) and n_effective > 500
    assert detect_equilibration(noise)[0] < 150, "a stationary series keeps (nearly) all of itself"


def test_tilt_is_zero_in_ideal_cubic_and_rp_cells():
    assert np.allclose(tilt_angles_deg(cubic_cspbi3()), 0.0, atol=1e-6)
    assert len(tilt_angles_deg(cubic_cspbi3())) == 3
    slab = ruddlesden_popper(1, "slab", vacuum=12.0, supercell=(2, 2, 1))
    tilts = tilt_angles_deg(slab)
    # RP n = 1: two equatorial (bridging) I per Pb; the apical I bridge nothing
    assert len(tilts) == 2 * np.count_nonzero(slab.numbers == 82)
    assert np.allclose(tilts, 0.0, atol=1e-6)


def rotated_octahedra(tilt_deg: float, a: float = 6.29) -> Atoms:
    """A 2x2x1 cubic CsPbI3 cell whose PbI6 octahedra turn about z by +-tilt_deg in a
    checkerboard (neighbours in antiphase, Pb fixed): each equatorial I moves normal to
    its Pb-Pb bond by a/2 tan(tilt), the apical I stay on the Pb-Pb line."""
    shift = 0.5 * a * np.tan(np.radians(tilt_deg))
    symbols, positions = [], []
    for i in range(2):
        for j in range(2):
            sense = (-1) ** (i + j)  # the octahedron at (i, j) turns by sense * tilt
            symbols += ["Pb", "Cs", "I", "I", "I"]
            positions += [[i * a, j * a, 0.0], [(i + 0.5) * a, (j + 0.5) * a, 0.5 * a],
                          [(i + 0.5) * a, j * a + sense * shift, 0.0],  # x bond: +x I moves along +y
                          [i * a - sense * shift, (j + 0.5) * a, 0.0],  # y bond: +y I moves along -x
                          [i * a, j * a, 0.5 * a]]  # apical
    return Atoms(symbols, positions=positions, cell=[2 * a, 2 * a, a], pbc=True)


def test_tilt_matches_the_rotation_of_hand_built_octahedra():
    tilts = np.sort(tilt_angles_deg(rotated_octahedra(8.0)))
    assert len(tilts) == 12
    assert np.allclose(tilts[:4], 0.0, atol=1e-6), "apical iodides"
    assert np.allclose(tilts[4:], 8.0, atol=1e-6), "equatorial iodides"


def test_weighted_line_recovers_a_known_slope_and_its_error():
    """Slopes of many noisy synthetic V(T) sets scatter about the true slope by the
    error the fit reports."""
    rng = np.random.default_rng(2)
    temperatures = np.array([100.0, 150.0, 200.0, 300.0, 400.0])
    errors = np.array([0.02, 0.01, 0.03, 0.02, 0.05])
    slope = 2.0e-3  # A^3/atom/K
    fits = [weighted_line(temperatures, 60.0 + slope * temperatures + errors * rng.standard_normal(5), errors)
            for _ in range(2000)]
    slopes = np.array([f["slope"] for f in fits])
    assert slopes.mean() == pytest.approx(slope, abs=3 * fits[0]["slope_err"] / np.sqrt(len(fits)))
    assert slopes.std() == pytest.approx(fits[0]["slope_err"], rel=0.1)
    values = np.array([f["value_at_mean"] for f in fits])
    assert values.std() == pytest.approx(fits[0]["value_at_mean_err"], rel=0.1)


def test_summary_fits_expansion_and_heat_capacity():
    """Rows on exact lines: alpha = slope / V at the weighted mean temperature, dU/dT in k_B."""
    kb = 8.617333262e-5
    rows = [{"temperature_K": t, "volume_per_atom_A3": 50.0 + 1e-3 * t, "volume_per_atom_err_A3": 1e-3,
             "potential_energy_per_atom_eV": -3.0 + 1.5 * kb * t, "potential_energy_per_atom_err_eV": 1e-4}
            for t in (100.0, 200.0, 300.0)]
    summary = summarise(rows + [dict(rows[0], temperature_K=400.0, volume_per_atom_err_A3=float("nan"))], 3)
    assert summary["fit_temperatures_K"] == [100.0, 200.0, 300.0], "a row without an error bar is left out"
    assert summary["thermal_expansion_per_K"] == pytest.approx(1e-3 / 50.2)
    assert summary["dU_dT_kB_per_atom"] == pytest.approx(1.5)
    assert summary["heat_capacity_kB_per_atom"] == pytest.approx(3.0), "Dulong-Petit for a harmonic solid"
    assert summary["thermal_expansion_err_per_K"] > 0 and summary["expansion"] == "volumetric"
    single = summarise(rows[:1], 2)
    assert single["thermal_expansion_per_K"] is None and single["expansion"].startswith("areal")


def section(**changes) -> dict:
    return validate_section("properties", {"temperatures_K": [100.0, 300.0], "steps": 80, "frame_interval": 4,
                                           "timestep_fs": 5.0, "barostat_time_fs": 200.0, **changes})


def test_properties_run_gives_finite_values_with_error_bars(tmp_path):
    """EMT copper, two temperatures: every average has a finite, positive error bar, and
    the frames' energies are the calculator's."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    summary = run_properties(atoms, EMT(), section(), "cu", tmp_path, master_seed=0)
    table = pd.read_parquet(tmp_path / "properties.parquet")
    assert list(table.columns) == list(ROW_KEYS) and table["temperature_K"].tolist() == [100.0, 300.0]
    for key in ("volume_per_atom", "potential_energy_per_atom"):
        unit = "A3" if key.startswith("volume") else "eV"
        assert np.isfinite(table[f"{key}_{unit}"]).all()
        assert (table[f"{key}_err_{unit}"] > 0).all() and np.isfinite(table[f"{key}_err_{unit}"]).all()
    assert (table["n_equilibrated_frames"] >= 8).all() and (table["n_frames"] == 20).all()
    assert not table["stopped_early"].any()
    assert table["tilt_mean_deg"].isna().all(), "copper has no Pb-I-Pb bridges"
    for key in ("thermal_expansion_per_K", "thermal_expansion_err_per_K", "dU_dT_kB_per_atom",
                "dU_dT_err_kB_per_atom"):
        assert np.isfinite(summary[key]), key
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["temperatures"][1]["volume_per_atom_A3"] == pytest.approx(table["volume_per_atom_A3"][1])
    series = on_disk["series"][0]
    assert len(series["time_fs"]) == 20 and series["time_fs"][0] == 20.0
    frames = __import__("ase.io").io.read(tmp_path / "T100.traj", index=":")
    last = frames[-1]
    assert series["potential_energy_per_atom_eV"][-1] == pytest.approx(EMT().get_potential_energy(last) / 4)
    for stem in ("volume", "energy", "tilts"):
        assert matplotlib.image.imread(tmp_path / f"{stem}.png").shape[0] > 300


def test_supercell_repeats_the_md_cell_but_not_a_slab_normal(tmp_path):
    summary = run_properties(bulk("Cu", "fcc", a=3.6, cubic=True), EMT(), section(supercell=[2, 1, 1],
                             temperatures_K=[100.0]), "cu", tmp_path, master_seed=0)
    assert summary["n_atoms"] == 8
    frames = __import__("ase.io").io.read(tmp_path / "T100.traj", index=":")
    assert len(frames[-1]) == 8 and frames[-1].cell.lengths()[0] > 1.9 * frames[-1].cell.lengths()[1]
    with pytest.raises(ConfigError, match="properties/supercell.*non-periodic"):
        run_properties(ruddlesden_popper(1, "slab", vacuum=12.0), EMT(), section(supercell=[2, 2, 2]), "rp1",
                       tmp_path, master_seed=0)


def test_pressure_on_a_slab_is_refused(tmp_path):
    slab = ruddlesden_popper(1, "slab", vacuum=12.0)
    with pytest.raises(ConfigError, match="properties/pressure_GPa.*vacuum"):
        run_properties(slab, EMT(), section(pressure_GPa=1.0), "rp1", tmp_path, master_seed=0)
    with pytest.raises(ConfigError, match="properties/equilibration"):
        run_properties(slab, EMT(), section(equilibration=80), "rp1", tmp_path, master_seed=0)


def test_user_files_are_read_by_suffix(tmp_path):
    atoms = cubic_cspbi3()
    write(tmp_path / "mine.extxyz", atoms)
    read = read_structure_file(tmp_path / "mine.extxyz")
    assert np.allclose(read.positions, atoms.positions) and read.pbc.all()
    (tmp_path / "bad.extxyz").write_text("not a structure\n")
    with pytest.raises(Exception, match="bad.extxyz: not a readable extxyz file"):
        read_structure_file(tmp_path / "bad.extxyz")


def test_hipqeq_properties_with_a_4g_potential(tmp_path):
    """The verb end to end with a random-weight 4G potential (charges, Ewald, stress) on
    cubic CsPbI3: finite averages with error bars, outputs in place."""
    model = write_model(tmp_path / "4g", 1, elements=(55, 82, 53))
    atoms = cubic_cspbi3()
    atoms.info.update(structure_name="alpha", parent_id="alpha")
    structures = write_dataset([atoms], tmp_path / "structures.parquet")
    config = tmp_path / "config.yaml"
    config.write_text("structures: {seeds: [{name: alpha, builder: phase, phase: alpha}]}\n"
                      "selection: {n_xtb: 1, n_dft: 0}\n"
                      "properties: {enabled: true, structures: [alpha], frame_interval: 3, timestep_fs: 1.0}\n")
    out = tmp_path / "properties"
    assert main(["properties", "--config", str(config), "--model", str(model), "--structures", str(structures),
                 "--name", "alpha", "--output-dir", str(out), "--temperatures-K", "100", "200", "--steps", "24",
                 "--supercell", "1", "1", "2", "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"] == [str(model)] and summary["settings"]["steps"] == 24
    assert summary["settings"]["supercell"] == [1, 1, 2] and summary["n_atoms"] == 10
    for row in summary["temperatures"]:
        assert not row["stopped_early"], row["reason"]
        assert np.isfinite(row["volume_per_atom_A3"]) and row["volume_per_atom_err_A3"] > 0
        assert np.isfinite(row["potential_energy_per_atom_eV"]) and row["potential_energy_per_atom_err_eV"] > 0
        assert np.isfinite(row["tilt_mean_deg"]) and row["tilt_mean_deg"] > 0, "thermal motion bends Pb-I-Pb"
    assert np.isfinite(summary["dU_dT_kB_per_atom"])
    assert sorted(p.name for p in out.iterdir()) == ["T100.traj", "T200.traj", "energy.png", "properties.parquet",
                                                      "summary.json", "tilts.png", "volume.png"]


def test_a_parquet_file_needs_a_name(tmp_path, capsys):
    structures = write_dataset([cubic_cspbi3()], tmp_path / "structures.parquet")
    config = tmp_path / "config.yaml"
    config.write_text("structures: {seeds: [{name: alpha, builder: phase, phase: alpha}]}\n"
                      "selection: {n_xtb: 1, n_dft: 0}\n")
    assert main(["properties", "--config", str(config), "--model", str(tmp_path / "4g"), "--structures",
                 str(structures), "--output-dir", str(tmp_path / "out")]) == 2
    assert "structures.parquet: name the structure in it with --name" in capsys.readouterr().err
