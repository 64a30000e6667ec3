"""NVE energy drift of MD with each reciprocal-space method of the iterative charge solve.

torch-pme documents that PME forces are not smooth (Lagrange interpolation is only
continuous across mesh cells) and recommends P3M for MD. This script measures what
that means for the potential: velocity-Verlet NVE runs of an untrained 4G potential
(the config schema's default network, Cs/Pb/I, weights seeded; see
``calculator_precision.py``) on a rattled cubic CsPbI3 supercell, the iterative charge
solve forced (``qeq_solver="iterative"``, as above 1000 atoms) with its reciprocal sum
by ``ewald`` (exact sums over k-vectors), ``pme`` or ``p3m``, all from the same start
(positions, velocities), at the given accuracy tolerance (Ewald/mesh sums and CG).

For each method it prints the drift (slope of a least-squares line through the total
energy per atom against time, meV/atom/ps), the largest excursion of the total energy
from its start (meV/atom), the time per step and the Coulomb matrix-vector products
per step, then each method's drift relative to Ewald's.

Not a test; run ``python benchmarks/kspace_md_drift.py --help``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from calculator_precision import write_model
from qeq_scaling import supercell

METHODS = ("ewald", "pme", "p3m")


def run_nve(model_dir: Path, method: str, repeat: int, steps: int, timestep_fs: float,
            temperature_K: float, tolerance: float) -> dict:
    """One NVE run; returns drift (meV/atom/ps), excursion (meV/atom), s/step, matvecs/step."""
    from ase import units
    from ase.md.velocitydistribution import Stationary, thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    from hipqeq.calculator import HipQEqCalculator
    from hipqeq.md import drift_per_atom_ps

    atoms = supercell(repeat)
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=np.random.default_rng(1))
    Stationary(atoms)
    calculator = HipQEqCalculator(model_dir, device="cpu", qeq_solver="iterative", kspace_method=method)
    for potential in calculator.potentials:
        potential.charges.qeq.tolerance = potential.charges.qeq.solve_tolerance = tolerance
    atoms.calc = calculator
    dynamics = VelocityVerlet(atoms, timestep_fs * units.fs)
    energies, products = [atoms.get_total_energy()], 0
    started = time.perf_counter()
    for _ in range(steps):
        dynamics.run(1)
        energies.append(atoms.get_total_energy())
        products += calculator.results["qeq_matvec_products"]
    elapsed = time.perf_counter() - started
    times_fs = timestep_fs * np.arange(steps + 1)
    energies = np.array(energies)
    return {"drift": 1e3 * drift_per_atom_ps(times_fs, energies, len(atoms)),
            "excursion": 1e3 * float(np.abs(energies - energies[0]).max()) / len(atoms),
            "step_s": elapsed / steps, "matvecs": products / steps, "n_atoms": len(atoms),
            "builds": calculator.results["neighbor_list_builds"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2, help="cubic supercell repeats (default 2: 40 atoms)")
    parser.add_argument("--steps", type=int, default=250, help="NVE steps (default 250)")
    parser.add_argument("--timestep-fs", type=float, default=2.0, help="time step, fs (default 2)")
    parser.add_argument("--temperature-K", type=float, default=300.0, help="initial temperature, K (default 300)")
    parser.add_argument("--tolerance", type=float, default=1e-6,
                        help="accuracy of the periodic sums and of the charge solve (default 1e-6)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_model(Path(tmp) / "model")
        print(f"cubic CsPbI3 {args.repeat}x{args.repeat}x{args.repeat}, NVE {args.steps} x {args.timestep_fs} fs "
              f"from {args.temperature_K} K, tolerance {args.tolerance:g}, {args.threads} threads, CPU")
        print(f"{'method':>7} {'drift meV/atom/ps':>18} {'max |dE| meV/atom':>18} {'s/step':>8} "
              f"{'matvecs/step':>13} {'NL builds':>10}")
        for method in args.methods:
            row = run_nve(model_dir, method, args.repeat, args.steps, args.timestep_fs, args.temperature_K,
                          args.tolerance)
            rows[method] = row
            print(f"{method:>7} {row['drift']:>18.4f} {row['excursion']:>18.4f} {row['step_s']:>8.3f} "
                  f"{row['matvecs']:>13.1f} {row['builds']:>10d}", flush=True)
    if "ewald" in rows:
        reference = abs(rows["ewald"]["drift"])
        for method in (m for m in rows if m != "ewald"):
            print(f"|drift| {method} / ewald: {abs(rows[method]['drift']) / max(reference, 1e-12):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
