"""The QEq layer, its hippynn node inside a GraphModule, and the equilibrate API."""


import numpy as np
import pytest
import torch
from ase import Atoms

from hipqeq.errors import HipqeqError
from hipqeq.qeq import QEq, equilibrate

from qeq_helpers import HARDNESS, SIGMA, cspbi3, parameters, water_like

SPECIES = [55, 82, 53]


def _layer(solver="dense", dtype=torch.float64):
    layer = QEq(
        SPECIES,
        hardness=HARDNESS,
        sigma=SIGMA,
        solver=solver,
        tolerance=1e-6 if dtype == torch.float32 else 1e-8,
    )
    return layer.to(dtype)


def _batch(structures, dtype=torch.float64, device="cpu"):
    """Flat hippynn-style batch: concatenated atoms with a system index."""
    as_tensor = lambda x, **kw: torch.tensor(np.asarray(x), device=device, **kw)  # noqa: E731
    chi = as_tensor(np.concatenate([parameters(s)[0] for s in structures]), dtype=dtype)
    species = as_tensor(np.concatenate([s.numbers for s in structures]))
    positions = as_tensor(np.concatenate([s.positions for s in structures]), dtype=dtype)
    mol_index = as_tensor(np.concatenate([[b] * len(s) for b, s in enumerate(structures)]))
    cell = as_tensor(np.stack([s.cell.array for s in structures]), dtype=dtype)
    return chi, species, positions, mol_index, len(structures), cell


def test_batched_layer_matches_single_structures():
    structures = [cspbi3(rattle=0.1, seed=1), cspbi3((2, 1, 1), rattle=0.1, seed=2), cspbi3((1, 1, 2), rattle=0.05)]
    layer = _layer()
    with torch.no_grad():
        charges, e_elec, e_qeq, dipoles = layer(*_batch(structures))
    assert charges.shape == (25, 1) and e_elec.shape == (3, 1) and e_qeq.shape == (3, 1) and dipoles.shape == (3, 3)
    start = 0
    for b, atoms in enumerate(structures):
        q, e = equilibrate(atoms, *parameters(atoms))
        assert charges[start : start + len(atoms), 0].detach().numpy() == pytest.approx(q, abs=1e-10)
        assert float(e_elec[b]) == pytest.approx(e, abs=1e-10)
        assert dipoles[b].detach().numpy() == pytest.approx(q @ atoms.positions, abs=1e-9)
        start += len(atoms)


def _mixed_structures():
    """A charged slab, a neutral bulk cell and a charged open cluster, with their Q (e)."""
    slab = cspbi3((2, 1, 1), rattle=0.1, seed=3)
    slab.center(vacuum=12.0, axis=2)
    slab.pbc = (True, True, False)
    bulk = cspbi3(rattle=0.1, seed=4)
    cluster = cspbi3(rattle=0.1, seed=5)
    cluster.pbc = False
    cluster.center(vacuum=8.0)
    return [slab, bulk, cluster], [1.0, 0.0, -1.0]


def test_batch_mixing_boundaries_and_total_charges_matches_single_structures():
    """Each system of one batch gets its own boundary (from pbc) and total charge."""
    structures, totals = _mixed_structures()
    chi, species, positions, mol_index, n, cell = _batch(structures)
    pbc = torch.tensor(np.stack([s.pbc for s in structures]))
    with torch.no_grad():
        charges, e_elec, _, _ = _layer()(chi, species, positions, mol_index, n, cell,
                                         total_charge=torch.tensor(totals)[:, None], pbc=pbc)
    start = 0
    for b, (atoms, total) in enumerate(zip(structures, totals)):
        q, e = equilibrate(atoms, *parameters(atoms), total_charge=total)
        block = charges[start : start + len(atoms), 0].numpy()
        assert block.sum() == pytest.approx(total, abs=1e-10)
        assert block == pytest.approx(q, abs=1e-10)
        assert float(e_elec[b]) == pytest.approx(e, abs=1e-10)
        start += len(atoms)
    # The slab's own boundary matters: as a 3D periodic cell it gets other charges.
    slab = structures[0]
    slab_as_bulk = slab.copy()
    slab_as_bulk.pbc = True
    q_periodic, _ = equilibrate(slab_as_bulk, *parameters(slab), total_charge=1.0)
    assert np.abs(charges[: len(slab), 0].numpy() - q_periodic).max() > 1e-4


def test_layer_parameters_are_positive_and_learnable():
    layer = _layer()
    assert torch.allclose(layer.hardness, torch.tensor([HARDNESS[z] for z in SPECIES], dtype=torch.float64))
    _, e_elec, _, _ = layer(*_batch([cspbi3(rattle=0.1)]))
    e_elec.sum().backward()
    assert layer.raw_hardness.grad is not None and layer.raw_sigma.grad is not None
    with torch.no_grad():
        layer.raw_sigma -= 100.0
    assert bool((layer.sigma > 0).all())


