"""The combined potential: exact derivatives, charge conservation, symmetry, save/reload.

Untrained models with random weights are enough for these properties; the
electronegativity head's weights are scaled up so that the charges are far from zero
and the electrostatic term matters.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.build import bulk

import hipqeq.models  # noqa: F401
from hipqeq.models.charges import ChargeModel, charge_hyperparameters
from hipqeq.models.network import network_hyperparameters
from hipqeq.models.potential import Potential, charge_response, evaluate
from hipqeq.models.short_range import ShortRangeModel
from hipqeq.models.store import CHARGE_MODEL_DIR, load_model, load_potential, save_model

NETWORK = {"n_features": 8, "n_sensitivities": 6, "n_interaction_layers": 1, "n_atom_layers": 1,
           "cutoff_A": 4.0, "lower_cutoff_A": 1.0}


#: Reach of the repulsive core in the test potentials: 1.3 times the covalent radii's sum
#: puts the CuAu cell's nearest neighbours (2.55 A) well inside it (~0.6 eV per pair).
CORE_SCALE = 1.3


def make_potential(seed: int = 0, dtype=torch.float64, tolerance: float = 1e-8,
                   core_scale: float | None = CORE_SCALE, tensor_order: int = 0,
                   charge_energy: str = "global", charge_hardness: bool = False) -> Potential:
    """A 4G potential with random weights: the electronegativity head scaled up so that
    charges are far from zero, and the charge column of the charge-aware short range's
    input weighted up so that dE_short/dq matters as much as the geometry; its short range
    has a repulsive core that the test cells reach, so every force, stress and graph test
    covers it too. ``tensor_order`` 1 or 2 makes both networks HIP-NN-TS;
    ``charge_energy="environment"`` adds the structure-dependent energy of the total
    charge, its head given random weights of about 1 eV/e (it starts at zero), and
    ``charge_hardness`` the curvature in Q, set to 1.5 eV/e^2."""
    torch.manual_seed(seed)
    hp = network_hyperparameters({**NETWORK, "tensor_order": tensor_order}, [29, 79])
    charges = ChargeModel(charge_hyperparameters(hp, tolerance))
    short_range = ShortRangeModel({**hp, "charge_features": True, "repulsive_core": core_scale,
                                   "charge_energy": charge_energy, "charge_hardness": charge_hardness})
    with torch.no_grad():
        if short_range.charge_hardness is not None:
            short_range.charge_hardness.eta.fill_(1.5)
        if short_range.charge_energy is not None:
            for parameter in short_range.charge_energy.parameters():
                parameter.normal_()
        for layer in charges.electronegativity.layers:
            layer.weight.mul_(20.0)
        first = short_range.network.blocks[0][0]
        for parameter in first.parameters():
            if parameter.dim() == 2 and parameter.shape[-1] == len(hp["species"]) + 1:
                parameter[:, -1].mul_(20.0)
    return Potential(short_range, charges).to(dtype).eval()


def cell_atoms(pbc=True, seed: int = 1):
    """An 8-atom CuAu cell (a = 3.6 A, shorter than twice the 4 A cutoff), rattled."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (1, 1, 2)
    atoms.numbers[[1, 4, 6]] = 79
    atoms.rattle(0.1, seed=seed)
    if pbc != (True, True, True) and pbc is not True:
        atoms.pbc = pbc
        if atoms.pbc[0] and not atoms.pbc[2]:
            atoms.center(vacuum=6.0, axis=2)
        elif not atoms.pbc.any():
            atoms.center(vacuum=6.0)
    return atoms


@pytest.fixture(scope="module")
def potential():
    return make_potential()


def finite_difference_forces(potential, atoms, step=1e-4, atom_indices=None, **options):
    """Central differences of the energy for ``atom_indices`` (default all); other rows 0."""
    forces = np.zeros((len(atoms), 3))
    for i in range(len(atoms)) if atom_indices is None else atom_indices:
        for k in range(3):
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[i, k] += sign * step
                energies.append(evaluate(potential, moved, **options)["energy"])
            forces[i, k] = -(energies[0] - energies[1]) / (2 * step)
    return forces


