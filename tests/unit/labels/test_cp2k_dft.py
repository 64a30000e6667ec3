"""CP2K DFT charges (dft.source cp2k): input, output parsing, and live runs against PySCF."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hipqeq.config import validate_section
from hipqeq.data import record_from_atoms
from hipqeq.errors import ConfigError
from hipqeq.labels import dft_labeller
from hipqeq.labels.common import label_structure
from hipqeq.labels.cp2k import (CP2KDFTLabeller, cp2k_name, dft_hamiltonian, dft_scf_settings, parse_output,
                                write_input)
from hipqeq.labels.dft import DFTLabeller
from tests.unit.labels.cells import cubic_cspbi3

needs_cp2k = pytest.mark.skipif(shutil.which("cp2k.psmp") is None,
                                reason="cp2k.psmp not installed (apt-get install cp2k; CI installs it)")


def dft_settings(source: str = "cp2k", **section) -> dict:
    return validate_section("dft", {"source": source, "basis": "gth-szv-molopt-sr", "allow_small_cells": True,
                                    **section})


def test_the_factory_picks_the_engine_and_each_refuses_the_others_charge_scheme():
    assert isinstance(dft_labeller(dft_settings("cp2k")), CP2KDFTLabeller)
    assert isinstance(dft_labeller(dft_settings("pyscf")), DFTLabeller)
    with pytest.raises(ConfigError, match="not computed by CP2K"):
        dft_labeller(dft_settings("cp2k", charge_scheme="meta-Lowdin"))
    with pytest.raises(ConfigError, match="not computed by PySCF.*Hirshfeld: dft.source cp2k"):
        dft_labeller(dft_settings("pyscf", charge_scheme="Hirshfeld"))


def test_elements_without_the_basis_and_finite_clusters_are_refused():
    from ase import Atoms

    from hipqeq.errors import StructureRejected

    labeller = dft_labeller(dft_settings("cp2k"))
    with pytest.raises(StructureRejected) as info:
        labeller.check(Atoms("CsI", positions=[[0, 0, 0], [3.3, 0, 0]]))
    assert info.value.status == "rejected_nonperiodic"
    if shutil.which("cp2k.psmp"):  # CP2K's basis file is found next to its binary
        assert labeller.supports(55) and labeller.supports(82) and labeller.supports(35)
        assert not labeller.supports(92)  # no SZV-MOLOPT-SR-GTH for U


def test_basis_and_pseudopotential_names_map_onto_cp2ks_files():
    assert cp2k_name("gth-dzvp-molopt-sr") == "DZVP-MOLOPT-SR-GTH"
    assert cp2k_name("gth-szv-molopt-sr") == "SZV-MOLOPT-SR-GTH"
    assert cp2k_name("gth-pbe") == "GTH-PBE"
    with pytest.raises(ConfigError, match="def2-svp.*not a GTH"):
        cp2k_name("def2-svp")


def test_dft_input_has_kinds_grids_functional_kmesh_and_no_stress():
    settings = dft_settings(energy_forces=False, cp2k={"cutoff_Ry": 350.0, "mixing_alpha": 0.3})
    atoms = cubic_cspbi3()
    text = write_input(atoms, (3, 3, 1), dft_scf_settings(settings), 1, 2, True,
                       dft_hamiltonian(settings, atoms.get_chemical_symbols()))
    for line in ("RUN_TYPE ENERGY\n", "&KIND Cs", "&KIND Pb", "&KIND I", "BASIS_SET SZV-MOLOPT-SR-GTH",
                 "POTENTIAL GTH-PBE", "CUTOFF 350.0", "&XC_FUNCTIONAL PBE", "SCHEME MONKHORST-PACK 3 3 1",
                 "UKS T", "MULTIPLICITY 2", "CHARGE 1", "ALPHA 0.3", "&MULLIKEN ON", "&HIRSHFELD ON",
                 "SHAPE_FUNCTION DENSITY"):
        assert line in text, line
    for absent in ("xTB", "STRESS_TENSOR", "&FORCES"):
        assert absent not in text, absent
    with_forces = dft_settings(energy_forces=True)
    assert "RUN_TYPE ENERGY_FORCE" in write_input(atoms, (1, 1, 1), dft_scf_settings(with_forces), 0, 1, False,
                                                  dft_hamiltonian(with_forces, ["Cs"]))
    assert "MAX_SCF 300" in write_input(atoms, (1, 1, 1), dft_scf_settings(settings, safer=True), 0, 1, False,
                                        dft_hamiltonian(settings, ["Cs"]))  # the retry's cycles


#: Blocks of a CP2K 2023.1 DFT output (PBE/SZV, the 5-atom cell without one iodine, UKS),
#: atoms listed in a shuffled order to check that rows go back to their atoms.
UKS_OUTPUT = """\
     1 NoMix/Diag. 0.20E+00    0.1     0.5     -57.0  -5.7E+01
     2 Broy./Diag. 0.20E+00    0.1     0.0000001     -57.1000000000 -1.0E-09

  *** SCF run converged in     2 steps ***

                     Mulliken Population Analysis

 #  Atom  Element  Kind  Atomic population (alpha,beta) Net charge  Spin moment
       2     Cs       2         4.116661     4.110497     0.772843     0.006164
       1     Pb       1         2.468271     1.505254     0.026475     0.963017
       3     I        3         3.707979     3.692842    -0.400820     0.015137
       4     I        3         3.707089     3.691408    -0.398497     0.015682
 # Total charge and spin       14.000000    13.000000    -0.000000     1.000000

                           Hirshfeld Charges

  #Atom  Element  Kind  Ref Charge     Population       Spin moment  Net charge
      1       Pb     1       4.000    2.432   1.610            0.822     -0.043
      3       I      3       7.000    3.649   3.580            0.068     -0.229
      2       Cs     2       9.000    4.271   4.231            0.040      0.499
      4       I      3       7.000    3.648   3.579            0.069     -0.227

  Total Charge                                                           -0.000

 ENERGY| Total FORCE_EVAL ( QS ) energy [a.u.]:              -57.100000000000000
