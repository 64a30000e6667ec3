import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from hipqeq.data import (SCHEMA, atoms_id, read_atoms, read_records, read_structure, read_table,
                         record_from_atoms, status_counts, table_from_records, write_dataset, write_table)
from hipqeq.data import schema as S
from hipqeq.errors import DatasetError, LabellingFailed, SCFNotConverged
from tests.conftest import cubic_cspbi3


def test_round_trip_keeps_geometry_labels_and_identity(tmp_path, frames):
    path = write_dataset(frames, tmp_path / "frames.parquet")
    back = read_atoms(path)
    assert len(back) == len(frames)
    for before, after in zip(frames, back):
        np.testing.assert_array_equal(after.numbers, before.numbers)
        np.testing.assert_allclose(after.positions, before.positions, rtol=0, atol=0)
        np.testing.assert_allclose(after.cell.array, before.cell.array)
        assert after.pbc.tolist() == before.pbc.tolist()
        assert after.info["parent_id"] == before.info["parent_id"]
        assert after.info["temperature_K"] == before.info["temperature_K"]
        assert atoms_id(after) == after.info["structure_id"]
        if before.calc is None:
            assert after.calc is None
        else:
            assert after.get_potential_energy() == before.get_potential_energy()
            np.testing.assert_array_equal(after.get_forces(), before.get_forces())
            np.testing.assert_array_equal(after.get_charges(), before.get_charges())
            np.testing.assert_array_equal(after.get_stress(), before.get_stress())


def test_failed_rows_keep_status_message_and_null_labels(tmp_path, frames):
    records = read_records(write_dataset(frames, tmp_path / "f.parquet"))
    failed = [r for r in records if r["status"] != "ok"]
    assert len(failed) == 1
    assert failed[0]["status"] == "scf_not_converged"
    assert "250 iterations" in failed[0]["error"]
    assert all(failed[0][c] is None for c in S.LABEL_COLUMNS)


def test_unlabelled_structure_and_nullable_columns(tmp_path):
    atoms = cubic_cspbi3()
    record = record_from_atoms(atoms)
    assert record["status"] == "unlabelled"
    assert record["parent_id"] == record["structure_id"]
    table = read_table(write_dataset([atoms], tmp_path / "u.parquet"))
    assert table.num_rows == 1
    assert table.column("temperature_K").null_count == 1
    assert table.column("energy").null_count == 1


def test_file_metadata_has_schema_version_units_and_status_counts(tmp_path, frames):
    path = write_dataset(frames, tmp_path / "f.parquet")
    meta = pq.read_schema(path).metadata
    assert meta[S.META_SCHEMA_VERSION].decode() == S.SCHEMA_VERSION
    units = json.loads(meta[S.META_UNITS])
    assert units["energy"] == "eV" and units["forces"] == "eV/Angstrom" and units["charges"] == "e"
    assert json.loads(meta[S.META_STATUS_COUNTS]) == {"ok": 11, "scf_not_converged": 1}


def test_written_schema_is_the_contract(tmp_path, frames):
    table = read_table(write_dataset(frames, tmp_path / "f.parquet"))
    assert table.schema.remove_metadata().equals(SCHEMA)
    assert table.schema.field("positions").type == pa.list_(pa.list_(pa.float64()))
    assert table.schema.field("numbers").type == pa.list_(pa.int8())


def test_missing_column_is_named(tmp_path, frames):
    path = write_dataset(frames, tmp_path / "f.parquet")
    table = pq.read_table(path)
    pq.write_table(table.drop(["charges"]), tmp_path / "bad.parquet")
    with pytest.raises(DatasetError, match="missing column 'charges'"):
        read_table(tmp_path / "bad.parquet")


def test_wrong_column_type_is_named(tmp_path, frames):
    table = pq.read_table(write_dataset(frames, tmp_path / "f.parquet"))
    index = table.column_names.index("energy")
    bad = table.set_column(index, "energy", pa.array([str(x) for x in table.column("energy").to_pylist()]))
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(DatasetError, match="column 'energy' has type string"):
        read_table(tmp_path / "bad.parquet")


def test_foreign_parquet_file_is_refused(tmp_path):
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "foreign.parquet")
    with pytest.raises(DatasetError, match="not a hipqeq dataset"):
        read_table(tmp_path / "foreign.parquet")
    with pytest.raises(DatasetError, match="no such dataset file"):
        read_table(tmp_path / "absent.parquet")


def test_a_file_of_schema_version_2_reads_with_null_sampling_provenance(tmp_path, frames):
    """Datasets written before ``active_round``, ``trajectory`` and ``md_step`` (schema 2,
    e.g. a shipped study's) still read, with those columns null; an unknown version does not."""
    table = read_table(write_dataset(frames, tmp_path / "f.parquet"))
    added = S.ADDED_SINCE["2"]
    old = table.drop(list(added)).replace_schema_metadata({S.META_SCHEMA_VERSION: b"2"})
    pq.write_table(old, tmp_path / "v2.parquet")
    back = read_table(tmp_path / "v2.parquet")
    assert back.schema.remove_metadata().equals(SCHEMA)
    assert all(back.column(name).null_count == len(frames) for name in added)
    assert back.drop(list(added)).equals(table.drop(list(added)))
    pq.write_table(old.replace_schema_metadata({S.META_SCHEMA_VERSION: b"1"}), tmp_path / "v1.parquet")
    with pytest.raises(DatasetError, match="schema version 1, this hipqeq reads 3 and 2"):
        read_table(tmp_path / "v1.parquet")


