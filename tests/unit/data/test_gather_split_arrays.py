import json

import numpy as np
import pytest

from hipqeq.data import (assign_splits, atoms_id, gather, make_splits, outside_span, padded_arrays, read_splits,
                         read_table, reference_rows, write_dataset, write_splits)
from hipqeq.errors import DatasetError, HipqeqError
from tests.conftest import cubic_cspbi3


def test_gather_conserves_rows_and_counts_statuses(tmp_path, frames):
    chunks = [write_dataset(frames[i:i + 5], tmp_path / f"chunk_{i}.parquet") for i in range(0, 12, 5)]
    counts = gather(chunks, tmp_path / "all.parquet")
    merged = read_table(tmp_path / "all.parquet")
    assert merged.num_rows == len(frames) == sum(counts.values())
    assert counts == {"ok": 11, "scf_not_converged": 1}
    assert sorted(merged.column("structure_id").to_pylist()) == sorted(atoms_id(f) for f in frames)


def test_gather_refuses_a_structure_in_two_chunks(tmp_path, frames):
    a = write_dataset(frames[:3], tmp_path / "a.parquet")
    b = write_dataset(frames[2:5], tmp_path / "b.parquet")
    with pytest.raises(DatasetError, match="appears in both"):
        gather([a, b], tmp_path / "all.parquet")


def test_gather_of_empty_chunks(tmp_path, frames):
    empty = write_dataset([], tmp_path / "empty.parquet")
    full = write_dataset(frames, tmp_path / "full.parquet")
    assert sum(gather([empty, full], tmp_path / "all.parquet").values()) == len(frames)


def test_split_never_puts_a_parent_in_two_splits():
    parents = [f"p{i % 23}" for i in range(400)]
    splits = make_splits(parents, (0.7, 0.15, 0.15), seed=3, n_members=3)
    for member in range(3):
        labels = assign_splits(parents, splits, member)
        by_parent = {}
        for p, s in zip(parents, labels):
            by_parent.setdefault(p, set()).add(s)
        assert all(len(s) == 1 for s in by_parent.values())
        assert set(labels) == {"train", "valid", "test"}
    assert len(splits["test"]) == 3  # floor(0.15 * 23)


def test_split_shares_test_set_across_members_and_datasets():
    parents = [f"p{i}" for i in range(30)]
    splits = make_splits(parents, (0.6, 0.2, 0.2), seed=1, n_members=4)
    trains = {tuple(m["train"]) for m in splits["members"]}
    assert len(trains) > 1, "members should differ in their train/valid split"
    subset = parents[::3]  # e.g. the DFT dataset: a subset of the parents
    for member in range(4):
        labels = dict(zip(parents, assign_splits(parents, splits, member)))
        sub_labels = assign_splits(subset, splits, member)
        assert [labels[p] for p in subset] == list(sub_labels)
        assert {p for p, s in labels.items() if s == "test"} == set(splits["test"])


def _slab(cs=8, pb=4, i=16):
    return [55] * cs + [82] * pb + [53] * i


def test_every_member_trains_on_every_charge_state_and_the_span_of_the_energy_reference():
    """The study's pattern: pristine and strained slabs, charged vacancies whose charge is
    their formal ionic charge (V_I+, V_Cs-), and one neutral V_I, the only parent that
    separates the energy per unit of charge from composition. Without reference rows some
    member misses a charge state or that direction; with them none does, the test set is
    unchanged, and parents only move from valid to train."""
    records = [(f"p{k:02d}", _slab(), 0.0) for k in range(16)]
    records += [("vi_plus_a", _slab(i=15), 1.0), ("vi_plus_b", _slab(i=15), 1.0),
                ("vcs_minus", _slab(cs=7), -1.0), ("vi_neutral", _slab(i=15), 0.0)]
    rows = reference_rows(records)
    parents = [parent for parent, _, _ in records]
    plain = make_splits(parents, (0.7, 0.15, 0.15), seed=0, n_members=8)
    covered = make_splits(parents, (0.7, 0.15, 0.15), seed=0, n_members=8, reference_rows=rows)
    assert covered["test"] == plain["test"]
    non_test = sorted(set(parents) - set(plain["test"]))

    def charges(chosen):
        return {float(q) for p in chosen for q in rows[p][:, -1]}

    def complete(member):
        return charges(member["train"]) == charges(non_test) and not outside_span(non_test, member["train"], rows)

    assert not all(complete(m) for m in plain["members"])
    for member, before in zip(covered["members"], plain["members"]):
        assert complete(member)
        assert set(before["train"]) <= set(member["train"])
        assert sorted(member["train"] + member["valid"]) == sorted(before["train"] + before["valid"])


