"""Shadow QEq with the 4G potential: the shadow energy, its forces, and MD with it.

Models are the random-weight 4G potentials of ``test_potential`` (charges far from zero,
charge-aware short range), on an 8-atom CuAu cell. Their periodic sums are accurate to
1e-5 (not 1e-8): on a cell this small the tighter real-space cutoff (22 A) would mean
~33,000 pairs per Coulomb product. The properties tested hold for the sums as computed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from hipqeq.calculator import HipQEqCalculator
from hipqeq.errors import HipqeqError
from hipqeq.md import drift_per_atom_ps
from hipqeq.models.potential import evaluate, evaluate_shadow
from hipqeq.models.store import CHARGE_MODEL_DIR, save_model
from hipqeq.qeq.shadow import ExtendedLagrangianCharges
from tests.unit.models.test_potential import cell_atoms, make_potential


@pytest.fixture(scope="module")
def potential():
    # No repulsive core: at the cell's 2.55 A contacts it stiffens the random potential
    # (0.6 eV per pair), and the 40-step NVE test is about the charges' propagation.
    potential = make_potential(tolerance=1e-5, core_scale=None)
    potential.charges.qeq.solve_tolerance = 1e-12  # start from (and compare with) converged charges
    return potential


class FixedAuxiliaries:
    """Dynamics stand-in that always hands out the same auxiliaries (n_atoms, 2)."""

    def __init__(self, auxiliary):
        self.fixed = auxiliary

    def auxiliary(self, advance):
        return self.fixed

    def observe(self, *results):
        return 0


@pytest.mark.parametrize("pbc, total_charge", [((True, True, True), 1.0), ((True, True, False), 0.0)],
                         ids=["periodic-charged", "slab"])
def test_shadow_at_converged_auxiliaries_is_the_full_potential(potential, pbc, total_charge):
    """Started at converged charges and adjoint, the shadow energy, forces, stress and
    charges are those of the full solve (the linearisation is exact at its centre)."""
    atoms = cell_atoms(pbc)
    atoms.info["total_charge"] = total_charge
    shadow = evaluate_shadow(potential, atoms, ExtendedLagrangianCharges(), advance=False, want_stress=True)
    full = evaluate(potential, atoms, want_stress=True, qeq_solver="iterative")  # same PME sums
    assert shadow["energy"] == pytest.approx(full["energy"], abs=1e-9)
    for key in ("forces", "charges", "stress"):
        np.testing.assert_allclose(shadow[key], full[key], atol=1e-8)
    assert shadow["charges"].sum() == pytest.approx(total_charge, abs=1e-12)


def test_shadow_forces_are_the_gradient_of_the_shadow_energy(potential):
    """Away from convergence (auxiliaries off by ~0.05 e) the shadow energy differs from
    the full one, and its forces are still minus its gradient at fixed auxiliaries:
    central differences in float64 to 1e-6 eV/A, though q[n] and z move with the atoms."""
    atoms = cell_atoms(True)
    start = ExtendedLagrangianCharges()
    evaluate_shadow(potential, atoms, start, advance=False)
    generator = torch.Generator().manual_seed(5)
    offset = 0.05 * torch.randn(len(atoms), 2, generator=generator, dtype=torch.float64)
    auxiliary = start.auxiliary(advance=False) + (offset - offset.mean(0))
    fixed = FixedAuxiliaries(auxiliary)
    result = evaluate_shadow(potential, atoms, fixed, advance=False)
    assert abs(result["energy"] - evaluate(potential, atoms)["energy"]) > 1e-4
    step = 1e-4
    for atom, axis in [(0, 0), (1, 2), (4, 1)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[atom, axis] += sign * step
            energies.append(evaluate_shadow(potential, moved, fixed, advance=False)["energy"])
        assert result["forces"][atom, axis] == pytest.approx(-(energies[0] - energies[1]) / (2 * step), abs=1e-6)


@pytest.fixture(scope="module")
def model_dir(potential, tmp_path_factory):
    directory = tmp_path_factory.mktemp("shadow") / "4g"
    save_model(directory, "short-range", potential.short_range, {"dtype": "float64"}, {})
    save_model(directory / CHARGE_MODEL_DIR, "charges", potential.charges, {"dtype": "float64"}, {})
    return directory


def test_shadow_md_tracks_converged_charges_and_conserves_the_shadow_energy(potential, model_dir):
    """NVE with qeq='shadow' on a charged periodic cell (Q = 1 e), 40 steps of 1 fs at
    300 K: the charges q[n] stay within 1e-3 e of charges converged at the same geometry
    (dense solve, every fifth step; ~3e-5 e when written) while those move by more than
    1e-2 e, the charges and the auxiliary charges sum to Q at every step, each step uses
    at most 3 Coulomb products, and the shadow energy drifts by less than 1 meV/atom/ps."""
    atoms = cell_atoms(True)
    atoms.info["total_charge"] = 1.0
    atoms.calc = HipQEqCalculator(model_dir, device="cpu", qeq="shadow")
    thermalize_momenta(atoms, temperature_K=300.0, rng=np.random.default_rng(0))
    Stationary(atoms)
    dynamics = VelocityVerlet(atoms, 1.0 * units.fs)
    energies, errors, changes = [atoms.get_total_energy()], [], []
    start = atoms.calc.results["charges"].copy()  # converged: the shadow run starts there
    for step in range(1, 41):
        dynamics.run(1)
        energies.append(atoms.get_total_energy())
        results = atoms.calc.results
        assert results["qeq_matvec_products"] <= 3
        assert results["charges"].sum() == pytest.approx(1.0, abs=1e-12)
        assert results["auxiliary_charges"].sum() == pytest.approx(1.0, abs=1e-12)
        if step % 5 == 0:
            converged = evaluate(potential, atoms, qeq_solver="dense")["charges"]
            errors.append(np.abs(results["charges"] - converged).max())
            changes.append(np.abs(converged - start).max())
    assert max(changes) > 1e-2
    assert max(errors) < 1e-3
    drift = drift_per_atom_ps(np.arange(len(energies)) * 1.0, np.array(energies), len(atoms))
    assert abs(drift) < 1e-3


def test_unknown_qeq_mode_is_refused(model_dir):
    with pytest.raises(HipqeqError, match="qeq must be one of"):
        HipQEqCalculator(model_dir, device="cpu", qeq="exact")
