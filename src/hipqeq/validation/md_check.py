"""The MD stability check: read `hipqeq md` summaries, tabulate and plot them.

A summary (written by :func:`hipqeq.md.run_md_from_config`, one JSON file per run) has
at least the keys of :data:`MD_SUMMARY_KEYS`: the structure ``name``, the ``models``
directories, ``n_atoms``; per recorded step ``time_fs``, ``temperature_K``,
``total_energy_eV`` and ``phase`` ("nvt", then an "nve" tail); and the results
``energy_drift_eV_per_atom_ps`` (slope of the total energy per atom over the NVE tail,
null without one), ``max_force_eV_A`` (over all steps and atoms), ``max_displacement_A``,
``atoms_flew_off`` (some atom lost every neighbour), ``atoms_collapsed`` (two atoms came
closer than the run's ``collapse_A``), ``energy_fell`` (the potential energy fell far below
the start's), ``mean_temperature_K`` (NVT part),
``stable``, and ``stopped_early`` with its ``reason`` (a model error ended the run).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from hipqeq.errors import HipqeqError

#: Keys every MD summary must have.
MD_SUMMARY_KEYS = ("name", "models", "n_atoms", "time_fs", "temperature_K", "total_energy_eV", "phase",
                   "energy_drift_eV_per_atom_ps", "max_force_eV_A", "max_displacement_A",
                   "atoms_flew_off", "atoms_collapsed", "energy_fell", "mean_temperature_K", "stable",
                   "stopped_early", "reason")

#: Keys of one row of the MD section of metrics.json.
MD_REPORT_KEYS = ("structure", "model", "n_atoms", "duration_ps", "mean_temperature_K",
                  "energy_drift_mev_per_atom_per_ps", "max_force_eV_per_A", "max_displacement_A",
                  "flew_off", "collapsed", "energy_fell", "stable", "stopped_early", "reason", "file")

_SERIES = ("time_fs", "temperature_K", "total_energy_eV", "phase")


def read_md_summaries(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """Read MD summaries; each gets a ``file`` key. Raises :class:`HipqeqError` naming the
    file for unreadable JSON, missing keys or time series of different lengths."""
    summaries = []
    for path in paths:
        try:
            summary = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise HipqeqError(f"{path}: not a readable MD summary ({exc})") from None
        missing = [k for k in MD_SUMMARY_KEYS if k not in summary]
        if missing:
            raise HipqeqError(f"{path}: MD summary lacks {', '.join(missing)} (written by `hipqeq md`?)")
        lengths = {k: len(summary[k]) for k in _SERIES}
        if len(set(lengths.values())) != 1:
            raise HipqeqError(f"{path}: MD time series of different lengths {lengths}")
        summaries.append({**summary, "file": str(path)})
    return summaries


def model_label(model_dirs: Sequence[str]) -> str:
    """A short name of the model (committee) that ran: its directory names without the
    member number, e.g. ["results/models/4g_0", "results/models/4g_1"] -> "4g"."""
    names = [re.sub(r"_\d+$", "", Path(d).name) for d in model_dirs]
    return "+".join(dict.fromkeys(names)) or "unknown"


def md_report(summaries: Sequence[dict]) -> list[dict]:
    """One row per run with the keys of :data:`MD_REPORT_KEYS` (drift in meV/atom/ps)."""
    rows = []
    for s in summaries:
        time_fs = np.asarray(s["time_fs"], dtype=float)
        drift = s["energy_drift_eV_per_atom_ps"]
        rows.append({
            "structure": s["name"], "model": model_label(s["models"]), "n_atoms": int(s["n_atoms"]),
            "duration_ps": float(time_fs[-1] - time_fs[0]) / 1000.0 if len(time_fs) else 0.0,
            "mean_temperature_K": s["mean_temperature_K"],
            "energy_drift_mev_per_atom_per_ps": None if drift is None else 1000.0 * float(drift),
            "max_force_eV_per_A": s["max_force_eV_A"], "max_displacement_A": s["max_displacement_A"],
            "flew_off": bool(s["atoms_flew_off"]), "collapsed": bool(s["atoms_collapsed"]),
            "energy_fell": bool(s["energy_fell"]),
            "stable": bool(s["stable"]),
            "stopped_early": bool(s["stopped_early"]), "reason": s["reason"], "file": s["file"],
        })
    return rows


def md_stability_figure(summaries: Sequence[dict]) -> Figure:
    """Total energy per atom (relative to the first step, meV/atom) and temperature (K)
    against time (ps), one line per run, a dotted line of its colour where its NVE tail
    (the drift fit) starts; the legend carries drift, maximum force and whether an atom
    flew off. Without summaries the panel says "no MD summaries"."""
    figure = Figure(figsize=(7.0, 6.0), layout="constrained")
    energy_ax, temperature_ax = figure.subplots(2, 1, sharex=True)
    energy_ax.set_ylabel("E(t) − E(0) per atom (meV/atom)")
    temperature_ax.set_ylabel("temperature (K)")
    temperature_ax.set_xlabel("time (ps)")
    energy_ax.set_title("MD stability check (Langevin NVT, then an NVE tail)", fontsize=10)
    if not summaries:
        energy_ax.text(0.5, 0.5, "no MD summaries", transform=energy_ax.transAxes, ha="center",
                       va="center", fontsize=16, color="0.4")
        return figure
    for s, row in zip(summaries, md_report(summaries)):
        time_ps = np.asarray(s["time_fs"], dtype=float) / 1000.0
        energy = np.asarray(s["total_energy_eV"], dtype=float)
        drift = row["energy_drift_mev_per_atom_per_ps"]
        label = (f"{row['structure']} ({row['model']}): drift "
                 f"{'n/a' if drift is None else f'{drift:.3g}'} meV/atom/ps, "
                 f"max F {row['max_force_eV_per_A']:.3g} eV/Å" + (", ATOM FLEW OFF" if row["flew_off"] else "")
                 + (", ATOMS COLLAPSED" if row["collapsed"] else "")
                 + (", ENERGY FELL" if row["energy_fell"] else ""))
        relative = 1000.0 * (energy - energy[0]) / row["n_atoms"] if len(energy) else energy
        (line,) = energy_ax.plot(time_ps, relative, label=label)
        temperature_ax.plot(time_ps, s["temperature_K"], color=line.get_color())
        nve = np.asarray(s["phase"]) == "nve"
        if nve.any():  # the drift is fitted over the NVE tail (the thermostat hides it before); runs differ
            for ax in (energy_ax, temperature_ax):
                ax.axvline(time_ps[nve].min(), color=line.get_color(), linestyle=":", linewidth=1.0)
    energy_ax.legend(fontsize=7, loc="best")
    return figure
