"""Reference labels: xTB single points, DFT partial charges, external ingest, convergence.

- :mod:`.common`: settings, pre-checks (rejected_* statuses), the chunk loop that never
  drops a structure, resume from a partial file, provenance (``calc_params``);
- :mod:`.xtb`: GFN1-/GFN2-xTB with tblite (periodic) or xtb-python (clusters);
- :mod:`.cp2k`: GFN1-xTB with CP2K, k-points and Ewald (labels that do not depend on the cell),
  and DFT charges with CP2K's GPW (``dft.source: cp2k``);
- :mod:`.dft`: PySCF periodic Kohn-Sham, Mulliken and meta-Lowdin charges;
- :mod:`.ingest`: an external reference set (extxyz, ASE db) into the dataset contract;
- :mod:`.convergence`: per-seed gates of the labels against vacuum and in-plane sampling.

Engines (tblite, xtb, pyscf, the cp2k binary) are used only when a calculation runs.
"""

from hipqeq.labels.common import (Labels, label_file, label_records, label_structure, precheck,
                                  read_structures, shortest_periodic_length)

__all__ = ["Labels", "label_file", "label_records", "label_structure", "precheck", "read_structures",
           "shortest_periodic_length", "xtb_labeller", "dft_labeller"]


def xtb_labeller(settings: dict):
    """The labeller of a validated ``xtb`` section: CP2K for ``engine: cp2k``, else tblite / xtb-python."""
    if settings["engine"] == "cp2k":
        from hipqeq.labels.cp2k import CP2KLabeller

        return CP2KLabeller(settings)
    from hipqeq.labels.xtb import XTBLabeller

    return XTBLabeller(settings)


def dft_labeller(settings: dict):
    """The labeller of a validated ``dft`` section: CP2K for ``source: cp2k``, else PySCF."""
    if settings["source"] == "cp2k":
        from hipqeq.labels.cp2k import CP2KDFTLabeller

        return CP2KDFTLabeller(settings)
    from hipqeq.labels.dft import DFTLabeller

    return DFTLabeller(settings)
