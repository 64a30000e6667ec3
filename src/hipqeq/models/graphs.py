"""hippynn graphs around the model modules, for training on padded batches.

The graph reads the hippynn database arrays of :func:`hipqeq.training.data.training_arrays`
(``Z`` species, ``R`` positions, ``pair_cell`` the cell hippynn's periodic pair finder
sees; for the charge model also ``cell`` the true lattice, ``label_pbc`` the periodicity
of the reference engine's electrostatics and ``Qtot`` the total charge of each system)
and wraps the *same* torch modules a
:class:`~hipqeq.models.short_range.ShortRangeModel` or
:class:`~hipqeq.models.charges.ChargeModel` holds, so trained weights need no conversion
for deployment.

Two geometries per system: the network's short-range pairs come from hippynn's
periodic pair finder on ``pair_cell`` (non-periodic directions padded with vacuum, see
:func:`hipqeq.training.data.pair_cells`), while the QEq node computes its own Coulomb
sums on the true ``cell`` with the boundary under which the reference engine computed each
label (``label_pbc``: tblite's slabs are 3D-periodic cells), so that the charges and the
E_elec subtracted from the labels are those of the labels' own electrostatics. The
deployed model solves under the physical boundary instead (dipole-corrected slabs), which
removes the reference's periodic-image artefact from its predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hippynn.graphs import IdxType, inputs, networks, physics, targets
from hippynn.graphs.indextypes import index_type_coercion
from hippynn.graphs.nodes.base import AutoNoKw, SingleNode
from hippynn.graphs.nodes.indexers import AtomReIndexer, acquire_encoding_padding
from hippynn.graphs.nodes.pairs import PeriodicPairIndexer

from hipqeq.models.charges import ChargeModel
from hipqeq.models.network import species_set, tensor_order
from hipqeq.models.repulsion import ZBLRepulsion
from hipqeq.models.short_range import ChargeEnergy, ChargeHardness, ChargeInputFeatures, ShortRangeModel
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


#: hippynn's graph node for each network ``tensor_order`` (:data:`hipqeq.models.network.NETWORKS`).
NETWORK_NODES = {0: networks.Hipnn, 1: networks.HipnnVec, 2: networks.HipnnQuad}


def network_node(name: str, parents, model, **kwargs) -> networks.Hipnn:
    """The hippynn node of ``model``'s network (HIP-NN or HIP-NN-TS) on ``parents``."""
    return NETWORK_NODES[tensor_order(model.hyperparameters)](name, parents, module=model.network, **kwargs)


class ChargeFeaturesNode(AutoNoKw, SingleNode):
    """Input features of a charge-aware network: one-hot species and the QEq charges
    (:class:`~hipqeq.models.short_range.ChargeInputFeatures`), per atom."""

    _input_names = "one_hot", "charges"
    _index_state = IdxType.Atoms
    _auto_module_class = ChargeInputFeatures

    def __init__(self, name: str, parents, module="auto"):
        one_hot, charges = (index_type_coercion(parent, IdxType.Atoms) for parent in parents)
        super().__init__(name, (one_hot, charges), module=self.auto_module() if module == "auto" else module)


class RepulsiveCoreNode(AutoNoKw, SingleNode):
    """Energy per system (eV) of a short-range model's fixed repulsive core
    (:class:`~hipqeq.models.repulsion.ZBLRepulsion`), from the one-hot species and the
    network's pair list."""

    _input_names = "one_hot", "pair_dist", "pair_first", "pair_second", "mol_index", "n_molecules"
    _index_state = IdxType.Molecules
    _auto_module_class = ZBLRepulsion

    def __init__(self, name: str, parents, module: ZBLRepulsion):
        super().__init__(name, parents, module=module)


class ChargeEnergyNode(AutoNoKw, SingleNode):
    """Environment-dependent energy of the total charge per system (eV,
    :class:`~hipqeq.models.short_range.ChargeEnergy`), from the network's features and
    each system's total charge (``Qtot``, e)."""

    _input_names = "hier_features", "mol_index", "n_molecules", "total_charge"
    _index_state = IdxType.Molecules
    _auto_module_class = ChargeEnergy

    def __init__(self, name: str, parents, module: ChargeEnergy):
        super().__init__(name, parents, module=module)


class ChargeHardnessNode(AutoNoKw, SingleNode):
    """The energy's curvature in the total charge per system (eV,
    :class:`~hipqeq.models.short_range.ChargeHardness`), from each system's ``Qtot`` (e)."""

    _input_names = ("total_charge",)
    _index_state = IdxType.Molecules
    _auto_module_class = ChargeHardness

    def __init__(self, name: str, parents, module: ChargeHardness):
        super().__init__(name, parents, module=module)


class ChargeAwareForces(torch.nn.Module):
    r"""Forces of an energy that reads geometry and charges, with the charges' response
    given as a fixed Jacobian (eV/A, padded (n_sys, n_max, 3)):

    .. math::

        \mathbf F_i = -\frac{\partial E}{\partial \mathbf r_i}\Big|_q
                      - \sum_j \frac{\partial E}{\partial q_j}\,
                        \frac{\partial q^*_j}{\partial \mathbf r_i}
    """

    def forward(self, energy, positions, charges, jacobian):
        de_dr, de_dq = torch.autograd.grad(energy.sum(), [positions, charges], create_graph=True)
        return -(de_dr + torch.einsum("sj,sjia->sia", de_dq[..., 0], jacobian))


