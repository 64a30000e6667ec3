"""hippynn graphs around the model modules, for training on padded batches.

The graph reads the hippynn database arrays of :func:`hipqeq.training.data.training_arrays`
(``Z`` species, ``R`` positions, ``pair_cell`` the cell hippynn's periodic pair finder
sees) and wraps the *same* torch modules a :class:`~hipqeq.models.short_range.ShortRangeModel`
or :class:`~hipqeq.models.charges.ChargeModel` holds, so trained weights need no
conversion for deployment.
"""

from __future__ import annotations

from dataclasses import dataclass

from hippynn.graphs import inputs, networks, physics, targets

from hipqeq.models.short_range import ShortRangeModel


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
