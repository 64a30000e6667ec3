"""Train/validation/test splits by parent structure.

Frames sampled from one built structure (its MD trajectory, rattles) are strongly
correlated; putting them on both sides of a split would make test errors look better
than they are. Every split therefore takes whole parents.

The split is made once per study over every built structure and every ingested
external structure (``hipqeq split`` writes it to ``results/splits.json``), so the xTB
and DFT datasets, the charge model, the short-range model and the baseline all see the
same held-out parents. The test set is shared by all committee members; train/valid
differ per member.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from hipqeq.errors import HipqeqError

SPLIT_NAMES = ("train", "valid", "test")


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or np.any(fractions < 0) or not np.isclose(fractions.sum(), 1.0):
        raise HipqeqError(f"split fractions must be three non-negative numbers (train, valid, test) "
                          f"summing to 1, got {fractions.tolist()}")
    return fractions


def _shuffled(parents: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[list, int]:
    """``parents`` shuffled, and how many of them make ``fraction`` (at least one when the
    fraction is non-zero and more than one parent is left)."""
    parents = parents.copy()
    rng.shuffle(parents)
    count = int(np.floor(fraction * len(parents)))
    if fraction > 0 and count == 0 and len(parents) > 1:
        count = 1
    return parents.tolist(), count


def _take(parents: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[list, list]:
    """Shuffle ``parents`` and cut off ``fraction`` of them: (rest, taken), each sorted."""
    order, count = _shuffled(parents, fraction, rng)
    return sorted(order[count:]), sorted(order[:count])


def reference_rows(records) -> dict:
    """Each parent's distinct rows of the 4G energy reference fit (per-species counts, then
    the total charge in e rounded to 1e-4), from ``(parent_id, atomic numbers,
    total_charge)`` records: ``{parent: array (n_rows, n_species + 1)}``. A parent has
    several rows where its frames differ in charge (active learning's charge offsets)."""
    records = list(records)
    species = sorted({int(z) for _, numbers, _ in records for z in numbers})
    rows = {}
    for parent, numbers, charge in records:
        numbers = np.asarray(numbers)
        row = tuple(int(np.count_nonzero(numbers == z)) for z in species) + (round(float(charge), 4),)
        rows.setdefault(parent, set()).add(row)
    return {parent: np.array(sorted(found), dtype=float) for parent, found in rows.items()}


def _rank(blocks: list) -> int:
    return int(np.linalg.matrix_rank(np.vstack(blocks))) if blocks else 0


def outside_span(parents: Sequence[str], spanning: Sequence[str], rows: Mapping) -> list:
    """The ``parents`` with a row that is not a linear combination of the ``spanning``
    parents' rows: an energy reference fitted on ``spanning`` extrapolates to them.
    Parents without rows (nothing labelled) are never outside."""
    basis = [rows[p] for p in spanning if p in rows]
    rank = _rank(basis)
    return sorted(p for p in parents if p in rows and _rank(basis + [rows[p]]) > rank)


def _charges(parents, rows: Mapping) -> set:
    return {float(q) for p in parents if p in rows for q in rows[p][:, -1]}


def _cover(train: list, valid: list, rows: Mapping) -> tuple[list, list]:
    """Move valid parents into train (in sorted order) until train holds every total charge
    of train + valid and its rows span theirs."""
    def move(parent):
        return train + [parent], [p for p in valid if p != parent]

    for parent in sorted(valid):
        if _charges([parent], rows) - _charges(train, rows):
            train, valid = move(parent)
    for parent in sorted(valid):
        if outside_span([parent], train, rows):
            train, valid = move(parent)
    return sorted(train), sorted(valid)


def _fill_valid(train: list, valid: list, fraction: float, row_counts: Mapping, rows: Mapping,
                rng: np.random.Generator) -> tuple[list, list]:
    """Move train parents with labelled rows into valid until valid holds ``fraction`` of
    train + valid's rows (``row_counts``, rounded): first those that fit in what is
    missing, in ``rng``'s shuffled order, then the smallest; a parent whose move would
    leave train without valid's charges or span (:func:`_determined`) stays."""
    def rows_in(parents):
        return sum(row_counts.get(p, 0) for p in parents)

    goal = round(fraction * rows_in(train + valid))
    order = list(train)
    rng.shuffle(order)
    while rows_in(valid) < goal:
        gap = goal - rows_in(valid)
        candidates = sorted((p for p in order if p in train and row_counts.get(p, 0)),
                            key=lambda p: max(row_counts[p] - gap, 0))  # stable: fitting ones keep their order
        parent = next((p for p in candidates if _determined(valid + [p], [q for q in train if q != p], rows)), None)
        if parent is None:
            break
        train, valid = [p for p in train if p != parent], valid + [parent]
    return sorted(train), sorted(valid)


def _determined(test: list, others: list, rows: Mapping) -> bool:
    """Whether an energy reference fitted on ``others`` determines every ``test`` parent's:
    their total charges occur among the others' and their rows lie in the others' span."""
    return not (_charges(test, rows) - _charges(others, rows)) and not outside_span(test, others, rows)


def _draw_test(parents: np.ndarray, fraction: float, rng: np.random.Generator,
               rows: Mapping | None) -> tuple[list, list]:
    """(rest, test): ``fraction`` of ``parents`` for the test split, drawn in a seeded
    shuffled order. With ``rows`` (:func:`reference_rows`), a parent joins the test split
    only if the energy reference of the parents left still determines the test parents'
    (:func:`_determined`); where too few can, the next ones in the order fill it (``hipqeq
    split`` names those outside the span in a warning). Where the first ones in the order
    can, the draw is the one without ``rows``."""
    order, count = _shuffled(parents, fraction, rng)
    rows = rows or {}
    test = []
    for parent in order:
        if len(test) == count:
            break
        candidate = test + [parent]
        if _determined(candidate, [p for p in order if p not in candidate], rows):
            test = candidate
    test += [p for p in order if p not in test][:count - len(test)]
    return sorted(set(order) - set(test)), sorted(test)


def make_splits(parent_ids: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1),
                seed: int = 0, n_members: int = 1, reference_rows: Mapping | None = None,
                test_rows: Mapping | None = None, row_counts: Mapping | None = None) -> dict:
    """Assign parent structures to splits.

    Parameters
    ----------
    parent_ids : parent ids (duplicates allowed; each parent is assigned once).
    fractions : target fractions of parents in train, valid, test.
    seed : random seed; same parents and seed, same split.
    n_members : committee size; member ``k`` splits the non-test parents into train and
        valid with its own seed.
    reference_rows : each labelled parent's rows of the energy reference fit
        (:func:`reference_rows`: species counts and total charge); when given, every
        member's train split holds every total charge of the non-test parents and spans
        their rows (valid parents move to train until it does; parents without rows, never
        labelled, do not count). A 4G member fits per-species energies and an energy per
        unit of total charge by least squares on its training rows; a charge state it
        never saw (measured on the study: 162 meV/atom on a held-out Q = +1 vacancy,
        against 51 for a member that had one), or a direction of that fit its rows leave
        open, is an extrapolation: the study's only labelled neutral iodine vacancy (whose
        charge differs from its formal ionic charge) in valid gave member 1 a validation
        energy error of 385 meV/atom. The test parents are drawn among those whose charge
        and rows the other parents determine (:func:`_draw_test`): the one iodine-vacancy
        slab of the toy, the only parent of its composition, held out, made its test
        energy the least-squares fit's arbitrary choice along a direction no training row
        has.
    test_rows : the rows that decide which parents can be test parents (default
        ``reference_rows``): ``hipqeq split`` passes the built structures' own, so that
        the study's split and active learning's, whose labelled rows differ, hold out
        the same parents.
    row_counts : each parent's number of labelled rows; when given, a member's valid
        split also takes train parents (in a seeded order, keeping the coverage above)
        until it holds the valid share of the non-test rows (``fractions[1] /
        (fractions[0] + fractions[1])``). Parents carry unequal numbers of frames, and the
        validation rows pick a model's best epoch: by parents alone, the sr35 run's active
        member 0 validated on 2 of 56 rows (two parents of one frame each) and its charge
        model kept epoch 7 of 150.

    Returns
    -------
    ``{"seed", "fractions", "test": [...], "members": [{"train": [...], "valid": [...]}, ...]}``
    """
    fractions = _check_fractions(fractions)
    parents = np.array(sorted(set(parent_ids)))
    if len(parents) == 0:
        raise HipqeqError("no parent structures to split")
    rest, test = _draw_test(parents, fractions[2], np.random.default_rng([seed, 0]),
                            reference_rows if test_rows is None else test_rows)
    members = []
    for member in range(n_members):
        valid_fraction = fractions[1] / max(fractions[0] + fractions[1], 1e-12)
        rng = np.random.default_rng([seed, 1 + member])
        train, valid = _take(np.array(rest), valid_fraction, rng)
        if reference_rows is not None:
            train, valid = _cover(train, valid, reference_rows)
        if row_counts is not None:
            train, valid = _fill_valid(train, valid, valid_fraction, row_counts, reference_rows or {}, rng)
        if not train:
            raise HipqeqError(f"{len(parents)} parent structures are too few for the split {fractions.tolist()}")
        members.append({"train": train, "valid": valid})
    return {"seed": seed, "fractions": fractions.tolist(), "test": sorted(test), "members": members}


def assign_splits(parent_ids: Sequence[str], splits: dict, member: int = 0) -> np.ndarray:
    """The split name ("train", "valid", "test") of each row, for committee ``member``.

    Raises :class:`HipqeqError` for a parent the split does not know (a dataset built
    from other structures than the split).
    """
    lookup = {p: "test" for p in splits["test"]}
    chosen = splits["members"][member]
    lookup.update({p: "train" for p in chosen["train"]})
    lookup.update({p: "valid" for p in chosen["valid"]})
    unknown = sorted(set(parent_ids) - set(lookup))
    if unknown:
        raise HipqeqError(f"{len(unknown)} parent structure(s) not in the split, e.g. {unknown[0]}")
    return np.array([lookup[p] for p in parent_ids], dtype=object)


def write_splits(splits: dict, path: str | os.PathLike) -> None:
    """Write a split as JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(splits, indent=1) + "\n")


def read_splits(path: str | os.PathLike) -> dict:
    """Read a split written by :func:`write_splits`."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise HipqeqError(f"{path}: no such split file (made by `hipqeq split`)") from None