class ChargeAwareForcesNode(AutoNoKw, SingleNode):
    """hippynn node of :class:`ChargeAwareForces`: parents (energy, positions, charges,
    charge Jacobian), the last three padded per system."""

    _input_names = "energy", "positions", "charges", "jacobian"
    _auto_module_class = ChargeAwareForces

    def __init__(self, name: str, parents, module="auto"):
        energy, positions, charges, jacobian = parents
        positions.requires_grad = True
        charges.requires_grad = True
        self._index_state = positions._index_state
        super().__init__(name, (energy.main_output, positions, charges, jacobian),
                         module=self.auto_module() if module == "auto" else module)


@dataclass
class EnergyGraph:
    """Nodes of an energy model: total energy ``T`` (eV), energy per atom
    ``T_per_atom`` (eV/atom) and forces ``F`` (eV/A) with their database names; for a
    charge-aware short range also its inputs ``q_model`` (the frozen charge model's
    charges, e) and ``dq_dR`` (their Jacobian, e/A; see
    :func:`hipqeq.models.potential.charge_response`), and with an environment-dependent
    charge energy or a charge hardness ``Qtot`` (each system's total charge, e)."""

    inputs: GraphInputs
    energy: object
    energy_per_atom: physics.PerAtom
    forces: object
    henergy: targets.HEnergyNode
    charges: inputs.InputNode | None = None
    charge_jacobian: inputs.InputNode | None = None
    total_charge: inputs.InputNode | None = None


def short_range_graph(model: ShortRangeModel) -> EnergyGraph:
    """The training graph of a short-range (or baseline) model.

    A charge-aware model reads the frozen charge model's charges (``q_model``) as input
    features and its forces take their response to the geometry through the Jacobian
    ``dq_dR``, both computed once per structure by
    :func:`hipqeq.models.potential.charge_response`: exactly the deployed potential's
    forces (autograd through the solve), without a QEq solve and its second derivatives
    in every training step.
    """
    graph_in = graph_inputs()
    encoder, padding = acquire_encoding_padding(graph_in.species, species_set=species_set(model.hyperparameters),
                                                purpose="short range")
    pairs = PeriodicPairIndexer("PairIndexer", (graph_in.positions, encoder, padding, graph_in.pair_cell),
                                dist_hard_max=model.cutoff_A)
    charges = jacobian = None
    features = padding.indexed_features
    if model.charge_features:
        charges = inputs.InputNode(db_name="q_model", index_state=IdxType.MolAtom)
        jacobian = inputs.InputNode(db_name="dq_dR", index_state=IdxType.Molecules)
        atom_charges = AtomReIndexer("q_model[atoms]", (charges, padding))
        features = ChargeFeaturesNode("short_range_inputs", (padding.indexed_features, atom_charges))
    network = network_node("HIPNN_short", (features, pairs), model)
    henergy = targets.HEnergyNode("E_short", network, module=model.energy)
    energy = henergy.mol_energy
    if model.core is not None:
        core = RepulsiveCoreNode("E_core", (padding.indexed_features, pairs.pair_dist, pairs.pair_first,
                                            pairs.pair_second, padding.mol_index, padding.n_molecules),
                                 module=model.core)
        energy = energy + core
    total_charge = None
    if model.charge_energy is not None or model.charge_hardness is not None:
        total_charge = inputs.InputNode(db_name="Qtot", index_state=IdxType.Molecules)
    if model.charge_energy is not None:
        energy = energy + ChargeEnergyNode("E_Q", (network, padding.mol_index, padding.n_molecules, total_charge),
                                           module=model.charge_energy)
    if model.charge_hardness is not None:
        energy = energy + ChargeHardnessNode("E_QQ", (total_charge,), module=model.charge_hardness)
    energy.db_name = "T"
    per_atom = physics.PerAtom("E_short/atom", (energy, graph_in.species))
    per_atom.db_name = "T_per_atom"
    if model.charge_features:
        forces = ChargeAwareForcesNode("F_short", (energy, graph_in.positions, charges, jacobian))
    else:
        forces = physics.GradientNode("F_short", (energy, graph_in.positions), sign=-1)
    forces.db_name = "F"
    return EnergyGraph(graph_in, energy, per_atom, forces, henergy, charges, jacobian, total_charge)


@dataclass
class ChargeGraph:
    """Nodes of a charge model: the electronegativities ``chi`` (eV/e) and the QEq node
    (charges ``q`` in e, E_elec, dipoles ``D`` in e*A) with their inputs: the network's,
    and the QEq node's true ``cell``, total charge ``Qtot`` and ``label_pbc`` (the
    boundary under which the reference engine computed each structure)."""

    inputs: GraphInputs
    cell: inputs.CellNode
    total_charge: inputs.InputNode
    pbc: inputs.InputNode
    network: networks.Hipnn
    chi: targets.HChargeNode
    qeq: QEqNode


def charge_graph(model: ChargeModel) -> ChargeGraph:
    """The training graph of a charge model; its QEq node reads each system's true cell
    (``cell``), the reference engine's periodicity (``label_pbc``) and total charge
    (``Qtot``)."""
    graph_in = graph_inputs()
    network = network_node("HIPNN_chi", (graph_in.species, graph_in.positions, graph_in.pair_cell), model,
                           periodic=True)
    chi = targets.HChargeNode("chi", network, module=model.electronegativity)
    cell = inputs.CellNode(db_name="cell")
    total_charge = inputs.InputNode(db_name="Qtot", index_state=IdxType.Molecules)
    pbc = inputs.InputNode(db_name="label_pbc", index_state=IdxType.Molecules)
    qeq = QEqNode("qeq", (chi, graph_in.species, graph_in.positions, cell),
                  species_set=model.hyperparameters["species"], total_charge=total_charge, pbc=pbc,
                  module=model.qeq)
    qeq.charges.db_name = "q"
    qeq.dipoles.db_name = "D"
    return ChargeGraph(graph_in, cell, total_charge, pbc, network, chi, qeq)
