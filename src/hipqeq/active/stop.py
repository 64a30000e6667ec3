"""When to stop the rounds: enough accurate frames, nothing left to label, or the last
allowed round.

A round's decision records what the round measured: converged (the accurate fraction
reached ``stop_accurate_fraction``), not converged but without a frame to label (every
frame that is not accurate failed, or a budget of 0: the next round would retrain the
same committee on the same labels), or neither. The round limit is not part of it: the
workflow runs rounds 1..``max_rounds`` until one ends the loop (:func:`ends_loop`), so
raising ``max_rounds`` after a finished study continues it with the rounds it has (no
selection is redone); :func:`stopped_by` names why a sequence of rounds ended.

The accurate fraction is taken over every frame all walkers of a round explored
(failed walkers' frames included, so a committee that blows up does not look
converged). A walker that produced no frame contributes nothing.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hipqeq.active.trust import ACCURATE

CONVERGED, NO_CANDIDATES, MAX_ROUNDS, CONTINUE = "accurate_fraction", "no_candidates", "max_rounds", "continue"


@dataclasses.dataclass(frozen=True)
class StopDecision:
    """Whether round ``round`` ends the loop (``stop``, reason :data:`CONVERGED` or
    :data:`NO_CANDIDATES`) or not (:data:`CONTINUE`)."""

    round: int
    stop: bool
    reason: str
    accurate_fraction: float
    n_frames: int


def stop_decision(classes, round_: int, stop_fraction: float, n_selected: int) -> StopDecision:
    """Decide after round ``round_`` from its frames' classes (:func:`hipqeq.active.trust.classify`)
    and the number of its frames selected for labelling: converged when the accurate
    fraction reaches ``stop_fraction``, else :data:`NO_CANDIDATES` when nothing was
    selected. No frame at all (every walker failed at its start) is not convergence."""
    classes = np.asarray(classes)
    n = int(classes.size)
    fraction = float(np.mean(classes == ACCURATE)) if n else 0.0
    if n and fraction >= stop_fraction:
        return StopDecision(round_, True, CONVERGED, fraction, n)
    if n_selected == 0:
        return StopDecision(round_, True, NO_CANDIDATES, fraction, n)
    return StopDecision(round_, False, CONTINUE, fraction, n)


def ends_loop(decision: dict) -> bool:
    """Whether a round's decision (the JSON of ``hipqeq select-candidates``) ends the
    loop (:data:`CONVERGED` or :data:`NO_CANDIDATES`); decisions written before the round
    limit left them (reason ``max_rounds``) do not."""
    return decision["reason"] in (CONVERGED, NO_CANDIDATES)


def stopped_by(decisions: list[dict]) -> str | None:
    """Why the rounds ``decisions`` (in order, as the workflow ran them) ended: the last
    one's reason when it ends the loop (:func:`ends_loop`), else it was the last allowed
    one (:data:`MAX_ROUNDS`); None for no round."""
    if not decisions:
        return None
    return decisions[-1]["reason"] if ends_loop(decisions[-1]) else MAX_ROUNDS