@pytest.fixture(scope="module")
def tight_potential():
    """The iterative solve converged far below the finite-difference resolution (an
    unconverged solve shows up as force noise of about tolerance / step). The periodic
    sums need no such accuracy: forces are exact derivatives of the sums as computed."""
    potential = make_potential()
    potential.charges.qeq.solve_tolerance = 1e-13
    return potential


@pytest.mark.parametrize("solver", ["dense", "iterative"])
@pytest.mark.parametrize("total_charge", [0.0, 1.0])
@pytest.mark.parametrize("pbc", [(True, True, True), (True, True, False)], ids=["periodic", "slab"])
def test_forces_are_minus_the_energy_gradient(tight_potential, pbc, total_charge, solver):
    """Forces of the charge-aware 4G energy, including dE_short/dq . dq*/dR through the
    dense solve (autograd) or the iterative one (adjoint solve), match central differences
    of the float64 energy to 1e-6 eV/A, neutral and charged."""
    atoms = cell_atoms(pbc)
    atoms.info["total_charge"] = total_charge
    assert_forces_are_central_differences(tight_potential, atoms, qeq_solver=solver)


@pytest.mark.parametrize("pbc", [(True, True, True), (True, True, False)], ids=["periodic", "slab"])
def test_charge_energy_forces_are_minus_the_energy_gradient(pbc):
    """With the environment-dependent energy of the total charge, the forces of a charged
    cell still match central differences of the float64 energy: E_Q's path through the
    features (and through the charges the features read) is in them."""
    potential = make_potential(charge_energy="environment")
    potential.charges.qeq.solve_tolerance = 1e-13
    atoms = cell_atoms(pbc)
    atoms.info["total_charge"] = 1.0
    assert_forces_are_central_differences(potential, atoms, qeq_solver="dense")


def _charge_energy_of(short_range, atoms, charges, term: str = "charge_energy") -> float:
    """The energy (eV) of ``short_range``'s ``term`` (its ``charge_energy`` or
    ``charge_hardness``) on ``atoms`` with the given charges (e): its energy less that of
    the same model without the term."""
    from hipqeq.qeq.neighbors import neighbor_pairs

    positions = torch.as_tensor(atoms.positions)
    cell = torch.as_tensor(atoms.cell.array)
    pairs = neighbor_pairs(positions, cell, tuple(atoms.pbc), short_range.cutoff_A)
    species, charges = torch.as_tensor(atoms.numbers), torch.as_tensor(charges)
    module = getattr(short_range, term)
    with torch.no_grad():
        with_term = short_range(species, positions, cell, *pairs, charges=charges)
        setattr(short_range, term, None)
        try:
            without = short_range(species, positions, cell, *pairs, charges=charges)
        finally:
            setattr(short_range, term, module)
    return float(with_term - without)


def test_charge_energy_is_intensive_and_vanishes_for_a_neutral_cell():
    """E_Q = Q x (mean over atoms of mu_i): a 2x1x1 supercell with the cell's charges
    repeated (every atom sees what it saw, Q doubles) has twice the cell's E_Q, so the
    same energy per unit of charge, where a sum over atoms would give four times; with
    charges summing to zero E_Q is 0."""
    short_range = make_potential(charge_energy="environment").short_range
    atoms = cell_atoms(True)
    charges = np.linspace(-0.3, 0.5, len(atoms))
    cell_energy = _charge_energy_of(short_range, atoms, charges)
    assert abs(cell_energy) > 0.1
    assert _charge_energy_of(short_range, atoms * (2, 1, 1), np.tile(charges, 2)) == pytest.approx(2 * cell_energy,
                                                                                                rel=1e-9)
    assert _charge_energy_of(short_range, atoms, charges - charges.mean()) == pytest.approx(0.0, abs=1e-12)


