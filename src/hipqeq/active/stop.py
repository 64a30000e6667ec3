"""When to stop the rounds: enough accurate frames, or the last allowed round.

A round's decision records what the round measured: converged (the accurate fraction
reached ``stop_accurate_fraction``) or not. The round limit is not part of it: the
workflow runs rounds 1..``max_rounds`` until one converges, so raising ``max_rounds``
after a finished study continues it with the rounds it has (no selection is redone);
:func:`stopped_by` names why a sequence of rounds ended.

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
    """Whether round ``round`` converged (``stop``, reason :data:`CONVERGED`) or not
    (:data:`CONTINUE`)."""

    round: int
    stop: bool
    reason: str
    accurate_fraction: float
    n_frames: int


def stop_decision(classes, round_: int, stop_fraction: float) -> StopDecision:
    """Decide after round ``round_`` from its frames' classes (:func:`hipqeq.active.trust.classify`):
    converged when the accurate fraction reaches ``stop_fraction``. No frame at all (every
    walker failed at its start) is not convergence."""
    classes = np.asarray(classes)
    n = int(classes.size)
    fraction = float(np.mean(classes == ACCURATE)) if n else 0.0
    if n and fraction >= stop_fraction:
        return StopDecision(round_, True, CONVERGED, fraction, n)
    return StopDecision(round_, False, CONTINUE, fraction, n)


def converged(decision: dict) -> bool:
    """Whether a round's decision (the JSON of ``hipqeq select-candidates``) ends the
    loop by convergence; decisions written before the round limit left them (reason
    ``max_rounds``) do not."""
    return decision["reason"] == CONVERGED


def stopped_by(decisions: list[dict]) -> str | None:
    """Why the rounds ``decisions`` (in order, as the workflow ran them) ended: the last
    converged (:data:`CONVERGED`), or it was the last allowed one (:data:`MAX_ROUNDS`);
    None for no round."""
    if not decisions:
        return None
    return CONVERGED if converged(decisions[-1]) else MAX_ROUNDS