def test_layer_iterative_solver_matches_dense():
    structures = [cspbi3((2, 1, 1), rattle=0.1)]
    dense = _layer()(*_batch(structures))[0]
    iterative_layer = _layer(solver="iterative")
    iterative_layer.tolerance = 1e-7
    iterative = iterative_layer(*_batch(structures))[0]
    assert torch.allclose(dense, iterative, atol=1e-5)


def test_iterative_warm_start_saves_products_and_dense_ignores_it():
    structures = [cspbi3((2, 2, 1), rattle=0.1, seed=1), cspbi3((2, 1, 1), rattle=0.1, seed=2)]
    layer = _layer(solver="iterative")
    batch = _batch(structures)
    with torch.no_grad():
        cold = layer(*batch)[0]
        cold_products = list(layer.last_matvec_products)
        moved = list(batch)
        moved[2] = batch[2] + 0.01 * torch.randn(batch[2].shape, generator=torch.Generator().manual_seed(0),
                                                 dtype=batch[2].dtype)
        fresh = layer(*moved)[0]
        fresh_products = list(layer.last_matvec_products)
        warm = layer(*moved, initial_charges=cold)[0]
        warm_products = list(layer.last_matvec_products)
        dense = layer(*moved, initial_charges=cold, solver="dense")[0]
    assert len(cold_products) == 2 and all(w < f for w, f in zip(warm_products, fresh_products))
    assert torch.allclose(warm, fresh, atol=1e-6) and torch.allclose(dense, fresh, atol=1e-6)
    assert layer.last_matvec_products == [0, 0]
    with pytest.raises(HipqeqError, match="solver"):
        layer(*batch, solver="magic")


def test_float32_runs_and_agrees():
    structures = [cspbi3(rattle=0.1), cspbi3((2, 1, 1), rattle=0.1)]
    with torch.no_grad():
        reference = _layer()(*_batch(structures))
        single = _layer(dtype=torch.float32)(*_batch(structures, dtype=torch.float32))
    assert single[0].dtype == torch.float32
    assert torch.allclose(single[0].double(), reference[0], atol=1e-4)
    assert torch.allclose(single[1].double(), reference[1], rtol=1e-4, atol=1e-4)
    assert abs(float(single[0].sum())) < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    structures = [cspbi3(rattle=0.1), cspbi3((2, 1, 1), rattle=0.1)]
    with torch.no_grad():
        reference = _layer()(*_batch(structures))
        result = _layer(dtype=dtype).to("cuda")(*_batch(structures, dtype=dtype, device="cuda"))
    tolerance = 1e-4 if dtype == torch.float32 else 1e-9
    assert torch.allclose(result[0].double().cpu(), reference[0], atol=tolerance)


def _chi_network():
    """Species, positions and cell input nodes, a small HIP-NN on them and its chi head."""
    import hipqeq._hippynn  # noqa: F401  (configures hippynn before its first import)
    from hippynn.graphs import inputs, networks, targets

    species = inputs.SpeciesNode(db_name="species")
    positions = inputs.PositionsNode(db_name="positions")
    cell = inputs.CellNode(db_name="cell")
    network = networks.Hipnn(
        "hipnn",
        (species, positions, cell),
        module_kwargs=dict(
            possible_species=[0, *SPECIES], n_features=8, n_sensitivities=6, dist_soft_min=1.0,
            dist_soft_max=5.0, dist_hard_max=6.0, n_interaction_layers=1, n_atom_layers=1,
        ),
        periodic=True,
    )
    return species, positions, cell, network, targets.HChargeNode("chi", network)


def _padded(structures):
    """hippynn's padded species (n_sys, n_max) and positions (n_sys, n_max, 3), and cells."""
    n_max = max(len(s) for s in structures)
    padded_species = torch.zeros((len(structures), n_max), dtype=torch.int64)
    padded_positions = torch.zeros((len(structures), n_max, 3), dtype=torch.float64)
    for b, atoms in enumerate(structures):
        padded_species[b, : len(atoms)] = torch.tensor(atoms.numbers)
        padded_positions[b, : len(atoms)] = torch.tensor(atoms.positions)
    return padded_species, padded_positions, torch.tensor(np.stack([s.cell.array for s in structures]))


