"""Train/validation/test splits by parent structure.

Frames sampled from one built structure (its MD trajectory, rattles) are strongly
correlated; putting them on both sides of a split would make test errors look better
than they are. Every split therefore takes whole parents.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hipqeq.errors import HipqeqError

SPLIT_NAMES = ("train", "valid", "test")


def split_by_parent(parent_ids: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1),
                    seed: int = 0) -> np.ndarray:
    """Assign every row to a split, whole parents at a time.

    Parameters
    ----------
    parent_ids : one parent id per row.
    fractions : target fractions of *parents* in train, valid, test (sum 1).
    seed : random seed of the parent shuffle; same seed, same split.

    Returns
    -------
    ``np.ndarray`` of strings ("train", "valid", "test"), one per row. When there are at
    least three parents every split with a non-zero fraction gets at least one.
    """
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or np.any(fractions < 0) or not np.isclose(fractions.sum(), 1.0):
        raise HipqeqError(f"split fractions must be three non-negative numbers summing to 1, got {fractions.tolist()}")
    parents = np.array(sorted(set(parent_ids)))
    rng = np.random.default_rng(seed)
    rng.shuffle(parents)
    counts = np.floor(fractions * len(parents)).astype(int)
    if len(parents) >= 3:
        counts = np.where((fractions > 0) & (counts == 0), 1, counts)
    counts[0] = len(parents) - counts[1:].sum()
    if counts[0] < 1:
        raise HipqeqError(f"{len(parents)} parent structures are too few for the split {fractions.tolist()}")
    edges = np.cumsum(counts)
    assignment = {}
    for name, start, stop in zip(SPLIT_NAMES, np.r_[0, edges[:-1]], edges):
        for p in parents[start:stop]:
            assignment[p] = name
    return np.array([assignment[p] for p in parent_ids])
