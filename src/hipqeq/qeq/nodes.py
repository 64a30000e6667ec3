"""hippynn graph node for the QEq layer (the node half of hippynn's layer + node pair).

Usage, with a HIP-NN network ``net`` on species/positions (and cell) input nodes::

    chi = targets.HChargeNode("chi", net)            # any atom-level scalar head
    qeq = QEqNode("qeq", (chi, species, positions, cell), species_set=[55, 82, 53],
                  boundary="periodic")
    qeq.charges, qeq.mol_energies, qeq.qeq_energies, qeq.dipoles

The node needs no pair indexer: the Coulomb sums are not cut off at the network's pair
cutoff, so :class:`hipqeq.qeq.layers.QEq` finds its own real-space pairs (and periodic
images) from positions and cell, with the cutoff its Ewald tolerance asks for. Cells are
hippynn's ``CellNode`` values: lattice vectors as rows, (n_molecules, 3, 3).
"""

from __future__ import annotations

from collections.abc import Sequence

import hipqeq._hippynn  # noqa: F401  (configures hippynn before its first import)
from hippynn.graphs.indextypes import IdxType, index_type_coercion
from hippynn.graphs.nodes.base import AutoKw, MultiNode
from hippynn.graphs.nodes.indexers import acquire_encoding_padding
from hippynn.graphs.nodes.tags import Charges

from hipqeq.qeq.ewald import DEFAULT_TOLERANCE
from hipqeq.qeq.layers import QEq


class QEqNode(Charges, AutoKw, MultiNode):
    """Charges, electrostatic energy, QEq energy and dipole from atom electronegativities.

    :param name: node name.
    :param parents: ``(electronegativity, species, positions)`` for open boundaries, plus
        ``cell`` for ``periodic`` and ``slab``. ``electronegativity`` is any atom-level
        node (e.g. a ``HChargeNode`` head on a HIP-NN network), in eV/e.
    :param species_set: atomic numbers known to the layer.
    :param boundary, hardness, sigma, total_charge, tolerance, solver, learnable: see
        :class:`hipqeq.qeq.layers.QEq`.

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
        boundary: str = "open",
        hardness=None,
        sigma=None,
        total_charge: float = 0.0,
        tolerance: float = DEFAULT_TOLERANCE,
        solver: str = "dense",
        learnable: bool = True,
        module="auto",
    ):
        electronegativity, species, positions, *cell = parents
        if (boundary == "open") == bool(cell):
            raise ValueError(
                f"QEqNode with boundary={boundary!r} takes parents (electronegativity, species, "
                f"positions{'' if boundary == 'open' else ', cell'})"
            )
        _, padding = acquire_encoding_padding(species, species_set=None, purpose="QEq atom indexing")
        self._input_names = ("electronegativity", "species", "positions", "mol_index", "n_molecules", *(("cell",) if cell else ()))
        parents = (
            index_type_coercion(electronegativity.main_output, IdxType.Atoms),
            index_type_coercion(species.main_output, IdxType.Atoms),
            index_type_coercion(positions.main_output, IdxType.Atoms),
            padding.mol_index,
            padding.n_molecules,
            *(c.main_output for c in cell),
        )
        self.module_kwargs = {
            "species_set": species_set,
            "boundary": boundary,
            "hardness": hardness,
            "sigma": sigma,
            "total_charge": total_charge,
            "tolerance": tolerance,
            "solver": solver,
            "learnable": learnable,
        }
        super().__init__(name, parents, module=module)
