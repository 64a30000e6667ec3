"""xTB single points: energy, forces, stress and Mulliken charges of one structure.

Engines (built by :func:`hipqeq.engines.xtb_calculator`):

- **tblite** for periodic cells, slabs and finite clusters (Gamma point only).
  GFN1-xTB is the default level; GFN2-xTB is selectable but its SCF often fails on
  rattled RP slabs (25-75 % here), and a failed point is recorded as failed: one
  dataset holds one level of theory and is never topped up with another method.
- **xtb-python** for finite clusters only (all ``pbc`` False); periodic structures are
  refused with status ``rejected_periodic``. GFN2-xTB agrees with tblite to ~1e-8 eV on
  clusters; GFN1-xTB differs by ~1e-5-1e-4 eV per PbI2 / CsI molecule (measured here,
  xtb 22.1 vs tblite 0.8; the two codes' GFN1 implementations differ slightly), so mix
  the two engines in one dataset only with GFN2-xTB. Caution: xtb-python 22.1 returned
  forces off by ~0.45 eV/Angstrom for a PbI2 molecule with a Pb-I bond exactly along
  the x axis (its own energy's finite differences disagree; tblite is right; a rotated
  copy is fine in both), so prefer tblite for clusters too unless you need xtb-python.

Units at the boundary are the ASE calculators' (eV, eV/Angstrom, eV/Angstrom^3, e).

Stress: stored for every periodic structure, as the engine returns it, i.e. the virial
divided by the full cell volume (ASE's convention, Voigt xx yy zz yz xz xy). tblite
treats a slab (pbc T,T,F) as 3D periodic, so for slabs the volume includes the vacuum
and the out-of-plane components describe the interaction of vacuum-separated images
(near zero with enough vacuum); multiply by volume / in-plane area for a 2D stress.
Finite clusters have no stress (null).

Spin: the row's ``unpaired_electrons`` goes to the engine (tblite's multiplicity,
spin-restricted: measured with GFN1-xTB, spin polarisation moves the energy of an
odd-electron frame by under 0.1 meV/atom). xtb-python refuses open-shell structures.

Charges: Mulliken (``charge_scheme`` "Mulliken"); they sum to the total charge.
SCF iteration counts are not exposed by either engine's Python API and are not
recorded; the attempts (normal, then safer) are, in ``calc_params``.
"""

from __future__ import annotations

import importlib.metadata
import logging

import numpy as np
from ase import Atoms

from hipqeq.engines import XTB_ENGINE_SETTINGS
from hipqeq.errors import LabellingFailed, SCFNotConverged, StructureRejected
from hipqeq.labels.common import Labels, unpaired_electrons_of

log = logging.getLogger(__name__)

#: Highest atomic number GFN1-/GFN2-xTB are parametrised for (H..Rn).
MAX_XTB_NUMBER = 86

#: Python distribution of each engine, for the ``software`` column.
ENGINE_PACKAGES = {"tblite": "tblite", "xtb-python": "xtb"}

#: Settings that do not change a label and stay out of ``calc_params['parameters']``.
_NOT_PARAMETERS = ("chunk_size",)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def is_scf_failure(exc: BaseException) -> bool:
    """Whether an engine exception means "SCF did not converge".

    tblite raises ``CalculationFailed('SCF not converged in N cycles')``; xtb-python
    replaces its message with "xtb could not evaluate input" and keeps the reason
    ("Self consistent charge iterator did not converge") in the chained exception.
    """
    text = f"{exc} {exc.__cause__ or ''} {exc.__context__ or ''}".lower()
    return "not converge" in text or "did not converge" in text


class XTBLabeller:
    """Labels structures with GFN1-/GFN2-xTB using the config's ``xtb`` section.

    ``settings`` is a validated ``xtb`` section (see
    :func:`hipqeq.config.validate_section`). The safer retry uses
    ``settings['retry']``: more SCF iterations, a stronger mixer damping (tblite only)
    and a higher electronic temperature (K).
    """

    kmesh = (1, 1, 1)

    def __init__(self, settings: dict):
        self.settings = settings
        self.method = settings["method"]
        self.engine = settings["engine"]
        self.parameters = {k: v for k, v in settings.items() if k not in _NOT_PARAMETERS}
        self.software = {self.engine: _version(ENGINE_PACKAGES[self.engine])}

    def supports(self, number: int) -> bool:
        return 1 <= number <= MAX_XTB_NUMBER

    def check(self, atoms: Atoms) -> None:
        if self.engine == "xtb-python" and atoms.pbc.any():
            raise StructureRejected(
                "rejected_periodic", f"engine xtb-python labels finite clusters only (pbc all False), "
                                     f"this structure has pbc {atoms.pbc.tolist()}; use engine tblite")

    def engine_options(self, safer: bool = False) -> dict:
        """Keyword arguments of :func:`hipqeq.engines.xtb_calculator` (normal or safer)."""
        options = {key: self.settings[key] for key in XTB_ENGINE_SETTINGS}
        if safer:
            retry = self.settings["retry"]
            options["max_iterations"] = retry["max_iterations"]
            options["electronic_temperature_K"] = retry["electronic_temperature_K"]
            if self.engine == "tblite":
                options["mixer_damping"] = retry["mixer_damping"]
        return options

    def label(self, atoms: Atoms, safer: bool = False) -> Labels:
        """Energy (eV), forces (eV/Angstrom), stress (periodic only) and Mulliken charges (e)."""
        from hipqeq.engines import xtb_calculator

        options = self.engine_options(safer)
        atoms = atoms.copy()
        atoms.calc = xtb_calculator(self.method, self.engine, total_charge=float(atoms.info.get("total_charge", 0.0)),
                                    unpaired_electrons=unpaired_electrons_of(atoms), **options)
        properties = ["energy", "forces", "charges"] + (["stress"] if atoms.pbc.any() else [])
        try:
            atoms.calc.calculate(atoms, properties=properties)
        except Exception as exc:
            if is_scf_failure(exc):
                raise SCFNotConverged(f"{self.method} SCF did not converge with {options}: {exc}") from exc
            cause = exc.__context__ or exc.__cause__
            detail = f" ({cause})" if cause is not None else ""
            raise LabellingFailed(f"{self.engine} {self.method} failed: {type(exc).__name__}: {exc}{detail}") from exc
        results = atoms.calc.results
        stress = results.get("stress") if atoms.pbc.any() else None
        return Labels(energy=float(results["energy"]), forces=np.asarray(results["forces"]),
                      stress=None if stress is None else np.asarray(stress),
                      charges=np.asarray(results["charges"]), charge_scheme="Mulliken",
                      boundary="periodic" if atoms.pbc.any() else "open",
                      details={"engine_options": options})
