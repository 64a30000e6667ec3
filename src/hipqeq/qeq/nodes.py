"""hippynn graph node for the QEq layer (the node half of hippynn's layer + node pair).

Usage, with a HIP-NN network ``net`` on species/positions/cell input nodes and the
per-system total charge and periodicity of the database (``Qtot`` (n_sys, 1) and
``pbc`` (n_sys, 3) bool, as :func:`hipqeq.data.padded_arrays` gives them)::

    chi = targets.HChargeNode("chi", net)            # any atom-level scalar head
    total_charge = InputNode(db_name="Qtot", index_state=IdxType.Molecules)
    pbc = InputNode(db_name="pbc", index_state=IdxType.Molecules)
    qeq = QEqNode("qeq", (chi, species, positions, cell), species_set=[55, 82, 53],
                  total_charge=total_charge, pbc=pbc)
    qeq.charges, qeq.mol_energies, qeq.qeq_energies, qeq.dipoles

Each system's boundary (open, periodic, slab) follows from its ``pbc`` row, so one batch
may mix clusters, bulk cells and dipole-corrected slabs; without a ``pbc`` input, systems
are periodic when the node has a cell parent and open otherwise.

The node needs no pair indexer: the Coulomb sums are not cut off at the network's pair
cutoff, so :class:`hipqeq.qeq.layers.QEq` finds its own real-space pairs (and periodic
images) from positions and the true cell, with the cutoff its Ewald tolerance asks for.
Cells are hippynn's ``CellNode`` values: lattice vectors as rows, (n_molecules, 3, 3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

import hipqeq._hippynn  # noqa: F401  (configures hippynn before its first import)
from hippynn.graphs.indextypes import IdxType, index_type_coercion
from hippynn.graphs.nodes.base import AutoKw, MultiNode
from hippynn.graphs.nodes.indexers import acquire_encoding_padding
from hippynn.graphs.nodes.tags import Charges

from hipqeq.qeq.ewald import DEFAULT_TOLERANCE
from hipqeq.qeq.layers import QEq


class _ByName(torch.nn.Module):
    """Calls a :class:`QEq` layer with keyword arguments.

    hippynn passes a node's parents to its module positionally; the QEq node's optional
    inputs (cell, total charge, pbc) may be present in any combination, so this names them.
    """

    def __init__(self, qeq: QEq, input_names: Sequence[str]):
        super().__init__()
        self.qeq = qeq
        self.input_names = tuple(input_names)

    def forward(self, *values):
        return self.qeq(**dict(zip(self.input_names, values)))


class QEqNode(Charges, AutoKw, MultiNode):
    """Charges, electrostatic energy, QEq energy and dipole from atom electronegativities.

    :param name: node name.
    :param parents: ``(electronegativity, species, positions)``, plus ``cell`` when any
        system is periodic or a slab. ``electronegativity`` is any atom-level node (e.g.
        a ``HChargeNode`` head on a HIP-NN network), in eV/e.
    :param species_set: atomic numbers known to the layer.
    :param total_charge: a molecule-level node with each system's total charge, e
        ((n_sys, 1), e.g. the database's ``Qtot``), or one number for every system.
    :param pbc: optional molecule-level node with each system's periodic directions
        ((n_sys, 3) bool): decides open / periodic / slab per system.
    :param hardness, sigma, tolerance, solver, learnable: see
        :class:`hipqeq.qeq.layers.QEq`.
    :param module: ``"auto"`` or an existing :class:`QEq` layer to use (e.g. the one a
        deployable model holds, so trained parameters need no conversion).

    Outputs: ``charges`` (atoms, e), ``mol_energies`` (E_elec per system, eV),
    ``qeq_energies`` (E_QEq per system, eV), ``dipoles`` (per system, e*Angstrom).
    """

    _output_names = "charges", "mol_energies", "qeq_energies", "dipoles"
    _output_index_states = IdxType.Atoms, IdxType.Molecules, IdxType.Molecules, IdxType.Molecules
    _main_output = "charges"
    _auto_module_class = QEq

    def __init__(
        self,
        name: str,
        parents: Sequence,
        species_set: Sequence[int],
        total_charge=0.0,
        pbc=None,
        hardness=None,
        sigma=None,
        tolerance: float = DEFAULT_TOLERANCE,
        solver: str = "dense",
        learnable: bool = True,
        module="auto",
    ):
        if len(parents) not in (3, 4):
            raise ValueError("QEqNode takes parents (electronegativity, species, positions[, cell])")
        electronegativity, species, positions, *cell = parents
        total_charge_node = None if isinstance(total_charge, (int, float)) else total_charge
        _, padding = acquire_encoding_padding(species, species_set=None, purpose="QEq atom indexing")
        optional = {"cell": cell[0] if cell else None, "total_charge": total_charge_node, "pbc": pbc}
        optional = {key: node for key, node in optional.items() if node is not None}
        self._input_names = ("electronegativity", "species", "positions", "mol_index", "n_molecules", *optional)
        parents = (
            index_type_coercion(electronegativity.main_output, IdxType.Atoms),
            index_type_coercion(species.main_output, IdxType.Atoms),
            index_type_coercion(positions.main_output, IdxType.Atoms),
            padding.mol_index,
            padding.n_molecules,
            *(node.main_output for node in optional.values()),
        )
        self.module_kwargs = {
            "species_set": species_set,
            "hardness": hardness,
            "sigma": sigma,
            "total_charge": 0.0 if total_charge_node is not None else float(total_charge),
            "tolerance": tolerance,
            "solver": solver,
            "learnable": learnable,
        }
        qeq = self.auto_module() if module == "auto" else module
        super().__init__(name, parents, module=_ByName(qeq, self._input_names))