def test_charge_hardness_is_the_energys_curvature_in_the_total_charge():
    """At fixed charges, E(Q) - E(0) from the hardness alone is eta Q^2 / 2: the same for
    Q = +1 and -1 (a linear term would flip its sign), four times that at Q = 2."""
    short_range = make_potential(charge_hardness=True).short_range
    atoms = cell_atoms(True)
    neutral = np.linspace(-0.3, 0.3, len(atoms))

    def hardness_energy(total_charge):
        return _charge_energy_of(short_range, atoms, neutral + total_charge / len(atoms), "charge_hardness")

    assert hardness_energy(0.0) == pytest.approx(0.0, abs=1e-12)
    assert hardness_energy(1.0) == pytest.approx(1.5 / 2, rel=1e-9)
    assert hardness_energy(-1.0) == pytest.approx(1.5 / 2, rel=1e-9)
    assert hardness_energy(2.0) == pytest.approx(4 * 1.5 / 2, rel=1e-9)


def assert_forces_are_central_differences(potential, atoms, **options):
    """The potential's forces on atoms 0, 1 and 4 (Cu, Au, Cu: both species, every
    component) equal central differences of its float64 energy to 1e-6 eV/A, with charges
    and forces large enough for the check to mean something."""
    result = evaluate(potential, atoms, **options)
    assert np.ptp(result["charges"]) > 0.05  # the electrostatic term is not negligible
    assert np.abs(result["forces"]).max() > 0.1
    checked = [0, 1, 4]
    expected = finite_difference_forces(potential, atoms, atom_indices=checked, **options)
    np.testing.assert_allclose(result["forces"][checked], expected[checked], atol=1e-6)


@pytest.mark.parametrize("tensor_order", [1, 2])
def test_hipnn_ts_forces_are_minus_the_energy_gradient(tensor_order):
    """The same check for HIP-NN-TS networks (pair directions in the features), on the
    charged slab with the dense solve."""
    atoms = cell_atoms((True, True, False))
    atoms.info["total_charge"] = 1.0
    assert_forces_are_central_differences(make_potential(seed=3, tensor_order=tensor_order), atoms)


@pytest.mark.parametrize("tensor_order", [0, 1, 2])
def test_only_hipnn_ts_reads_the_pair_directions(tensor_order):
    """Every other pair vector turned (its components cycled, its length kept): the
    features of HIP-NN-TS change, those of the radial-only HIP-NN do not."""
    from hipqeq.models.network import pair_geometry
    from hipqeq.qeq import neighbor_pairs

    model = make_potential(seed=2, tensor_order=tensor_order).charges
    atoms = cell_atoms(True)
    positions, cell = torch.as_tensor(atoms.positions), torch.as_tensor(atoms.cell.array)
    first, second, shifts = neighbor_pairs(positions, cell, (True, True, True), model.cutoff_A)
    vectors, distances = pair_geometry(positions, cell, first, second, shifts)
    turned = vectors.clone()
    turned[::2] = vectors[::2][:, [1, 2, 0]]
    one_hot = model.one_hot(torch.as_tensor(atoms.numbers))
    before = model.features(one_hot, vectors, distances, first, second)[-1]
    after = model.features(one_hot, turned, distances, first, second)[-1]
    changed = (after - before).abs().max().item()
    assert changed > 1e-3 if tensor_order else changed == 0.0


def test_charge_response_is_part_of_the_forces(tight_potential):
    """The forces differ from those with the charges held fixed in the short range: the
    path through dq*/dR that the finite-difference test checks is not negligible."""
    atoms = cell_atoms(True)
    full = evaluate(tight_potential, atoms)["forces"]
    frozen = Potential(tight_potential.short_range, tight_potential.charges)
    frozen_charges = torch.as_tensor(evaluate(tight_potential, atoms)["charges"])
    original = frozen.short_range.forward

    def fixed_charges(*args, charges=None):
        return original(*args, charges=frozen_charges)

    frozen.short_range.forward = fixed_charges
    try:
        without_response = evaluate(frozen, atoms)["forces"]
    finally:
        frozen.short_range.forward = original
    assert np.abs(full - without_response).max() > 1e-3