def test_valid_holds_its_share_of_the_rows_where_parents_carry_unequal_frames():
    """Active learning labels more frames of some parents than of others: by parents alone
    a member can validate on a couple of frames (the sr35 run's member 0: 2 of 56). With
    row counts every member's valid split holds the valid share of the non-test rows
    (what fits first, so no parent of 12 frames is moved while small ones fit), train keeps
    its coverage, the test split and the draw without counts are unchanged, and parents
    only move from train to valid."""
    records = [(f"p{k:02d}", _slab(), 0.0) for k in range(16)]
    records += [("vi_plus", _slab(i=15), 1.0), ("vi_plus_b", _slab(i=15), 1.0), ("vcs_minus", _slab(cs=7), -1.0)]
    rows = reference_rows(records)
    parents = [parent for parent, _, _ in records]
    counts = {parent: 12 if k % 4 == 0 else 1 + k % 3 for k, parent in enumerate(parents)}
    covered = make_splits(parents, (0.7, 0.15, 0.15), seed=0, n_members=8, reference_rows=rows)
    filled = make_splits(parents, (0.7, 0.15, 0.15), seed=0, n_members=8, reference_rows=rows, row_counts=counts)
    assert filled["test"] == covered["test"]
    assert make_splits(parents, (0.7, 0.15, 0.15), seed=0, n_members=8, reference_rows=rows) == covered
    non_test = sorted(set(parents) - set(covered["test"]))
    goal = round(0.15 / 0.85 * sum(counts[p] for p in non_test))

    def rows_in(chosen):
        return sum(counts[p] for p in chosen)

    assert min(rows_in(m["valid"]) for m in covered["members"]) < goal
    for member, before in zip(filled["members"], covered["members"]):
        assert set(member["valid"]) >= set(before["valid"])
        assert sorted(member["train"] + member["valid"]) == non_test
        if rows_in(before["valid"]) < goal:
            assert goal <= rows_in(member["valid"]) < goal + 3
        else:
            assert member == before
        assert not outside_span(member["valid"], member["train"], rows)
        assert {q for p in member["train"] for q in rows[p][:, -1]} == {0.0, 1.0, -1.0}


def test_test_parents_are_ones_the_rest_determine():
    """The toy's pattern: a slab, its strained copy, a bulk cell, and a vacancy slab, the only
    parent of its composition (and a charged one, the only parent of its charge). Whatever
    the seed, neither is drawn for the test split once reference rows are given (its test
    energy would be the least-squares fit's arbitrary choice); the parents the rest
    determine are, and where the plain draw already picks one, the draw is the same."""
    records = [("slab", _slab(), 0.0), ("strained", _slab(), 0.0), ("bulk", [55, 82, 53, 53, 53], 0.0),
               ("bulk_b", [55, 82, 53, 53, 53], 0.0), ("vacancy", _slab(i=15), 0.0),
               ("charged", _slab(), 1.0)]
    rows = reference_rows(records)
    parents = [parent for parent, _, _ in records]
    drawn = set()
    plain_drawn = set()
    for seed in range(20):
        plain = make_splits(parents, (0.6, 0.2, 0.2), seed=seed)
        covered = make_splits(parents, (0.6, 0.2, 0.2), seed=seed, reference_rows=rows)
        assert len(covered["test"]) == len(plain["test"]) == 1
        non_test = sorted(set(parents) - set(covered["test"]))
        assert not outside_span(covered["test"], non_test, rows)
        if not {"vacancy", "charged"} & set(plain["test"]):
            assert covered["test"] == plain["test"]
        drawn.update(covered["test"])
        plain_drawn.update(plain["test"])
    assert {"vacancy", "charged"} <= plain_drawn
    assert drawn == {"slab", "strained", "bulk", "bulk_b"}


