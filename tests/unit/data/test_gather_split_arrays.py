import json

import numpy as np
import pytest

from hipqeq.data import (assign_splits, atoms_id, gather, make_splits, padded_arrays, read_splits, read_table,
                         write_dataset, write_splits)
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


def test_every_member_trains_on_every_charge_state_outside_the_test_set():
    """22 parents, three of them charged (+1, +1, -1): without the charges some member's
    train split misses a charge state; with them none does, and the test set is unchanged."""
    parents = [f"p{i:02d}" for i in range(22)]
    charges = {p: 0.0 for p in parents} | {"p03": 1.0, "p11": 1.0, "p17": -1.0}
    plain = make_splits(parents, (0.7, 0.15, 0.15), seed=0, n_members=6)
    covered = make_splits(parents, (0.7, 0.15, 0.15), seed=0, n_members=6, total_charges=charges)
    assert covered["test"] == plain["test"]
    states = {charges[p] for p in parents if p not in covered["test"]}
    assert any({charges[p] for p in m["train"]} != states for m in plain["members"])
    for member, before in zip(covered["members"], plain["members"]):
        assert {charges[p] for p in member["train"]} == states
        assert sorted(member["train"] + member["valid"]) == sorted(before["train"] + before["valid"])


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