def test_short_range_tells_a_charged_cell_from_a_neutral_one(potential):
    """Same geometry, total charge 0 and +1: the charge-aware short-range energy differs
    (a charge-blind one could not)."""
    atoms = cell_atoms((True, True, False))
    neutral = evaluate(potential, atoms)["energy_short"]
    atoms.info["total_charge"] = 1.0
    charged = evaluate(potential, atoms)["energy_short"]
    assert abs(charged - neutral) > 1e-3


@pytest.mark.parametrize("solver", ["dense", "iterative"])
@pytest.mark.parametrize("total_charge", [0.0, 1.0])
def test_stress_is_the_strain_derivative_over_volume(tight_potential, total_charge, solver):
    atoms = cell_atoms(True)
    atoms.info["total_charge"] = total_charge
    _check_stress(tight_potential, atoms, solver)


def test_slab_stress_is_the_strain_derivative_over_volume(potential):
    _check_stress(potential, cell_atoms((True, True, False)), "dense")


def _check_stress(potential, atoms, solver):
    stress = evaluate(potential, atoms, want_stress=True, qeq_solver=solver)["stress"]
    step = 1e-5
    voigt = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    expected = np.zeros(6)
    for n, (a, b) in enumerate(voigt):
        energies = []
        for sign in (1, -1):
            strain = np.zeros((3, 3))
            strain[a, b] = strain[b, a] = sign * step / (1 if a == b else 2)
            deformed = atoms.copy()
            deformed.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=False)
            deformed.positions = atoms.positions @ (np.eye(3) + strain)
            energies.append(evaluate(potential, deformed, qeq_solver=solver)["energy"])
        expected[n] = (energies[0] - energies[1]) / (2 * step) / atoms.get_volume()
    np.testing.assert_allclose(stress, expected, atol=1e-6)


@pytest.mark.parametrize("pbc", [(True, True, True), (True, True, False), (False, False, False)],
                         ids=["periodic", "slab", "open"])
@pytest.mark.parametrize("total_charge", [0.0, 1.0])
def test_charges_sum_to_the_total_charge(potential, pbc, total_charge):
    atoms = cell_atoms(pbc)
    atoms.info["total_charge"] = total_charge
    result = evaluate(potential, atoms)
    assert result["charges"].sum() == pytest.approx(total_charge, abs=1e-9)
    np.testing.assert_allclose(result["dipole"], result["charges"] @ atoms.positions, atol=1e-9)


def _rotation(seed=3):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


@pytest.mark.parametrize("tensor_order", [0, 2], ids=["hipnn", "hipnn-ts2"])
@pytest.mark.parametrize("pbc", [(True, True, True), (False, False, False)], ids=["periodic", "open"])
def test_invariant_under_rotation_translation_and_permutation(potential, pbc, tensor_order):
    potential = potential if tensor_order == 0 else make_potential(tensor_order=tensor_order)
    atoms = cell_atoms(pbc)
    reference = evaluate(potential, atoms, want_stress=pbc[0])
    rotation = _rotation()

    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rotation.T + np.array([0.3, -1.2, 0.7])
    rotated.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    result = evaluate(potential, rotated, want_stress=pbc[0])
    assert result["energy"] == pytest.approx(reference["energy"], abs=1e-9)
    np.testing.assert_allclose(result["forces"], reference["forces"] @ rotation.T, atol=1e-9)
    np.testing.assert_allclose(result["charges"], reference["charges"], atol=1e-9)

    order = np.random.default_rng(4).permutation(len(atoms))
    permuted = atoms[order]
    result = evaluate(potential, permuted, want_stress=pbc[0])
    assert result["energy"] == pytest.approx(reference["energy"], abs=1e-9)
    np.testing.assert_allclose(result["forces"], reference["forces"][order], atol=1e-9)
    np.testing.assert_allclose(result["charges"], reference["charges"][order], atol=1e-9)
    if pbc[0]:
        np.testing.assert_allclose(result["stress"], reference["stress"], atol=1e-9)


