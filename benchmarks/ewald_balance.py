"""The cost weights of the Ewald parameter choice (:mod:`hipqeq.qeq.ewald`), measured.

Both periodic Coulomb paths split the sum between real-space pairs and a reciprocal
part, and pick the smearing that minimises a cost model with one measured weight:

``mesh``
    the iterative solve's P3M sums (above 1000 atoms): weight
    :data:`~hipqeq.qeq.ewald.PAIR_COST_PER_MESH_POINT` of a real-space pair against a
    mesh point. One cubic CsPbI3 supercell, the MD-like steps of ``md_scaling.py``
    (untrained default-network 4G potential, float64, warm-started charges, Verlet
    list), each weight in a fresh process; fit
    ``t = t0 + b (pairs per atom) + c (mesh points per atom)``, weight b / c.
``dense``
    the dense Coulomb matrix (up to 1000 atoms): weight
    :data:`~hipqeq.qeq.ewald.KSPACE_TERM_COST_PER_PAIR` of one term of the reciprocal
    matrix product (atom pair times k-vector) against a real-space pair. An RP n = 2
    slab of ``speed_vs_xtb.py`` with its production-size untrained potential, energy and
    forces per call; fit ``t = t0 + a (pairs) + c (N^2 k-vectors)``, weight c / a.

Each weight given makes the model pick another balance for the same cell; the fit gives
the weight the timings say, printed with the time of each balance (the model is right
when its weight picks the fastest balance).

examples:
  python benchmarks/ewald_balance.py mesh --repeat 9 --weights 0.03 0.1 0.25 1
  python benchmarks/ewald_balance.py dense --repeat 4 --weights 0.0003 0.003 0.03 0.3
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from calculator_precision import write_model
from md_scaling import measure


def fit_weight(rows: list[dict]) -> tuple[float, float, float]:
    """(t0, b, c) of the least-squares fit t = t0 + b * pairs + c * other (module docstring)."""
    design = np.array([[1.0, r["pairs"], r["other"]] for r in rows])
    times = np.array([r["seconds"] for r in rows])
    t0, b, c = np.linalg.lstsq(design, times, rcond=None)[0]
    return float(t0), float(b), float(c)


def mesh_rows(args) -> list[dict]:
    from hipqeq.models.potential import DENSE_QEQ_MAX_ATOMS

    if 5 * args.repeat**3 <= DENSE_QEQ_MAX_ATOMS:
        print(f"note: {5 * args.repeat**3} atoms take the dense solve (up to {DENSE_QEQ_MAX_ATOMS}): "
              "the times do not depend on the mesh balance")
    args.device, args.kspace_method = "cpu", "p3m"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_model(Path(tmp) / "model")
        print(f"cubic CsPbI3 {args.repeat}^3, {args.qeq} QEq, P3M, {args.kernels} kernels, {args.threads} threads")
        print(f"{'weight':>8} {'pairs/atom':>10} {'mesh/atom':>9} {'cpu_s/step':>10}")
        for weight in args.weights:
            args.pair_cost = weight
            row = measure(model_dir, "cubic", args.repeat, args.kernels, args)
            if row is None:
                print(f"{weight:>8g}  the process died")
                continue
            rows.append({"weight": weight, "seconds": row["step_cpu_s"], "pairs": row["pairs_per_atom"],
                         "other": row["mesh_points_per_atom"]})
            print(f"{weight:>8g} {row['pairs_per_atom']:>10.0f} {row['mesh_points_per_atom']:>9.0f} "
                  f"{row['step_cpu_s']:>10.3f}", flush=True)
    return rows


def dense_rows(args) -> list[dict]:
    import torch

    from hipqeq._hippynn import select_kernels
    from hipqeq.calculator import HipQEqCalculator
    from hipqeq.qeq import ewald, ewald_kvectors, neighbor_pairs
    from speed_vs_xtb import production_potential, seconds_per_call, slab

    torch.set_num_threads(args.threads)
    select_kernels(args.kernels)
    atoms = slab(args.repeat)
    n_atoms, cell = len(atoms), torch.tensor(atoms.cell.array)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        calculator = HipQEqCalculator(production_potential(Path(tmp) / "4g", args.config), device="cpu")
        qeq = calculator.potentials[0].charges.qeq
        _, sigma = qeq.atom_parameters(torch.tensor(atoms.numbers), torch.float64)
        print(f"RP n = 2 slab {args.repeat}x{args.repeat}, {n_atoms} atoms, dense QEq, {args.kernels} kernels, "
              f"{args.threads} threads")
        print(f"{'weight':>8} {'smearing':>8} {'pairs':>8} {'k-vectors':>9} {'s/call':>8}")
        for weight in args.weights:
            ewald.KSPACE_TERM_COST_PER_PAIR = weight
            parameters = ewald.dense_ewald_parameters(cell, n_atoms, float(sigma.detach().max()), qeq.tolerance)
            pairs = len(neighbor_pairs(torch.tensor(atoms.positions), cell, (True,) * 3, parameters.cutoff)[0])
            kvectors = len(ewald_kvectors(cell, parameters.kspace_cutoff))
            seconds = seconds_per_call(atoms, calculator, args.steps)
            rows.append({"weight": weight, "seconds": seconds, "pairs": pairs, "other": n_atoms**2 * kvectors})
            print(f"{weight:>8g} {parameters.smearing:>8.2f} {pairs:>8d} {kvectors:>9d} {seconds:>8.4f}", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", choices=("mesh", "dense"), help="which Coulomb path to calibrate")
    parser.add_argument("--repeat", type=int, default=None,
                        help="mesh: cubic supercell n x n x n, 5 n^3 atoms (default 9); "
                             "dense: RP n = 2 slab n x n in-plane, 12 n^2 atoms (default 4)")
    parser.add_argument("--weights", type=float, nargs="+", required=True,
                        help="values of the path's weight to run (at least three)")
    parser.add_argument("--qeq", choices=("full", "shadow"), default="shadow", help="mesh: charges per step (default shadow)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (mesh) or calls (dense) per weight (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--kernels", choices=("pytorch", "numba"), default="numba",
                        help="hippynn message-passing kernels (default numba)")
    parser.add_argument("--config", type=Path, default=Path(__file__).parents[1] / "config" / "config.yaml",
                        help="dense: config whose training.network sets the model size")
    args = parser.parse_args(argv)
    if len(args.weights) < 3:
        parser.error("the fit needs at least three --weights")
    if args.repeat is None:
        args.repeat = 9 if args.path == "mesh" else 4

    rows = mesh_rows(args) if args.path == "mesh" else dense_rows(args)
    if len({(round(r["pairs"]), round(r["other"])) for r in rows}) < 3:
        print("fewer than three distinct balances: no fit (spread the weights further)")
        return 1
    t0, b, c = fit_weight(rows)
    weight = b / c if args.path == "mesh" else c / b
    fastest = min(rows, key=lambda r: r["seconds"])
    units = ("pairs/atom", "mesh points/atom") if args.path == "mesh" else ("pairs", "N^2 k-vectors")
    print(f"fit: t = {t0:.4f} s + {b:.3g} s x {units[0]} + {c:.3g} s x {units[1]}")
    print(f"measured weight: {weight:.3g}; fastest balance: weight {fastest['weight']:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
