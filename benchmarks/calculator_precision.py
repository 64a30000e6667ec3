"""Speed and accuracy of HipQEqCalculator in float32 and float64 on CPU.

The calculator runs in float64 on CPU by default (see :mod:`hipqeq.calculator`). This
script measures what that costs and what it buys, on an untrained 4G potential with the
production network settings (the config schema's defaults: 32 features, 16
sensitivities, 2 interaction layers, 6 A cutoff; dense QEq) stored in float32, and a
Ruddlesden-Popper n = 1 CsPbI slab (3 x 3 in-plane, 63 atoms, 20 A vacuum):

- wall time of one energy + forces call (median of ``--repeats`` calls, each on newly
  rattled positions so that nothing is cached), and the float64 / float32 time ratio;
- the error of a central finite difference of the energy (step ``--step`` A) against
  the analytic force on one atom, in each precision.

An untrained model's energies are small; a model trained on GFN1-xTB energies gives
about -4,000 eV for a 63-atom slab, where float32's rounding unit (printed) drowns the
meV differences that finite differences and MD energy conservation need.

Not a test; run ``python benchmarks/calculator_precision.py --help``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def write_model(directory: Path) -> Path:
    """An untrained float32 4G model directory for Cs, Pb, I with the default network."""
    import torch

    from hipqeq.config import validate_section
    from hipqeq.models.charges import ChargeModel, charge_hyperparameters
    from hipqeq.models.network import network_hyperparameters
    from hipqeq.models.short_range import ShortRangeModel
    from hipqeq.models.store import CHARGE_MODEL_DIR, save_model

    torch.manual_seed(0)
    network = validate_section("training", {})["network"]
    hp = network_hyperparameters(network, [55, 82, 53])
    save_model(directory, "short-range", ShortRangeModel(hp), {"dtype": "float32"}, {})
    save_model(directory / CHARGE_MODEL_DIR, "charges", ChargeModel(charge_hyperparameters(hp, 1e-6)),
               {"dtype": "float32"}, {})
    return directory


def finite_difference_error(atoms, step: float) -> float:
    """|central difference - analytic force| on atom 0, x (eV/A)."""
    force = atoms.get_forces()[0, 0]
    energies = []
    for sign in (1, -1):
        displaced = atoms.copy()
        displaced.positions[0, 0] += sign * step
        displaced.calc = atoms.calc
        energies.append(displaced.get_potential_energy())
    return abs(-(energies[0] - energies[1]) / (2 * step) - force)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per precision (default 5)")
    parser.add_argument("--step", type=float, default=1e-3, help="finite-difference step, A (default 1e-3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()

    import torch

    from hipqeq.calculator import HipQEqCalculator
    from hipqeq.structures.builders import ruddlesden_popper

    torch.set_num_threads(args.threads)
    slab = ruddlesden_popper(1, kind="slab") * (3, 3, 1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = write_model(Path(tmp) / "4g")
        for dtype in ("float32", "float64"):
            atoms = slab.copy()
            atoms.calc = HipQEqCalculator(model, device="cpu", dtype=dtype)
            atoms.get_forces()  # warm-up: first-call set-up out of the timing
            times = []
            for k in range(args.repeats):
                atoms.positions = slab.positions + np.random.default_rng(k).normal(scale=0.01, size=slab.positions.shape)
                start = time.perf_counter()
                atoms.get_forces()
                times.append(time.perf_counter() - start)
            results[dtype] = (statistics.median(times), finite_difference_error(atoms, args.step),
                              atoms.get_potential_energy())
    print(f"{len(slab)}-atom RP n=1 slab, untrained production-size 4G model, {args.threads} thread(s), "
          f"median of {args.repeats} energy+forces calls")
    print(f"{'dtype':8s} {'time (s)':>10s} {'|FD - F| (eV/A)':>16s} {'energy (eV)':>12s}")
    for dtype, (seconds, error, energy) in results.items():
        print(f"{dtype:8s} {seconds:10.3f} {error:16.2e} {energy:12.4f}")
    print(f"float64 / float32 time ratio: {results['float64'][0] / results['float32'][0]:.2f}")
    for energy in (-400.0, -4000.0):
        print(f"float32 rounding unit at {energy:g} eV: {abs(np.spacing(np.float32(energy))):.1e} eV "
              f"(float64: {abs(np.spacing(energy)):.1e} eV)")


if __name__ == "__main__":
    main()
