"""CP2K GFN1-xTB labeller: k-mesh, spin, input and output handling; live runs where cp2k.psmp exists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hipqeq.config import validate_section
from hipqeq.data import record_from_atoms
from hipqeq.errors import ConfigError, LabellingFailed, SCFNotConverged
from hipqeq.labels import xtb_labeller
from hipqeq.labels.common import label_structure
from hipqeq.labels.cp2k import (CP2KLabeller, gfn1_xtb, kmesh_from_density, multiplicity, parse_output,
                                scf_settings, write_input)
from hipqeq.structures.builders import ruddlesden_popper
from hipqeq.structures.transform import vacancy
from tests.unit.labels.cells import A_CUBIC, cubic_cspbi3

needs_cp2k = pytest.mark.skipif(shutil.which("cp2k.psmp") is None,
                                reason="cp2k.psmp not installed (apt-get install cp2k; CI installs it)")


def cp2k_settings(**cp2k) -> dict:
    return validate_section("xtb", {"engine": "cp2k", "allow_small_cells": True, "cp2k": cp2k})


#: The default labeller's Hamiltonian (what the parser reads: forces, stress, Mulliken).
XTB = gfn1_xtb(cp2k_settings()["cp2k"])


def test_kmesh_from_density_samples_at_least_that_length_along_periodic_directions():
    assert kmesh_from_density(cubic_cspbi3(), 12.0) == (2, 2, 2)
    assert kmesh_from_density(cubic_cspbi3(), 2 * A_CUBIC) == (2, 2, 2)  # exact multiples are not rounded up
    slab = ruddlesden_popper(1, "slab", vacuum=26.0)
    assert kmesh_from_density(slab, 30.0) == (5, 5, 1)  # never k-points along the slab normal
    assert kmesh_from_density(slab.repeat((3, 3, 1)), 30.0) == (2, 2, 1)


def test_the_small_cell_check_counts_each_structures_k_mesh():
    from hipqeq.errors import StructureRejected
    from hipqeq.labels.common import precheck

    dense = CP2KLabeller(validate_section("xtb", {"engine": "cp2k", "cp2k": {"kpoint_density_A": 45.0}}))
    precheck(cubic_cspbi3(), dense)  # 8x8x8 mesh: 50 A >= min_periodic_length_A 18 A
    coarse = CP2KLabeller(validate_section("xtb", {"engine": "cp2k", "cp2k": {"kpoint_density_A": 10.0}}))
    with pytest.raises(StructureRejected, match=r"12.58 A \(k-mesh \[2, 2, 2\]\)"):
        precheck(cubic_cspbi3(), coarse)


def test_multiplicity_follows_the_electron_count():
    cell = cubic_cspbi3()  # Pb + Cs + 3 I: 82 + 55 + 159 = 296 electrons
    assert multiplicity(cell, 0.0) == 1
    assert multiplicity(cell, 1.0) == 2 and multiplicity(cell, -1.0) == 2
    del cell[4]  # an iodine vacancy, neutral: odd
    assert multiplicity(cell, 0.0) == 2 and multiplicity(cell, 1.0) == 1
    with pytest.raises(LabellingFailed, match="not an integer"):
        multiplicity(cell, 0.5)


def test_input_carries_charge_spin_kmesh_scf_settings_and_cutoffs():
    settings = cp2k_settings(mixing_alpha=0.07, nbroyden=12, coulomb_sr_cut_bohr=55.0, coulomb_sr_eps=1e-9)
    hamiltonian = gfn1_xtb(settings["cp2k"])
    text = write_input(cubic_cspbi3(), (2, 2, 2), scf_settings(settings), -1, 2, True, hamiltonian)
    for line in ("CHARGE -1", "UKS T", "MULTIPLICITY 2", "SCHEME MONKHORST-PACK 2 2 2", "ALPHA 0.07",
                 "NBROYDEN 12", "MAX_SCF 250", "PERIODIC XYZ", "DO_EWALD T", "ELECTRONIC_TEMPERATURE [K] 300.0",
                 "COULOMB_SR_CUT 55.0", "COULOMB_SR_EPS 1.000E-09", "COORDINATION_CUTOFF 1.000E-12",
                 "DISPERSION_RADIUS 30.0"):
        assert line in text
    gamma = write_input(cubic_cspbi3(), (1, 1, 1), scf_settings(settings, safer=True), 0, 1, False, hamiltonian)
    assert "KPOINTS" not in gamma and "UKS" not in gamma
    assert "ALPHA 0.05" in gamma and "MAX_SCF 1000" in gamma  # the retry's settings


def test_unconverged_and_aborted_outputs_raise_with_the_cycle_count():
    steps = "".join(f"    {i} Broy./Diag. 0.10E+00    0.0     0.5     -14.1  1.0E-01\n" for i in range(1, 4))
    with pytest.raises(SCFNotConverged, match="in 3 cycles"):
        parse_output(steps + " *** WARNING in qs_scf.F:601 :: SCF run NOT converged ***\n", 5, XTB)
    with pytest.raises(SCFNotConverged, match="chemical range after 3 cycles"):
        parse_output(steps + " *** WARNING in xtb_matrices.F:1688 :: Atomic charges outside chemical   ***\n", 5,
                     XTB)
    with pytest.raises(LabellingFailed, match="no SCF result"):
        parse_output("", 5, XTB)


#: The SCF of a model-relaxed 2x2 RP n = 1 slab at +2 % strain (28 atoms) in CP2K 2023.1:
#: "converged" at a density residual of 8e-6 while the energy still moved by 1.45 Ha.
SPURIOUS_SCF = """\
     1 NoMix/Diag. 0.10E+00    7.9     0.94029299       -70.4202685974 -7.04E+01
     2 Mixing/Diag.0.10E+00    7.9     0.06634242       -74.3430427942 -3.92E+00
     3 Broy./Diag. 0.10E+00    7.8     1.15723230       -73.5669189243  7.76E-01
     4 Broy./Diag. 0.10E+00    7.9     0.39687541       -70.3088054652  3.26E+00
     5 Broy./Diag. 0.10E+00    7.9     0.00000830       -68.8591666755  1.45E+00

  *** SCF run converged in     5 steps ***
