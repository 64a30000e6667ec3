"""2D CsPbI structures: RP slabs and layered bulk, CsPbI3 phases, variants, user CIFs.

Builders (:mod:`.builders`) make seeds from the package's lattice data
(``phases.json``, with sources); :mod:`.transform` strains, tilts and adds point
defects; :mod:`.checks` holds the sanity checks and the formal-charge convention;
:mod:`.cif` reads user CIFs; :mod:`.build` executes the config's structure plan.
"""

from hipqeq.structures.build import build_structure, build_structures, cif_structures, seed_structure, write_extxyz
from hipqeq.structures.builders import phase, ruddlesden_popper, structure_data
from hipqeq.structures.checks import FORMAL_CHARGES, check_structure, formal_charge, trapped_electrons
from hipqeq.structures.cif import read_cif
from hipqeq.structures.transform import even_in_plane, strain, substitution, tilt, vacancy

__all__ = [
    "FORMAL_CHARGES", "build_structure", "build_structures", "check_structure", "cif_structures",
    "even_in_plane", "formal_charge", "phase", "read_cif", "ruddlesden_popper", "seed_structure",
    "strain", "structure_data", "substitution", "tilt", "trapped_electrons", "vacancy", "write_extxyz",
]
