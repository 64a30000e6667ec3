"""NVE energy drift of MD with each reciprocal-space method of the iterative charge solve.

torch-pme documents that PME forces are not smooth (Lagrange interpolation is only
continuous across mesh cells) and recommends P3M for MD. This script measures what
that means here, on a toy ionic potential whose charges are of the real size:

.. math::

    E = E_\\mathrm{QEq}(q^*) + \\sum_{i<j,\\, r_{ij} < r_c} A\\,(e^{-r_{ij}/\\rho} - e^{-r_c/\\rho})

with :math:`q^*` from :class:`hipqeq.qeq.QEq` (fixed per-element electronegativity,
hardness and width of ``qeq_scaling.py``, |q| ~ 0.2-0.6 e), its iterative solve with
the reciprocal sum by ``ewald`` (exact sums over k-vectors), ``pme`` or ``p3m``, and a
Born-Mayer repulsion (A = 1000 eV, rho = 0.35 A, r_c = 6 A, shifted to vanish at r_c)
on a Verlet neighbour list. Forces are autograd gradients through the solve, as in the
potential. The system is a rattled cubic CsPbI3 supercell run by velocity Verlet from
the same positions and velocities for every method, at the given accuracy tolerance
(of the Ewald/mesh sums and of the CG solve).

For each method it prints the drift (slope of a least-squares line through the total
energy per atom against time, meV/atom/ps), the largest excursion of the total energy
from its start (meV/atom), the time per step and the Coulomb matrix-vector products
per step, then each method's drift relative to Ewald's.

Not a test; run ``python benchmarks/kspace_md_drift.py --help``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from qeq_scaling import CHI, HARDNESS, SIGMA, supercell

METHODS = ("ewald", "pme", "p3m")
REPULSION_EV, REPULSION_RANGE_A, REPULSION_CUTOFF_A = 1000.0, 0.35, 6.0


class ToyIonicCalculator(Calculator):
    """E_QEq(q*) plus a shifted Born-Mayer repulsion (see the module docstring)."""

    implemented_properties = ["energy", "forces", "charges"]

    def __init__(self, kspace_method: str, tolerance: float, **kwargs):
        import torch

        from hipqeq.qeq import QEq, VerletNeighborList

        super().__init__(**kwargs)
        species = sorted(CHI)
        self.qeq = QEq(species, hardness={z: HARDNESS[z] for z in species}, sigma={z: SIGMA[z] for z in species},
                       tolerance=tolerance, solver="iterative", learnable=False,
                       kspace_method=kspace_method).to(torch.float64)
        self.neighbors = VerletNeighborList(REPULSION_CUTOFF_A, skin=1.0)
        self.matvecs = 0
        self._charges = None

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        import torch

        from hipqeq.qeq import pair_vectors

        super().calculate(atoms, properties, system_changes)
        positions = torch.tensor(self.atoms.positions, requires_grad=True)
        cell = torch.tensor(self.atoms.cell.array)
        species = torch.tensor(self.atoms.numbers)
        chi = torch.tensor([CHI[z] for z in self.atoms.numbers], dtype=torch.float64)
        # Warm start from the previous step's charges, as the potential's calculator does.
        charges, _, e_qeq, _ = self.qeq(chi, species, positions, torch.zeros(len(species), dtype=torch.int64), 1,
                                        cell=cell[None], pbc=torch.tensor([[True, True, True]]),
                                        initial_charges=self._charges)
        self._charges = charges.detach()[:, 0]
        self.matvecs += sum(self.qeq.last_matvec_products)
        first, second, shifts = self.neighbors.pairs(positions, cell, self.atoms.pbc)
        distances = torch.linalg.norm(pair_vectors(positions, cell, first, second, shifts), dim=1)
        distances = distances[distances < REPULSION_CUTOFF_A]
        # full list: each pair twice, hence the 1/2
        repulsion = 0.5 * REPULSION_EV * (torch.exp(-distances / REPULSION_RANGE_A)
                                          - np.exp(-REPULSION_CUTOFF_A / REPULSION_RANGE_A)).sum()
        energy = e_qeq.sum() + repulsion
        (gradient,) = torch.autograd.grad(energy, positions)
        self.results = {"energy": float(energy.detach()), "forces": -gradient.numpy(), "charges": self._charges.numpy()}


def run_nve(method: str, repeat: int, steps: int, timestep_fs: float, temperature_K: float,
            tolerance: float) -> dict:
    """One NVE run; returns drift (meV/atom/ps), excursion (meV/atom), s/step, matvecs/step."""
    from ase import units
    from ase.md.velocitydistribution import Stationary, thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    from hipqeq.md import drift_per_atom_ps

    atoms = supercell(repeat)
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=np.random.default_rng(1))
    Stationary(atoms)
    calculator = ToyIonicCalculator(method, tolerance)
    atoms.calc = calculator
    dynamics = VelocityVerlet(atoms, timestep_fs * units.fs)
    energies = [atoms.get_total_energy()]
    charge_range = np.ptp(atoms.calc.results["charges"])
    calls_before, started = calculator.matvecs, time.perf_counter()
    for _ in range(steps):
        dynamics.run(1)
        energies.append(atoms.get_total_energy())
    elapsed = time.perf_counter() - started
    times_fs = timestep_fs * np.arange(steps + 1)
    energies = np.array(energies)
    return {"drift": 1e3 * drift_per_atom_ps(times_fs, energies, len(atoms)),
            "excursion": 1e3 * float(np.abs(energies - energies[0]).max()) / len(atoms),
            "step_s": elapsed / steps, "matvecs": (calculator.matvecs - calls_before) / steps,
            "builds": calculator.neighbors.builds, "charge_range": charge_range,
            "temperature_K": atoms.get_temperature()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2, help="cubic supercell repeats (default 2: 40 atoms)")
    parser.add_argument("--steps", type=int, default=300, help="NVE steps (default 300)")
    parser.add_argument("--timestep-fs", type=float, default=2.0, help="time step, fs (default 2)")
    parser.add_argument("--temperature-K", type=float, default=300.0, help="initial temperature, K (default 300)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="accuracy of the periodic sums and of the charge solve (default 1e-4)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: 40 atoms)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    print(f"toy ionic potential, cubic CsPbI3 {args.repeat}x{args.repeat}x{args.repeat}, NVE {args.steps} x "
          f"{args.timestep_fs} fs from {args.temperature_K} K, tolerance {args.tolerance:g}, {args.threads} threads, CPU")
    print(f"{'method':>7} {'drift meV/atom/ps':>18} {'max |dE| meV/atom':>18} {'s/step':>8} "
          f"{'matvecs/step':>13} {'NL builds':>10} {'q range e':>10} {'T_end K':>8}")
    rows = {}
    for method in args.methods:
        row = run_nve(method, args.repeat, args.steps, args.timestep_fs, args.temperature_K, args.tolerance)
        rows[method] = row
        print(f"{method:>7} {row['drift']:>18.4f} {row['excursion']:>18.4f} {row['step_s']:>8.3f} "
              f"{row['matvecs']:>13.1f} {row['builds']:>10d} {row['charge_range']:>10.2f} "
              f"{row['temperature_K']:>8.0f}", flush=True)
    if "ewald" in rows:
        reference = abs(rows["ewald"]["drift"])
        for method in (m for m in rows if m != "ewald"):
            print(f"|drift| {method} / ewald: {abs(rows[method]['drift']) / max(reference, 1e-12):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
