"""When to stop the rounds: enough accurate frames, or the last allowed round.

The accurate fraction is taken over every frame all walkers of a round explored
(failed walkers' frames included, so a committee that blows up does not look
converged). A walker that produced no frame contributes nothing.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hipqeq.active.trust import ACCURATE

CONVERGED, MAX_ROUNDS, CONTINUE = "accurate_fraction", "max_rounds", "continue"


@dataclasses.dataclass(frozen=True)
class StopDecision:
    """Whether round ``round`` is the last, and why (:data:`CONVERGED`,
    :data:`MAX_ROUNDS` or :data:`CONTINUE`)."""

    round: int
    stop: bool
    reason: str
    accurate_fraction: float
    n_frames: int


def stop_decision(classes, round_: int, max_rounds: int, stop_fraction: float) -> StopDecision:
    """Decide after round ``round_`` from its frames' classes (:func:`hipqeq.active.trust.classify`).

    Converged (the accurate fraction reaches ``stop_fraction``) wins over the round limit,
    so that the report says the committee converged when both hold. No frame at all
    (every walker failed at its start) is not convergence.
    """
    classes = np.asarray(classes)
    n = int(classes.size)
    fraction = float(np.mean(classes == ACCURATE)) if n else 0.0
    if n and fraction >= stop_fraction:
        return StopDecision(round_, True, CONVERGED, fraction, n)
    if round_ >= max_rounds:
        return StopDecision(round_, True, MAX_ROUNDS, fraction, n)
    return StopDecision(round_, False, CONTINUE, fraction, n)
