r"""Thermodynamic properties from NPT MD with a trained potential (CIF -> MD -> properties).

For one structure and each temperature T of a grid, :func:`run_temperature` runs
Berendsen NPT MD (:func:`hipqeq.sampling.md.run_md`, ensemble ``npt``: ASE's
``Inhomogeneous_NPTBerendsen``, the cell scaled along its periodic directions only)
and reads from the trajectory's frames (every ``frame_interval`` steps):

- the volume per atom :math:`V/N` (Angstrom^3/atom): the cell's volume. For a slab
  (pbc = T,T,F) only the in-plane cell vectors relax and the cell's height (vacuum
  included) is fixed, so :math:`V/N` is the area per atom times that height: its
  relative changes, and the expansion coefficient, are those of the in-plane *area*;
- the potential energy per atom :math:`U/N` (eV/atom);
- octahedral tilt angles (degrees) at every iodide bridging two Pb (a shared octahedron
  corner): :math:`\phi = (180^\circ - \theta_\mathrm{Pb-I-Pb})/2`, the rotation of
  each of two rigid octahedra turning in antiphase about an axis normal to the bond
  that bends the Pb-I-Pb angle to :math:`\theta` (:func:`tilt_angles_deg`; the
  Pb-I-Pb angle is the usual measure of octahedral tilting in halide perovskites).
  Terminal iodides (the apical I of a Ruddlesden-Popper slab) bridge nothing and are
  left out; 0 for an ideal cubic perovskite.

Averages exclude an equilibration transient: with ``equilibration`` "auto", the first
frame kept is the one that maximises the number of uncorrelated samples of the rest of
the series (:func:`detect_equilibration`, J. D. Chodera, J. Chem. Theory Comput. 12,
1799 (2016)), the later of the volume's and the energy's; with a number of steps, the
frames before it. Error bars are standard errors of the mean by block averaging
(:func:`blocking_standard_error`, H. Flyvbjerg and H. G. Petersen, J. Chem. Phys. 91,
461 (1989)).

From the temperature rows (:func:`summarise`), weighted least-squares lines
(:func:`weighted_line`, weights 1/err^2) give the thermal expansion coefficient
:math:`\alpha = \frac{1}{V}\frac{dV}{dT}` (1/K, volumetric; areal for a slab) at the
grid's weighted mean temperature, and :math:`dU/dT` (eV/atom/K, and in k_B/atom). A heat
capacity estimate adds the classical kinetic :math:`\tfrac32 k_B` per atom,
:math:`C_P/N \approx dU/dT + \tfrac32 k_B` (the :math:`P\,dV/dT` term is left out: zero
at zero pressure, ~1e-5 k_B/atom at 1 GPa; nuclear quantum effects ignored, as in
any classical MD). The Berendsen thermostat and barostat sample the right mean
temperature and pressure but suppress fluctuations, so no property here uses
fluctuation formulas.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list
from matplotlib.figure import Figure

from hipqeq.errors import ConfigError, StructureError
from hipqeq.plan import number_tag
from hipqeq.sampling.md import MDSettings, run_md
from hipqeq.seeds import derive_seed
from hipqeq.units import BOLTZMANN_EV_K

log = logging.getLogger(__name__)

#: Pb-I distance (Angstrom) within which an iodide is bonded to a lead: Pb-I bonds are
#: 3.0-3.3 A in CsPbI3 phases and RP slabs, the next Pb-I distances above 5 A.
PB_I_BOND_A = 4.0

#: Blocking levels keep at least this many blocks (fewer give no usable variance).
MIN_BLOCKS = 4

#: A plateau is judged only on levels of at least this many blocks: below, the error of
#: the error (1/sqrt(2(n-1)) relative) exceeds the rise a short series can show.
MIN_PLATEAU_BLOCKS = 16

#: Bin edges (degrees) of the tilt-angle histograms kept per temperature.
TILT_BINS_DEG = np.linspace(0.0, 45.0, 91)

#: Columns of the properties table (one row per structure and temperature).
ROW_KEYS = ("structure", "temperature_K", "n_atoms", "n_frames", "n_equilibrated_frames", "equilibration_time_fs",
            "mean_temperature_K", "volume_per_atom_A3", "volume_per_atom_err_A3", "potential_energy_per_atom_eV",
            "potential_energy_per_atom_err_eV", "blocking_converged", "tilt_mean_deg", "tilt_std_deg",
            "stopped_early", "reason")

#: Frames a temperature needs for an average with an error bar.
MIN_FRAMES = 2 * MIN_BLOCKS


def statistical_inefficiency(series) -> float:
    r""":math:`g = 1 + 2\sum_{t=1}^{N-1}(1 - t/N)\,C(t)` of a time series, with :math:`C`
    its normalised autocorrelation, the sum cut at the first :math:`C(t) \le 0`
    (Chodera 2016, as pymbar): the number of steps per uncorrelated sample, >= 1."""
    x = np.asarray(series, dtype=float)
    n = len(x)
    deviation = x - x.mean()
    variance = deviation @ deviation / n if n else 0.0
    if n < 2 or variance <= 0.0:
        return 1.0
    spectrum = np.fft.rfft(deviation, 2 * n)  # zero-padded: a linear, not circular, correlation
    correlation = np.fft.irfft(spectrum * np.conj(spectrum))[1:n] / np.arange(n - 1, 0, -1) / variance
    lags = np.arange(1, n)
    negative = np.flatnonzero(correlation <= 0.0)
    stop = negative[0] if len(negative) else n - 1
    return max(1.0, 1.0 + 2.0 * float(np.sum((1.0 - lags[:stop] / n) * correlation[:stop])))


def detect_equilibration(series, max_candidates: int = 100) -> tuple[int, float, float]:
    """Chodera's automated equilibration detection: the start index ``t0`` that maximises
    the effective number of uncorrelated samples ``(N - t0) / g(series[t0:])``; returns
    ``(t0, g, n_effective)``. Up to ``max_candidates`` evenly spaced starts are tried."""
    x = np.asarray(series, dtype=float)
    candidates = np.unique(np.linspace(0, max(len(x) - 2, 0), min(max_candidates, max(len(x) - 1, 1))).astype(int))
    best = (0, 1.0, -np.inf)
    for t0 in candidates:
        g = statistical_inefficiency(x[t0:])
        n_effective = (len(x) - t0) / g
        if n_effective > best[2]:
            best = (int(t0), g, n_effective)
    return best


def blocking_standard_error(series) -> tuple[float, bool]:
    r"""Standard error of the mean of a correlated series by Flyvbjerg-Petersen blocking.

    At each level the series is halved by averaging neighbouring pairs; the naive
    standard error :math:`s_k = \sigma_k/\sqrt{n_k}` of level k grows while blocks are
    shorter than the correlation time, then levels off. The estimate is the first
    :math:`s_k` that the next level does not exceed by more than its own uncertainty
    :math:`s_{k+1}/\sqrt{2(n_{k+1}-1)}` (a plateau), judged on levels of at least
    :data:`MIN_PLATEAU_BLOCKS` blocks; levels keep at least :data:`MIN_BLOCKS` blocks.
    Returns ``(error, plateau_found)``; without a plateau (a series too short for its
    correlation time, or for any judgement) the largest :math:`s_k`, still possibly an
    underestimate. NaN below :data:`MIN_BLOCKS` samples.
    """
    x = np.asarray(series, dtype=float)
    levels = []
    while len(x) >= MIN_BLOCKS:
        n = len(x)
        error = float(x.std(ddof=1) / np.sqrt(n))
        levels.append((error, error / np.sqrt(2.0 * (n - 1)), n))
        x = 0.5 * (x[0:n - 1:2] + x[1:n:2])
    if not levels:
        return float("nan"), False
    for (error, _, _), (following, uncertainty, n_blocks) in zip(levels, levels[1:]):
        if n_blocks >= MIN_PLATEAU_BLOCKS and following - error <= uncertainty:
            return error, True
    return max(level[0] for level in levels), False


def pb_i_pb_angles_deg(atoms: Atoms, bond_A: float = PB_I_BOND_A) -> np.ndarray:
    """The Pb-I-Pb angle (degrees) at every iodide bonded (within ``bond_A``, periodic
    images included) to exactly two Pb atoms."""
    first, second, vectors = neighbor_list("ijD", atoms, bond_A)
    numbers = atoms.numbers
    bonds = (numbers[first] == 53) & (numbers[second] == 82)  # vectors from I to its Pb
    first, vectors = first[bonds], vectors[bonds]
    order = np.argsort(first, kind="stable")
    first, vectors = first[order], vectors[order]
    iodides, starts, counts = np.unique(first, return_index=True, return_counts=True)
    bridging = starts[counts == 2]
    a, b = vectors[bridging], vectors[bridging + 1]
    cosine = np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def tilt_angles_deg(atoms: Atoms, bond_A: float = PB_I_BOND_A) -> np.ndarray:
    """Octahedral tilt angle (degrees) at each bridging iodide: (180 - Pb-I-Pb angle) / 2
    (see the module docstring)."""
    return 0.5 * (180.0 - pb_i_pb_angles_deg(atoms, bond_A))


def weighted_line(x, y, error) -> dict:
    """Weighted least-squares line ``y = value_at_mean + slope * (x - x_mean)`` with
    weights ``1 / error**2`` (errors taken as absolute standard deviations), centred at
    the weighted mean ``x_mean`` so that slope and value are uncorrelated. Returns
    ``slope``, ``slope_err``, ``x_mean``, ``value_at_mean`` and ``value_at_mean_err``."""
    x, y, error = (np.asarray(v, dtype=float) for v in (x, y, error))
    weights = 1.0 / error ** 2
    x_mean = float(np.sum(weights * x) / np.sum(weights))
    dx = x - x_mean
    slope = float(np.sum(weights * dx * y) / np.sum(weights * dx ** 2))
    return {"slope": slope, "slope_err": float(1.0 / np.sqrt(np.sum(weights * dx ** 2))), "x_mean": x_mean,
            "value_at_mean": float(np.sum(weights * y) / np.sum(weights)),
            "value_at_mean_err": float(1.0 / np.sqrt(np.sum(weights)))}


def read_structure_file(path: str | os.PathLike) -> Atoms:
    """A user structure: a CIF (:func:`hipqeq.structures.cif.read_cif`) or the first
    frame of an extxyz file (with its cell and pbc). Raises :class:`StructureError`
    naming the file."""
    from ase.io import read

    from hipqeq.structures.cif import read_cif

    path = Path(path)
    if path.suffix.lower() == ".cif":
        return read_cif(path)
    try:
        return read(path, index=0, format="extxyz")
    except (OSError, ValueError, KeyError) as exc:
        raise StructureError(f"{path}: not a readable extxyz file ({exc})") from exc


def md_settings(section: dict, temperature_K: float, seed: int) -> MDSettings:
    """The NPT run of one temperature from the config's ``properties`` section: frames
    from the start with ``equilibration`` "auto" (detected afterwards), else from the
    given number of steps on."""
    equilibration = 0 if section["equilibration"] == "auto" else int(section["equilibration"])
    if equilibration >= section["steps"]:
        raise ConfigError(f"invalid config at 'properties/equilibration': {equilibration} steps leave none of "
                          f"properties.steps = {section['steps']} to average")
    return MDSettings(temperature_K=float(temperature_K), timestep_fs=section["timestep_fs"],
                      equilibration_steps=equilibration, production_steps=section["steps"] - equilibration,
                      frame_interval=section["frame_interval"], ensemble="npt",
                      pressure_GPa=section["pressure_GPa"], taut_fs=section["thermostat_time_fs"],
                      taup_fs=section["barostat_time_fs"], seed=seed)


def temperature_row(frames: list[Atoms], settings: MDSettings, detect: bool) -> tuple[dict, dict]:
    """One temperature's averages (the table's columns but ``structure``, ``stopped_early``
    and ``reason``; ``equilibration_time_fs`` is the time of the first frame averaged)
    and its series (``time_fs``, per-atom volume and energy, kinetic
    temperature, the tilt histogram of the averaged frames)."""
    n_atoms = len(frames[0]) if frames else 0
    time_fs = np.array([f.info["md_step"] * settings.timestep_fs for f in frames])
    volume = np.array([f.get_volume() / n_atoms for f in frames])
    energy = np.array([f.info["md_potential_energy_eV"] / n_atoms for f in frames])
    temperature = np.array([f.info["md_temperature_K"] for f in frames])
    start = 0
    if detect and len(frames) >= MIN_FRAMES:
        start = max(detect_equilibration(volume)[0], detect_equilibration(energy)[0])
        start = min(start, len(frames) - MIN_FRAMES)  # keep enough frames for an error bar
    kept = slice(start, None)
    tilts = np.concatenate([tilt_angles_deg(f) for f in frames[kept]] or [np.empty(0)])
    volume_err, volume_plateau = blocking_standard_error(volume[kept])
    energy_err, energy_plateau = blocking_standard_error(energy[kept])
    nan = float("nan")
    row = {"temperature_K": settings.temperature_K, "n_atoms": n_atoms, "n_frames": len(frames),
           "n_equilibrated_frames": len(frames) - start,
           "equilibration_time_fs": float(time_fs[start]) if len(frames) else nan,
           "mean_temperature_K": float(temperature[kept].mean()) if len(frames) else nan,
           "volume_per_atom_A3": float(volume[kept].mean()) if len(frames) else nan,
           "volume_per_atom_err_A3": volume_err,
           "potential_energy_per_atom_eV": float(energy[kept].mean()) if len(frames) else nan,
           "potential_energy_per_atom_err_eV": energy_err,
           "blocking_converged": volume_plateau and energy_plateau,
           "tilt_mean_deg": float(tilts.mean()) if len(tilts) else nan,
           "tilt_std_deg": float(tilts.std()) if len(tilts) else nan}
    series = {"time_fs": time_fs.tolist(), "volume_per_atom_A3": volume.tolist(),
              "potential_energy_per_atom_eV": energy.tolist(), "temperature_K": temperature.tolist(),
              "tilt_histogram": np.histogram(tilts, TILT_BINS_DEG)[0].tolist()}
    return row, series


def run_temperature(atoms: Atoms, calculator, settings: MDSettings, trajectory: str | os.PathLike,
                    detect: bool, label: str) -> tuple[dict, dict]:
    """NPT MD of ``atoms`` at ``settings.temperature_K`` and its :func:`temperature_row`,
    with ``stopped_early`` and ``reason`` (a run that ended early keeps its frames so
    far; below :data:`MIN_BLOCKS` frames the error bars are NaN, without frames the means)."""
    outcome = run_md(atoms, calculator, settings, trajectory, label=label)
    row, series = temperature_row(outcome.frames, settings, detect)
    row.update(stopped_early=outcome.stopped_early, reason=outcome.reason)
    return row, series


def summarise(rows: list[dict], periodic_axes: int) -> dict:
    """Thermal expansion and dU/dT from weighted lines through the rows with finite,
    positive error bars (null below two such temperatures); see the module docstring."""
    usable = [r for r in rows if all(np.isfinite(r[k]) and r[k] > 0 for k in
                                     ("volume_per_atom_err_A3", "potential_energy_per_atom_err_eV"))]
    summary = {"expansion": "volumetric" if periodic_axes == 3 else "areal (in-plane; the cell height is fixed)",
               "fit_temperatures_K": [r["temperature_K"] for r in usable]}
    keys = ("thermal_expansion_per_K", "thermal_expansion_err_per_K", "dU_dT_eV_per_atom_K",
            "dU_dT_err_eV_per_atom_K", "dU_dT_kB_per_atom", "dU_dT_err_kB_per_atom", "heat_capacity_kB_per_atom",
            "fit_mean_temperature_K", "volume_fit", "energy_fit")
    if len(usable) < 2:
        return {**summary, **dict.fromkeys(keys)}
    temperatures = [r["temperature_K"] for r in usable]
    volume = weighted_line(temperatures, [r["volume_per_atom_A3"] for r in usable],
                           [r["volume_per_atom_err_A3"] for r in usable])
    energy = weighted_line(temperatures, [r["potential_energy_per_atom_eV"] for r in usable],
                           [r["potential_energy_per_atom_err_eV"] for r in usable])
    mean_volume = volume["value_at_mean"]
    alpha = volume["slope"] / mean_volume
    # slope and mean are uncorrelated (centred fit): their errors add in quadrature
    alpha_err = np.hypot(volume["slope_err"], alpha * volume["value_at_mean_err"]) / mean_volume
    return {**summary, "thermal_expansion_per_K": alpha, "thermal_expansion_err_per_K": float(alpha_err),
            "dU_dT_eV_per_atom_K": energy["slope"], "dU_dT_err_eV_per_atom_K": energy["slope_err"],
            "dU_dT_kB_per_atom": energy["slope"] / BOLTZMANN_EV_K,
            "dU_dT_err_kB_per_atom": energy["slope_err"] / BOLTZMANN_EV_K,
            "heat_capacity_kB_per_atom": energy["slope"] / BOLTZMANN_EV_K + 1.5,
            "fit_mean_temperature_K": volume["x_mean"], "volume_fit": volume, "energy_fit": energy}


#: (row key, its error's key, axis label, summary fit key, file stem) of the V(T) and U(T) plots.
TEMPERATURE_PLOTS = (
    ("volume_per_atom_A3", "volume_per_atom_err_A3", "volume per atom (A$^3$/atom)", "volume_fit", "volume"),
    ("potential_energy_per_atom_eV", "potential_energy_per_atom_err_eV", "potential energy per atom (eV/atom)",
     "energy_fit", "energy"),
)

#: The PNG plots each run writes (file stems).
PLOTS = tuple(plot[-1] for plot in TEMPERATURE_PLOTS) + ("tilts",)


def temperature_figure(summary: dict, key: str, error_key: str, ylabel: str, fit_key: str) -> Figure:
    """One row key against temperature with its error bars and the weighted fit line."""
    figure = Figure(figsize=(5.0, 3.8), layout="constrained")
    ax = figure.add_subplot()
    rows = summary["temperatures"]
    temperatures = np.array([r["temperature_K"] for r in rows])
    ax.errorbar(temperatures, [r[key] for r in rows], yerr=[r[error_key] for r in rows], fmt="o", capsize=3,
                label="NPT mean ± standard error")
    fit = summary.get(fit_key)
    if fit is not None:
        line = np.linspace(temperatures.min(), temperatures.max(), 2)
        ax.plot(line, fit["value_at_mean"] + fit["slope"] * (line - fit["x_mean"]), "-", lw=1,
                label=f"weighted fit, slope {fit['slope']:.3g} ± {fit['slope_err']:.2g} per K")
    ax.set_xlabel("temperature (K)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{summary['structure']} ({summary['n_atoms']} atoms, {summary['pressure_GPa']:g} GPa)", fontsize=9)
    ax.legend(fontsize=8)
    return figure


def tilt_figure(summary: dict) -> Figure:
    """Tilt-angle distributions (density per degree) of the averaged frames, one per temperature."""
    figure = Figure(figsize=(5.0, 3.8), layout="constrained")
    ax = figure.add_subplot()
    widths = np.diff(TILT_BINS_DEG)
    for row, series in zip(summary["temperatures"], summary["series"]):
        counts = np.asarray(series["tilt_histogram"], dtype=float)
        if counts.sum():
            ax.stairs(counts / counts.sum() / widths, TILT_BINS_DEG, label=f"{row['temperature_K']:g} K")
    if not ax.get_legend_handles_labels()[0]:
        ax.text(0.5, 0.5, "no bridging Pb-I-Pb", ha="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
    ax.set_xlabel("octahedral tilt (180 - Pb-I-Pb)/2 (degrees)")
    ax.set_ylabel("density (1/degree)")
    ax.set_title(summary["structure"], fontsize=9)
    return figure


def write_outputs(summary: dict, output_dir: str | os.PathLike) -> dict[str, Path]:
    """``properties.parquet`` (one row per temperature, :data:`ROW_KEYS`),
    ``summary.json`` and the PNG plots ``volume``, ``energy`` and ``tilts`` in
    ``output_dir``; returns their paths by name."""
    import pandas as pd

    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"table": directory / "properties.parquet", "summary": directory / "summary.json"}
    rows = [{"structure": summary["structure"], **row} for row in summary["temperatures"]]
    pd.DataFrame(rows, columns=list(ROW_KEYS)).to_parquet(paths["table"], index=False)
    paths["summary"].write_text(json.dumps(summary, indent=1) + "\n")
    figures = {stem: temperature_figure(summary, key, error, label, fit)
               for key, error, label, fit, stem in TEMPERATURE_PLOTS}
    figures["tilts"] = tilt_figure(summary)
    for stem, figure in figures.items():
        paths[stem] = directory / f"{stem}.png"
        figure.savefig(paths[stem], dpi=120)
    return paths


def run_properties(atoms: Atoms, calculator, section: dict, name: str, output_dir: str | os.PathLike,
                   master_seed: int, provenance: dict | None = None) -> dict:
    """NPT MD of ``atoms`` at every ``section["temperatures_K"]`` (trajectories
    ``T<tag>.traj`` in ``output_dir``, resumable), then the outputs of
    :func:`write_outputs`; returns the summary (``provenance``, e.g. the model
    directories, included). Each temperature's random stream is
    :func:`hipqeq.seeds.derive_seed` of the master seed, "properties", ``name`` and T."""
    periodic_axes = int(np.sum(atoms.pbc))
    if periodic_axes < 2:
        raise StructureError(f"{name}: pbc {atoms.pbc.tolist()}; NPT needs a bulk cell or a slab (T,T,F)")
    repeats = section["supercell"]
    if any(n != 1 for n, periodic in zip(repeats, atoms.pbc) if not periodic):
        raise ConfigError(f"invalid config at 'properties/supercell': {repeats} repeats {name} along a "
                          f"non-periodic axis (pbc {atoms.pbc.tolist()})")
    atoms = atoms.repeat(repeats)
    if periodic_axes == 2 and section["pressure_GPa"]:
        raise ConfigError(f"invalid config at 'properties/pressure_GPa': {section['pressure_GPa']} GPa on the slab "
                          f"{name}, whose cell volume includes vacuum; slabs run at 0 GPa")
    rows, series = [], []
    for temperature_K in section["temperatures_K"]:
        settings = md_settings(section, temperature_K, derive_seed(master_seed, "properties", name, temperature_K))
        row, history = run_temperature(atoms, calculator, settings,
                                       Path(output_dir) / f"T{number_tag(temperature_K)[1:]}.traj",
                                       detect=section["equilibration"] == "auto", label=f"{name} {temperature_K:g} K")
        rows.append(row)
        series.append(history)
        log.info("%s %g K: V %.4g +- %.2g A^3/atom, U %.6g +- %.2g eV/atom, tilt %.3g deg", name, temperature_K,
                 row["volume_per_atom_A3"], row["volume_per_atom_err_A3"], row["potential_energy_per_atom_eV"],
                 row["potential_energy_per_atom_err_eV"], row["tilt_mean_deg"])
    summary = {"structure": name, **(provenance or {}), "n_atoms": len(atoms), "pbc": atoms.pbc.tolist(),
               "pressure_GPa": section["pressure_GPa"], "settings": section, **summarise(rows, periodic_axes),
               "temperatures": rows, "series": series}
    write_outputs(summary, output_dir)
    return summary


def properties_from_config(config: dict, model_dirs, atoms: Atoms, name: str, output_dir: str | os.PathLike,
                           device: str = "auto", seed: int | None = None, **overrides) -> dict:
    """``hipqeq properties``: :func:`run_properties` with the trained potential
    (:class:`hipqeq.calculator.HipQEqCalculator`, a committee for several directories)
    and ``config["properties"]``, whose keys ``overrides`` (not None) replace."""
    from hipqeq.calculator import HipQEqCalculator
    from hipqeq.config import validate_section

    section = validate_section("properties", {**config["properties"],
                                              **{k: v for k, v in overrides.items() if v is not None}})
    calculator = HipQEqCalculator([str(d) for d in model_dirs], device=device, always_stress=True)
    return run_properties(atoms, calculator, section, name, output_dir,
                          master_seed=config["seed"] if seed is None else seed,
                          provenance={"models": [str(d) for d in model_dirs]})