def test_qeq_node_in_hippynn_graph():
    """The node inside a GraphModule, with per-system total charge and pbc inputs."""
    from hipqeq.qeq.nodes import QEqNode  # first: it configures hippynn (hipqeq._hippynn)
    from hippynn.graphs import GraphModule, IdxType, inputs

    species, positions, cell, network, chi = _chi_network()
    total_charge = inputs.InputNode(db_name="Qtot", index_state=IdxType.Molecules)
    pbc = inputs.InputNode(db_name="pbc", index_state=IdxType.Molecules)
    qeq = QEqNode("qeq", (chi, species, positions, cell), species_set=SPECIES, total_charge=total_charge,
                  pbc=pbc, hardness=HARDNESS, sigma=SIGMA)
    graph = GraphModule([species, positions, cell, total_charge, pbc],
                        [qeq.charges, qeq.mol_energies, qeq.dipoles, chi.atom_charges])
    graph.double()

    structures, totals = _mixed_structures()
    outputs = graph(*_padded(structures), torch.tensor(totals)[:, None],
                    torch.tensor(np.stack([s.pbc for s in structures])))
    charges, e_elec, dipoles, chi_values = (value.detach() for value in outputs)

    n_atoms = sum(len(s) for s in structures)
    assert charges.shape == (n_atoms, 1) and e_elec.shape == (3, 1) and dipoles.shape == (3, 3)
    # Each structure has its own total charge and boundary, and the node's charges are
    # the QEq of the network's chi.
    start = 0
    for b, (atoms, total) in enumerate(zip(structures, totals)):
        block = slice(start, start + len(atoms))
        assert float(charges[block].sum()) == pytest.approx(total, abs=1e-10)
        _, hardness, sigma = parameters(atoms)
        q, e = equilibrate(atoms, chi_values[block, 0].numpy(), hardness, sigma, total_charge=total)
        assert charges[block, 0].numpy() == pytest.approx(q, abs=1e-9)
        assert float(e_elec[b]) == pytest.approx(e, abs=1e-9)
        start += len(atoms)
    # Training signal reaches the network through the solve.
    outputs[1].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in network.torch_module.parameters())


def test_qeq_node_without_pbc_input_is_periodic_with_a_constant_total_charge():
    from hipqeq.qeq.nodes import QEqNode
    from hippynn.graphs import GraphModule

    species, positions, cell, _, chi = _chi_network()
    qeq = QEqNode("qeq", (chi, species, positions, cell), species_set=SPECIES, total_charge=1.0,
                  hardness=HARDNESS, sigma=SIGMA)
    graph = GraphModule([species, positions, cell], [qeq.charges, chi.atom_charges]).double()
    structures = [cspbi3(rattle=0.1, seed=1), cspbi3((2, 1, 1), rattle=0.1)]
    charges, chi_values = (value.detach() for value in graph(*_padded(structures)))
    atoms = structures[1]
    _, hardness, sigma = parameters(atoms)
    expected, _ = equilibrate(atoms, chi_values[5:, 0].numpy(), hardness, sigma, total_charge=1.0)
    assert charges[5:, 0].numpy() == pytest.approx(expected, abs=1e-9)
    assert float(charges[:5].sum()) == pytest.approx(1.0, abs=1e-10)
    with pytest.raises(ValueError, match="parents"):
        QEqNode("bad", (chi, species), species_set=SPECIES)


def test_equilibrate_open_slab_and_periodic():
    molecule = water_like()
    q, e = equilibrate(molecule, [3.0, -1.0, -1.0], 6.0, [1.0, 0.7, 0.7])
    assert q.shape == (3,) and abs(q.sum()) < 1e-12 and q[0] < 0 < q[1] and e > 0
    q_charged, _ = equilibrate(molecule, [3.0, -1.0, -1.0], 6.0, [1.0, 0.7, 0.7], total_charge=1.0)
    assert q_charged.sum() == pytest.approx(1.0, abs=1e-12)

    slab = cspbi3((2, 2, 1))
    slab.center(vacuum=15.0, axis=2)
    slab.pbc = (True, True, False)
    q_slab, _ = equilibrate(slab, *parameters(slab), total_charge=1.0)
    assert q_slab.sum() == pytest.approx(1.0, abs=1e-10)

    bulk = cspbi3()
    q_dense, e_dense = equilibrate(bulk, *parameters(bulk))
    q_iter, e_iter = equilibrate(bulk, *parameters(bulk), solver="iterative", tolerance=1e-7)
    assert q_iter == pytest.approx(q_dense, abs=1e-5) and e_iter == pytest.approx(e_dense, rel=1e-5)
    # Symmetry: the three iodides of the cubic cell are equivalent; Cs is the cation.
    assert q_dense[2:] == pytest.approx([q_dense[2]] * 3, abs=1e-10) and q_dense[1] > 0 > q_dense[2]


def test_equilibrate_rejects_bad_input():
    wire = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.8]], cell=[5, 5, 5], pbc=(False, False, True))
    with pytest.raises(HipqeqError, match="pbc"):
        equilibrate(wire, 0.0, 5.0, 1.0)
    with pytest.raises(HipqeqError, match="chi"):
        equilibrate(water_like(), [1.0, 2.0], 5.0, 1.0)
    with pytest.raises(HipqeqError, match="sigma"):
        equilibrate(water_like(), 0.0, 5.0, -1.0)
    with pytest.raises(HipqeqError, match="solver"):
        equilibrate(water_like(), 0.0, 5.0, 1.0, solver="magic")
    with pytest.raises(HipqeqError, match="empty"):
        equilibrate(Atoms(), 0.0, 5.0, 1.0)
    with pytest.raises(HipqeqError, match="hardness"):
        equilibrate(water_like(), 0.0, [5.0, np.nan, 5.0], 1.0)
