"""Pre-checks, settings, input reading and the resumable chunk loop."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase import Atoms

from hipqeq.data import read_records, write_dataset
from hipqeq.config import validate_section
from hipqeq.errors import StructureRejected
from hipqeq.labels.common import (label_records, partial_path, precheck, read_structures,
                                  shortest_periodic_length)
from hipqeq.labels.xtb import XTBLabeller
from tests.unit.labels.cells import A_CUBIC, cubic_cspbi3


def _rejection(atoms, labeller) -> str:
    with pytest.raises(StructureRejected) as info:
        precheck(atoms, labeller)
    return info.value.status


def test_shortest_periodic_length_uses_reduced_cell_and_kmesh():
    atoms = Atoms("Cs", cell=[[10, 0, 0], [9.5, 3, 0], [0, 0, 30]], pbc=[True, True, False])
    # b - a = (-0.5, 3, 0) is the shortest in-plane translation; c is not periodic
    assert shortest_periodic_length(atoms) == pytest.approx(np.hypot(0.5, 3))
    cubic = cubic_cspbi3()
    assert shortest_periodic_length(cubic) == pytest.approx(A_CUBIC)
    assert shortest_periodic_length(cubic, kmesh=(3, 3, 4)) == pytest.approx(3 * A_CUBIC)
    assert shortest_periodic_length(Atoms("CsI", positions=[[0, 0, 0], [3, 0, 0]])) is None


def test_precheck_names_each_problem(xtb_settings):
    labeller = XTBLabeller(xtb_settings)
    overlap = cubic_cspbi3()
    overlap.positions[1] = overlap.positions[0] + [0.2, 0, 0]
    assert _rejection(overlap, labeller) == "rejected_overlap"
    image = Atoms("Cs", cell=[0.5, 8, 8], pbc=True)  # an atom 0.5 A from its own periodic image
    assert _rejection(image, labeller) == "rejected_overlap"
    nan = cubic_cspbi3()
    nan.positions[2, 1] = np.nan
    assert _rejection(nan, labeller) == "rejected_nan"
    uranium = cubic_cspbi3()
    uranium.numbers[0] = 92  # beyond GFN-xTB's H..Rn
    assert _rejection(uranium, labeller) == "rejected_element"
    flat = Atoms("CsI", positions=[[0, 0, 0], [3, 0, 0]], cell=[[6, 0, 0], [12, 0, 0], [0, 0, 6]], pbc=True)
    assert _rejection(flat, labeller) == "rejected_cell"
    precheck(cubic_cspbi3(rattle=0.05), labeller)  # a sound small cell passes when allowed


def test_small_cells_are_refused_unless_allowed():
    strict = validate_section("xtb", {})
    labeller = XTBLabeller(strict)
    with pytest.raises(StructureRejected, match="min_periodic_length_A") as info:
        precheck(cubic_cspbi3(), labeller)
    assert info.value.status == "rejected_small_cell"
    precheck(cubic_cspbi3().repeat(3), labeller)  # 18.9 A passes
    cluster = Atoms("CsI", positions=[[0, 0, 0], [3.3, 0, 0]])
    precheck(cluster, labeller)  # no periodic direction, no finite-size check


def test_read_structures_derives_identity_for_ase_files(tmp_path):
    frames = [cubic_cspbi3(), cubic_cspbi3(rattle=0.05)]
    frames[1].info["total_charge"] = 1.0
    ase.io.write(tmp_path / "frames.extxyz", frames)
    records = read_structures(tmp_path / "frames.extxyz")
    assert [r["structure_name"] for r in records] == ["frames_0", "frames_1"]
    assert {r["source"] for r in records} == {"external"} and {r["family"] for r in records} == {"external"}
    assert [r["total_charge"] for r in records] == [0.0, 1.0]
    assert len({r["structure_id"] for r in records}) == 2
    assert all(r["parent_id"] == r["structure_id"] for r in records)


class _Interrupting(XTBLabeller):
    """Stops the job (like a kill) when it reaches the structure at ``stop_at``."""

    def __init__(self, settings, stop_at=None):
        super().__init__(settings)
        self.stop_at, self.calls = stop_at, 0

    def label(self, atoms, safer=False):
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        self.calls += 1
        return super().label(atoms, safer)


def test_interrupted_chunk_resumes_with_only_missing_structures(tmp_path, xtb_settings):
    inputs = tmp_path / "in.parquet"
    write_dataset([cubic_cspbi3(rattle=0.04, seed=s) for s in range(3)], inputs)
    records = read_records(inputs)
    output = tmp_path / "chunk_0.parquet"
    with pytest.raises(KeyboardInterrupt):
        label_records(records, _Interrupting(xtb_settings, stop_at=2), output, progress=False)
    assert not output.exists()
    partial = read_records(partial_path(output))
    assert len(partial) == 2

    resumed = _Interrupting(xtb_settings)
    counts = label_records(records, resumed, output, progress=False)
    assert resumed.calls == 1 and counts == {"ok": 3}
    rows = read_records(output)
    assert [r["structure_id"] for r in rows] == [r["structure_id"] for r in records]
    assert [r["created_at"] for r in rows[:2]] == [r["created_at"] for r in partial]  # reused, not recomputed
    assert not partial_path(output).exists()

    # changed parameters: the partial rows no longer count and everything runs again
    other = validate_section("xtb", {"allow_small_cells": True, "accuracy": 0.5})
    with pytest.raises(KeyboardInterrupt):
        label_records(records, _Interrupting(xtb_settings, stop_at=1), output, progress=False)
    again = _Interrupting(other)
    label_records(records, again, output, progress=False)
    assert again.calls == 3
    assert all(json.loads(r["calc_params"])["parameters"]["accuracy"] == 0.5 for r in read_records(output))


def test_a_labelled_row_keeps_where_its_frame_was_sampled(tmp_path, xtb_settings):
    frame = cubic_cspbi3(rattle=0.04, seed=0)
    frame.info.update(source="active", active_round=2, trajectory="results/active/r2/walkers/c_T450_w0.traj",
                      md_step=120)
    inputs = write_dataset([frame], tmp_path / "in.parquet")
    label_records(read_records(inputs), XTBLabeller(xtb_settings), tmp_path / "out.parquet", progress=False)
    (row,) = read_records(tmp_path / "out.parquet")
    assert row["status"] == "ok"
    assert (row["active_round"], row["trajectory"], row["md_step"]) == (2, frame.info["trajectory"], 120)


@pytest.mark.parametrize("side", ["bottom", "top"])
def test_slabs_wrapped_across_the_cell_are_read_unwrapped(tmp_path, side):
    """An external slab cut in two by z = 0 (or z = c) is stored whole: the same
    structure (and id) as the slab moved without wrapping."""
    slab = cubic_cspbi3().repeat((1, 1, 2))
    slab.pbc = (True, True, False)
    slab.center(vacuum=8.0, axis=2)
    low, high = slab.positions[:, 2].min(), slab.positions[:, 2].max()
    slab.positions[:, 2] += -(low + 1.0) if side == "bottom" else slab.cell[2, 2] - high + 1.0
    wrapped = slab.copy()
    wrapped.wrap(pbc=True)
    ase.io.write(tmp_path / "slabs.extxyz", [slab, wrapped])
    whole, read_back = read_structures(tmp_path / "slabs.extxyz")
    np.testing.assert_allclose(read_back["positions"], whole["positions"], atol=1e-8)
    assert read_back["structure_id"] == whole["structure_id"]
