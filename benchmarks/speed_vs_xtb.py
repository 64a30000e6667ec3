"""Time per energy+forces call: the hipqeq 4G potential versus tblite GFN2-xTB.

Builds Ruddlesden-Popper n = 2 Cs3Pb2I7 slabs (12 atoms per in-plane cell, 20 A
vacuum, pbc T,T,F) repeated m x m in-plane, from about 50 to about 2,000 atoms, and
times both methods on the same structures in one run. The potential is an untrained
model of the production config's network size (timing does not depend on the weights):
charge model (HIP-NN + QEq, dense up to 1,000 atoms, iterative PME above) plus a
short-range HIP-NN. tblite runs until its predicted time (cubic extrapolation from the
last size) exceeds --xtb-limit-s; larger sizes are reported as skipped.

Prints one row per size (atoms, seconds per call for each method, speed-up) and the
scaling exponents b of t ~ N^b fitted on a log-log scale. ``--tensor-orders 0 1`` times
a HIP-NN and a HIP-NN-TS potential of the same size side by side (one after the other at
each size, in one run), with the time ratio of the last to the first.

example:
  python benchmarks/speed_vs_xtb.py --max-atoms 500 --device cpu
  python benchmarks/speed_vs_xtb.py --max-atoms 200 --xtb-method GFN1-xTB --tensor-orders 0 1
  python benchmarks/speed_vs_xtb.py --device cuda --output benchmarks/speed_gpu.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

#: In-plane repetitions m of the 12-atom RP n=2 slab cell: 48 ... 2028 atoms.
REPEATS = (2, 3, 4, 6, 9, 13)


def slab(m: int, seed: int = 0):
    from hipqeq.structures.builders import ruddlesden_popper

    atoms = ruddlesden_popper(2, kind="slab", vacuum=20.0, supercell=(m, m, 1))
    atoms.rattle(0.03, seed=seed)  # off the symmetric saddle, as in MD frames
    return atoms


def production_potential(directory: Path, config_path: Path, species=(53, 55, 82),
                         tensor_order: int | None = None) -> Path:
    """Write an untrained 4G potential with the production network size (its
    ``tensor_order`` replaced when given)."""
    import torch

    import hipqeq.models  # noqa: F401
    from hipqeq.config import load_config
    from hipqeq.models.charges import ChargeModel, charge_hyperparameters
    from hipqeq.models.network import network_hyperparameters
    from hipqeq.models.short_range import ShortRangeModel
    from hipqeq.models.store import CHARGE_MODEL_DIR, save_model

    training = load_config(config_path)["training"]
    torch.manual_seed(0)
    network = training["network"] if tensor_order is None else {**training["network"], "tensor_order": tensor_order}
    hp = network_hyperparameters(network, list(species))
    meta = {"dtype": training["dtype"]}
    save_model(directory, "short-range", ShortRangeModel(hp), meta, {})
    save_model(directory / CHARGE_MODEL_DIR, "charges",
               ChargeModel(charge_hyperparameters(hp, training["qeq_tolerance"])), meta, {})
    return directory


def seconds_per_call(atoms, calc, repeats: int) -> float:
    """Median wall time of energy+forces calls on slightly moved copies (the first,
    warm-up call is not counted)."""
    times = []
    for k in range(repeats + 1):
        moved = atoms.copy()
        moved.positions += 1e-3 * np.random.default_rng(k).normal(size=moved.positions.shape)
        moved.calc = calc
        start = time.perf_counter()
        moved.get_potential_energy()
        moved.get_forces()
        if k:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def scaling_exponent(sizes, times) -> float | None:
    sizes, times = np.asarray(sizes, float), np.asarray(times, float)
    if len(sizes) < 2:
        return None
    return float(np.polyfit(np.log(sizes), np.log(times), 1)[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-atoms", type=int, default=2100, help="largest slab to time")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (the potential)")
    parser.add_argument("--xtb-limit-s", type=float, default=60.0,
                        help="skip tblite where one call is predicted to take longer")
    parser.add_argument("--xtb-method", default="GFN2-xTB", choices=("GFN1-xTB", "GFN2-xTB"))
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per size (potential)")
    parser.add_argument("--config", type=Path, default=Path(__file__).parents[1] / "config" / "config.yaml",
                        help="config whose training.network sets the model size")
    parser.add_argument("--tensor-orders", type=int, nargs="+", choices=(0, 1, 2),
                        help="time one potential per network tensor order (default: the config's)")
    parser.add_argument("--output", type=Path, help="also write the table as JSON")
    args = parser.parse_args(argv)

    import torch

    from hipqeq.calculator import HipQEqCalculator
    from hipqeq.engines import xtb_calculator

    rows = []
    orders = args.tensor_orders or [None]
    labels = ["hipqeq"] if not args.tensor_orders else [f"hipqeq (tensor order {o})" for o in orders]
    with tempfile.TemporaryDirectory() as tmp:
        potentials = [HipQEqCalculator(production_potential(Path(tmp) / f"4g_{k}", args.config, tensor_order=order),
                                       device=args.device) for k, order in enumerate(orders)]
        device = str(next(potentials[0].potentials[0].parameters()).device)
        xtb_time, xtb_size = None, None
        for m in REPEATS:
            atoms = slab(m)
            n = len(atoms)
            if n > args.max_atoms:
                break
            t_models = [seconds_per_call(atoms, potential, args.repeats) for potential in potentials]
            t_model = t_models[0]
            predicted = None if xtb_time is None else xtb_time * (n / xtb_size) ** 3
            if predicted is not None and predicted > args.xtb_limit_s:
                t_xtb = None
            else:
                t_xtb = seconds_per_call(atoms, xtb_calculator(args.xtb_method, "tblite"), repeats=1)
                xtb_time, xtb_size = t_xtb, n
            row = {"atoms": n, "repeat": m, "hipqeq_s": t_model, "xtb_s": t_xtb,
                   "speedup": None if t_xtb is None else t_xtb / t_model}
            if args.tensor_orders:
                row["hipqeq_s_by_tensor_order"] = dict(zip(map(str, orders), t_models))
            rows.append(row)
            models = "  ".join(f"{label} {t:9.4f} s" for label, t in zip(labels, t_models))
            ratio = "" if len(t_models) < 2 else f"  time ratio {t_models[-1] / t_models[0]:.2f}"
            print(f"{n:6d} atoms  {models}{ratio}  {args.xtb_method} "
                  + (f"{t_xtb:9.3f} s  speed-up " + " / ".join(f"{t_xtb / t:.1f}x" for t in t_models)
                     if t_xtb is not None else f"  skipped (predicted {predicted:.0f} s > {args.xtb_limit_s:.0f} s)"),
                  flush=True)
    measured = [r for r in rows if r["xtb_s"] is not None]
    exponents = {
        "hipqeq": scaling_exponent([r["atoms"] for r in rows], [r["hipqeq_s"] for r in rows]),
        "xtb": scaling_exponent([r["atoms"] for r in measured], [r["xtb_s"] for r in measured]),
    }
    print(f"scaling exponents (t ~ N^b): hipqeq b = {exponents['hipqeq']}, "
          f"{args.xtb_method} b = {exponents['xtb']}")
    print(f"device: {device}; torch threads: {torch.get_num_threads()}")
    if args.output:
        args.output.write_text(json.dumps({"device": device, "xtb_method": args.xtb_method,
                                           "rows": rows, "exponents": exponents}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