"""


def test_unrestricted_mulliken_and_hirshfeld_blocks_are_read_per_atom():
    hamiltonian = dft_hamiltonian(dft_settings(), ["Cs", "Pb", "I"])
    result = parse_output(UKS_OUTPUT, 4, hamiltonian)
    assert result["charges"] == pytest.approx([0.026475, 0.772843, -0.400820, -0.398497])
    assert result["hirshfeld_charges"] == pytest.approx([-0.043, 0.499, -0.229, -0.227])
    assert result["scf_cycles"] == 2 and "forces" not in result and "stress" not in result


@pytest.mark.slow
@needs_cp2k
def test_cp2k_and_pyscf_agree_at_the_same_level_of_theory():
    """PBE/SZV-MOLOPT-SR with GTH-PBE at the Gamma point on the rattled 5-atom cell, once
    with each engine (~12 s each): the same basis and pseudopotential files, so the same
    Mulliken charges, energy and forces up to the engines' grids (measured here: 1e-4 e,
    0.24 meV, 1e-4 eV/A)."""
    atoms = cubic_cspbi3(rattle=0.05, seed=1)
    cp2k = dft_labeller(dft_settings("cp2k", energy_forces=True, cp2k={"kpoint_density_A": 1.0})).label(atoms)
    pyscf = dft_labeller(dft_settings("pyscf", energy_forces=True)).label(atoms)
    assert cp2k.details["kmesh"] == [1, 1, 1]
    assert cp2k.charges == pytest.approx(pyscf.charges, abs=2e-3)
    assert cp2k.energy == pytest.approx(pyscf.energy, abs=5e-3)
    assert cp2k.forces == pytest.approx(pyscf.forces, abs=5e-3)
    assert np.abs(cp2k.charges).max() > 0.3  # not a trivially neutral density


@pytest.mark.slow
@needs_cp2k
def test_an_odd_electron_cell_runs_unrestricted_with_kpoints_and_hirshfeld_fills_the_charges():
    """The 5-atom cell without one iodine (a neutral vacancy, one unpaired electron) on a
    2x2x2 k-mesh (~5 s): CP2K's DFT, unlike its xTB, runs UKS with k-points; Hirshfeld
    charges in the charges column, Mulliken kept in calc_params, both neutral."""
    settings = dft_settings("cp2k", charge_scheme="Hirshfeld", cp2k={"kpoint_density_A": 12.0})
    row = label_structure(record_from_atoms(cubic_cspbi3(rattle=0.05, seed=1)[:-1]), dft_labeller(settings))
    assert row["status"] == "ok", row["error"]
    params = json.loads(row["calc_params"])
    assert params["kmesh"] == [2, 2, 2] and params["multiplicity"] == 2 and params["spin"] == "unrestricted (UKS)"
    assert row["charge_scheme"] == "Hirshfeld" and row["label_boundary"] == "periodic"
    mulliken = params["other_charges"]["Mulliken"]
    assert sum(row["charges"]) == pytest.approx(0.0, abs=2e-3) and sum(mulliken) == pytest.approx(0.0, abs=1e-5)
    # Cs gives its electron in both schemes; Hirshfeld's charges are the smaller ones
    assert row["charges"][1] > 0.2 and mulliken[1] > row["charges"][1]
    assert row["energy"] is None and row["forces"] is None  # charges only without dft.energy_forces


@pytest.mark.slow
@needs_cp2k
def test_the_retry_of_an_open_shell_runs_restricted_and_says_so():
    """The same odd-electron cell (~5 s a run): the safer retry drops UKS (cp2k.retry_restricted),
    and calc_params' spin tells the two apart, since here, where UKS holds a moment, they
    differ (measured 0.018 e, UKS 0.28 eV lower); with the option off the retry stays UKS."""
    atoms = cubic_cspbi3(rattle=0.05, seed=1)[:-1]
    labeller = dft_labeller(dft_settings("cp2k", energy_forces=True, cp2k={"kpoint_density_A": 12.0}))
    unrestricted, restricted = labeller.label(atoms), labeller.label(atoms, safer=True)
    assert unrestricted.details["spin"] == "unrestricted (UKS)"
    assert restricted.details["spin"].startswith("restricted with Fermi smearing")
    assert sum(restricted.charges) == pytest.approx(0.0, abs=1e-5)
    assert restricted.charges == pytest.approx(unrestricted.charges, abs=0.05)
    assert unrestricted.energy < restricted.energy - 0.1  # the spin-polarised state, variationally lower
    kept = dft_labeller(dft_settings("cp2k", cp2k={"kpoint_density_A": 12.0, "retry_restricted": False}))
    assert kept.label(atoms, safer=True).details["spin"] == "unrestricted (UKS)"


def test_the_dft_gate_densifies_cp2ks_kpoint_density():
    from hipqeq.labels.convergence import _labeller

    config = {"dft": dft_settings("cp2k", cp2k={"kpoint_density_A": 36.0})}
    assert _labeller(config, "dft").settings["cp2k"]["kpoint_density_A"] == 36.0
    denser = _labeller(config, "dft", densify=2)
    assert denser.settings["cp2k"]["kpoint_density_A"] == 72.0 and denser.settings["allow_small_cells"]
    assert config["dft"]["cp2k"]["kpoint_density_A"] == 36.0  # the config itself is left as it was
