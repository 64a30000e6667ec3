"""HipQEqCalculator, predict() and `hipqeq md` on small untrained model directories."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.calculator import CalculationFailed, PropertyNotImplementedError, all_changes
from ase import units
from ase.io import read
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

import hipqeq.models  # noqa: F401
from hipqeq.calculator import AtomsNotUsable, BoundaryWarning, HipQEqCalculator, predict
from hipqeq.cli import main
from hipqeq.data import write_dataset
from hipqeq.errors import HipqeqError, StructureError
from hipqeq.models.charges import ChargeModel, charge_hyperparameters
from hipqeq.models.network import network_hyperparameters
from hipqeq.models.short_range import ShortRangeModel
from hipqeq.models.store import CHARGE_MODEL_DIR, save_model
from hipqeq.qeq import QEqNotConverged

NETWORK = {"n_features": 8, "n_sensitivities": 6, "n_interaction_layers": 1, "n_atom_layers": 1,
           "cutoff_A": 4.0, "lower_cutoff_A": 1.0}


def write_model(directory, seed: int, with_charges: bool = True, dtype: str = "float64", elements=(29, 79)):
    """A model directory with random weights for ``elements`` (atomic numbers): a 4G
    potential or a baseline, stored in ``dtype``."""
    torch.manual_seed(seed)
    hp = network_hyperparameters(NETWORK, list(elements))
    meta = {"dtype": dtype}
    to_dtype = getattr(torch, dtype)
    save_model(directory, "short-range" if with_charges else "baseline", ShortRangeModel(hp).to(to_dtype), meta, {})
    if with_charges:
        save_model(directory / CHARGE_MODEL_DIR, "charges",
                   ChargeModel(charge_hyperparameters(hp, 1e-8)).to(to_dtype), meta, {})
    return directory


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"4g_a": write_model(root / "4g_a", 1), "4g_b": write_model(root / "4g_b", 2),
            "baseline": write_model(root / "baseline", 3, with_charges=False),
            "4g_float32": write_model(root / "4g_float32", 4, dtype="float32")}


def slab(seed: int = 0):
    """An 8-atom CuAu slab (in-plane 3.6 A, shorter than twice the 4 A cutoff)."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (1, 1, 2)
    atoms.numbers[[1, 4, 6]] = 79
    atoms.pbc = (True, True, False)
    atoms.center(vacuum=6.0, axis=2)
    atoms.rattle(0.05, seed=seed)
    return atoms


def test_calculator_fills_every_property(models):
    atoms = slab()
    atoms.calc = HipQEqCalculator(models["4g_a"], device="cpu")
    energy = atoms.get_potential_energy()
    assert atoms.get_total_energy() - atoms.get_kinetic_energy() == pytest.approx(energy)
    assert atoms.calc.get_property("free_energy", atoms) == energy
    assert atoms.get_forces().shape == (8, 3) and atoms.get_stress().shape == (6,)
    assert atoms.get_charges().sum() == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(atoms.get_dipole_moment(), atoms.get_charges() @ atoms.positions, atol=1e-9)
    # a new geometry triggers a new calculation
    atoms.positions[0, 0] += 0.05
    assert atoms.get_potential_energy() != energy


def test_committee_reports_mean_and_force_disagreement(models):
    atoms = slab()
    members = [HipQEqCalculator(models[name], device="cpu") for name in ("4g_a", "4g_b")]
    single = []
    for calc in members:
        atoms.calc = calc
        single.append((atoms.get_potential_energy(), atoms.get_forces().copy()))
    atoms.calc = HipQEqCalculator([models["4g_a"], models["4g_b"]], device="cpu")
    assert atoms.get_potential_energy() == pytest.approx(np.mean([e for e, _ in single]))
    disagreement = atoms.calc.results["force_disagreement"]
    expected = np.linalg.norm(single[0][1] - single[1][1], axis=1) / 2
    np.testing.assert_allclose(disagreement, expected, atol=1e-12)
    atoms.calc = HipQEqCalculator([models["4g_a"], models["4g_a"]], device="cpu")
    atoms.get_forces()
    np.testing.assert_allclose(atoms.calc.results["force_disagreement"], 0.0, atol=1e-12)


