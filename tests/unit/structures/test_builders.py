"""Seeds: stoichiometry, charge neutrality, bonds, distances, vacuum, symmetry."""

from __future__ import annotations

import numpy as np
import pytest
import spglib

from hipqeq.errors import StructureError
from hipqeq.structures import check_structure, formal_charge, phase, ruddlesden_popper, structure_data
from hipqeq.structures.checks import pair_distances

A = structure_data()["ruddlesden_popper"]["a"]
RP_CASES = [(n, kind) for n in (1, 2, 3) for kind in ("bulk", "slab")]


def _counts(atoms) -> dict[str, int]:
    symbols = atoms.get_chemical_symbols()
    return {s: symbols.count(s) for s in ("Cs", "Pb", "I")}


@pytest.fixture(autouse=True)
def _spglib_raises(monkeypatch):
    """spglib >= 2.5 warns unless told to raise its errors (warnings are errors here)."""
    monkeypatch.setattr(spglib.error, "OLD_ERROR_HANDLING", False)


def _space_group(atoms, symprec=1e-3) -> str:
    return spglib.get_spacegroup((atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers),
                                 symprec=symprec).split()[0]


@pytest.mark.parametrize("n, kind", RP_CASES)
def test_rp_stoichiometry_and_neutrality(n, kind):
    atoms = ruddlesden_popper(n, kind)
    slabs = 2 if kind == "bulk" else 1
    assert _counts(atoms) == {"Cs": slabs * (n + 1), "Pb": slabs * n, "I": slabs * (3 * n + 1)}
    assert formal_charge(atoms) == 0


@pytest.mark.parametrize("n, kind", RP_CASES)
def test_rp_octahedra_bonds_and_distances(n, kind):
    atoms = ruddlesden_popper(n, kind, supercell=(2, 2, 1))
    owners, pb_i = pair_distances(atoms, ("Pb",), ("I",), 3.5)
    # every Pb is octahedral, all Pb-I = a/2, within the 3.1-3.2 A of lead iodide perovskites
    assert np.bincount(owners, minlength=len(atoms))[atoms.numbers == 82].tolist() == [6] * (atoms.numbers == 82).sum()
    assert np.allclose(pb_i, A / 2) and 3.1 < A / 2 < 3.2
    _, cs_i = pair_distances(atoms, ("Cs",), ("I",), 6.0)
    assert cs_i.min() >= 3.7  # CsI rock-salt gap g = 0.62 a = 3.90 A, not a/2 = 3.14 A
    assert atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)].min() > 3.0
    check_structure(atoms, f"rp{n}_{kind}")


@pytest.mark.parametrize("n", [1, 2, 3])
def test_rp_bulk_is_i4mmm_with_gap(n):
    atoms = ruddlesden_popper(n, "bulk")
    assert _space_group(atoms) == "I4/mmm"
    gap = structure_data()["ruddlesden_popper"]["gap_fraction"] * A
    assert atoms.cell[2, 2] == pytest.approx(2 * (n * A + gap))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_slab_vacuum_and_pbc(n):
    atoms = ruddlesden_popper(n, "slab", vacuum=15.0, supercell=(2, 3, 1))
    assert atoms.pbc.tolist() == [True, True, False]
    z = atoms.positions[:, 2]
    assert atoms.cell[2, 2] - (z.max() - z.min()) == pytest.approx(15.0)
    assert z.min() == pytest.approx(7.5)  # centred: half the vacuum on each side
    assert atoms.cell.lengths()[:2] == pytest.approx([2 * A, 3 * A])


def test_slab_refuses_stacking_repeat_and_bad_input():
    with pytest.raises(StructureError, match="in-plane only"):
        ruddlesden_popper(1, "slab", supercell=(1, 1, 2))
    with pytest.raises(StructureError, match="n = 4"):
        ruddlesden_popper(4)
    with pytest.raises(StructureError, match="kind"):
        ruddlesden_popper(1, "film")


@pytest.mark.parametrize("name, group, n_atoms", [("alpha", "Pm-3m", 5), ("beta", "P4/mbm", 10),
                                                  ("gamma", "Pnma", 20), ("delta", "Pnma", 20)])
def test_phases_symmetry_stoichiometry_checks(name, group, n_atoms):
    atoms = phase(name)
    assert len(atoms) == n_atoms and _space_group(atoms) == group
    assert formal_charge(atoms) == 0
    check_structure(atoms, name)
    assert "source" in structure_data()["phases"][name]


def test_unknown_phase_names_choices():
    with pytest.raises(StructureError, match="alpha, beta, gamma, delta"):
        phase("epsilon")