@pytest.mark.parametrize("charge_terms", [{}, {"charge_energy": "environment", "charge_hardness": True}],
                         ids=["global", "environment-hardness"])
def test_saved_and_reloaded_potential_gives_identical_outputs(tmp_path, charge_terms):
    potential = make_potential(seed=5, dtype=torch.float32, **charge_terms)
    charge_dir, potential_dir = tmp_path / "charges", tmp_path / "4g"
    meta = {"dtype": "float32"}
    save_model(charge_dir, "charges", potential.charges, meta, {})
    save_model(potential_dir, "short-range", potential.short_range, meta, {})
    (potential_dir / CHARGE_MODEL_DIR).mkdir()
    for name in ("model.json", "hyperparameters.json", "weights.pt"):
        (potential_dir / CHARGE_MODEL_DIR / name).write_bytes((charge_dir / name).read_bytes())
    assert json.loads((potential_dir / "model.json").read_text())["species"] == [29, 79]

    reloaded = load_potential(potential_dir)
    atoms = cell_atoms((True, True, False))
    atoms.info["total_charge"] = 1.0
    before, after = evaluate(potential, atoms, True), evaluate(reloaded, atoms, True)
    assert set(before) == set(after)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])


@pytest.mark.parametrize("tensor_order", [0, 1, 2], ids=["hipnn", "hipnn-ts1", "hipnn-ts2"])
@pytest.mark.parametrize("charge_aware, charge_terms", [(False, {}), (True, {}),
                                                         (True, {"charge_energy": "environment"}),
                                                         (True, {"charge_hardness": True})],
                         ids=["baseline", "4g", "4g-charge-energy", "4g-charge-hardness"])
def test_training_graph_matches_the_deployed_model(charge_aware, charge_terms, tensor_order):
    """The padded hippynn graph (periodic pair finder on the pair cell) and the deployed
    module (external neighbour list) give the same short-range energy and forces, for a
    cell shorter than twice the cutoff, a charged slab labelled as a 3D-periodic cell (as
    tblite computes it) and an open cluster. The charge-aware graph solves the QEq under
    each label's boundary and its forces include the charges' response (through their
    Jacobian, fixed per structure), as the deployed potential's autograd through the
    solve does when given that boundary. With the environment-dependent charge energy or
    the charge hardness the graph reads Q from the labels (``Qtot``), the deployed model
    from the charges' sum."""
    from hippynn.graphs import Predictor

    from hipqeq.data import label_pbc, record_from_atoms, table_from_records
    from hipqeq.models.graphs import short_range_graph
    from hipqeq.training.data import training_arrays

    potential = make_potential(seed=7, tensor_order=tensor_order, **charge_terms)
    frames = [cell_atoms(True), cell_atoms((True, True, False)), cell_atoms((False, False, False))]
    frames[1].info.update(total_charge=1.0, label_boundary="periodic")
    records = [record_from_atoms(a) for a in frames]
    arrays = training_arrays(table_from_records(records), NETWORK["cutoff_A"], dtype=np.float64)
    names = ["Z", "R", "pair_cell"]
    if charge_aware:
        graph = short_range_graph(potential.short_range)
        nodes = [graph.inputs.species, graph.inputs.positions, graph.inputs.pair_cell, graph.charges,
                 graph.charge_jacobian]
        names += ["q_model", "dq_dR"]
        if graph.total_charge is not None:
            nodes.append(graph.total_charge)
            names.append("Qtot")
        n_max = arrays["Z"].shape[1]
        arrays["q_model"] = np.zeros((len(frames), n_max, 1))
        arrays["dq_dR"] = np.zeros((len(frames), n_max, n_max, 3))
        for k, (atoms, record) in enumerate(zip(frames, records)):
            charges, jacobian = charge_response(potential.charges, atoms, label_pbc(record))
            arrays["q_model"][k, :len(atoms), 0] = charges
            arrays["dq_dR"][k, :len(atoms), :len(atoms)] = jacobian
        deployed_potential = potential
    else:
        blind = ShortRangeModel({**potential.short_range.hyperparameters, "charge_features": False}).double()
        graph = short_range_graph(blind)
        nodes = [graph.inputs.species, graph.inputs.positions, graph.inputs.pair_cell]
        deployed_potential = Potential(blind)
    out = Predictor(nodes, [graph.energy, graph.forces])(**{n: torch.as_tensor(arrays[n]) for n in names})
    for k, (atoms, record) in enumerate(zip(frames, records)):
        deployed = evaluate(deployed_potential, atoms, charge_pbc=label_pbc(record))
        expected = deployed.get("energy_short", deployed["energy"])
        assert float(out[graph.energy][k, 0]) == pytest.approx(expected, abs=1e-9)
        if not charge_aware:
            np.testing.assert_allclose(out[graph.forces][k].numpy(), deployed["forces"], atol=1e-9)
    if charge_aware:
        # The deployed forces hold the electrostatic part too: compare E_short's alone.
        short_forces = _short_range_forces(potential, frames[1], label_pbc(records[1]))
        np.testing.assert_allclose(out[graph.forces][1, :len(frames[1])].numpy(), short_forces, atol=1e-9)
        physical = evaluate(potential, frames[1])["energy_short"]
        assert abs(physical - float(out[graph.energy][1, 0])) > 1e-6  # the boundary matters


