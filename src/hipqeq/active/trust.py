r"""DP-GEN's trust window: each explored frame is accurate, a candidate, or failed.

With the force deviation :math:`\sigma_F` (eV/Angstrom) and charge deviation
:math:`\sigma_q` (e) of :mod:`hipqeq.active.deviation`, and bounds lo < hi for each:

- **failed** if :math:`\sigma_F \ge hi_F` or :math:`\sigma_q \ge hi_q` (or a deviation
  is not finite): the committee is lost there, the frame is likely unphysical; counted,
  never labelled;
- **accurate** if :math:`\sigma_F < lo_F` and :math:`\sigma_q < lo_q`: the committee
  agrees, a label would teach it little;
- **candidate** otherwise: worth a label.

Charge bounds of ``None`` leave the charges out (a baseline committee, or a study whose
charge model is not retrained between rounds).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hipqeq.errors import ConfigError

ACCURATE, CANDIDATE, FAILED = "accurate", "candidate", "failed"
CLASSES = (ACCURATE, CANDIDATE, FAILED)


@dataclasses.dataclass(frozen=True)
class TrustWindow:
    """Bounds of the window: forces in eV/Angstrom, charges in e (``None``: unused)."""

    force_lo_eV_A: float
    force_hi_eV_A: float
    charge_lo_e: float | None = None
    charge_hi_e: float | None = None

    def __post_init__(self):
        if not 0 <= self.force_lo_eV_A < self.force_hi_eV_A:
            raise ConfigError(f"trust window: need 0 <= force lo ({self.force_lo_eV_A}) < hi "
                              f"({self.force_hi_eV_A}) eV/A")
        if (self.charge_lo_e is None) != (self.charge_hi_e is None):
            raise ConfigError("trust window: give both charge bounds or neither")
        if self.charge_lo_e is not None and not 0 <= self.charge_lo_e < self.charge_hi_e:
            raise ConfigError(f"trust window: need 0 <= charge lo ({self.charge_lo_e}) < hi "
                              f"({self.charge_hi_e}) e")

    @classmethod
    def from_config(cls, config: dict) -> "TrustWindow":
        """The window of the config's ``active_learning`` section."""
        section = config["active_learning"]
        return cls(section["trust_lo_force_eV_A"], section["trust_hi_force_eV_A"],
                   section["trust_lo_charge_e"], section["trust_hi_charge_e"])


def classify(force_deviation_eV_A, charge_deviation_e, window: TrustWindow) -> np.ndarray:
    """The class (:data:`CLASSES`) of each frame, from arrays of its deviations.

    Charge deviations are ignored when the window has no charge bounds; where they are
    used, a NaN charge deviation (a committee without charges) counts as failed.
    """
    force = np.asarray(force_deviation_eV_A, dtype=float)
    charge = np.asarray(charge_deviation_e, dtype=float)
    failed = ~np.isfinite(force) | (force >= window.force_hi_eV_A)
    accurate = force < window.force_lo_eV_A
    if window.charge_lo_e is not None:
        failed |= ~np.isfinite(charge) | (charge >= window.charge_hi_e)
        accurate &= charge < window.charge_lo_e
    return np.where(failed, FAILED, np.where(accurate, ACCURATE, CANDIDATE))
