"""Solve time and peak memory of the QEq solvers versus system size (CPU).

Cubic CsPbI3 supercells (a = 6.29 Angstrom; Pb at (0,0,0), Cs at (1/2,1/2,1/2), I at
(1/2,0,0), (0,1/2,0), (0,0,1/2)), rattled by 0.05 Angstrom so that the solve is not
trivially symmetric. Illustrative QEq parameters per element, chosen so that Cs is the
cation and I the anion with charges of the usual size (|q| ~ 0.2-0.6 e):

    element  chi (eV/e)  J (eV/e^2)  sigma (Angstrom)
    Cs         -2.0         4.0          1.8
    Pb          0.0         6.0          1.6
    I           1.5         7.0          1.9

For each size the script times

- dense: Coulomb matrix (Ewald, torch-pme) + bordered ``torch.linalg.solve``;
- iterative: pair list + mesh operator (P3M, or PME with ``--kspace-method pme``) +
  projected preconditioned CG (cold start) with the two-level preconditioner (Jacobi
  plus the long-wave modes, :func:`hipqeq.qeq.solvers.two_level_preconditioner`);
- jacobi: the same with the Jacobi preconditioner alone;

each in a forked child process that solves twice: it reports the first ("cold") total
time and the second (warm: setup and solve) wall times, and the peak resident memory
growth of that child. It prints a table, the log-log fitted exponent of total time
versus N for each solver and of the products of both CG variants, the jacobi/two-level
and dense/iterative time ratios where both ran.
Last, at the largest size, the time of one reciprocal-space product with the mesh
set-up kept between products at fixed geometry (:class:`hipqeq.qeq.MeshReciprocal`)
against torch-pme's own calculator, which redoes it at every call.

Not a test; run ``python benchmarks/qeq_scaling.py --help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing
import os
import resource
import time

import numpy as np

CHI = {55: -2.0, 82: 0.0, 53: 1.5}
HARDNESS = {55: 4.0, 82: 6.0, 53: 7.0}
SIGMA = {55: 1.8, 82: 1.6, 53: 1.9}
LATTICE_A = 6.29


def supercell(repeat: int):
    from ase import Atoms

    atoms = Atoms(
        "PbCsI3",
        scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]],
        cell=np.eye(3) * LATTICE_A,
        pbc=True,
    ) * (repeat, repeat, repeat)
    atoms.rattle(0.05, seed=repeat)
    return atoms


#: dense: Ewald matrix and bordered solve; jacobi: projected CG with the Jacobi
#: preconditioner; iterative: the same with the long-wave two-level preconditioner (the default).
SOLVERS = ("dense", "jacobi", "iterative")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _measure(solver: str, repeat: int, tolerance: float, threads: int, kspace_method: str, queue) -> None:
    """Child process: one solve, reports times (s), peak memory growth (MiB), iterations."""
    import torch

    from hipqeq.qeq import CoulombOperator, coulomb_matrix, solve_dense, solve_iterative

    torch.set_num_threads(threads)
    atoms = supercell(repeat)
    as_tensor = lambda table: torch.tensor([table[z] for z in atoms.numbers], dtype=torch.float64)  # noqa: E731
    chi, hardness, sigma = as_tensor(CHI), as_tensor(HARDNESS), as_tensor(SIGMA)
    positions = torch.tensor(atoms.positions)
    cell = torch.tensor(atoms.cell.array)
    baseline = _rss_bytes()

    def solve():
        start = time.perf_counter()
        if solver == "dense":
            matrix = coulomb_matrix(positions, sigma, cell, "periodic", tolerance)
            built = time.perf_counter()
            charges = solve_dense(matrix, chi, hardness)
            return built - start, time.perf_counter() - built, charges, 0
        operator = CoulombOperator(positions, sigma, cell, "periodic", tolerance, method=kspace_method)
        built = time.perf_counter()
        charges, products = solve_iterative(
            operator.matvec, (positions, sigma, cell), chi, hardness,
            operator.diagonal_estimate(sigma), tolerance=tolerance,
            long_waves=operator.long_wave_modes(positions, sigma, cell, hardness) if solver == "iterative" else None,
        )
        solved = time.perf_counter()
        return built - start, solved - built, charges, products

    with torch.no_grad():
        # The first solve in a fresh process pays one-off costs (FFT plans, thread pools,
        # allocator growth); the second is the steady state an MD run sees every step.
        cold_setup, cold_solve, _, _ = solve()
        setup, solve_time, charges, products = solve()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # ru_maxrss is KiB on Linux
    queue.put(
        {
            "cold_s": cold_setup + cold_solve,
            "setup_s": setup,
            "solve_s": solve_time,
            "total_s": setup + solve_time,
            "memory_mib": max(peak - baseline, 0) / 2**20,
            "products": products,
            "charge_sum": float(charges.sum()),
            "q_cs": float(charges[atoms.numbers == 55].mean()),
        }
    )


def measure(solver: str, repeat: int, tolerance: float, threads: int, kspace_method: str = "p3m") -> dict:
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(solver, repeat, tolerance, threads, kspace_method, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def mesh_cache_ratio(repeat: int, tolerance: float, kspace_method: str, threads: int, calls: int = 5) -> float:
    """Time of one reciprocal-space product by torch-pme's calculator (mesh set-up at
    every call) over that of :class:`hipqeq.qeq.MeshReciprocal` at fixed geometry."""
    import torch
    import torchpme

    from hipqeq.qeq import (P3M_INTERPOLATION_NODES, PME_INTERPOLATION_NODES, MeshReciprocal, mesh_parameters,
                            mesh_points)

    torch.set_num_threads(threads)
    atoms = supercell(repeat)
    positions, cell = torch.tensor(atoms.positions), torch.tensor(atoms.cell.array)
    parameters = mesh_parameters(cell, len(atoms), max(SIGMA.values()), tolerance, kspace_method)
    # torch-pme's meshes are powers of two: both sides get the power of two at or above
    # hipqeq's mesh (a cubic cell), torch-pme through its own mesh_spacing argument.
    length = float(torch.linalg.norm(cell[0]))
    points = 2 ** math.ceil(math.log2(int(mesh_points(cell, parameters.mesh_spacing)[0])))
    parameters = dataclasses.replace(parameters, mesh_spacing=length / points)
    torchpme_spacing = 2.0 * length / (points - 1) * (1.0 + 1e-9)
    assert torchpme.lib.get_ns_mesh(cell, torchpme_spacing).tolist() == [points] * 3
    charges = torch.randn(len(atoms), 1, dtype=torch.float64)
    kept = MeshReciprocal(kspace_method, parameters, positions)
    calculator_class = torchpme.PMECalculator if kspace_method == "pme" else torchpme.P3MCalculator
    nodes = PME_INTERPOLATION_NODES if kspace_method == "pme" else P3M_INTERPOLATION_NODES
    public = calculator_class(torchpme.CoulombPotential(smearing=parameters.smearing), torchpme_spacing,
                              interpolation_nodes=nodes).to(dtype=torch.float64)
    no_pairs, no_distances = torch.zeros((0, 2), dtype=torch.int64), torch.zeros(0, dtype=torch.float64)

    def seconds_per_call(product) -> float:
        product()  # one-off costs (FFT plans, and the set-up kept by MeshReciprocal)
        start = time.perf_counter()
        for _ in range(calls):
            product()
        return (time.perf_counter() - start) / calls

    with torch.no_grad():
        mine = seconds_per_call(lambda: kept(charges, positions, cell))
        theirs = seconds_per_call(lambda: public(charges, cell, positions, no_pairs, no_distances))
    return theirs / mine


def fitted_exponent(sizes, times) -> float:
    """Slope of log(time) against log(N), least squares."""
    return float(np.polyfit(np.log(sizes), np.log(times), 1)[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-atoms", type=int, default=13720, help="largest supercell for the iterative solver (default 13720)")
    parser.add_argument("--dense-max-atoms", type=int, default=2560, help="largest supercell for the dense solver (default 2560)")
    parser.add_argument("--min-atoms", type=int, default=300, help="smallest supercell (default 300)")
    parser.add_argument("--tolerance", type=float, default=1e-6, help="Ewald/PME accuracy and CG relative residual (default 1e-6)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--kspace-method", choices=("p3m", "pme"), default="p3m",
                        help="mesh method of the iterative solver (default p3m)")
    args = parser.parse_args(argv)

    repeats = [n for n in range(2, 64) if args.min_atoms <= 5 * n**3 <= args.max_atoms]
    if not repeats:
        parser.error("no CsPbI3 supercell (5 n^3 atoms) lies between --min-atoms and --max-atoms")
    rows = []
    print(f"CsPbI3 supercells, tolerance {args.tolerance:g}, {args.threads} threads, CPU, "
          f"iterative with {args.kspace_method.upper()}")
    print(f"{'N':>7} {'solver':>9} {'cold_s':>9} {'setup_s':>9} {'solve_s':>9} {'total_s':>9} {'mem_MiB':>9} {'matvecs':>8} {'sum_q':>10} {'q_Cs':>8}")
    for repeat in repeats:
        n_atoms = 5 * repeat**3
        for solver in SOLVERS:
            if solver == "dense" and n_atoms > args.dense_max_atoms:
                continue
            result = measure(solver, repeat, args.tolerance, args.threads, args.kspace_method)
            rows.append((n_atoms, solver, result))
            print(
                f"{n_atoms:>7} {solver:>9} {result['cold_s']:>9.3f} {result['setup_s']:>9.3f} {result['solve_s']:>9.3f} "
                f"{result['total_s']:>9.3f} {result['memory_mib']:>9.1f} {result['products']:>8d} "
                f"{result['charge_sum']:>10.1e} {result['q_cs']:>8.4f}",
                flush=True,
            )

    print()
    timings = {solver: {n: r["total_s"] for n, s, r in rows if s == solver} for solver in SOLVERS}
    for solver, by_size in timings.items():
        if len(by_size) >= 2:
            exponent = fitted_exponent(list(by_size), list(by_size.values()))
            print(f"{solver:>9}: warm total time ~ N^{exponent:.2f} (log-log fit over N = {min(by_size)}..{max(by_size)})")
    for solver in ("jacobi", "iterative"):
        products = {n: r["products"] for n, s, r in rows if s == solver and r["products"]}
        if len(products) >= 2:
            exponent = fitted_exponent(list(products), list(products.values()))
            print(f"{solver:>9}: matrix-vector products ~ N^{exponent:.2f}")
    iterative = sorted(set(timings["jacobi"]) & set(timings["iterative"]))
    if iterative:
        print("jacobi / two-level time: " + ", ".join(
            f"N={n}: {timings['jacobi'][n] / timings['iterative'][n]:.2f}" for n in iterative))
    shared = sorted(set(timings["dense"]) & set(timings["iterative"]))
    if shared:
        print("dense / iterative time: " + ", ".join(f"N={n}: {timings['dense'][n] / timings['iterative'][n]:.2f}" for n in shared))
    ratio = mesh_cache_ratio(repeats[-1], args.tolerance, args.kspace_method, args.threads)
    print(f"{args.kspace_method.upper()} product at N={5 * repeats[-1] ** 3}, torch-pme calculator / mesh set-up "
          f"kept: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