def test_predict_matches_the_calculator_and_baseline_has_no_charges(models):
    frames = [slab(seed) for seed in range(3)]
    predicted = predict([models["4g_a"]], frames, device="cpu", progress=False)
    calc = HipQEqCalculator(models["4g_a"], device="cpu")
    for atoms, result in zip(frames, predicted):
        atoms.calc = calc
        assert result["energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-12)
        np.testing.assert_allclose(result["charges"], atoms.get_charges(), atol=1e-12)
    (baseline,) = predict(models["baseline"], frames[:1], device="cpu", progress=False)
    assert "charges" not in baseline and baseline["forces"].shape == (8, 3)


def test_iterative_charge_solve_is_warm_started_from_the_previous_call(models):
    """The second call on slightly moved atoms starts from the first call's charges: fewer
    Coulomb matrix-vector products than a cold start, the same charges to solver tolerance.

    The saving grows with the closeness of the previous charges; CG on 72 atoms needs only
    about ten products cold, so the move is small (1e-4 A: 9 products warm, 11 cold). The
    adjoint solve of the forces is warm-started the same way, with the same forces.
    """
    atoms = slab() * (3, 3, 1)
    atoms.info["total_charge"] = 1.0
    atoms.calc = HipQEqCalculator(models["4g_a"], device="cpu", qeq_solver="iterative")
    atoms.get_potential_energy()
    atoms.positions += 1e-4 * np.random.default_rng(0).normal(size=atoms.positions.shape)
    warm_charges, warm_products = atoms.get_charges(), atoms.calc.results["qeq_matvec_products"]
    (warm_adjoint,) = atoms.calc.potentials[0].charges.qeq.adjoint_warm_starts

    cold = atoms.copy()
    cold.calc = HipQEqCalculator(models["4g_a"], device="cpu", qeq_solver="iterative")
    cold_charges, cold_products = cold.get_charges(), cold.calc.results["qeq_matvec_products"]
    (cold_adjoint,) = cold.calc.potentials[0].charges.qeq.adjoint_warm_starts
    assert 0 < warm_products < cold_products
    assert 0 < warm_adjoint["products"] < cold_adjoint["products"], "the forces' adjoint solve starts warm too"
    np.testing.assert_allclose(atoms.get_forces(), cold.get_forces(), atol=1e-6)
    assert warm_charges.sum() == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(warm_charges, cold_charges, atol=1e-6)
    cold.calc = HipQEqCalculator(models["4g_a"], device="cpu", qeq_solver="dense")
    np.testing.assert_allclose(warm_charges, cold.get_charges(), atol=1e-5)
    assert cold.calc.results["qeq_matvec_products"] == 0

    # Other species: the previous charges do not fit, so the solve starts cold again.
    atoms.numbers[[0, 1]] = atoms.numbers[[1, 0]] if atoms.numbers[0] != atoms.numbers[1] else [79, 29]
    atoms.get_potential_energy()
    fresh = atoms.copy()
    fresh.calc = HipQEqCalculator(models["4g_a"], device="cpu", qeq_solver="iterative")
    fresh.get_potential_energy()
    assert atoms.calc.results["qeq_matvec_products"] == fresh.calc.results["qeq_matvec_products"]


def test_verlet_neighbour_list_gives_fresh_list_results_over_md(models):
    """Velocity Verlet at 3000 K: at every step the calculator with a 0.5 A skin gives the
    energy and forces of one that searches anew (skin 0), and it searched fewer times
    than there were steps."""
    atoms = slab()
    atoms.calc = HipQEqCalculator(models["4g_a"], device="cpu", neighbor_skin_A=0.5)
    thermalize_momenta(atoms, temperature_K=3000, rng=np.random.default_rng(0))
    fresh = HipQEqCalculator(models["4g_a"], device="cpu", neighbor_skin_A=0.0)
    dynamics = VelocityVerlet(atoms, 2.0 * units.fs)
    steps = 15
    for _ in range(steps):
        dynamics.run(1)
        copy = atoms.copy()
        copy.calc = fresh
        assert copy.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(copy.get_forces(), atoms.get_forces(), atol=1e-10)
    assert 1 < atoms.calc.results["neighbor_list_builds"] < steps
    assert fresh.results["neighbor_list_builds"] == steps


@pytest.mark.parametrize("method", ["pme", "ewald"])
def test_kspace_methods_of_the_iterative_solve_agree(models, method):
    """The calculator hands ``kspace_method`` to the charge layer; each reciprocal sum
    gives the P3M default's energy and forces to the sums' accuracy (1e-8 relative)."""
    atoms = slab()
    atoms.calc = HipQEqCalculator(models["4g_a"], device="cpu", qeq_solver="iterative")
    reference_energy, reference_forces = atoms.get_potential_energy(), atoms.get_forces()
    assert atoms.calc.potentials[0].charges.qeq.kspace_method == "p3m"
    atoms.calc = HipQEqCalculator(models["4g_a"], device="cpu", qeq_solver="iterative", kspace_method=method)
    assert atoms.calc.potentials[0].charges.qeq.kspace_method == method
    assert atoms.get_potential_energy() == pytest.approx(reference_energy, abs=1e-5)
    np.testing.assert_allclose(atoms.get_forces(), reference_forces, atol=1e-5)
    with pytest.raises(HipqeqError, match="kspace_method"):
        HipQEqCalculator(models["4g_a"], device="cpu", kspace_method="spme")


def test_hipqeq_md_runs_a_few_steps(models, tmp_path):
    atoms = slab()
    atoms.info.update(structure_name="cuau_slab", parent_id="cuau_slab")
    structures = write_dataset([atoms], tmp_path / "structures.parquet")
    config = tmp_path / "config.yaml"
    config.write_text("structures: {seeds: [{name: cuau_slab, builder: phase, phase: alpha}]}\n"
                      "selection: {n_xtb: 1, n_dft: 0}\n"
                      "validation: {md_steps: 4, md_nve_steps: 4, md_frame_interval: 2, md_temperature_K: 100}\n")
    output, trajectory = tmp_path / "md" / "4g_cuau.json", tmp_path / "md" / "4g_cuau.traj"
    assert main(["md", "--config", str(config), "--model", str(models["4g_a"]), str(models["4g_b"]),
                 "--structures", str(structures), "--name", "cuau_slab", "--output", str(output),
                 "--trajectory", str(trajectory), "--device", "cpu"]) == 0
    summary = json.loads(output.read_text())
    assert summary["steps"] == 4 and len(summary["temperature_K"]) == 9
    assert summary["stable"] and not summary["atoms_flew_off"]
    assert summary["charge_min_e"] <= summary["charge_max_e"]
    assert np.isfinite(summary["energy_drift_eV_per_atom_ps"])
    frames = read(trajectory, ":")
    assert len(frames) == 5 and frames[-1].get_charges().shape == (8,)
    assert main(["md", "--config", str(config), "--model", str(models["4g_a"]), "--structures",
                 str(structures), "--name", "missing", "--output", str(output),
                 "--trajectory", str(trajectory), "--device", "cpu"]) == 2
    # the baseline has no charges: its trajectory stores energies and forces only
    assert main(["md", "--config", str(config), "--model", str(models["baseline"]), "--structures",
                 str(structures), "--name", "cuau_slab", "--output", str(output),
                 "--trajectory", str(trajectory), "--device", "cpu"]) == 0
    summary = json.loads(output.read_text())
    assert summary["charge_min_e"] is None and summary["stable"]
    assert read(trajectory, -1).get_forces().shape == (8, 3)


class FailingCalculator(HipQEqCalculator):
    """The real calculator for ``fail_after`` calculations, then it raises ``error``."""

    def __init__(self, model_dir, fail_after: int, error: Exception, **kwargs):
        super().__init__(model_dir, **kwargs)
        self.fail_after, self.error, self.calls = fail_after, error, 0

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        if self.calls >= self.fail_after:
            raise self.error
        self.calls += 1
        super().calculate(atoms, properties, system_changes)


@pytest.fixture
def md_inputs(tmp_path):
    """A config with 4 NVT + 4 NVE steps and a structures file holding the same slab
    under two names."""
    rows = []
    for name in ("cuau_slab", "cuau_twin"):
        atoms = slab()
        atoms.info.update(structure_name=name, parent_id=name)
        rows.append(atoms)
    config = tmp_path / "config.yaml"
    config.write_text("structures: {seeds: [{name: cuau_slab, builder: phase, phase: alpha}]}\n"
                      "selection: {n_xtb: 1, n_dft: 0}\n"
                      "validation: {md_steps: 4, md_nve_steps: 4, md_frame_interval: 2, md_temperature_K: 100}\n")
    return {"config": config, "structures": write_dataset(rows, tmp_path / "structures.parquet"),
            "root": tmp_path}


def md_args(md_inputs, model, name: str = "cuau_slab") -> list[str]:
    root = md_inputs["root"] / "md"
    return ["md", "--config", str(md_inputs["config"]), "--model", str(model), "--structures",
            str(md_inputs["structures"]), "--name", name, "--output", str(root / f"{name}.json"),
            "--trajectory", str(root / f"{name}.traj"), "--device", "cpu"]


# One calculation for the start structure, then one per step: the fourth is step 3's.
@pytest.mark.parametrize("fail_after, error, where", [
    (3, QEqNotConverged("iterative charge solve: residual 1e-3 after 200 iterations"), "at step 3"),
    (0, CalculationFailed("model blew up"), "on the start structure"),
], ids=["qeq-mid-run", "calculator-at-start"])
def test_hipqeq_md_records_a_model_error_and_exits_cleanly(models, md_inputs, monkeypatch, fail_after, error,
                                                          where):
    """A model error ends the run, not the job: the summary says why, is not stable, and
    the validation stage still reads it."""
    from hipqeq.validation.md_check import md_report, read_md_summaries

    monkeypatch.setattr("hipqeq.calculator.HipQEqCalculator",
                        partial(FailingCalculator, fail_after=fail_after, error=error))
    args = md_args(md_inputs, models["4g_a"])
    assert main(args) == 0
    output = md_inputs["root"] / "md" / "cuau_slab.json"
    summary = json.loads(output.read_text())
    assert summary["stopped_early"] and not summary["stable"]
    assert summary["reason"] == f"{type(error).__name__} {where}: {error}"
    assert len(summary["time_fs"]) == fail_after == len(summary["total_energy_eV"])
    (row,) = md_report(read_md_summaries([output]))
    assert row["stable"] is False and row["n_atoms"] == 8


def test_hipqeq_md_with_shadow_charge_equilibration(models, md_inputs):
    """--qeq shadow runs the same check through Coulomb products (no dense solve) and
    says so in the summary (the per-step cost is tested in test_shadow_potential)."""
    assert main([*md_args(md_inputs, models["4g_a"]), "--qeq", "shadow"]) == 0
    summary = json.loads((md_inputs["root"] / "md" / "cuau_slab.json").read_text())
    assert summary["qeq"] == "shadow" and summary["stable"]
    assert summary["qeq_matvec_products_per_step"] >= 1
    assert np.isfinite(summary["energy_drift_eV_per_atom_ps"])


def test_hipqeq_md_seed_is_derived_from_the_structure_name(models, md_inputs):
    """Same name, same run; another name (same geometry), another random stream."""
    temperatures = {}
    for name in ("cuau_slab", "cuau_slab", "cuau_twin"):
        assert main(md_args(md_inputs, models["baseline"], name)) == 0
        summary = json.loads((md_inputs["root"] / "md" / f"{name}.json").read_text())
        assert not summary["stopped_early"] and summary["reason"] is None
        temperatures.setdefault(name, []).append(summary["temperature_K"])
    assert temperatures["cuau_slab"][0] == temperatures["cuau_slab"][1]
    assert temperatures["cuau_slab"][0][0] != temperatures["cuau_twin"][0][0]


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")])])
def test_calculator_on_gpu_matches_cpu(models, device):
    atoms = slab()
    atoms.calc = HipQEqCalculator(models["4g_a"], device="cpu")
    cpu = atoms.get_potential_energy(), atoms.get_forces().copy(), atoms.get_charges().copy()
    atoms.calc = HipQEqCalculator(models["4g_a"], device=device)
    assert atoms.get_potential_energy() == pytest.approx(cpu[0], abs=1e-8)
    np.testing.assert_allclose(atoms.get_forces(), cpu[1], atol=1e-8)
    np.testing.assert_allclose(atoms.get_charges(), cpu[2], atol=1e-8)


# --- input handling: total charge, model kinds, broken inputs, wrapped slabs, precision ---

def test_a_change_of_total_charge_is_a_new_calculation(models):
    """ASE compares positions, cell, pbc and initial charges only; the total charge in
    ``atoms.info`` must invalidate the cached results too, whichever convention holds it."""
    atoms = slab()
    atoms.calc = HipQEqCalculator(models["4g_a"], device="cpu")
    neutral = atoms.get_potential_energy()
    atoms.info["total_charge"] = 1.0
    cation = atoms.get_potential_energy()
    assert cation != neutral and atoms.get_charges().sum() == pytest.approx(1.0, abs=1e-9)
    fresh = atoms.copy()
    fresh.calc = HipQEqCalculator(models["4g_a"], device="cpu")
    assert fresh.get_potential_energy() == pytest.approx(cation, abs=1e-10)
    # ASE's other conventions give the same structure the same energy
    del atoms.info["total_charge"]
    assert atoms.get_potential_energy() == pytest.approx(neutral, abs=1e-10)
    atoms.info["charge"] = 1
    assert atoms.get_potential_energy() == pytest.approx(cation, abs=1e-10)
    del atoms.info["charge"]
    atoms.set_initial_charges([0.5, 0.5] + [0.0] * 6)
    assert atoms.get_potential_energy() == pytest.approx(cation, abs=1e-10)
    # or the calculator's own charge, as tblite's ASE calculator takes it
    bare = slab()
    bare.calc = HipQEqCalculator(models["4g_a"], device="cpu", charge=1)
    assert bare.get_potential_energy() == pytest.approx(cation, abs=1e-10)


def test_a_keyword_the_calculator_does_not_take_is_an_error_not_ignored(models):
    """ASE's Calculator stores unknown keywords as parameters nobody reads: a charged
    defect given as `total_charge=1` would silently be evaluated at Q = 0 (12 eV off
    for the shipped potential's V_I+ slab)."""
    with pytest.raises(TypeError, match="unexpected keyword argument.s. dtpye, total_charge"):
        HipQEqCalculator(models["4g_a"], device="cpu", total_charge=1, dtpye="float32")
    HipQEqCalculator(models["4g_a"], device="cpu", label="ase-keyword", directory=".")


def test_disagreeing_total_charge_conventions_are_an_error(models):
    atoms = slab()
    atoms.info.update(total_charge=1.0, charge=0)
    atoms.calc = HipQEqCalculator(models["4g_a"], device="cpu")
    with pytest.raises(StructureError, match=r'info\["total_charge"\] = \+1 e, atoms.info\["charge"\] = \+0 e'):
        atoms.get_potential_energy()
    atoms.info["charge"] = 1
    atoms.set_initial_charges([-1.0] + [0.0] * 7)
    with pytest.raises(StructureError, match="get_initial_charges"):
        atoms.get_potential_energy()
    cation = slab()
    cation.info["total_charge"] = 1.0
    cation.calc = HipQEqCalculator(models["4g_a"], device="cpu", charge=-1)
    with pytest.raises(StructureError, match=r"total_charge\"\] = \+1 e, the calculator's charge = -1 e"):
        cation.get_potential_energy()


def test_a_slab_in_a_3d_periodic_box_and_a_slab_without_vacuum_are_warned_about(models):
    """A slab read from a POSCAR or CIF is 3D periodic: its electrostatics change with the
    vacuum. Warned once per calculator; the 12 A slab with pbc T,T,F is not warned about
    (pytest turns warnings into errors), nor a bulk cell."""
    boxed = slab()
    boxed.pbc = True
    boxed.calc = HipQEqCalculator(models["4g_a"], device="cpu")
    with pytest.warns(BoundaryWarning, match=r"1[12]\.\d A of vacuum along cell vector 2: a slab in a 3D-periodic box"):
        boxed.get_potential_energy()
    boxed.positions[0, 0] += 0.01
    boxed.get_potential_energy()  # once per calculator
    thin = slab()
    thin.center(vacuum=3.0, axis=2)
    thin.calc = HipQEqCalculator(models["4g_a"], device="cpu")
    with pytest.warns(BoundaryWarning, match=r"a slab \(pbc T,T,F\) with [56]\.\d A of vacuum"):
        thin.get_potential_energy()
    crystal = bulk("Cu", "fcc", a=3.6, cubic=True)
    crystal.numbers[1] = 79
    crystal.calc = HipQEqCalculator(models["4g_a"], device="cpu")
    crystal.get_potential_energy()


def test_an_open_system_has_no_stress(models):
    """Its box is arbitrary: a stress would divide by the box's volume."""
    cluster = slab()
    cluster.pbc = False
    cluster.calc = HipQEqCalculator(models["4g_a"], device="cpu")
    assert np.isfinite(cluster.get_forces()).all()
    with pytest.raises(PropertyNotImplementedError):
        cluster.get_stress()


def test_a_charge_model_is_refused_as_a_potential(models, md_inputs, capsys):
    charge_model = models["4g_a"] / CHARGE_MODEL_DIR
    with pytest.raises(HipqeqError, match="holds a charge model .*not a potential"):
        HipQEqCalculator(charge_model, device="cpu")
    assert main(md_args(md_inputs, charge_model)) == 2
    assert "holds a charge model" in capsys.readouterr().err
    missing = str(md_inputs["root"] / "missing.parquet")  # refused before any input is read
    assert main(["validate", "--config", str(md_inputs["config"]), "--xtb", missing, "--dft", missing,
                 "--splits", missing, "--model", str(models["4g_a"]), "--baseline", str(charge_model),
                 "--output-dir", str(md_inputs["root"] / "validation"), "--device", "cpu"]) == 2
    assert f"{charge_model}: holds a charge model" in capsys.readouterr().err


@pytest.mark.parametrize("damage, message", [
    (lambda weights: weights.unlink(), "weights.pt: missing"),
    (lambda weights: weights.write_bytes(weights.read_bytes()[:100]), "weights.pt: not a readable"),
    (lambda weights: torch.save({"foreign": torch.zeros(2)}, weights), "weights.pt: weights do not fit"),
], ids=["missing", "truncated", "foreign"])
def test_damaged_weights_are_named_errors(models, md_inputs, tmp_path, capsys, damage, message):
    import shutil

    model = shutil.copytree(models["baseline"], tmp_path / "damaged")
    damage(model / "weights.pt")
    with pytest.raises(HipqeqError, match=message):
        HipQEqCalculator(model, device="cpu")
    assert main(md_args(md_inputs, model)) == 2
    err = capsys.readouterr().err
    assert message in err and "re-run `hipqeq train`" in err and "Traceback" not in err


@pytest.mark.parametrize("broken, message", [
    (lambda atoms: atoms[[]], "no atoms"),
    (lambda atoms: atoms.positions.__setitem__((3, 1), np.nan) or atoms, r"atoms \[3\]"),
    (lambda atoms: atoms.cell.array.__setitem__((2, 2), np.inf) or atoms, "the cell"),
], ids=["empty", "nan-position", "inf-cell"])
def test_atoms_without_atoms_or_with_nan_are_refused(models, broken, message):
    atoms = broken(slab())
    atoms.calc = HipQEqCalculator(models["4g_a"], device="cpu")
    with pytest.raises(AtomsNotUsable, match=message):
        atoms.get_potential_energy()


@pytest.mark.parametrize("side", ["bottom", "top"])
def test_a_slab_wrapped_across_its_cell_gives_the_energy_of_the_whole_slab(models, side):
    """Moved so that 1 A of it sticks out through z = 0 (or z = c) and wrapped back into
    the cell, the slab is two pieces a cell apart to a naive neighbour list."""
    centred = slab()
    extent = centred.positions[:, 2].min(), centred.positions[:, 2].max()
    shift = -(extent[0] + 1.0) if side == "bottom" else centred.cell[2, 2] - extent[1] + 1.0
    moved = centred.copy()
    moved.positions[:, 2] += shift
    wrapped = moved.copy()
    wrapped.wrap(pbc=True)  # as a code that treats every cell as 3D periodic writes it
    assert np.ptp(wrapped.positions[:, 2]) > centred.cell[2, 2] / 2  # really cut in two
    results = []
    for atoms in (moved, wrapped):
        atoms.calc = HipQEqCalculator(models["4g_a"], device="cpu")
        results.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_charges()))
    assert results[1][0] == pytest.approx(results[0][0], abs=1e-9)
    np.testing.assert_allclose(results[1][1], results[0][1], atol=1e-9)
    np.testing.assert_allclose(results[1][2], results[0][2], atol=1e-9)


def test_default_precision_on_cpu_is_float64_whatever_the_stored_one(models):
    """A model stored in float32 runs in float64 on CPU: a central difference of the
    energy matches the force to 1e-6 eV/A (float32 rounding alone is ~1e-6 eV on these
    energies, i.e. errors of ~1e-2 eV/A at this step)."""
    atoms = slab()
    atoms.calc = HipQEqCalculator(models["4g_float32"], device="cpu")
    assert {p.dtype for p in atoms.calc.potentials[0].parameters() if p.is_floating_point()} == {torch.float64}
    step = 1e-4
    force = atoms.get_forces()[2, 0]
    energies = []
    for sign in (1, -1):
        displaced = atoms.copy()
        displaced.positions[2, 0] += sign * step
        displaced.calc = atoms.calc
        energies.append(displaced.get_potential_energy())
    assert -(energies[0] - energies[1]) / (2 * step) == pytest.approx(force, abs=1e-6)
    explicit = HipQEqCalculator(models["4g_float32"], device="cpu", dtype="float32")
    assert {p.dtype for p in explicit.potentials[0].parameters() if p.is_floating_point()} == {torch.float32}
