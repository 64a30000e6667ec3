"""Finite-size convergence: primitive-cell reduction and the check-convergence verb."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hipqeq.cli import main
from hipqeq.data import write_dataset
from hipqeq.errors import StructureError
from hipqeq.labels.convergence import primitive_cell, repeat_directions
from tests.unit.labels.cells import A_CUBIC, cubic_cspbi3


def test_primitive_cell_undoes_a_shuffled_supercell():
    unit = cubic_cspbi3(rattle=0.05, seed=2)
    supercell = unit.repeat((2, 3, 1))
    order = np.random.default_rng(0).permutation(len(supercell))  # builders sort atoms, e.g. by height
    supercell = supercell[order]
    supercell.positions -= 1e-7  # atoms on the cell boundary must not fall out of image 0
    recovered = primitive_cell(supercell, (2, 3, 1))
    assert len(recovered) == len(unit) and np.allclose(recovered.cell.array, unit.cell.array)
    assert sorted(recovered.get_chemical_symbols()) == sorted(unit.get_chemical_symbols())
    assert np.allclose(recovered.repeat((2, 3, 1)).get_volume(), supercell.get_volume())
    with pytest.raises(StructureError, match="cannot divide"):
        primitive_cell(supercell[:-1], (2, 3, 1))


def test_repeat_directions_are_the_short_periodic_ones():
    slab = cubic_cspbi3()
    slab.set_cell([A_CUBIC, A_CUBIC, 30.0], scale_atoms=False)
    slab.pbc = [True, True, False]
    assert repeat_directions(slab, 18.0) == [0, 1]
    assert repeat_directions(cubic_cspbi3(), 18.0) == [0, 1, 2]
    assert repeat_directions(cubic_cspbi3().repeat(3), 18.0) == [0, 1, 2]  # none short: all periodic


@pytest.mark.slow
def test_check_convergence_reports_sizes(tmp_path):
    """1x1x1 and 2x2x2 cubic cells (5 and 40 atoms, ~3 s) from a 2x2x2 seed."""
    config = tmp_path / "config.yaml"
    config.write_text("structures: {seeds: [{name: alpha, builder: phase, phase: alpha, supercell: [2, 2, 2]}]}\n"
                      "selection: {n_xtb: 1, n_dft: 0}\nconvergence: {repeats: [1, 2]}\n")
    seed = cubic_cspbi3().repeat(2)
    seed.info.update(structure_name="alpha", family="pristine", source="build")
    write_dataset([seed], tmp_path / "structures.parquet")
    output, plot = tmp_path / "alpha.json", tmp_path / "alpha.png"
    assert main(["check-convergence", "--config", str(config), "--structures", str(tmp_path / "structures.parquet"),
                 "--name", "alpha", "--output", str(output), "--plot", str(plot)]) == 0
    report = json.loads(output.read_text())
    sizes = report["sizes"]
    assert [s["n_atoms"] for s in sizes] == [5, 40] and report["repeat_directions"] == [0, 1, 2]
    assert [s["shortest_periodic_length_A"] for s in sizes] == pytest.approx([A_CUBIC, 2 * A_CUBIC])
    assert all(s["status"] == "ok" for s in sizes)
    # GFN1 Gamma-point energy per formula unit: -387.98 eV (1x1x1) vs -382.47 eV (2x2x2), PHYSICS.md
    assert 5 * sizes[0]["energy_per_atom_eV"] == pytest.approx(-387.98, abs=0.01)
    assert 5 * sizes[1]["energy_per_atom_eV"] == pytest.approx(-382.47, abs=0.01)
    # symmetry forbids forces in the ideal cell; tblite leaves 3 meV/A (1x1x1) and 8 meV/A (2x2x2)
    # (measured here, unchanged at accuracy 0.01, so not SCF noise)
    assert max(s["max_force_eV_A"] for s in sizes) < 0.02
    assert sizes[0]["mean_charge_e"]["Pb"] == pytest.approx(0.31, abs=0.01)
    assert plot.stat().st_size > 0
