"""External reference sets: extxyz / ASE db round trips, key mapping and unit conversion."""

from __future__ import annotations

import ase.db
import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from hipqeq.cli import main
from hipqeq.data import read_records
from hipqeq.errors import ConfigError
from hipqeq.config import validate_section
from hipqeq.labels.ingest import external_records
from hipqeq.units import BOHR_A, HARTREE_EV
from tests.unit.labels.cells import cubic_cspbi3


def _reference_frames():
    """Two labelled frames, as a DFT code with Bader charges would export them (eV, Angstrom, e)."""
    rng = np.random.default_rng(7)
    frames = []
    for i, total_charge in enumerate((0.0, 1.0)):
        atoms = cubic_cspbi3(rattle=0.05, seed=i).repeat((1, 1, 2))
        charges = np.tile([0.9, 0.8, -0.57, -0.57, -0.56], 2) + total_charge / len(atoms)
        atoms.calc = SinglePointCalculator(atoms, energy=-1500.0 - i, forces=rng.normal(size=(len(atoms), 3)),
                                           charges=charges)
        atoms.info["total_charge"] = total_charge
        frames.append(atoms)
    return frames


def test_extxyz_written_by_ase_round_trips(tmp_path):
    frames = _reference_frames()
    ase.io.write(tmp_path / "ref.extxyz", frames)
    output = tmp_path / "external.parquet"
    assert main(["ingest", "--input", str(tmp_path / "ref.extxyz"), "--output", str(output)]) == 0
    rows = read_records(output)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for row, atoms in zip(rows, frames):
        assert row["energy"] == pytest.approx(atoms.get_potential_energy())
        assert np.allclose(row["forces"], atoms.get_forces())
        assert np.allclose(row["charges"], atoms.get_charges())
        assert np.allclose(row["positions"], atoms.positions) and np.allclose(row["cell"], atoms.cell.array)
        assert row["total_charge"] == atoms.info["total_charge"]
        assert row["source"] == "external" and row["family"] == "external"
        assert row["charge_scheme"] == "Bader" and row["method"] == "external DFT"


def test_hartree_bohr_file_converted_once_with_custom_names(tmp_path):
    frames = _reference_frames()
    in_atomic_units = []
    for atoms in frames:
        copy = atoms.copy()
        copy.positions = atoms.positions / BOHR_A
        copy.set_cell(atoms.cell.array / BOHR_A, scale_atoms=False)
        copy.info["dft_energy_Ha"] = atoms.get_potential_energy() / HARTREE_EV
        copy.info["q_total"] = atoms.info["total_charge"]
        copy.arrays["dft_forces"] = atoms.get_forces() * BOHR_A / HARTREE_EV
        copy.arrays["ddec"] = atoms.get_charges()
        in_atomic_units.append(copy)
    ase.io.write(tmp_path / "au.extxyz", in_atomic_units)
    settings = validate_section("dft", {"external": {
        "path": str(tmp_path / "au.extxyz"), "charge_scheme": "DDEC6", "method": "PBE/PAW (VASP)",
        "properties": {"energy": "dft_energy_Ha", "forces": "dft_forces", "charges": "ddec", "total_charge": "q_total"},
        "units": {"energy": "Hartree", "length": "Bohr"}}})["external"]
    rows = external_records(settings)
    for row, atoms in zip(rows, frames):
        assert row["energy"] == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
        assert np.allclose(row["forces"], atoms.get_forces(), rtol=0, atol=1e-6)  # extxyz keeps 8 decimals
        assert np.allclose(row["positions"], atoms.positions, atol=1e-8)
        assert np.allclose(row["cell"], atoms.cell.array, atol=1e-8)
        assert row["total_charge"] == atoms.info["total_charge"] and row["charge_scheme"] == "DDEC6"


def test_ase_db_through_the_config(tmp_path):
    frames = _reference_frames()
    with ase.db.connect(tmp_path / "ref.db") as db:
        for atoms in frames:
            db.write(atoms)
    config = tmp_path / "config.yaml"
    config.write_text("structures: {seeds: [{name: alpha, builder: phase, phase: alpha}]}\n"
                      "selection: {n_xtb: 2, n_dft: 2}\n"
                      f"dft: {{source: external, external: {{path: {tmp_path / 'ref.db'}, format: db}}}}\n")
    output = tmp_path / "external.parquet"
    assert main(["ingest", "--config", str(config), "--output", str(output)]) == 0
    rows = read_records(output)
    assert [r["energy"] for r in rows] == pytest.approx([a.get_potential_energy() for a in frames])
    assert np.allclose(rows[1]["charges"], frames[1].get_charges())
    assert [r["total_charge"] for r in rows] == [0.0, 1.0]  # no total-charge key: rounded sum of charges


def test_missing_properties_are_named(tmp_path):
    ase.io.write(tmp_path / "bare.extxyz", cubic_cspbi3())
    settings = validate_section("dft", {"external": {"path": str(tmp_path / "bare.extxyz")}})["external"]
    with pytest.raises(ConfigError, match="dft.external.properties"):
        external_records(settings)
    status = main(["ingest", "--input", str(tmp_path / "bare.extxyz"), "--output", str(tmp_path / "x.parquet"),
                   "--charges-key", "bader"])
    assert status == 2


@pytest.mark.parametrize("flag, value", [("--forces-key", "force"), ("--total-charge-key", "Q"),
                                         ("--charges-key", "charge")])
def test_an_explicit_but_misspelt_key_is_an_error(tmp_path, capsys, flag, value):
    """The file has every default name; a name the user typed and the file lacks must not
    be ignored (forces or total charges silently missing), whichever property it is."""
    ase.io.write(tmp_path / "ref.extxyz", _reference_frames())
    status = main(["ingest", "--input", str(tmp_path / "ref.extxyz"), "--output", str(tmp_path / "x.parquet"),
                   flag, value])
    assert status == 2
    err = capsys.readouterr().err
    assert f"'{value}'" in err and flag in err and "properties in the file" in err
    assert not (tmp_path / "x.parquet").exists()


def test_a_fractional_total_charge_is_refused_naming_the_frame(tmp_path, capsys):
    frames = _reference_frames()
    frames[1].info["total_charge"] = 0.5
    ase.io.write(tmp_path / "ref.extxyz", frames)
    assert main(["ingest", "--input", str(tmp_path / "ref.extxyz"), "--output", str(tmp_path / "x.parquet")]) == 2
    assert "structure ref_1: total charge 0.5 e is not a whole number" in capsys.readouterr().err


def test_a_misspelt_key_in_the_config_is_an_error_too(tmp_path, capsys):
    ase.io.write(tmp_path / "ref.extxyz", _reference_frames())
    config = tmp_path / "config.yaml"
    config.write_text("structures: {seeds: [{name: alpha, builder: phase, phase: alpha}]}\n"
                      "selection: {n_xtb: 2, n_dft: 2}\n"
                      f"dft: {{source: external, external: {{path: {tmp_path / 'ref.extxyz'}, "
                      "properties: {forces: forcez}}}\n")
    assert main(["ingest", "--config", str(config), "--output", str(tmp_path / "x.parquet")]) == 2
    assert "no frame has the forces property 'forcez'" in capsys.readouterr().err
