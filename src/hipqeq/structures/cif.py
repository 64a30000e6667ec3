"""User structures from CIF files, read with pymatgen (symmetry expanded)."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from ase import Atoms

from hipqeq.errors import StructureError

log = logging.getLogger(__name__)


def read_cif(path: str | os.PathLike) -> Atoms:
    """The first structure of the CIF file ``path`` as a 3D periodic ``Atoms``.

    pymatgen applies the file's symmetry operations (conventional cell, not reduced to
    a primitive one). Sites with partial occupancy (mixed or vacant sites) are refused
    with a :class:`StructureError` naming them: a labelled structure needs one element
    per site, so order such a file first (e.g. an explicit supercell). pymatgen's
    parser warnings are logged, not raised.
    """
    from pymatgen.io.cif import CifParser

    path = Path(path)
    if not path.is_file():
        raise StructureError(f"{path}: no such CIF file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structures = CifParser(path).parse_structures(primitive=False)
        except (ValueError, KeyError, IndexError) as exc:
            raise StructureError(f"{path}: pymatgen cannot read this CIF ({exc})") from exc
    for warning in caught:
        log.warning("%s: %s", path, warning.message)
    if not structures:
        raise StructureError(f"{path}: no structure in this CIF")
    structure = structures[0]
    if not structure.is_ordered:
        partial = sorted({f"{site.species.formula} at {site.frac_coords.round(4).tolist()}"
                          for site in structure if not site.is_ordered})
        raise StructureError(f"{path}: partial occupancies are not supported; disordered "
                             f"site(s): {'; '.join(partial[:5])}"
                             + (f" and {len(partial) - 5} more" if len(partial) > 5 else ""))
    return Atoms(numbers=[site.specie.Z for site in structure],
                 positions=structure.cart_coords, cell=structure.lattice.matrix, pbc=True)