"""


def test_a_converged_scf_whose_energy_still_moves_is_not_converged():
    with pytest.raises(SCFNotConverged, match="spuriously after 5 cycles.*1.41e\\+03 meV/atom"):
        parse_output(SPURIOUS_SCF, 28, XTB)
    settled = SPURIOUS_SCF.replace("1.45E+00", "2.10E-06")  # 2 ueV/atom: passes on to the energy block
    with pytest.raises(LabellingFailed, match="no 'ENERGY"):
        parse_output(settled, 28, XTB)


def test_cp2k_implements_gfn1_only():
    with pytest.raises(ConfigError, match="GFN1-xTB only"):
        CP2KLabeller(validate_section("xtb", {"engine": "cp2k", "method": "GFN2-xTB"}))


def test_a_missing_binary_is_an_error_row(tmp_path):
    settings = cp2k_settings(executable=str(tmp_path / "no-cp2k"))
    row = label_structure(record_from_atoms(cubic_cspbi3()), xtb_labeller(settings))
    assert row["status"] == "error" and "not found" in row["error"]
    kept = Path(row["error"].split("kept in ")[-1])
    assert (kept / "hipqeq.inp").exists()  # what would have run stays for inspection
    shutil.rmtree(kept)


#: CP2K's own real-space cutoffs of xTB, the labeller's before 2026-12-07.
CP2K_CUTOFFS = {"coulomb_sr_cut_bohr": 20.0, "coulomb_sr_eps": 1e-3, "coordination_cutoff": 1e-6,
                "dispersion_radius_bohr": 15.0}


@pytest.mark.slow
@needs_cp2k
def test_cubic_cell_with_a_2x2x2_mesh_reproduces_the_stored_energies():
    """~4 s. -385.0834 eV: this labeller (CP2K 2023.1, Debian package, GFN1-xTB, Ewald,
    EPS_SCF 1e-5, Broyden alpha 0.1, 300 K Fermi smearing, COULOMB_SR_CUT 35 with EPS
    1e-14) on the ideal 5-atom cell with a 2x2x2 Monkhorst-Pack mesh, 2026-12-07; with
    CP2K's own cutoffs -384.0190 eV (2026-12-01), 213 meV/atom higher: the short-range
    Coulomb cutoff defines the energy (README, "Reference labels"). The Gamma-point
    large-cell limit of tblite is -384.17 (3x3x3) / -383.87 (4x4x4) eV per formula unit."""
    labels = CP2KLabeller(cp2k_settings(kpoint_density_A=12.0)).label(cubic_cspbi3())
    assert labels.energy == pytest.approx(-385.0834, abs=2e-3)
    assert labels.details["kmesh"] == [2, 2, 2] and labels.details["multiplicity"] == 1
    assert 0 < labels.details["scf_cycles"] <= 250
    assert labels.details["scf"]["eps_scf"] == 1e-5 and labels.details["boundary"].startswith("3D-periodic")
    assert np.abs(labels.forces).max() < 1e-3  # ideal Pm-3m: no force by symmetry
    assert labels.charges.sum() == pytest.approx(0.0, abs=1e-5)
    assert labels.charges[0] == pytest.approx(0.41, abs=0.01)  # Pb; Cs +0.50, I -0.31
    assert labels.stress[:3] == pytest.approx([labels.stress[0]] * 3, rel=1e-6)  # cubic: isotropic
    assert np.abs(labels.stress[3:]).max() < 1e-8
    cp2k_cutoffs = CP2KLabeller(cp2k_settings(kpoint_density_A=12.0, **CP2K_CUTOFFS)).label(cubic_cspbi3())
    assert cp2k_cutoffs.energy == pytest.approx(-384.0190, abs=2e-3)


@pytest.mark.slow
@needs_cp2k
def test_labels_follow_the_atoms_when_they_are_permuted():
    """CP2K prints Mulliken charges grouped by element, not in input order; the parser
    must put every charge and force back on its atom (~2 s)."""
    labeller = CP2KLabeller(cp2k_settings(kpoint_density_A=12.0))
    atoms = cubic_cspbi3(rattle=0.05, seed=3)
    order = [2, 0, 3, 1, 4]  # I Pb I Cs I: elements interleaved
    reference, permuted = labeller.label(atoms), labeller.label(atoms[order])
    assert permuted.energy == pytest.approx(reference.energy, abs=1e-4)
    assert permuted.charges == pytest.approx(reference.charges[order], abs=1e-4)
    assert permuted.forces == pytest.approx(reference.forces[order], abs=1e-3)


@pytest.mark.slow
@needs_cp2k
def test_forces_and_stress_are_derivatives_of_the_energy():
    """Central differences of the energy (~8 runs of ~1 s): a force component of a
    rattled cell, and the mean normal stress of the ideal cell under isotropic strain
    (CP2K prints the stress with the opposite sign of ASE's; the parser flips it)."""
    labeller = CP2KLabeller(cp2k_settings(kpoint_density_A=12.0, eps_scf=1e-7))
    atoms = cubic_cspbi3(rattle=0.05, seed=1)
    forces = labeller.label(atoms).forces
    h = 1e-3
    energies = []
    for sign in (1, -1):
        displaced = atoms.copy()
        displaced.positions[4, 2] += sign * h
        energies.append(labeller.label(displaced).energy)
    assert forces[4, 2] == pytest.approx(-(energies[0] - energies[1]) / (2 * h), abs=2e-3)

    # isotropic strain of -0.1 % and the ideal cell (a +0.4 % cell sent this SCF to a wrong,
    # charge-separated state, see hipqeq.labels.cp2k): d E / d eps = 3 V mean(stress). Over
    # -0.4 % the secant missed by 27 % (6 % at CP2K's own cutoffs): the labeller's E(strain)
    # wiggles (its Coulomb cutoff, README "Reference labels"); over -0.1 % it agrees to 0.2 %
    cell = cubic_cspbi3()
    strained = cell.copy()
    strained.set_cell(cell.cell.array * 0.999, scale_atoms=True)
    high, low = labeller.label(cell), labeller.label(strained)
    mean_stress = (high.stress[:3].mean() + low.stress[:3].mean()) / 2
    volume = (cell.get_volume() + strained.get_volume()) / 2
    assert mean_stress == pytest.approx((high.energy - low.energy) / 0.001 / (3 * volume), rel=0.02)


@pytest.mark.slow
@needs_cp2k
def test_an_unconverged_scf_is_a_row_with_its_status_and_kept_files():
    settings = validate_section("xtb", {"engine": "cp2k", "allow_small_cells": True, "max_iterations": 3,
                                        "retry": {"enabled": False}, "cp2k": {"kpoint_density_A": 12.0}})
    row = label_structure(record_from_atoms(cubic_cspbi3(rattle=0.05, seed=1)), xtb_labeller(settings))
    assert row["status"] == "scf_not_converged" and row["energy"] is None
    assert "did not converge in 3 cycles" in row["error"]
    kept = Path(row["error"].split("kept in ")[-1])
    try:
        assert (kept / "hipqeq.inp").exists() and "MAX_SCF 3" in (kept / "hipqeq.inp").read_text()
        assert "SCF run NOT converged" in (kept / "hipqeq.out").read_text()
    finally:
        shutil.rmtree(kept, ignore_errors=True)
    params = json.loads(row["calc_params"])
    assert params["parameters"]["engine"] == "cp2k" and params["attempts"][0]["status"] == "scf_not_converged"


@pytest.mark.slow
@needs_cp2k
def test_odd_electron_cells_run_unrestricted_at_gamma():
    """A neutral iodine vacancy in the 7-atom RP n = 1 slab cell (odd electron count) at
    the Gamma point: UKS with multiplicity 2 (~10 s; here the normal settings diverged
    after 14 cycles and the safer retry converged in 40)."""
    slab = vacancy(ruddlesden_popper(1, "slab", vacuum=26.0), "I")
    row = label_structure(record_from_atoms(slab), xtb_labeller(cp2k_settings(kpoint_density_A=1.0)))
    assert row["status"] == "ok", row["error"]
    params = json.loads(row["calc_params"])
    assert params["multiplicity"] == 2 and params["spin"] == "unrestricted (UKS)" and params["kmesh"] == [1, 1, 1]
    assert row["label_boundary"] == "periodic"  # CP2K's Ewald sums: the slab is a 3D-periodic cell
    assert np.sum(row["charges"]) == pytest.approx(0.0, abs=1e-5)
