"""DFT partial charges (and optionally energy and forces) with PySCF periodic Kohn-Sham.

Level of theory: the config's ``dft`` section — exchange-correlation functional
(``xc``, PBE), GTH pseudopotentials (``pseudo``) and a GTH basis (``basis``), e.g.
``gth-dzvp-molopt-sr`` (production) or ``gth-szv-molopt-sr`` (toy). The exchange-
correlation integration uses PySCF's multigrid (``multigrid_numint``), ~7x faster than
plain FFT density fitting here. Gamma point (``kmesh`` [1, 1, 1], classes RKS/UKS) by
default; any other ``kmesh`` uses the k-point classes (KRKS/KUKS). Structures with unpaired
electrons (the row's ``unpaired_electrons``; by default 1 for odd electron counts, e.g. a
neutral iodine vacancy) run spin-unrestricted (UKS/KUKS with ``cell.spin``), never
restricted.

Slabs (pbc T,T,F) are computed as 3D-periodic cells with their vacuum (as tblite does);
finite clusters (pbc all False) are refused (status ``rejected_nonperiodic``).

Charges: both schemes are computed for every structure, from the converged density
matrices D(k) and AO overlaps S(k) (Gamma: one k-point):

.. math::
    q_A^{\\mathrm{Mulliken}} = Z_A^{\\mathrm{val}} - \\frac{1}{N_k}\\sum_k \\sum_{\\mu \\in A}
        \\mathrm{Re}\\,(D(k) S(k))_{\\mu\\mu}

and the same population on meta-Lowdin orthogonalised AOs (PySCF's ``mulliken_meta``
of the k-point code, which is exact for the Born-von Karman supercell). Z_val is the
pseudopotential's valence charge, so charges sum to the total charge. ``dft.charge_scheme``
picks which one fills the ``charges`` column (named in ``charge_scheme``); the other is
kept in ``calc_params['other_charges']``. Hirshfeld is not implemented: PySCF has no
periodic Hirshfeld, and doing it properly needs pro-atom densities from atomic runs with
the same pseudopotential on the real-space grid.

Gamma-point charges of small cells are not converged (Pb: +0.05 e at Gamma vs +0.21 e
with a 4x4x4 k-mesh in the 5-atom cubic cell, PHYSICS.md): use cells >= ~18 A or a
k-mesh; the small-cell check multiplies each periodic length by its k-mesh count.

Failures: an unconverged SCF is retried once with ``dft.retry`` (more cycles, density
damping, a level shift) and then recorded as ``scf_not_converged``.
Units are converted once here: Hartree -> eV, Hartree/Bohr -> eV/Angstrom.
"""

from __future__ import annotations

import importlib.metadata
import logging
import warnings

import numpy as np
from ase import Atoms

from hipqeq.errors import ConfigError, LabellingFailed, SCFNotConverged, StructureRejected
from hipqeq.labels.common import Labels
from hipqeq.units import BOHR_A, HARTREE_EV

log = logging.getLogger(__name__)

CHARGE_SCHEMES = ("Mulliken", "meta-Lowdin")

#: Settings that do not change a label and stay out of ``calc_params['parameters']``.
_NOT_PARAMETERS = ("chunk_size", "source", "external", "max_memory_mb", "cp2k")


