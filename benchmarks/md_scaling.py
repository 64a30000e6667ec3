"""Energy + forces per MD step of the potential versus system size, 10^3 to 10^5 atoms.

Two families, rattled by 0.05 Angstrom:

- ``cubic``: cubic CsPbI3 supercells, 5 n^3 atoms, periodic;
- ``slab``: Ruddlesden-Popper n = 1 Cs2PbI4 slabs, 7 m^2 atoms (m x m in-plane, 20 A
  vacuum), pbc = (T, T, F): in-plane Ewald sums with the dipole correction.

The potential is an untrained 4G model with the config schema's default network (see
``calculator_precision.py``) in :class:`hipqeq.calculator.HipQEqCalculator` as MD uses
it: float64 on CPU (float32 on CUDA), the charge solve iterative above 1000 atoms (P3M
unless ``--kspace-method``), warm-started from the previous step's charges (and its
adjoint from the previous adjoint), and a Verlet neighbour list; with ``--qeq shadow``
the charges are shadow QEq's instead (:mod:`hipqeq.qeq.shadow`: a few products per
step, no solve, so the count stays flat while CG's grows with the cell). Each size runs
in a fresh child process: one cold call, then ``--steps`` calls on positions displaced
as by an MD step (0.01 A per atom, so the neighbour list is reused and the charges
warm-start). It reports the cold time, the median time per step (wall, and the process's CPU
time: on a shared machine the latter is the meaningful one with ``--threads 1``), the
Coulomb matrix-vector products per step (every call: the warm-started solve, the
potential, the adjoint solve of the forces and the force pass through one product),
neighbour searches over the steps, and the peak memory growth of the child (resident
memory on CPU, allocated device memory on CUDA), and records the real-space pairs and
mesh points per atom the Ewald balance chose (``ewald_balance.py`` reads them); then per family the log-log fitted
exponents of both times against N. With ``--kernels pytorch numba`` every size runs with
both of hippynn's message-passing kernels (:mod:`hipqeq._hippynn`), side by side, and
the numba-to-torch ratios of CPU time and memory are printed.

Not a test; run ``python benchmarks/md_scaling.py --help``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue as queue_module
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from calculator_precision import write_model
from qeq_scaling import fitted_exponent, supercell
from shadow_md import ProductCounter

#: Atoms per repeat unit of each family.
UNIT_ATOMS = {"cubic": 5, "slab": 7}


def structure(family: str, repeat: int):
    if family == "cubic":
        return supercell(repeat)
    from hipqeq.structures.builders import ruddlesden_popper

    atoms = ruddlesden_popper(1, kind="slab", vacuum=20.0, supercell=(repeat, repeat, 1))
    atoms.rattle(0.05, seed=repeat)
    return atoms


def repeats_between(family: str, min_atoms: int, max_atoms: int, points: int) -> list[int]:
    """About ``points`` repeats whose sizes are evenly spaced in log N."""
    power = 3 if family == "cubic" else 2
    targets = np.geomspace(min_atoms, max_atoms, points)
    repeats = sorted({max(1, round((t / UNIT_ATOMS[family]) ** (1.0 / power))) for t in targets})
    return [r for r in repeats if min_atoms <= UNIT_ATOMS[family] * r**power <= max_atoms]


def _measure(model_dir, family, repeat, kernels, args, queue) -> None:
    import torch

    from hipqeq._hippynn import select_kernels
    from hipqeq.calculator import HipQEqCalculator
    from hipqeq.qeq import ewald

    if getattr(args, "pair_cost", None) is not None:
        ewald.PAIR_COST_PER_MESH_POINT = args.pair_cost
    torch.set_num_threads(args.threads)
    select_kernels(kernels)  # after the threads: numba takes torch's count
    counter = ProductCounter()
    atoms = structure(family, repeat)
    calculator = HipQEqCalculator(str(model_dir), device=args.device, kspace_method=args.kspace_method,
                                  qeq=args.qeq)
    atoms.calc = calculator
    cuda = calculator.potentials[0].charges.qeq.raw_sigma.device.type == "cuda"
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    atoms.get_forces()
    cold = time.perf_counter() - started
    rng = np.random.default_rng(0)
    times, cpu_times, products = [], [], []
    for _ in range(args.steps):
        atoms.positions = atoms.positions + rng.normal(0.0, 0.01 / np.sqrt(3.0), atoms.positions.shape)
        started, cpu_started, calls = time.perf_counter(), time.process_time(), counter.calls
        atoms.get_forces()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
        products.append(counter.calls - calls)
    if cuda:
        memory_mib = torch.cuda.max_memory_allocated() / 2**20
    else:  # ru_maxrss is KiB on Linux
        memory_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    queue.put({"n_atoms": len(atoms), "cold_s": cold, "step_s": statistics.median(times),
               "step_cpu_s": statistics.median(cpu_times),
               "matvecs": float(np.mean(products)), "builds": calculator.results["neighbor_list_builds"],
               "memory_mib": memory_mib, **mesh_balance(atoms, calculator, args.kspace_method)})


def mesh_balance(atoms, calculator, kspace_method) -> dict:
    """Real-space pairs and mesh points per atom of the iterative charge solve's Coulomb
    sums (what :func:`hipqeq.qeq.ewald.mesh_parameters` chose for this cell)."""
    import torch

    from hipqeq.qeq import ewald, mesh_points

    qeq = calculator.potentials[0].charges.qeq
    method = kspace_method or qeq.kspace_method
    if method == "ewald":
        return {}
    _, sigma = qeq.atom_parameters(torch.tensor(atoms.numbers), torch.float64)
    cell = torch.tensor(atoms.cell.array)
    parameters = ewald.mesh_parameters(cell, len(atoms), float(sigma.detach().max()), qeq.tolerance, method)
    pairs = 4.0 * np.pi / 3.0 * parameters.cutoff**3 * len(atoms) / atoms.get_volume()
    return {"pairs_per_atom": float(pairs),
            "mesh_points_per_atom": float(mesh_points(cell, parameters.mesh_spacing).prod()) / len(atoms)}


def measure(model_dir, family: str, repeat: int, kernels: str, args) -> dict | None:
    """One size in a fresh process; None when that process died (killed when out of memory)."""
    context = multiprocessing.get_context("spawn")  # each size starts from nothing
    queue = context.Queue()
    process = context.Process(target=_measure, args=(model_dir, family, repeat, kernels, args, queue))
    process.start()
    while True:
        try:
            result = queue.get(timeout=10)
            break
        except queue_module.Empty:
            if not process.is_alive():
                result = None
                break
    process.join()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-atoms", type=int, default=1000, help="smallest system (default 1000)")
    parser.add_argument("--max-atoms", type=int, default=100_000, help="largest system (default 100000)")
    parser.add_argument("--points", type=int, default=5, help="sizes per family, log-spaced (default 5)")
    parser.add_argument("--families", nargs="+", choices=sorted(UNIT_ATOMS), default=["cubic", "slab"])
    parser.add_argument("--steps", type=int, default=3, help="timed MD-like steps per size (default 3)")
    parser.add_argument("--qeq", choices=("full", "shadow"), default="full",
                        help="charges per step: a full solve (default) or shadow QEq's propagated ones")
    parser.add_argument("--kspace-method", choices=("p3m", "pme", "ewald"), default=None,
                        help="reciprocal sum of the iterative charge solve (default: the layer's, p3m)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--kernels", nargs="+", choices=("pytorch", "numba"), default=["pytorch"],
                        help="hippynn message-passing kernels to time, each size with each (default pytorch)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_model(Path(tmp) / "model")
        print(f"untrained default-network 4G potential, {args.qeq} QEq, {args.device}, {args.threads} threads, "
              f"k-space {args.kspace_method or 'default'}, median of {args.steps} steps")
        print(f"{'family':>6} {'kernels':>8} {'N':>7} {'cold_s':>8} {'step_s':>8} {'step_cpu_s':>10} "
              f"{'matvecs':>8} {'NL builds':>9} {'mem_MiB':>8}")
        rows = []
        for family in args.families:
            repeats = repeats_between(family, args.min_atoms, args.max_atoms, args.points)
            if not repeats:
                parser.error(f"no {family} system lies between --min-atoms and --max-atoms")
            for repeat in repeats:
                by_kernels = {}
                for kernels in args.kernels:
                    row = measure(model_dir, family, repeat, kernels, args)
                    if row is None:
                        n_atoms = len(structure(family, repeat))
                        print(f"{family:>6} {kernels:>8} {n_atoms:>7d}  the process died (its error above, or out of memory)", flush=True)
                        continue
                    by_kernels[kernels] = row
                    rows.append((family, kernels, row))
                    print(f"{family:>6} {kernels:>8} {row['n_atoms']:>7d} {row['cold_s']:>8.2f} "
                          f"{row['step_s']:>8.3f} {row['step_cpu_s']:>10.3f} {row['matvecs']:>8.1f} "
                          f"{row['builds']:>9d} {row['memory_mib']:>8.0f}", flush=True)
                if len(by_kernels) == 2:
                    numba, torch_row = by_kernels["numba"], by_kernels["pytorch"]
                    print(f"{family:>6} {'ratio':>8} {numba['n_atoms']:>7d}  numba / pytorch: CPU time per step "
                          f"{numba['step_cpu_s'] / torch_row['step_cpu_s']:.2f}, memory "
                          f"{numba['memory_mib'] / torch_row['memory_mib']:.2f}", flush=True)
    print()
    for family in args.families:
        for kernels in args.kernels:
            chosen = [r for f, k, r in rows if f == family and k == kernels]
            sizes = [r["n_atoms"] for r in chosen]
            if len(sizes) >= 2:
                wall = fitted_exponent(sizes, [r["step_s"] for r in chosen])
                cpu = fitted_exponent(sizes, [r["step_cpu_s"] for r in chosen])
                print(f"{family:>6} ({kernels}): time per step ~ N^{wall:.2f}, CPU time ~ N^{cpu:.2f} "
                      f"(log-log fit over N = {min(sizes)}..{max(sizes)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