def _short_range_forces(potential, atoms, charge_pbc):
    """-dE_short/dR (through the charges too) of the deployed potential."""
    short_only = Potential(potential.short_range, potential.charges)
    short_only.charges = _NoElectrostatics(potential.charges)
    return evaluate(short_only, atoms, charge_pbc=charge_pbc)["forces"]


class _NoElectrostatics(torch.nn.Module):
    """A charge model whose E_elec is zeroed (its charges unchanged), to isolate E_short."""

    def __init__(self, charges):
        super().__init__()
        self.inner = charges
        self.qeq = charges.qeq
        self.cutoff_A = charges.cutoff_A
        self.hyperparameters = charges.hyperparameters

    def forward(self, *args, **kwargs):
        charges, energy_elec, dipole = self.inner(*args, **kwargs)
        return charges, 0.0 * energy_elec, dipole


@pytest.mark.parametrize("tensor_order", [0, 1], ids=["hipnn", "hipnn-ts1"])
def test_charge_training_graph_matches_the_deployed_charge_model(tensor_order):
    """The hippynn charge graph (padded batch, periodic pair finder on the pair cell, QEq
    node reading Qtot and pbc) and the deployed model give the same charges and E_elec for
    one batch mixing a neutral bulk cell, a charged slab (dipole-corrected, not treated as
    3D periodic) and a charged open cluster."""
    from hippynn.graphs import Predictor

    from hipqeq.data import record_from_atoms, table_from_records
    from hipqeq.models.graphs import charge_graph
    from hipqeq.training.data import training_arrays

    potential = make_potential(seed=8, tensor_order=tensor_order)
    frames = [cell_atoms(True), cell_atoms((True, True, False)), cell_atoms((False, False, False))]
    for atoms, total in zip(frames, (0.0, 1.0, -1.0)):
        atoms.info["total_charge"] = total
    arrays = training_arrays(table_from_records([record_from_atoms(a) for a in frames]),
                             NETWORK["cutoff_A"], dtype=np.float64)
    graph = charge_graph(potential.charges)
    names = ("Z", "R", "pair_cell", "cell", "Qtot", "label_pbc")
    predictor = Predictor([graph.inputs.species, graph.inputs.positions, graph.inputs.pair_cell,
                           graph.cell, graph.total_charge, graph.pbc], [graph.qeq.charges, graph.qeq.mol_energies])
    out = predictor(**{name: torch.as_tensor(arrays[name]) for name in names})
    charges = out["qeq.charges"].numpy()  # the predictor pads atom outputs: (n_sys, n_max, 1)
    charge_only = Potential(None, potential.charges)
    for k, atoms in enumerate(frames):
        deployed = evaluate(charge_only, atoms)
        assert charges[k, : len(atoms), 0].sum() == pytest.approx(atoms.info["total_charge"], abs=1e-9)
        np.testing.assert_allclose(charges[k, : len(atoms), 0], deployed["charges"], atol=1e-9)
        assert float(out["qeq.mol_energies"][k, 0]) == pytest.approx(deployed["energy_elec"], abs=1e-9)
    slab_as_bulk = frames[1].copy()
    slab_as_bulk.pbc = True
    assert np.abs(evaluate(charge_only, slab_as_bulk)["charges"] - charges[1, :8, 0]).max() > 1e-4


