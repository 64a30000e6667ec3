"""PySCF DFT charges: one real (slow) calculation on the 5-atom cell, plus cheap set-up checks."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase import Atoms

from hipqeq.cli import main
from hipqeq.data import read_records
from hipqeq.errors import ConfigError, StructureRejected
from hipqeq.config import validate_section
from hipqeq.labels.dft import DFTLabeller
from tests.unit.labels.cells import cubic_cspbi3

SZV = {"basis": "gth-szv-molopt-sr", "allow_small_cells": True}


@pytest.mark.slow
def test_cubic_cell_at_gamma_gives_signed_neutral_charges(tmp_path):
    """The 5-atom cubic CsPbI3 cell, PBE/gth-szv-molopt-sr at Gamma (~20 s on one core).

    Signs only: Gamma-point charges of a 6.3 A cell are not converged (PHYSICS.md).
    Energy and forces are on, and forces must sum to ~0 (translation invariance)."""
    ase.io.write(tmp_path / "cell.extxyz", cubic_cspbi3(rattle=0.05, seed=1))
    output = tmp_path / "dft.parquet"
    assert main(["label", "dft", "--input", str(tmp_path / "cell.extxyz"), "--output", str(output),
                 "--basis", "gth-szv-molopt-sr", "--allow-small-cells", "--energy-forces", "--no-progress"]) == 0
    (row,) = read_records(output)
    assert row["status"] == "ok", row["error"]
    assert row["method"] == "PBE/gth-szv-molopt-sr" and row["charge_scheme"] == "Mulliken"
    charges = dict(zip(["Pb", "Cs", "I1", "I2", "I3"], row["charges"]))
    assert charges["Cs"] > 0 and charges["Pb"] > 0 and max(charges["I1"], charges["I2"], charges["I3"]) < 0
    assert sum(row["charges"]) == pytest.approx(0.0, abs=1e-6)
    params = json.loads(row["calc_params"])
    meta_lowdin = params["other_charges"]["meta-Lowdin"]
    assert sum(meta_lowdin) == pytest.approx(0.0, abs=1e-6)
    assert meta_lowdin[0] > 0 and meta_lowdin[1] > 0 and max(meta_lowdin[2:]) < 0
    assert params["n_kpoints"] == 1 and params["spin_unpaired_electrons"] == 0
    assert row["energy"] < 0 and np.abs(np.sum(row["forces"], axis=0)).max() < 1e-2


def test_settings_and_refusals_without_an_scf():
    labeller = DFTLabeller(validate_section("dft", SZV))
    assert labeller.supports(55) and labeller.supports(82) and labeller.supports(53)
    assert not labeller.supports(92)  # no GTH basis for U in this set
    with pytest.raises(StructureRejected) as info:
        labeller.check(Atoms("CsI", positions=[[0, 0, 0], [3.3, 0, 0]]))
    assert info.value.status == "rejected_nonperiodic"
    with pytest.raises(ConfigError, match="Hirshfeld"):  # a CP2K scheme (dft.source cp2k), not PySCF's
        DFTLabeller(validate_section("dft", {"charge_scheme": "Hirshfeld"}))
    k_labeller = DFTLabeller(validate_section("dft", {**SZV, "kmesh": [3, 3, 3]}))
    assert k_labeller.kmesh == (3, 3, 3)


def test_odd_electron_counts_run_spin_unrestricted():
    labeller = DFTLabeller(validate_section("dft", SZV))
    vacancy = cubic_cspbi3()[:-1]  # neutral iodine vacancy: one electron left over
    assert labeller.build_cell(vacancy).spin == 1
    charged = vacancy.copy()
    charged.info["total_charge"] = 1.0  # V_I^+: closed shell again
    assert labeller.build_cell(charged).spin == 0
    assert labeller.build_cell(cubic_cspbi3()).spin == 0


def test_the_recorded_unpaired_electrons_set_the_spin_and_impossible_ones_fail():
    from hipqeq.errors import LabellingFailed

    labeller = DFTLabeller(validate_section("dft", SZV))
    vacancy = cubic_cspbi3()[:-1]
    vacancy.info["unpaired_electrons"] = 3  # a quartet asked for in the dataset row
    assert labeller.build_cell(vacancy).spin == 3
    vacancy.info["unpaired_electrons"] = 2
    with pytest.raises(LabellingFailed, match="2 unpaired electron"):
        labeller.build_cell(vacancy)
