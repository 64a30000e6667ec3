"""Langevin MD with a trained potential: the validation stage's stability check.

A run is NVT Langevin dynamics (ASE's ``Langevin``, friction ``friction_per_fs``) for
``steps`` steps at ``temperature_K``, followed by an NVE tail of ``nve_steps``
velocity-Verlet steps from the last NVT state. The summary reports:

- ``energy_drift_eV_per_atom_ps``: slope of a least-squares line through the total
  energy (potential + kinetic, eV) per atom against time (ps) over the NVE tail. With
  exact forces and a small enough time step it is near zero; a thermostat would hide
  the drift, hence the tail. ``null`` when the tail has fewer than 2 steps.
- ``max_force_eV_A``: the largest force on any atom over all recorded steps;
- ``atoms_flew_off``: whether at any recorded step some atom had no neighbour within
  ``isolation_A`` (periodic images included), with ``flown_atoms`` their indices;
- ``max_displacement_A``: the largest distance any atom moved from its start;
- ``atoms_collapsed``: whether at any recorded step two atoms (or images) came closer
  than ``collapse_A``, and ``min_distance_A``, the shortest distance seen (null when
  every pair stayed beyond twice ``collapse_A``). A learned potential has no repulsive
  core where it saw no data, and a 4G one adds the Coulomb attraction of opposite
  charges there: the study's model pulled two ions to 0.36 A after 1.7 ps of NVE;
- ``temperature_K`` / ``time_fs`` / ``potential_energy_eV`` series, and the range of
  the charges (``charge_min_e``, ``charge_max_e``; null for a baseline model);
- ``qeq``: the charge equilibration, ``full`` (a solve per step) or ``shadow``
  (extended-Lagrangian shadow QEq, :mod:`hipqeq.qeq.shadow`: the potential energy is
  then the shadow energy, whose conservation the drift measures), and
  ``qeq_matvec_products_per_step``, the mean number of Coulomb products of the charge
  solves per evaluation (null without charges; 0 for dense solves);
- ``potential_energy_drop_eV_per_atom``: the start's potential energy minus the mean
  over the last tenth of the NVT steps, per atom; above ``max_energy_drop_eV_per_atom``
  the model found states far below the structure it started from (``energy_fell``):
  under a thermostat a sound start *gains* about 3/2 k_B T per atom, while the study's
  first model let a 3x3 slab fall by 0.48 eV/atom in 22 ps at 500 K, swelling from 6 to
  16 A thick, with no atom isolated and no pair collapsed;
- ``stable``: the run finished, every energy was finite, no atom flew off, none
  collapsed onto another and the energy did not fall;
- ``stopped_early`` and ``reason``: a model error (:class:`~hipqeq.qeq.QEqNotConverged`
  or an ASE ``CalculatorError``) or a non-finite energy ends the run; the summary then holds the steps done so far, the
  reason names the error and the step, and ``stable`` is false. A model that fails is
  a result of the check, not a crash of the job.

The trajectory (ASE ``.traj``) holds every ``frame_interval``-th step with energy,
forces and charges (up to the last step that evaluated; empty when the start
structure already failed). The random stream (momenta, Langevin noise) is seeded with
:func:`hipqeq.seeds.derive_seed` of the master seed, "md" and the structure name.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.calculators.calculator import CalculatorError
from ase.constraints import FixCom
from ase.io.trajectory import Trajectory
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase.neighborlist import neighbor_list
from tqdm.auto import tqdm

from hipqeq.data import read_structure
from hipqeq.geometry import closest_pair
from hipqeq.qeq.solvers import QEqNotConverged
from hipqeq.seeds import derive_seed

log = logging.getLogger(__name__)

#: Errors of the model or its calculator that end an MD run: results of the stability
#: check. Other hipqeq errors (an element the model does not know, a degenerate cell)
#: mean the model and structure do not fit together, and fail the command.
MODEL_ERRORS = (QEqNotConverged, CalculatorError)


def isolated_atoms(atoms, isolation_A: float) -> np.ndarray:
    """Indices of atoms with no other atom (or periodic image) within ``isolation_A``."""
    first = neighbor_list("i", atoms, isolation_A)
    return np.setdiff1d(np.arange(len(atoms)), first)


def drift_per_atom_ps(time_fs: np.ndarray, total_energy_eV: np.ndarray, n_atoms: int) -> float | None:
    """Slope of total energy per atom against time, eV/atom/ps (None below 2 points)."""
    if len(time_fs) < 2:
        return None
    slope_per_fs = np.polyfit(np.asarray(time_fs, dtype=float), np.asarray(total_energy_eV) / n_atoms, 1)[0]
    return float(slope_per_fs * 1000.0)


def run_md(atoms, calculator, steps: int, temperature_K: float, timestep_fs: float,
           trajectory: str | os.PathLike, friction_per_fs: float = 0.01, nve_steps: int = 20,
           frame_interval: int = 5, isolation_A: float = 5.0, seed: int = 0, collapse_A: float = 1.5,
           max_energy_drop_eV_per_atom: float = 0.1) -> dict:
    """Run NVT Langevin + an NVE tail; write the trajectory and return the summary dict
    (see the module docstring)."""
    atoms = atoms.copy()
    atoms.set_constraint(FixCom())  # no centre-of-mass drift (ASE's replacement for fixcm)
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
    Stationary(atoms)
    start = atoms.get_positions()
    Path(trajectory).parent.mkdir(parents=True, exist_ok=True)
    record = {"time_fs": [], "temperature_K": [], "potential_energy_eV": [], "total_energy_eV": [],
              "phase": []}
    extremes = {"max_force": 0.0, "q_min": np.inf, "q_max": -np.inf, "max_disp": 0.0, "min_distance": np.inf}
    flown: set[int] = set()
    products: list[int] = []
    elapsed_fs = [0.0]

    def observe(phase: str) -> None:
        epot = atoms.get_potential_energy()
        forces = atoms.get_forces()
        record["time_fs"].append(elapsed_fs[0])
        record["temperature_K"].append(float(atoms.get_temperature()))
        record["potential_energy_eV"].append(float(epot))
        record["total_energy_eV"].append(float(epot + atoms.get_kinetic_energy()))
        record["phase"].append(phase)
        extremes["max_force"] = max(extremes["max_force"], float(np.linalg.norm(forces, axis=1).max()))
        if "qeq_matvec_products" in atoms.calc.results:
            products.append(atoms.calc.results["qeq_matvec_products"])
        charges = atoms.calc.results.get("charges")
        if charges is not None:
            extremes["q_min"] = min(extremes["q_min"], float(charges.min()))
            extremes["q_max"] = max(extremes["q_max"], float(charges.max()))
        extremes["max_disp"] = max(extremes["max_disp"],
                                   float(np.linalg.norm(atoms.get_positions() - start, axis=1).max()))
        flown.update(isolated_atoms(atoms, isolation_A).tolist())
        pair = closest_pair(atoms, 2.0 * collapse_A)
        if pair is not None:
            extremes["min_distance"] = min(extremes["min_distance"], pair[2])

    nvt = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature_K,
                   friction=friction_per_fs / units.fs, fixcm=False, rng=rng)
    nve = VelocityVerlet(atoms, timestep_fs * units.fs)
    started = time.perf_counter()
    reason = None
    stored = []
    try:
        atoms.get_potential_energy()  # one evaluation tells which properties the model gives
        stored = [p for p in ("energy", "forces", "charges") if p in atoms.calc.results]
        observe("nvt")
    except MODEL_ERRORS as exc:
        reason = f"{type(exc).__name__} on the start structure: {exc}"
    with Trajectory(str(trajectory), "w", atoms, properties=stored) as traj:
        if reason is None:
            traj.write()
        total = steps + nve_steps
        with tqdm(total=total, desc="md", unit="step", leave=False, disable=reason is not None) as bar:
            for step in range(1, total + 1):
                if reason is not None:
                    break
                integrator, phase = (nvt, "nvt") if step <= steps else (nve, "nve")
                try:
                    integrator.run(1)
                    elapsed_fs[0] += timestep_fs
                    observe(phase)
                except MODEL_ERRORS as exc:
                    reason = f"{type(exc).__name__} at step {step}: {exc}"
                    break
                if step % frame_interval == 0 or step == total:
                    traj.write()
                bar.update(1)
                if not np.isfinite(record["total_energy_eV"][-1]):
                    reason = f"the energy is not finite at step {step}"
    if reason is not None:
        log.warning("MD stopped early: %s", reason)
    phases = np.array(record["phase"])
    tail = phases == "nve"
    if tail.any():
        # the NVE tail starts from the last NVT state, which belongs to its energy series
        tail[np.flatnonzero(tail)[0] - 1] = True
    drift = drift_per_atom_ps(np.array(record["time_fs"])[tail], np.array(record["total_energy_eV"])[tail],
                              len(atoms))
    finite = bool(np.all(np.isfinite(record["total_energy_eV"])))
    has_charges = np.isfinite(extremes["q_min"])
    collapsed = bool(extremes["min_distance"] < collapse_A)
    nvt_energies = np.array(record["potential_energy_eV"])[phases == "nvt"]
    drop = (float(nvt_energies[0] - nvt_energies[-max(1, len(nvt_energies) // 10):].mean()) / len(atoms)
            if len(nvt_energies) else None)
    fell = drop is not None and drop > max_energy_drop_eV_per_atom
    nvt_temperatures = np.array(record["temperature_K"])[phases == "nvt"]
    summary = {
        "n_atoms": len(atoms),
        "steps": steps,
        "nve_steps": nve_steps,
        "temperature_target_K": temperature_K,
        "timestep_fs": timestep_fs,
        "friction_per_fs": friction_per_fs,
        "energy_drift_eV_per_atom_ps": drift,
        "max_force_eV_A": extremes["max_force"],
        "max_displacement_A": extremes["max_disp"],
        "isolation_A": isolation_A,
        "atoms_flew_off": bool(flown),
        "flown_atoms": sorted(flown),
        "collapse_A": collapse_A,
        "atoms_collapsed": collapsed,
        "min_distance_A": float(extremes["min_distance"]) if np.isfinite(extremes["min_distance"]) else None,
        "potential_energy_drop_eV_per_atom": drop,
        "max_energy_drop_eV_per_atom": max_energy_drop_eV_per_atom,
        "energy_fell": fell,
        "charge_min_e": extremes["q_min"] if has_charges else None,
        "charge_max_e": extremes["q_max"] if has_charges else None,
        "mean_temperature_K": float(np.mean(nvt_temperatures)) if len(nvt_temperatures) else None,
        "qeq": getattr(calculator, "qeq", "full"),
        "qeq_matvec_products_per_step": float(np.mean(products)) if products else None,
        "stable": reason is None and finite and not flown and not collapsed and not fell,
        "stopped_early": reason is not None,
        "reason": reason,
        "wall_time_s": time.perf_counter() - started,
        "time_fs": record["time_fs"],
        "temperature_K": record["temperature_K"],
        "potential_energy_eV": record["potential_energy_eV"],
        "total_energy_eV": record["total_energy_eV"],
        "phase": record["phase"],
    }
    return summary


def run_md_from_config(config: dict, model_dirs, structures, name: str, output, trajectory,
                       steps: int | None = None, temperature_K: float | None = None,
                       timestep_fs: float | None = None, friction_per_fs: float | None = None,
                       device: str = "auto", seed: int | None = None, qeq: str = "full",
                       kspace_method: str | None = None) -> dict:
    """``hipqeq md``: settings from ``config['validation']`` unless overridden; writes
    the JSON summary to ``output`` and returns it. ``qeq`` ("full" or "shadow") is the
    calculator's charge equilibration (:class:`hipqeq.calculator.HipQEqCalculator`)."""
    from hipqeq.calculator import HipQEqCalculator

    settings = config["validation"]
    atoms = read_structure(structures, name)
    calculator = HipQEqCalculator([str(d) for d in model_dirs], device=device, qeq=qeq,
                                  kspace_method=kspace_method or settings["md_kspace_method"])
    summary = run_md(
        atoms, calculator,
        steps=steps if steps is not None else settings["md_steps"],
        temperature_K=temperature_K if temperature_K is not None else settings["md_temperature_K"],
        timestep_fs=timestep_fs if timestep_fs is not None else settings["md_timestep_fs"],
        trajectory=trajectory,
        friction_per_fs=friction_per_fs if friction_per_fs is not None else settings["md_friction_per_fs"],
        nve_steps=settings["md_nve_steps"], frame_interval=settings["md_frame_interval"],
        isolation_A=settings["md_isolation_A"],
        collapse_A=settings["md_min_distance_A"],
        max_energy_drop_eV_per_atom=settings["md_max_energy_drop_eV_per_atom"],
        seed=derive_seed(config["seed"] if seed is None else seed, "md", name))
    summary = {"name": name, "models": [str(d) for d in model_dirs], "structures": str(structures),
               "trajectory": str(trajectory), **summary}
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(summary, indent=1) + "\n")
    log.info("md %s: %d steps, drift %s eV/atom/ps, max force %.3g eV/A, stable %s", name, summary["steps"],
             summary["energy_drift_eV_per_atom_ps"], summary["max_force_eV_A"], summary["stable"])
    return summary