def test_record_missing_required_value_is_refused():
    record = record_from_atoms(cubic_cspbi3())
    record["numbers"] = None
    with pytest.raises(DatasetError, match="lacks required column"):
        table_from_records([record])


def test_structure_id_is_content_hash():
    a, b = cubic_cspbi3(), cubic_cspbi3()
    assert atoms_id(a) == atoms_id(b)
    b.positions[0, 0] += 1e-3
    assert atoms_id(a) != atoms_id(b)
    c = cubic_cspbi3()
    c.info["total_charge"] = 1.0
    assert atoms_id(a) != atoms_id(c)


def test_write_is_atomic_and_leaves_no_temporary(tmp_path, frames):
    write_table(table_from_records([record_from_atoms(f) for f in frames]), tmp_path / "x.parquet")
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]


def test_charges_alone_make_a_row_ok():
    atoms = cubic_cspbi3()
    atoms.calc = SinglePointCalculator(atoms, charges=np.zeros(len(atoms)))
    assert record_from_atoms(atoms)["status"] == S.STATUS_OK


def test_status_counts_of_table_and_records_agree(tmp_path, frames):
    path = write_dataset(frames, tmp_path / "f.parquet")
    assert status_counts(read_table(path)) == status_counts(read_records(path)) == {"ok": 11, "scf_not_converged": 1}


def test_error_statuses_are_the_schema_statuses():
    assert LabellingFailed.status == S.STATUS_ERROR
    assert SCFNotConverged.status == S.STATUS_SCF_NOT_CONVERGED


def test_read_structure_by_name_without_labels(tmp_path, frames):
    path = write_dataset(frames, tmp_path / "f.parquet")
    atoms = read_structure(path, "s2")
    first_s2 = next(f for f in frames if f.info["structure_name"] == "s2")
    assert atoms.info["structure_id"] == atoms_id(first_s2)
    np.testing.assert_allclose(atoms.positions, first_s2.positions)
    assert atoms.calc is None


def test_read_structure_names_file_missing_name_and_known_names(tmp_path, frames):
    path = write_dataset(frames, tmp_path / "f.parquet")
    with pytest.raises(DatasetError, match=r"f\.parquet: no structure named 'nope' \(has s0, s1, s2, s3\)"):
        read_structure(path, "nope")


def test_every_row_records_its_unpaired_electrons(tmp_path):
    """Default: the lowest spin the electron count allows (CsPbI3: 55+82+3*53 = 296
    electrons, even; the iodine vacancy has 243, odd; V_I^+ 242, even again)."""
    cell = cubic_cspbi3()
    vacancy = cell[:-1]
    cation = vacancy.copy()
    cation.info["total_charge"] = 1.0
    quartet = vacancy.copy()
    quartet.info["unpaired_electrons"] = 3
    rows = read_records(write_dataset([cell, vacancy, cation, quartet], tmp_path / "spin.parquet"))
    assert [r["unpaired_electrons"] for r in rows] == [0, 1, 0, 3]
    assert S.column("unpaired_electrons").doc.startswith("number of unpaired electrons")


@pytest.mark.parametrize("info, message", [
    ({"total_charge": 0.5}, r"total charge 0.5 e is not a whole number"),
    ({"unpaired_electrons": 2}, r"2 unpaired electron\(s\) impossible with 243 electrons"),
    ({"unpaired_electrons": -1}, r"-1 unpaired electron\(s\) impossible"),
], ids=["fractional-charge", "wrong-parity", "negative"])
def test_fractional_charges_and_impossible_spins_are_refused_naming_the_structure(tmp_path, info, message):
    vacancy = cubic_cspbi3()[:-1]
    vacancy.info.update(structure_name="vac_I", **info)
    with pytest.raises(DatasetError, match="structure vac_I: " + message):
        write_dataset([vacancy], tmp_path / "bad.parquet")
    record = {**record_from_atoms(cubic_cspbi3()), "total_charge": 0.25, "structure_name": "made_by_hand"}
    with pytest.raises(DatasetError, match="structure made_by_hand: total charge 0.25"):
        table_from_records([record])


def test_label_pbc_follows_the_recorded_boundary():
    from hipqeq.data import label_pbc
    from hipqeq.errors import DatasetError

    slab = {"structure_id": "s", "pbc": [True, True, False]}
    assert label_pbc({**slab, "label_boundary": "periodic"}).tolist() == [True, True, True]
    assert label_pbc({**slab, "label_boundary": "open"}).tolist() == [False, False, False]
    assert label_pbc({**slab, "label_boundary": None}).tolist() == [True, True, False]
    with pytest.raises(DatasetError, match="unknown label_boundary 'wire'"):
        label_pbc({**slab, "label_boundary": "wire"})
