"""The repulsive core under the short-range network (ZBL, switched off at the sum of
covalent radii): what it must do for MD, its smooth end, and its place in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.data import covalent_radii

from hipqeq.models.network import network_hyperparameters
from hipqeq.models.potential import Potential, evaluate
from hipqeq.models.repulsion import ZBLRepulsion, polynomial_envelope, zbl_pair_energy
from hipqeq.models.short_range import ShortRangeModel
from hipqeq.units import COULOMB_EV_A

CS, PB, I = 55, 82, 53
NETWORK = {"n_features": 8, "n_sensitivities": 6, "n_interaction_layers": 1, "n_atom_layers": 1,
           "cutoff_A": 6.0, "lower_cutoff_A": 1.5}


def core_of_pair(core: ZBLRepulsion, z_first: int, z_second: int, distance_A: torch.Tensor) -> torch.Tensor:
    """Core energy (eV) of one pair at each distance, through the layer's per-molecule sum."""
    species = core.atomic_numbers.long().tolist()
    one_hot = torch.zeros(2, len(species), dtype=torch.float64)
    one_hot[0, species.index(z_first)] = one_hot[1, species.index(z_second)] = 1
    first, second = torch.tensor([0, 1]), torch.tensor([1, 0])
    return torch.stack([core(one_hot, d.repeat(2), first, second, torch.zeros(2, dtype=torch.long), 1)[0, 0]
                        for d in distance_A])


@pytest.fixture(scope="module")
def core():
    return ZBLRepulsion([I, CS, PB]).double()


def test_zbl_tends_to_the_bare_nuclear_coulomb_repulsion():
    """phi(0) = 1: at vanishing distance ZBL is k Z1 Z2 / r (the coefficients sum to 1)."""
    r = torch.tensor([1e-6], dtype=torch.float64)
    z1, z2 = torch.tensor([float(PB)], dtype=torch.float64), torch.tensor([float(I)], dtype=torch.float64)
    assert float(zbl_pair_energy(z1, z2, r) * r / (COULOMB_EV_A * PB * I)) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("cation", [CS, PB], ids=["Cs-I", "Pb-I"])
def test_core_outpushes_the_strongest_coulomb_attraction_below_two_angstrom(core, cation):
    """Between 0.2 and 2 A the core's repulsive force on a cation-iodide pair exceeds the
    attraction of two opposite unit point charges (k/r^2; the model's charges are smaller,
    |q| < 1 e, and Gaussian, which attracts less), so no ion pair can fuse in MD."""
    r = torch.linspace(0.2, 2.0, 50, dtype=torch.float64, requires_grad=True)
    energy = core_of_pair(core, cation, I, r)
    (gradient,) = torch.autograd.grad(energy.sum(), r)
    repulsion = -gradient.detach().numpy()
    attraction = COULOMB_EV_A / r.detach().numpy() ** 2
    assert np.all(repulsion > attraction)


def test_core_ends_smoothly_at_the_sum_of_covalent_radii(core):
    """Zero beyond R_Cs + R_I, and energy, force and curvature go to zero at that end
    (no force jump that would heat NVE)."""
    end = float(covalent_radii[CS] + covalent_radii[I])
    r = torch.tensor([end - 1e-3, end - 1e-4, end + 1e-4, end + 0.5], dtype=torch.float64, requires_grad=True)
    energy = core_of_pair(core, CS, I, r)
    (force,) = torch.autograd.grad(energy.sum(), r, create_graph=True)
    (curvature,) = torch.autograd.grad(force.sum(), r)
    energy, force = energy.detach(), force.detach()
    assert float(energy[2]) == float(energy[3]) == 0.0
    assert abs(float(energy[0])) < 1e-9 and abs(float(force[0])) < 1e-5 and abs(float(curvature[0])) < 0.1
    assert 0 < float(energy[0]) and float(energy[1]) < float(energy[0])
    x = torch.linspace(0, 1, 101, dtype=torch.float64)
    envelope = polynomial_envelope(x)
    assert float(envelope[0]) == 1.0 and abs(float(envelope[-1])) < 1e-12
    assert torch.all(envelope[1:] <= envelope[:-1])