def test_an_undetermined_parent_fills_the_test_split_when_nothing_else_can():
    rows = reference_rows([("a", _slab(), 0.0), ("b", _slab(i=15), 0.0)])
    splits = make_splits(["a", "b"], (0.5, 0.0, 0.5), seed=0, reference_rows=rows)
    assert len(splits["test"]) == 1 and splits["members"][0]["train"] == sorted({"a", "b"} - set(splits["test"]))


def test_reference_rows_and_their_span():
    """Rows are [Br, I, Cs, Pb, Q], one per distinct composition and charge of a parent; a
    hole in the pristine slab (Q = +1) is pristine + V_I+ - neutral V_I, so those three
    span it; nothing without Br spans a Br substitution; a parent labelled at two charges
    (active learning's offsets) is outside a span that holds only one of them."""
    rows = reference_rows([("a", _slab(), 0.0), ("a", _slab(), 0.0), ("b", _slab(i=15), 1.0000001),
                           ("c", _slab(i=15), 0.0), ("d", _slab(cs=7), -1.0), ("e", [35] + _slab(i=15), 0.0),
                           ("hole", _slab(), 1.0), ("b2", _slab(16, 8, 30), 2.0),
                           ("ab", _slab(), 0.0), ("ab", _slab(i=15), 1.0)])
    assert rows["a"].tolist() == [[0, 16, 8, 4, 0]] and rows["b"].tolist() == [[0, 15, 8, 4, 1]]
    assert rows["ab"].shape == (2, 5)
    assert outside_span(["a", "b", "c", "d", "e", "hole", "b2", "ab"], ["a", "b"], rows) == ["c", "d", "e", "hole"]
    assert outside_span(["hole", "d", "e"], ["a", "b", "c"], rows) == ["d", "e"]
    assert outside_span(["ab"], ["a"], rows) == ["ab"] and outside_span(["a", "unlabelled"], [], rows) == ["a"]


def test_split_is_deterministic_and_round_trips(tmp_path):
    parents = [f"p{i}" for i in range(10)]
    a = make_splits(parents, seed=5, n_members=2)
    assert a == make_splits(list(reversed(parents)), seed=5, n_members=2)
    assert a != make_splits(parents, seed=6, n_members=2)
    write_splits(a, tmp_path / "s.json")
    assert read_splits(tmp_path / "s.json") == json.loads(json.dumps(a))


def test_split_errors_name_the_problem():
    with pytest.raises(HipqeqError, match="summing to 1"):
        make_splits(["a", "b"], (0.5, 0.5, 0.5))
    with pytest.raises(HipqeqError, match="not in the split"):
        assign_splits(["zzz"], make_splits(["a", "b", "c"]), 0)


def test_padded_arrays_layout(tmp_path, frames):
    small = cubic_cspbi3()
    small.pop()  # a 4-atom structure beside 5-atom ones, to exercise the padding
    table = read_table(write_dataset(frames[:2] + [small], tmp_path / "f.parquet"))
    arrays = padded_arrays(table)
    assert arrays["Z"].shape == (3, 5) and arrays["R"].shape == (3, 5, 3)
    assert arrays["n_atoms"].tolist() == [5, 5, 4]
    assert arrays["Z"][2, 4] == 0 and np.all(arrays["R"][2, 4] == 0)
    np.testing.assert_allclose(arrays["F"][0], frames[0].get_forces())
    np.testing.assert_allclose(arrays["q"][1], frames[1].get_charges())
    assert np.isnan(arrays["T"][2, 0]) and np.all(np.isnan(arrays["F"][2]))
    assert arrays["cell"].shape == (3, 3, 3) and arrays["pbc"].all()
