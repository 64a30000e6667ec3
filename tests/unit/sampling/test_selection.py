"""Farthest-point selection: distinct frames, every family, diverse prefix, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hipqeq.cli import main
from hipqeq.data import read_records, write_dataset
from hipqeq.sampling import rattle_frames
from hipqeq.config import load_config
from hipqeq.selection import farthest_point_order, radial_descriptor, select_files
from hipqeq.structures import phase, ruddlesden_popper, strain, vacancy

ROOT = Path(__file__).resolve().parents[3]


def test_descriptor_invariances_and_sensitivity():
    atoms = phase("alpha", (2, 2, 2))
    elements = [55, 53, 82]
    reference = radial_descriptor(atoms, elements)
    shuffled = atoms[np.random.default_rng(0).permutation(len(atoms))]
    shifted = atoms.copy()
    shifted.translate([0.3, -1.1, 2.0])
    shifted.wrap()
    assert radial_descriptor(shuffled, elements) == pytest.approx(reference)
    assert radial_descriptor(shifted, elements) == pytest.approx(reference)
    assert radial_descriptor(atoms.repeat(2), elements) == pytest.approx(reference)  # per atom
    assert np.linalg.norm(radial_descriptor(strain(atoms, 2.0), elements) - reference) > 1e-3
    assert np.linalg.norm(radial_descriptor(vacancy(atoms, "I"), elements) - reference) > 1e-3


def test_fps_distinct_and_covers_rare_family():
    rng = np.random.default_rng(1)
    features = np.vstack([rng.normal(0, 1, (50, 4)), rng.normal(0, 0.01, (2, 4))])
    families = ["common"] * 50 + ["rare"] * 2  # the rare family sits at the centre: plain FPS skips it
    order = farthest_point_order(features, families, 5)
    assert len(set(order)) == 5
    assert {families[k] for k in order[:2]} == {"common", "rare"}
    assert farthest_point_order(features, families, 3) == order[:3]  # any prefix is the same FPS
    # after the families, each pick is the farthest from those chosen so far
    chosen = order[:3]
    gaps = [np.min(np.linalg.norm(features[chosen] - f, axis=1)) for f in features]
    assert order[3] == int(np.argmax(gaps))
    assert sorted(farthest_point_order(features, families, 100)) == list(range(52))


def _frames(tmp_path: Path) -> list[Path]:
    files = []
    seeds = {"slab": (ruddlesden_popper(1, "slab", vacuum=12.0), "pristine"),
             "slab__vac_I": (vacancy(ruddlesden_popper(1, "slab", vacuum=12.0), "I"), "vacancy_I"),
             "alpha": (phase("alpha"), "pristine")}
    for k, (name, (atoms, family)) in enumerate(seeds.items()):
        frames = rattle_frames(atoms, 10, (0.02, 0.1), 3.0, np.random.default_rng(k))
        for frame in frames:
            frame.info.update(structure_name=name, family=family, source="rattle", parent_id=f"p{k}",
                              total_charge=0.0)
        files.append(write_dataset(frames, tmp_path / f"{name}.parquet"))
    return files


def test_select_cli_prefix_identity_and_counts(tmp_path):
    files = _frames(tmp_path)
    # the same file twice: its frames count once
    config = str(ROOT / "config" / "toy.yaml")
    args = ["select", "--config", config, "--output-xtb", str(tmp_path / "xtb.parquet"), *map(str, files), str(files[0])]
    assert main(args) == 0
    assert main(["select-dft", "--config", config, "--selection", str(tmp_path / "xtb.parquet"),
                 "--output", str(tmp_path / "dft.parquet")]) == 0
    xtb, dft = read_records(tmp_path / "xtb.parquet"), read_records(tmp_path / "dft.parquet")
    assert len(xtb) == 24 and len(dft) == 2  # toy: n_xtb 24 of 30 frames, n_dft 2
    assert len({r["structure_id"] for r in xtb}) == 24
    assert [r["structure_id"] for r in dft] == [r["structure_id"] for r in xtb[:2]]
    assert {r["family"] for r in dft} == {"pristine", "vacancy_I"}  # the prefix covers the families
    originals = {r["structure_id"]: r for f in files for r in read_records(f)}
    for row in xtb:
        assert row == originals[row["structure_id"]]  # rows copied unchanged


def test_select_takes_all_when_fewer_available(tmp_path):
    files = _frames(tmp_path)[:1]
    config = ROOT / "config" / "toy.yaml"
    assert main(["select", "--config", str(config), "--output-xtb", str(tmp_path / "x.parquet"), str(files[0])]) == 0
    assert len(read_records(tmp_path / "x.parquet")) == 10


def test_available_counts_duplicates_once(tmp_path):
    files = _frames(tmp_path)
    counts = select_files(load_config(ROOT / "config" / "toy.yaml"), [*files, files[0]], tmp_path / "x.parquet")
    assert counts == {"available": 30, "xtb": 24}  # 3 files of 10 frames, one given twice


def test_select_test_takes_unlabelled_frames_of_the_test_parents_only(tmp_path):
    """`hipqeq select-test`: frames of the split's test parents that no labelled dataset
    holds, every family of them first; all of them when fewer than asked; a split none of
    whose test parents was sampled is refused."""
    import json

    import yaml

    from hipqeq.errors import DatasetError
    from hipqeq.selection import select_held_out_files

    files = _frames(tmp_path)  # parents p0 (slab), p1 (slab__vac_I), p2 (alpha): 10 frames each
    labelled = write_dataset(read_records(files[1])[:3], tmp_path / "labelled.parquet")
    config = yaml.safe_load((ROOT / "config" / "toy.yaml").read_text())
    config["selection"]["n_xtb_test"] = 4
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"seed": 0, "fractions": [0.4, 0.2, 0.4], "test": ["p1", "p2"],
                                  "members": [{"train": ["p0"], "valid": []}]}))
    output = tmp_path / "test.parquet"
    assert main(["select-test", "--config", str(config_path), "--splits", str(splits), "--labelled",
                 str(labelled), "--output", str(output), *map(str, files)]) == 0
    chosen = read_records(output)
    labelled_ids = {r["structure_id"] for r in read_records(labelled)}
    assert len(chosen) == 4 and len({r["structure_id"] for r in chosen}) == 4
    assert {r["parent_id"] for r in chosen} <= {"p1", "p2"}
    assert not labelled_ids & {r["structure_id"] for r in chosen}
    assert {r["family"] for r in chosen[:2]} == {"vacancy_I", "pristine"}

    loaded = load_config(config_path)
    loaded["selection"]["n_xtb_test"] = 100
    counts = select_held_out_files(loaded, files, ["p1", "p2"], [labelled], output)
    assert counts == {"available": 20, "labelled": 3, "selected": 17}
    with pytest.raises(DatasetError, match="none of the 30 sampled frame"):
        select_held_out_files(loaded, files, ["elsewhere"], [labelled], output)