def test_core_is_zero_at_the_bonded_distances_of_the_perovskite(core):
    """Pb-I at 3.2 A (the octahedron) is outside the core; Cs-I at 3.9 A too."""
    assert float(core_of_pair(core, PB, I, torch.tensor([3.2], dtype=torch.float64))[0]) == 0.0
    assert float(core_of_pair(core, CS, I, torch.tensor([3.9], dtype=torch.float64))[0]) == 0.0


@pytest.mark.filterwarnings("ignore:Provided distances are underneath sensitivity range")
def test_baseline_with_a_core_repels_a_squeezed_pair_and_its_forces_are_exact():
    """A Cs-I pair in a box, squeezed from 3 to 1 A: the baseline's energy rises by tens
    of eV with the core and the forces are minus its float64 gradient; without the core
    (``repulsive_core`` null) nothing in the network holds the pair apart below its
    lower cutoff (energy flat within 0.5 eV)."""
    torch.manual_seed(0)
    hp = network_hyperparameters(NETWORK, [CS, I])
    with_core = Potential(ShortRangeModel({**hp, "repulsive_core": 1.0})).double().eval()
    without = Potential(ShortRangeModel({**hp, "repulsive_core": None})).double().eval()
    without.short_range.load_state_dict(with_core.short_range.state_dict(), strict=False)

    def pair(distance):
        return Atoms("CsI", positions=[[5, 5, 5], [5 + distance, 5.1, 5]], cell=[15, 15, 15], pbc=True)

    far, near = pair(3.0), pair(1.0)
    assert evaluate(with_core, near)["energy"] - evaluate(with_core, far)["energy"] > 20.0
    assert abs(evaluate(without, near)["energy"] - evaluate(without, pair(1.5))["energy"]) < 0.5
    atoms = pair(2.0)
    forces = evaluate(with_core, atoms)["forces"]
    step = 1e-4
    energies = [evaluate(with_core, pair(2.0 + s))["energy"] for s in (step, -step)]
    assert forces[1, 0] == pytest.approx(-(energies[0] - energies[1]) / (2 * step), abs=1e-6)
    assert forces[1, 0] > 1.0


def test_core_beyond_the_network_cutoff_is_refused():
    hp = network_hyperparameters({**NETWORK, "cutoff_A": 4.0}, [CS, I])
    with pytest.raises(ValueError, match="repulsive core reaches 4.88 A"):
        ShortRangeModel({**hp, "repulsive_core": 1.0})


def test_training_takes_off_the_core_energy_the_deployed_model_adds():
    """The core energies the energy-reference fit subtracts (on the training graph's pair
    cells) equal what the deployed model adds (on the structure's own neighbour list),
    for a periodic cell shorter than twice the cutoff, a slab and an open cluster."""
    from hipqeq.data import record_from_atoms, table_from_records
    from hipqeq.training.data import training_arrays
    from hipqeq.training.stages import core_energies
    from tests.unit.models.test_potential import CORE_SCALE, cell_atoms
    from tests.unit.models.test_potential import NETWORK as CUAU_NETWORK

    torch.manual_seed(3)
    hp = network_hyperparameters(CUAU_NETWORK, [29, 79])
    with_core = ShortRangeModel({**hp, "repulsive_core": CORE_SCALE}).double().eval()
    without = ShortRangeModel({**hp, "repulsive_core": None}).double().eval()
    without.load_state_dict(with_core.state_dict(), strict=False)
    frames = [cell_atoms(True), cell_atoms((True, True, False)), cell_atoms((False, False, False))]
    arrays = training_arrays(table_from_records([record_from_atoms(a) for a in frames]), hp["cutoff_A"], dtype=np.float64)
    subtracted = core_energies(with_core, arrays)
    added = [evaluate(Potential(with_core), a)["energy"] - evaluate(Potential(without), a)["energy"] for a in frames]
    assert min(added) > 0.5
    np.testing.assert_allclose(subtracted, added, atol=1e-9)
