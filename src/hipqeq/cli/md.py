"""Run Langevin MD with a trained potential as a stability check.

Takes one named structure from the built structures (or any Parquet dataset), runs NVT
Langevin dynamics with the potential (a committee when several --model directories
are given), and writes an ASE trajectory and a JSON summary: temperature series,
energy drift (eV/atom/ps) of a short NVE tail, largest force, the charge range, and
whether any atom flew off (no neighbour within validation.md_isolation_A). Steps, temperature, time
step and friction come from the config's validation section; flags override them
(range-checked: steps >= 1, the others > 0). A model
error during the run (e.g. the charge solve not converging) ends the run early: the
summary says so (stopped_early, reason, stable false) and the command still succeeds.
--qeq shadow replaces the charge solve of every step by extended-Lagrangian shadow
charge equilibration (one or a few Coulomb products a step; the energy whose drift is
reported is then the shadow energy); the default, full, solves the charges each step.
For systems of thousands of atoms on CPUs, HIPPYNN_USE_CUSTOM_KERNELS=numba runs the
networks' interaction sums in hippynn's numba kernels: half the memory from 10^4 atoms
on and 1.6-2x faster at every size measured, after ~10 s of compilation per process
(README, "Benchmarks").

example:
  hipqeq md --config config/toy.yaml --model results/models/4g_0 \\
      --structures results/structures/structures.parquet --name rp1_slab \\
      --output results/validation/md/4g_rp1_slab.json \\
      --trajectory results/validation/md/4g_rp1_slab.traj
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hipqeq.calculator import QEQ_MODES
from hipqeq.cli._common import (
    add_config_argument,
    add_device_argument,
    add_model_argument,
    add_seed_argument,
    load,
    positive_float,
    positive_int,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    add_model_argument(parser, "model directory (several: a committee)")
    parser.add_argument("--structures", type=Path, required=True, metavar="FILE",
                        help="Parquet file holding the start structure (e.g. hipqeq build output)")
    parser.add_argument("--name", required=True,
                        help="structure_name of the start structure in --structures")
    parser.add_argument("--output", "-o", type=Path, required=True, metavar="JSON",
                        help="summary to write")
    parser.add_argument("--trajectory", type=Path, required=True, metavar="TRAJ",
                        help="ASE trajectory to write")
    parser.add_argument("--steps", type=positive_int, help="Langevin steps (default: validation.md_steps)")
    parser.add_argument("--temperature-K", type=positive_float, dest="temperature_K",
                        help="thermostat temperature in K (default: validation.md_temperature_K)")
    parser.add_argument("--timestep-fs", type=positive_float, dest="timestep_fs",
                        help="time step in fs (default: validation.md_timestep_fs)")
    parser.add_argument("--friction-per-fs", type=positive_float, dest="friction_per_fs",
                        help="Langevin friction in 1/fs (default: validation.md_friction_per_fs)")
    parser.add_argument("--qeq", choices=QEQ_MODES, default="full",
                        help="charge equilibration per step: full solve or shadow (extended-Lagrangian) "
                             "(default: full)")
    parser.add_argument("--kspace-method", choices=("p3m", "pme", "ewald"), dest="kspace_method",
                        help="reciprocal sum of the iterative charge solve (above 1000 atoms; "
                             "default: validation.md_kspace_method, p3m)")
    add_device_argument(parser, "of the potential")
    add_seed_argument(parser)


def run(args: argparse.Namespace) -> int:
    from hipqeq.md import run_md_from_config

    config = load(args)
    summary = run_md_from_config(config, model_dirs=args.model, structures=args.structures,
                                 name=args.name, output=args.output, trajectory=args.trajectory,
                                 steps=args.steps, temperature_K=args.temperature_K,
                                 timestep_fs=args.timestep_fs, friction_per_fs=args.friction_per_fs,
                                 device=args.device, seed=args.seed, qeq=args.qeq,
                                 kspace_method=args.kspace_method)
    print(json.dumps({k: summary[k] for k in ("name", "steps", "stable", "stopped_early", "reason",
                                                "energy_drift_eV_per_atom_ps", "max_force_eV_A",
                                                "atoms_flew_off")}))
    return 0
