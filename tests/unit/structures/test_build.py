"""The config's structure plan executed, the build CLI, CIF input."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest

from hipqeq.cli import main
from hipqeq.config import load_config, validate_config
from hipqeq.data import atoms_id, read_atoms, read_records
from hipqeq.data.schema import SOURCES
from hipqeq.errors import ConfigError, StructureError
from hipqeq.geometry import vacuum_of
from hipqeq.labels.common import shortest_periodic_length
from hipqeq.plan import structure_names
from hipqeq.structures import build_structures, formal_charge, phase, read_cif, ruddlesden_popper, trapped_electrons

ROOT = Path(__file__).resolve().parents[3]


def _config(**structures) -> dict:
    return validate_config({"structures": {"seeds": [
        {"name": "slab", "builder": "ruddlesden_popper", "n": 1, "kind": "slab", "vacuum_A": 12.0},
        {"name": "alpha", "builder": "phase", "phase": "alpha"}], **structures},
        "selection": {"n_xtb": 2, "n_dft": 1}})


def test_toy_plan_built_with_identity():
    config = load_config(ROOT / "config" / "toy.yaml")
    structures = build_structures(config)
    assert [a.info["structure_name"] for a in structures] == structure_names(config)
    for atoms in structures:
        info = atoms.info
        assert info["source"] in SOURCES
        assert info["structure_id"] == info["parent_id"] == atoms_id(atoms)
        assert formal_charge(atoms) - trapped_electrons(atoms) == info["total_charge"]
    by_name = {a.info["structure_name"]: a for a in structures}
    assert by_name["rp1_slab"].info["source"] == "build"
    assert by_name["rp1_slab__biaxial_p2"].info["source"] == "strain"
    vac = by_name["rp1_slab__vac_I"]
    assert vac.info["source"] == "defect" and vac.info["family"] == "vacancy_I" and len(vac) == 6
    assert vac.info["total_charge"] == 0 and trapped_electrons(vac) == 1  # neutral V_I keeps its electron


def test_variants_charged_defects_and_automatic_tilt_supercell():
    config = _config(tilts={"angles_deg": [6], "seeds": ["slab"]},
                     defects=[{"kind": "vacancy", "species": "I", "total_charge": 1, "seeds": ["slab"]},
                              {"kind": "substitution", "species": "Pb", "by": "Sn"}])
    by_name = {a.info["structure_name"]: a for a in build_structures(config)}
    charged = by_name["slab__vac_I_qp1"]
    assert charged.info["total_charge"] == 1 == formal_charge(charged)  # fully ionised V_I^+
    assert trapped_electrons(charged) == 0
    tilted = by_name["slab__tilt_6"]
    assert len(tilted) == 4 * 7 and tilted.info["family"] == "tilted"  # 1x1 seed tilted as 2x2
    assert by_name["alpha__sub_Sn_Pb"].get_chemical_symbols().count("Sn") == 1
    assert len({a.info["config_hash"] for a in by_name.values()}) == len(by_name)


def test_a_defect_can_have_its_own_vacuum():
    config = _config(defects=[{"kind": "vacancy", "species": "I", "total_charge": 1, "seeds": ["slab"],
                               "vacuum_A": 40.0},
                              {"kind": "vacancy", "species": "I", "seeds": ["slab"]}])
    by_name = {a.info["structure_name"]: a for a in build_structures(config)}
    seed, wide, same = by_name["slab"], by_name["slab__vac_I_qp1"], by_name["slab__vac_I"]
    assert vacuum_of(wide, 2) == pytest.approx(40.0) and vacuum_of(same, 2) == pytest.approx(vacuum_of(seed, 2))
    np.testing.assert_allclose(wide.cell.array[:2], seed.cell.array[:2])  # the plane untouched
    assert np.linalg.norm(wide.cell.array[2]) == pytest.approx(np.linalg.norm(seed.cell.array[2]) + 40.0 - 12.0)
    # the same defect, only moved along the normal: distances within the slab unchanged
    np.testing.assert_allclose(np.sort(wide.get_all_distances().ravel()),
                               np.sort(same.get_all_distances().ravel()), atol=1e-9)


def test_a_defect_vacuum_on_a_bulk_seed_is_refused():
    with pytest.raises(ConfigError, match=r"defects/0/vacuum_A.*not alpha"):
        _config(defects=[{"kind": "vacancy", "species": "I", "vacuum_A": 40.0}])


def test_tilt_of_a_tilted_phase_is_refused():
    config = _config(tilts={"angles_deg": [4]})
    config["structures"]["seeds"][1]["phase"] = "gamma"
    with pytest.raises(StructureError, match="alpha__tilt_4.*not gamma"):
        build_structures(config)


def test_zero_vacuum_is_refused_by_the_schema():
    with pytest.raises(ConfigError, match="vacuum_A"):
        validate_config({"structures": {"seeds": [
            {"name": "slab", "builder": "ruddlesden_popper", "n": 1, "kind": "slab", "vacuum_A": 0}]},
            "selection": {"n_xtb": 2, "n_dft": 1}})


def test_phase_a_override_rescales():
    config = _config()
    config["structures"]["seeds"][1]["a_A"] = 6.0
    alpha = build_structures(config)[1]
    assert alpha.cell.lengths() == pytest.approx([6.0] * 3)


def test_build_cli_writes_unlabelled_rows(tmp_path):
    out = tmp_path / "structures.parquet"
    assert main(["build", "--config", str(ROOT / "config" / "toy.yaml"), "--output", str(out),
                 "--write-extxyz", str(tmp_path / "view")]) == 0
    records = read_records(out)
    assert {r["status"] for r in records} == {"unlabelled"}
    assert all(r["energy"] is None for r in records)
    assert sorted(p.stem for p in (tmp_path / "view").glob("*.extxyz")) == sorted(r["structure_name"] for r in records)


def test_build_cli_needs_config_or_cif(tmp_path, capsys):
    assert main(["build", "--output", str(tmp_path / "x.parquet")]) == 2
    assert "exactly one of --config" in capsys.readouterr().err


@pytest.mark.parametrize("atoms", [phase("gamma"), ruddlesden_popper(2, "bulk")], ids=["gamma", "rp2_bulk"])
def test_cif_round_trip(tmp_path, atoms):
    path = tmp_path / "mine.cif"
    ase.io.write(path, atoms, format="cif")
    out = tmp_path / "cif.parquet"
    assert main(["build", "--cif", str(path), "--output", str(out)]) == 0
    (back,) = read_atoms(out)
    assert back.info["structure_name"] == "mine" and back.info["source"] == "cif"
    assert back.cell.array == pytest.approx(atoms.cell.array, abs=1e-4)
    # match atoms by position (a CIF reader may reorder): same element at every site
    fractional = back.cell.scaled_positions(atoms.positions)
    for k, f in enumerate(fractional):
        delta = (back.get_scaled_positions() - f + 0.5) % 1.0 - 0.5
        nearest = np.argmin(np.linalg.norm(delta @ back.cell.array, axis=1))
        assert np.linalg.norm(delta[nearest] @ back.cell.array) < 1e-3
        assert back.numbers[nearest] == atoms.numbers[k]
    assert len(back) == len(atoms)


PARTIAL_CIF = """data_partial
_cell_length_a 6.289
_cell_length_b 6.289
_cell_length_c 6.289
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Pb1 Pb 0.0 0.0 0.0 1.0
Cs1 Cs 0.5 0.5 0.5 1.0
I1 I 0.5 0.0 0.0 0.5
Br1 Br 0.5 0.0 0.0 0.5
I2 I 0.0 0.5 0.0 1.0
I3 I 0.0 0.0 0.5 1.0
"""


def test_partial_occupancy_cif_is_rejected(tmp_path, capsys):
    path = tmp_path / "mixed.cif"
    path.write_text(PARTIAL_CIF)
    with pytest.raises(StructureError, match=r"partial occupancies.*I0.5 Br0.5 at \[0.5, 0.0, 0.0\]"):
        read_cif(path)
    assert main(["build", "--cif", str(path), "--output", str(tmp_path / "x.parquet")]) == 2
    assert "mixed.cif: partial occupancies are not supported" in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


def test_production_config_builds_fast_with_large_cells():
    config = load_config(ROOT / "config" / "config.yaml")
    started = time.perf_counter()
    structures = build_structures(copy.deepcopy(config))
    assert time.perf_counter() - started < 60
    assert len(structures) == len(structure_names(config))
    lengths = {a.info["structure_name"]: shortest_periodic_length(a) for a in structures}
    # beta (2x2x3: 17.7 A) and gamma (2x2x2: 17.7 A) fall just short with diagonal repeats
    # of the literature cells; every RP structure and alpha/delta reach the 18 A of the labels
    short = {name for name, length in lengths.items() if length < 18.0}
    assert short <= {"beta", "gamma"}, {n: round(lengths[n], 2) for n in short}