def test_pair_geometry_follows_ase_neighbor_list_convention():
    """Vectors r_j + S @ cell - r_i and their lengths, as ASE's neighbor_list('ijSDd')."""
    from ase.neighborlist import neighbor_list

    from hipqeq.models.network import pair_geometry

    atoms = cell_atoms(True)
    first, second, shifts, vectors, distances = neighbor_list("ijSDd", atoms, NETWORK["cutoff_A"])
    as_long = lambda a: torch.as_tensor(a, dtype=torch.long)  # noqa: E731
    got_vectors, got_distances = pair_geometry(torch.as_tensor(atoms.positions), torch.as_tensor(atoms.cell.array),
                                               as_long(first), as_long(second), as_long(shifts))
    np.testing.assert_allclose(got_vectors.numpy(), vectors, atol=1e-12)
    np.testing.assert_allclose(got_distances.numpy(), distances, atol=1e-12)


@pytest.mark.parametrize("device, message", [("gpu0", "choose auto, cpu, cuda or cuda:N"),
                                             ("mps", "choose auto, cpu, cuda or cuda:N"),
                                             ("cuda:64", "CUDA device")])
def test_resolve_device_refuses_devices_it_cannot_use(device, message):
    from hipqeq.errors import HipqeqError
    from hipqeq.models.potential import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(HipqeqError, match=message):
        resolve_device(device)


def test_a_charge_model_of_format_5_keeps_the_gaussian_background(tmp_path):
    """Models saved before format 6 were trained with the Gaussian background convention
    of charged periodic cells and load with it; new ones use the point convention (the
    xTB engines'). Their outputs agree on neutral cells and slabs and differ on a charged
    3D-periodic cell."""
    potential = make_potential(seed=2)
    assert potential.charges.hyperparameters["qeq_background"] == "point"
    new_dir, old_dir = tmp_path / "new", tmp_path / "old"
    for directory in (new_dir, old_dir):
        save_model(directory, "charges", potential.charges, {"dtype": "float64"}, {})
    hyper = json.loads((old_dir / "hyperparameters.json").read_text())
    del hyper["model"]["qeq_background"]
    (old_dir / "hyperparameters.json").write_text(json.dumps(hyper))
    meta = json.loads((old_dir / "model.json").read_text())
    (old_dir / "model.json").write_text(json.dumps({**meta, "format_version": 5}))
    new, old = (Potential(potential.short_range, load_model(d, "charges")).eval() for d in (new_dir, old_dir))
    assert (new.charges.qeq.background, old.charges.qeq.background) == ("point", "gaussian")
    for pbc, total_charge, same in (((True, True, True), 0.0, True), ((True, True, False), 1.0, True),
                                    ((True, True, True), 1.0, False)):
        atoms = cell_atoms(pbc)
        atoms.info["total_charge"] = total_charge
        energies = [evaluate(p, atoms)["energy_elec"] for p in (new, old)]
        assert (abs(energies[0] - energies[1]) < 1e-9) == same, (pbc, total_charge, energies)
