"""hippynn graphs around the model modules, for training on padded batches.

The graph reads the hippynn database arrays of :func:`hipqeq.training.data.training_arrays`
(``Z`` species, ``R`` positions, ``pair_cell`` the cell hippynn's periodic pair finder
sees; for the charge model also ``cell`` the true lattice, ``pbc`` and ``Qtot`` the total
charge of each system) and wraps the *same* torch modules a
:class:`~hipqeq.models.short_range.ShortRangeModel` or
:class:`~hipqeq.models.charges.ChargeModel` holds, so trained weights need no conversion
for deployment.

Two geometries per system: the network's short-range pairs come from hippynn's
periodic pair finder on ``pair_cell`` (non-periodic directions padded with vacuum, see
:func:`hipqeq.training.data.pair_cells`), while the QEq node computes its own Coulomb
sums on the true ``cell`` with each system's boundary from ``pbc`` (open, periodic or
dipole-corrected slab), exactly as the deployed model does.
"""

from __future__ import annotations

from dataclasses import dataclass

from hippynn.graphs import IdxType, inputs, networks, physics, targets

from hipqeq.models.charges import ChargeModel
from hipqeq.models.short_range import ShortRangeModel
from hipqeq.qeq.nodes import QEqNode


@dataclass
class GraphInputs:
    species: inputs.SpeciesNode
    positions: inputs.PositionsNode
    pair_cell: inputs.CellNode


def graph_inputs() -> GraphInputs:
    """Input nodes with the database names of :func:`hipqeq.training.data.training_arrays`."""
    return GraphInputs(species=inputs.SpeciesNode(db_name="Z"),
                       positions=inputs.PositionsNode(db_name="R"),
                       pair_cell=inputs.CellNode(db_name="pair_cell"))


def network_node(name: str, graph_in: GraphInputs, module) -> networks.Hipnn:
    """A HIP-NN node on ``module`` with hippynn's periodic pair finder."""
    return networks.Hipnn(name, (graph_in.species, graph_in.positions, graph_in.pair_cell),
                          periodic=True, module=module)


@dataclass
class EnergyGraph:
    """Nodes of an energy model: total energy ``T`` (eV), energy per atom
    ``T_per_atom`` (eV/atom) and forces ``F`` (eV/A) with their database names."""

    inputs: GraphInputs
    energy: object
    energy_per_atom: physics.PerAtom
    forces: physics.GradientNode
    henergy: targets.HEnergyNode


def short_range_graph(model: ShortRangeModel) -> EnergyGraph:
    """The training graph of a short-range (or baseline) model."""
    graph_in = graph_inputs()
    network = network_node("HIPNN_short", graph_in, model.network)
    henergy = targets.HEnergyNode("E_short", network, module=model.energy)
    energy = henergy.mol_energy
    energy.db_name = "T"
    per_atom = physics.PerAtom("E_short/atom", (energy, graph_in.species))
    per_atom.db_name = "T_per_atom"
    forces = physics.GradientNode("F_short", (energy, graph_in.positions), sign=-1)
    forces.db_name = "F"
    return EnergyGraph(graph_in, energy, per_atom, forces, henergy)


@dataclass
class ChargeGraph:
    """Nodes of a charge model: the electronegativities ``chi`` (eV/e) and the QEq node
    (charges ``q`` in e, E_elec, dipoles ``D`` in e*A) with their inputs: the network's,
    and the QEq node's true ``cell``, total charge ``Qtot`` and ``pbc``."""

    inputs: GraphInputs
    cell: inputs.CellNode
    total_charge: inputs.InputNode
    pbc: inputs.InputNode
    network: networks.Hipnn
    chi: targets.HChargeNode
    qeq: QEqNode


def charge_graph(model: ChargeModel) -> ChargeGraph:
    """The training graph of a charge model; its QEq node reads each system's true cell
    (``cell``), periodicity (``pbc``) and total charge (``Qtot``)."""
    graph_in = graph_inputs()
    network = network_node("HIPNN_chi", graph_in, model.network)
    chi = targets.HChargeNode("chi", network, module=model.electronegativity)
    cell = inputs.CellNode(db_name="cell")
    total_charge = inputs.InputNode(db_name="Qtot", index_state=IdxType.Molecules)
    pbc = inputs.InputNode(db_name="pbc", index_state=IdxType.Molecules)
    qeq = QEqNode("qeq", (chi, graph_in.species, graph_in.positions, cell),
                  species_set=model.hyperparameters["species"], total_charge=total_charge, pbc=pbc,
                  module=model.qeq)
    qeq.charges.db_name = "q"
    qeq.dipoles.db_name = "D"
    return ChargeGraph(graph_in, cell, total_charge, pbc, network, chi, qeq)
