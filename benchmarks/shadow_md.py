"""Shadow (extended-Lagrangian) QEq MD versus a full charge solve per step: cost and drift.

Runs the same NVE trajectory start (velocity Verlet, momenta drawn at --temperature-K)
with the ASE calculator in three modes:

- ``full-tight``: iterative PME charge solve per step, warm-started, relative KKT
  tolerance 1e-8 (plus its adjoint solve for the forces);
- ``full-loose``: the same at tolerance 1e-4;
- ``shadow``: ``qeq="shadow"`` (:mod:`hipqeq.qeq.shadow`): one two-column Coulomb
  product per step plus the Krylov kernel's.

For each it prints: Coulomb products per step (every call of
``CoulombOperator.matvec``, solves, adjoint solves and force passes included) and the
charge vectors they carry, wall time per step, the drift of the total energy
(potential + kinetic; for shadow the shadow energy) as the slope of a least-squares
line in meV/atom/ps, its largest excursion from the start (meV/atom), and for shadow
the largest deviation of its charges q[n] (and of the auxiliary n) from charges
converged at the same geometry, sampled every --check-every steps (outside the timing).
Ratios are given against ``full-tight``.

The potential is untrained (random weights, the production network size of
--config, its electronegativity head scaled so that the charges are of the size of
CsPbI3's, |q| ~ 0.3-1 e), or --model DIR; the structure a rattled cubic CsPbI3
supercell (5 atoms x --repeat^3, periodic) or, with ``--structure rp1-slab``, a rattled
RP n = 1 slab (7 atoms x --repeat^2, 30 A vacuum, pbc T,T,F: the regime of the
pretrained ``cspbi-gfn1``; an untrained potential lets a cubic cell collapse within
picoseconds, so long runs want a trained one).

example:
  python benchmarks/shadow_md.py --repeat 2 --steps 100 --config config/toy.yaml
  python benchmarks/shadow_md.py --repeat 2 --steps 500 --modes shadow --kernel-rank 1
  python benchmarks/shadow_md.py --structure rp1-slab --repeat 2 --steps 5000 \
      --model src/hipqeq/pretrained/cspbi-gfn1/models/4g_0
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

MODES = {"full-tight": 1e-8, "full-loose": 1e-4, "shadow": None}


def cubic_cell(repeat: int):
    from ase import Atoms

    a = 6.29
    atoms = Atoms("PbCsI3", cell=[a, a, a], pbc=True,
                  scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]])
    atoms = atoms * (repeat, repeat, repeat)
    atoms.rattle(0.05, seed=repeat)
    return atoms


def rp1_slab(repeat: int):
    from hipqeq.structures.builders import ruddlesden_popper

    atoms = ruddlesden_popper(1, kind="slab", vacuum=30.0, supercell=(repeat, repeat, 1))
    atoms.rattle(0.05, seed=repeat)
    return atoms


STRUCTURES = {"cubic": cubic_cell, "rp1-slab": rp1_slab}


def untrained_potential(directory: Path, config_path: Path, chi_scale: float) -> Path:
    """An untrained 4G potential (:func:`speed_vs_xtb.production_potential`) whose
    electronegativity head is scaled by ``chi_scale`` (otherwise its charges are ~0)."""
    import torch

    from hipqeq.models.store import CHARGE_MODEL_DIR, load_potential, save_model
    from speed_vs_xtb import production_potential

    production_potential(directory, config_path)
    charges = load_potential(directory).charges
    with torch.no_grad():
        for layer in charges.electronegativity.layers:
            layer.weight.mul_(chi_scale)
    save_model(directory / CHARGE_MODEL_DIR, "charges", charges, {"dtype": "float64"}, {})
    return directory


class ProductCounter:
    """Counts calls of ``CoulombOperator.matvec`` and the charge vectors they carry."""

    def __init__(self):
        from hipqeq.qeq.coulomb import CoulombOperator

        self.calls = self.columns = 0
        original = CoulombOperator.matvec

        def counted(operator, charges, *args, **kwargs):
            self.calls += 1
            self.columns += 1 if charges.dim() == 1 else charges.shape[1]
            return original(operator, charges, *args, **kwargs)

        CoulombOperator.matvec = counted


def run(mode: str, model_dir: Path, start, args, counter: ProductCounter) -> dict:
    from ase import units
    from ase.md.velocitydistribution import Stationary, thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    from hipqeq.calculator import HipQEqCalculator
    from hipqeq.models.potential import evaluate

    atoms = start.copy()
    calc = HipQEqCalculator(model_dir, device="cpu", qeq_solver="iterative",
                            qeq="shadow" if mode == "shadow" else "full",
                            shadow_options={"kernel_rank": args.kernel_rank})
    if MODES[mode] is not None:
        calc.potentials[0].charges.qeq.solve_tolerance = MODES[mode]
    reference = calc.potentials[0]
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K=args.temperature_K, rng=np.random.default_rng(0))
    Stationary(atoms)
    atoms.get_potential_energy()  # start (shadow: converged charges and adjoint)
    dynamics = VelocityVerlet(atoms, args.timestep_fs * units.fs)
    energies, times, charge_errors, auxiliary_errors = [atoms.get_total_energy()], [], [], []
    calls = columns = 0
    for step in range(1, args.steps + 1):
        before = (counter.calls, counter.columns)
        started = time.perf_counter()
        dynamics.run(1)
        times.append(time.perf_counter() - started)
        calls += counter.calls - before[0]
        columns += counter.columns - before[1]
        energies.append(atoms.get_total_energy())
        if mode == "shadow" and step % args.check_every == 0:
            saved = (counter.calls, counter.columns, reference.charges.qeq.solve_tolerance)
            reference.charges.qeq.solve_tolerance = 1e-10   # the calculator's own potential: restored below
            converged = evaluate(reference, atoms, qeq_solver="iterative")["charges"]
            counter.calls, counter.columns, reference.charges.qeq.solve_tolerance = saved
            charge_errors.append(np.abs(calc.results["charges"] - converged).max())
            auxiliary_errors.append(np.abs(calc.results["auxiliary_charges"] - converged).max())
    n = len(atoms)
    time_ps = np.arange(len(energies)) * args.timestep_fs / 1000.0
    per_atom = (np.array(energies) - energies[0]) / n * 1000.0  # meV/atom
    return {"mode": mode, "products": calls / args.steps, "columns": columns / args.steps,
            "seconds": float(np.mean(times)), "drift_meV_atom_ps": float(np.polyfit(time_ps, per_atom, 1)[0]),
            "excursion_meV_atom": float(np.abs(per_atom).max()),
            "charge_error_e": max(charge_errors) if charge_errors else None,
            "auxiliary_error_e": max(auxiliary_errors) if auxiliary_errors else None,
            "charge_range_e": float(np.ptp(calc.results["charges"]))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structure", choices=list(STRUCTURES), default="cubic",
                        help="cubic CsPbI3 (5 r^3 atoms) or RP n = 1 slab (7 r^2 atoms)")
    parser.add_argument("--repeat", type=int, default=2, help="supercell repeat r")
    parser.add_argument("--steps", type=int, default=100, help="NVE steps per mode")
    parser.add_argument("--timestep-fs", type=float, default=2.0)
    parser.add_argument("--temperature-K", type=float, default=300.0, help="initial Maxwell-Boltzmann T")
    parser.add_argument("--check-every", type=int, default=10, help="shadow: compare with converged charges")
    parser.add_argument("--kernel-rank", type=int, default=2, help="shadow: largest rank of the Krylov kernel")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--model", type=Path, help="model directory (default: untrained, see above)")
    parser.add_argument("--chi-scale", type=float, default=8.0, help="untrained model's electronegativity scale")
    parser.add_argument("--config", type=Path, default=Path(__file__).parents[1] / "config" / "config.yaml")
    args = parser.parse_args(argv)

    import torch

    import hipqeq.models  # noqa: F401

    counter = ProductCounter()
    start = STRUCTURES[args.structure](args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or untrained_potential(Path(tmp) / "4g", args.config, args.chi_scale)
        rows = []
        for mode in args.modes:
            rows.append(run(mode, model_dir, start, args, counter))
            print(f"{mode}: done ({rows[-1]['seconds'] * args.steps:.0f} s)", flush=True)
    print(f"{args.structure}, {len(start)} atoms, {args.steps} NVE steps of {args.timestep_fs} fs "
          f"({args.steps * args.timestep_fs / 1000:.2f} ps), torch threads {torch.get_num_threads()}")
    base = next((r for r in rows if r["mode"] == "full-tight"), rows[0])
    print(f"{'mode':11s} {'products/step':>13s} {'vectors/step':>12s} {'s/step':>8s} {'x faster':>8s} "
          f"{'drift meV/atom/ps':>17s} {'max |dE| meV/atom':>17s} {'max|q-q*| e':>11s} {'max|n-q*| e':>11s}")
    for r in rows:
        errors = [f"{r[k]:11.1e}" if r[k] is not None else f"{'-':>11s}" for k in ("charge_error_e", "auxiliary_error_e")]
        print(f"{r['mode']:11s} {r['products']:13.1f} {r['columns']:12.1f} {r['seconds']:8.3f} "
              f"{base['seconds'] / r['seconds']:8.2f} {r['drift_meV_atom_ps']:17.3g} {r['excursion_meV_atom']:17.3g} "
              + " ".join(errors))
    print(f"charge range in the last frame: {rows[-1]['charge_range_e']:.2f} e")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
