"""Reference labels: xTB single points, DFT partial charges, external ingest, convergence.

- :mod:`.common`: settings, pre-checks (rejected_* statuses), the chunk loop that never
  drops a structure, resume from a partial file, provenance (``calc_params``);
- :mod:`.xtb`: GFN1-/GFN2-xTB with tblite (periodic) or xtb-python (clusters);
- :mod:`.dft`: PySCF periodic Kohn-Sham, Mulliken and meta-Lowdin charges;
- :mod:`.ingest`: an external reference set (extxyz, ASE db) into the dataset contract;
- :mod:`.convergence`: Gamma-point finite-size error versus supercell size.

Engines (tblite, xtb, pyscf) are imported only when a calculation runs.
"""

from hipqeq.labels.common import (Labels, label_file, label_records, label_structure, precheck,
                                  read_structures, shortest_periodic_length)

__all__ = ["Labels", "label_file", "label_records", "label_structure", "precheck", "read_structures",
           "shortest_periodic_length"]
