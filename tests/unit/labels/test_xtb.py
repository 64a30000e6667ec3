"""xTB labelling: the CLI chunk contract, failure statuses, engine agreement and physics oracles."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase import Atoms

from hipqeq.cli import main
from hipqeq.data import read_records, read_table, write_dataset
from hipqeq.config import validate_section
from hipqeq.labels.common import label_structure, read_structures
from hipqeq.labels.xtb import XTBLabeller
from hipqeq.structures.builders import ruddlesden_popper
from tests.unit.labels.cells import cubic_cspbi3, pbi2_molecule

pytestmark = pytest.mark.slow  # every test here runs tblite or xtb-python (~0.1 s per point)


def _label(atoms, settings) -> dict:
    from hipqeq.data import record_from_atoms

    return label_structure(record_from_atoms(atoms), XTBLabeller(settings))


def test_chunk_with_a_broken_structure_records_both_and_exits_0(tmp_path, cubic):
    broken = cubic_cspbi3()
    broken.positions[1] = broken.positions[0] + [0.2, 0, 0]
    ase.io.write(tmp_path / "frames.extxyz", [cubic, broken])
    output = tmp_path / "chunk.parquet"
    status = main(["label", "xtb", "--input", str(tmp_path / "frames.extxyz"), "--output", str(output),
                   "--allow-small-cells", "--no-progress"])
    assert status == 0
    rows = read_records(output)
    assert [r["status"] for r in rows] == ["ok", "rejected_overlap"]
    assert "0.200 A apart" in rows[1]["error"] and rows[1]["energy"] is None
    ok = rows[0]
    assert ok["method"] == "GFN1-xTB" and ok["charge_scheme"] == "Mulliken" and ok["software"].startswith("tblite")
    assert len(ok["forces"]) == 5 and len(ok["stress"]) == 6 and ok["wall_time_s"] > 0
    params = json.loads(ok["calc_params"])
    assert params["parameters"]["electronic_temperature_K"] == 300.0
    assert params["parameters"]["retry"]["mixer_damping"] == 0.15
    assert params["attempts"] == [{"safer": False, "status": "ok", "wall_time_s": params["attempts"][0]["wall_time_s"]}]


def test_config_chunks_cover_the_input_and_past_the_end_is_empty(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("structures: {seeds: [{name: alpha, builder: phase, phase: alpha}]}\n"
                      "selection: {n_xtb: 3, n_dft: 0}\n"
                      "xtb: {chunk_size: 2, allow_small_cells: true, method: GFN2-xTB}\n")
    selection = tmp_path / "xtb.parquet"
    write_dataset([cubic_cspbi3(rattle=0.03, seed=s) for s in range(3)], selection)
    ids = []
    for chunk in (0, 1, 2):
        output = tmp_path / f"chunk_{chunk}.parquet"
        assert main(["label", "xtb", "--config", str(config), "--input", str(selection), "--chunk", str(chunk),
                     "--output", str(output), "--no-progress"]) == 0
        rows = read_records(output)
        ids += [r["structure_id"] for r in rows]
        assert all(r["method"] == "GFN2-xTB" and r["status"] == "ok" for r in rows)
    assert ids == [r["structure_id"] for r in read_records(selection)]  # 2 + 1 + 0 rows, in order
    assert read_table(tmp_path / "chunk_2.parquet").num_rows == 0


def test_small_cell_refused_by_default(tmp_path):
    ase.io.write(tmp_path / "cell.extxyz", cubic_cspbi3())
    output = tmp_path / "out.parquet"
    assert main(["label", "xtb", "--input", str(tmp_path / "cell.extxyz"), "--output", str(output), "--no-progress"]) == 0
    (row,) = read_records(output)
    assert row["status"] == "rejected_small_cell" and "6.29 A" in row["error"]


def test_engines_agree_on_a_finite_cluster():
    """GFN2-xTB: tblite and xtb-python agree to ~2e-8 eV, forces and charges to ~3e-5 at
    the default accuracy; GFN1-xTB energies differ by ~9e-5 eV and forces by ~2e-4 eV/A
    on this molecule between the two codes (all measured here: xtb 22.1 vs tblite 0.8)."""
    molecule = pbi2_molecule()
    for method, energy_tolerance, tolerance in (("GFN2-xTB", 1e-6, 1e-4), ("GFN1-xTB", 1e-3, 1e-3)):
        rows = {engine: _label(molecule, validate_section("xtb", {"method": method, "engine": engine}))
                for engine in ("tblite", "xtb-python")}
        assert all(r["status"] == "ok" for r in rows.values()), rows
        tb, xp = rows["tblite"], rows["xtb-python"]
        assert tb["energy"] == pytest.approx(xp["energy"], abs=energy_tolerance)
        assert np.allclose(tb["forces"], xp["forces"], atol=tolerance)
        assert np.allclose(tb["charges"], xp["charges"], atol=tolerance)
        assert tb["stress"] is None and xp["stress"] is None  # no stress for a cluster
        assert tb["label_boundary"] == xp["label_boundary"] == "open"


def test_tblite_labels_a_slab_as_a_3d_periodic_cell(xtb_settings):
    """tblite has no slab correction: a pbc T,T,F slab is labelled as a 3D-periodic cell,
    and the row says so (training subtracts the electrostatics under that boundary)."""
    slab = ruddlesden_popper(1, "slab", vacuum=8.0)
    row = _label(slab, xtb_settings)
    assert row["status"] == "ok" and list(row["pbc"]) == [True, True, False]
    assert row["label_boundary"] == "periodic"
    failed = _label(slab, {**xtb_settings, "min_distance_A": 10.0})
    assert failed["status"] == "rejected_overlap" and failed["label_boundary"] is None


def test_xtb_python_refuses_periodic_cells(cubic):
    row = _label(cubic, validate_section("xtb", {"engine": "xtb-python", "allow_small_cells": True}))
    assert row["status"] == "rejected_periodic" and "tblite" in row["error"]


@pytest.mark.parametrize("total_charge", [0.0, 1.0])
def test_charges_sum_to_the_total_charge(cubic, xtb_settings, total_charge):
    cubic.info["total_charge"] = total_charge
    row = _label(cubic, xtb_settings)
    assert row["status"] == "ok" and row["total_charge"] == total_charge
    assert sum(row["charges"]) == pytest.approx(total_charge, abs=1e-6)
    symbols = cubic.get_chemical_symbols()
    charges = dict(zip(symbols, row["charges"]))
    assert charges["Cs"] > 0 and charges["Pb"] > 0 and charges["I"] < 0


def test_forces_and_stress_match_finite_differences(xtb_settings):
    """Analytic forces and stress equal central differences of the labeller's own energy
    (float tolerance: accuracy 0.01 tightens the SCF so differences of 1e-4 are clean)."""
    settings = {**xtb_settings, "accuracy": 0.01}
    atoms = cubic_cspbi3(rattle=0.1, seed=3)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + [[0.02, 0.01, 0], [0.01, -0.01, 0.005], [0, 0.005, 0.01]]),
                   scale_atoms=True)
    labeller = XTBLabeller(settings)
    labels = labeller.label(atoms)

    def energy(positions=None, strain=None):
        displaced = atoms.copy()
        if positions is not None:
            displaced.positions = positions
        if strain is not None:
            displaced.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
        return labeller.label(displaced).energy

    h = 1e-4
    for atom, axis in ((0, 0), (2, 1), (4, 2)):
        plus, minus = atoms.positions.copy(), atoms.positions.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        numeric = -(energy(positions=plus) - energy(positions=minus)) / (2 * h)
        assert labels.forces[atom, axis] == pytest.approx(numeric, abs=1e-5)
    volume = atoms.get_volume()
    for voigt, (i, j) in enumerate(((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))):
        strain = np.zeros((3, 3))
        strain[i, j] = strain[j, i] = h
        numeric = (energy(strain=strain) - energy(strain=-strain)) / (2 * h) / volume
        numeric /= 1 if i == j else 2  # a symmetric off-diagonal strain moves two tensor entries
        assert labels.stress[voigt] == pytest.approx(numeric, abs=1e-5)  # SCF noise / (2 h V) ~ 2e-6


def test_scf_failure_is_retried_then_recorded(cubic):
    hopeless = validate_section("xtb", {"allow_small_cells": True, "max_iterations": 2,
                                        "retry": {"max_iterations": 3}})
    row = _label(cubic, hopeless)
    assert row["status"] == "scf_not_converged" and "did not converge" in row["error"]
    assert row["energy"] is None and row["charges"] is None
    attempts = json.loads(row["calc_params"])["attempts"]
    assert [(a["safer"], a["status"]) for a in attempts] == [(False, "scf_not_converged"), (True, "scf_not_converged")]

    rescued = validate_section("xtb", {"allow_small_cells": True, "max_iterations": 2})
    row = _label(cubic, rescued)
    assert row["status"] == "ok" and row["method"] == "GFN1-xTB"  # same method, safer settings
    params = json.loads(row["calc_params"])
    assert [a["status"] for a in params["attempts"]] == ["scf_not_converged", "ok"]
    assert params["engine_options"] == {"accuracy": 1.0, "electronic_temperature_K": 1000.0,
                                        "max_iterations": 1000, "mixer_damping": 0.15}

    no_retry = validate_section("xtb", {"allow_small_cells": True, "max_iterations": 2, "retry": {"enabled": False}})
    assert len(json.loads(_label(cubic, no_retry)["calc_params"])["attempts"]) == 1


def test_non_parquet_input_labels_every_frame(tmp_path):
    frames = [pbi2_molecule(), Atoms("CsI", positions=[[0, 0, 0], [3.3, 0, 0]])]
    ase.io.write(tmp_path / "clusters.xyz", frames)
    output = tmp_path / "clusters.parquet"
    assert main(["label", "xtb", "--input", str(tmp_path / "clusters.xyz"), "--output", str(output),
                 "--engine", "xtb-python", "--method", "GFN2-xTB", "--no-progress"]) == 0
    rows = read_records(output)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert [r["structure_id"] for r in rows] == [r["structure_id"] for r in read_structures(tmp_path / "clusters.xyz")]
    assert rows[0]["software"].startswith("xtb-python")


def test_the_unpaired_electrons_go_to_tblite_and_into_the_row(monkeypatch, xtb_settings):
    """A neutral iodine vacancy (odd electron count) runs as a doublet (multiplicity 2)."""
    import hipqeq.engines

    made = []
    real = hipqeq.engines.xtb_calculator

    def recording(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(hipqeq.engines, "xtb_calculator", recording)
    row = _label(cubic_cspbi3()[:-1], xtb_settings)
    assert row["status"] == "ok" and row["unpaired_electrons"] == 1
    assert made[-1].parameters["multiplicity"] == 2
    row = _label(cubic_cspbi3(), xtb_settings)
    assert row["unpaired_electrons"] == 0 and made[-1].parameters["multiplicity"] == 1