class DFTLabeller:
    """Labels periodic structures with PySCF Kohn-Sham DFT using the config's ``dft`` section."""

    def __init__(self, settings: dict):
        if settings["charge_scheme"] not in CHARGE_SCHEMES:
            raise ConfigError(f"dft.charge_scheme '{settings['charge_scheme']}' is not computed by PySCF "
                              "(Hirshfeld: dft.source cp2k); "
                              f"choose one of {', '.join(CHARGE_SCHEMES)}")
        self.settings = settings
        self.kmesh = tuple(settings["kmesh"])
        self.method = f"{settings['xc']}/{settings['basis']}"
        self.parameters = {k: v for k, v in settings.items() if k not in _NOT_PARAMETERS}
        self.software = {"pyscf": importlib.metadata.version("pyscf")}
        self._supported: dict[int, bool] = {}

    def supports(self, number: int) -> bool:
        """Whether both the basis and the pseudopotential exist for ``number``."""
        if number not in self._supported:
            from ase.data import chemical_symbols
            from pyscf.pbc.gto import basis, pseudo

            ok = 0 < number < len(chemical_symbols)
            if ok:
                symbol = chemical_symbols[number]
                with warnings.catch_warnings():  # PySCF suggests basis-set-exchange when a basis is missing
                    warnings.simplefilter("ignore")
                    try:
                        basis.load(self.settings["basis"], symbol)
                        pseudo.load(self.settings["pseudo"], symbol)
                    except Exception:  # noqa: BLE001 - PySCF raises several types for a missing entry
                        ok = False
            self._supported[number] = ok
        return self._supported[number]

    def check(self, atoms: Atoms) -> None:
        require_periodic(atoms, "PySCF")

    def build_cell(self, atoms: Atoms):
        """The PySCF ``Cell`` of ``atoms`` (3D periodic), ``spin`` = the row's
        ``unpaired_electrons`` (default: 1 for an odd electron count, else 0); a value
        the valence electron count cannot have fails the label."""
        from pyscf.pbc import gto

        total_charge = float(atoms.info.get("total_charge", 0.0))
        if total_charge != round(total_charge):
            raise LabellingFailed(f"PySCF needs an integer total charge, got {total_charge}")
        cell = gto.Cell()
        cell.atom = [(symbol, tuple(position)) for symbol, position in
                     zip(atoms.get_chemical_symbols(), atoms.positions)]
        cell.a = atoms.cell.array
        cell.unit = "Angstrom"
        cell.basis = self.settings["basis"]
        cell.pseudo = self.settings["pseudo"]
        cell.charge = int(round(total_charge))
        cell.max_memory = self.settings["max_memory_mb"]
        cell.verbose = 0
        n_electrons = valence_electrons(atoms.get_chemical_symbols(), self.settings["pseudo"]) - cell.charge
        unpaired = int(atoms.info.get("unpaired_electrons", n_electrons % 2))
        if unpaired < 0 or (n_electrons - unpaired) % 2:
            raise LabellingFailed(f"{unpaired} unpaired electron(s) impossible with {n_electrons} valence "
                                  f"electrons ({self.settings['pseudo']})")
        cell.build(spin=unpaired)
        return cell

    def _scf(self, cell, safer: bool):
        from pyscf.pbc import dft

        kpts = None
        if self.kmesh != (1, 1, 1):
            kpts = cell.make_kpts(self.kmesh)
            mf = (dft.KUKS if cell.spin else dft.KRKS)(cell, kpts=kpts, xc=self.settings["xc"])
        else:
            mf = (dft.UKS if cell.spin else dft.RKS)(cell, xc=self.settings["xc"])
        mf = mf.multigrid_numint()
        mf.max_cycle = self.settings["max_cycles"]
        mf.conv_tol = self.settings["conv_tol_eV"] / HARTREE_EV
        if safer:
            retry = self.settings["retry"]
            mf.max_cycle = retry["max_cycles"]
            mf.damp = retry["damping"]
            mf.level_shift = retry["level_shift_eV"] / HARTREE_EV
        mf.verbose = 0
        return mf, kpts

    def label(self, atoms: Atoms, safer: bool = False) -> Labels:
        """Charges (e) from both schemes; energy (eV) and forces (eV/Angstrom) when asked."""
        cell = self.build_cell(atoms)
        mf, kpts = self._scf(cell, safer)
        try:
            energy_Ha = mf.kernel()
        except Exception as exc:  # noqa: BLE001 - any PySCF failure becomes status error
            raise LabellingFailed(f"PySCF {self.method} failed: {type(exc).__name__}: {exc}") from exc
        if not mf.converged:
            raise SCFNotConverged(f"PySCF {self.method} SCF did not converge in {mf.max_cycle} cycles "
                                  f"(last energy {energy_Ha * HARTREE_EV:.6f} eV)")
        charges = population_charges(cell, mf, kpts)
        chosen = self.settings["charge_scheme"]
        labels = Labels(charges=charges[chosen], charge_scheme=chosen, boundary="periodic",
                        details={"other_charges": {k: v.tolist() for k, v in charges.items() if k != chosen},
                                 "spin_unpaired_electrons": cell.spin, "kmesh": list(self.kmesh),
                                 "n_kpoints": 1 if kpts is None else len(kpts),
                                 "scf_energy_eV": float(energy_Ha) * HARTREE_EV})
        if self.settings["energy_forces"]:
            labels.energy = float(energy_Ha) * HARTREE_EV
            try:
                gradient = mf.Gradients().kernel()
            except Exception as exc:  # noqa: BLE001
                raise LabellingFailed(f"PySCF {self.method} forces failed: {type(exc).__name__}: {exc}") from exc
            labels.forces = -np.asarray(gradient) * HARTREE_EV / BOHR_A
        return labels


def require_periodic(atoms: Atoms, engine: str) -> None:
    """Refuse a finite cluster (pbc all False): the DFT engines label periodic cells and
    slabs (status ``rejected_nonperiodic``)."""
    if not atoms.pbc.any():
        raise StructureRejected("rejected_nonperiodic", f"{engine} periodic DFT labels periodic cells and "
                                                        "slabs; this structure has pbc all False")


def valence_electrons(symbols, pseudo: str) -> int:
    """Number of valence electrons of the neutral atoms ``symbols`` with GTH ``pseudo``
    (the first entry of a GTH pseudopotential counts its electrons per angular momentum)."""
    from pyscf.pbc.gto import pseudo as gth

    per_element = {s: int(sum(gth.load(pseudo, s)[0])) for s in set(symbols)}
    return sum(per_element[s] for s in symbols)


def population_charges(cell, mf, kpts=None) -> dict[str, np.ndarray]:
    """Mulliken and meta-Lowdin charges (e) of a converged PySCF periodic SCF.

    Works for Gamma-point (``kpts`` None) and k-point, restricted and unrestricted
    runs: density matrices are summed over spin and handled as a k-point list.
    """
    from pyscf.pbc.scf import khf

    dm = np.asarray(mf.make_rdm1())
    if kpts is None:
        kpts = np.zeros((1, 3))
        dm = dm[..., None, :, :]  # one k-point
    if dm.ndim == 4:  # (spin, k, nao, nao)
        dm = dm[0] + dm[1]
    overlap = np.asarray(cell.pbc_intor("int1e_ovlp", hermi=1, kpts=kpts)).reshape(dm.shape)
    populations = np.einsum("kij,kji->i", dm, overlap).real / len(kpts)
    atom_of_ao = np.array([label[0] for label in cell.ao_labels(fmt=None)])
    mulliken = cell.atom_charges() - np.bincount(atom_of_ao, weights=populations, minlength=cell.natm)
    _, meta_lowdin = khf.mulliken_meta(cell, dm, kpts, verbose=0, s=overlap)
    return {"Mulliken": mulliken, "meta-Lowdin": np.asarray(meta_lowdin)}
