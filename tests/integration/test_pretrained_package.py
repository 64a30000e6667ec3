"""Packaging a finished study as a pretrained potential (the toy run) and loading it back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hipqeq import pretrained
from hipqeq.errors import HipqeqError
from tests.integration.toy import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def packaged(toy_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    pretrained.package_study(toy_run, ROOT / "config" / "toy.yaml", "toy", "toy study", root=root)
    return root


def test_a_packaged_study_lists_and_loads_without_its_results(packaged, toy_run):
    assert pretrained.names(packaged) == ["toy"]
    manifest = pretrained.info("toy", packaged)
    assert manifest["training_data"]["n_xtb_labels"] > 0
    assert set(manifest["models"]) == {"4g", "2g"}
    shipped = [p for d in pretrained.model_dirs("toy", "4g", packaged) for p in d.rglob("*")]
    assert not any("hippynn" in p.parts for p in shipped), "training logs are not shipped"
    assert (pretrained.model_dirs("toy", "4g", packaged)[0] / "charge_model" / "weights.pt").exists()
    assert all(str(toy_run) not in str(d) for d in pretrained.model_dirs("toy", "2g", packaged))


@pytest.mark.parametrize("kind", ["4g", "2g"])
def test_the_calculator_reproduces_the_stored_check_results(packaged, kind):
    atoms, reference = pretrained.check_structure("toy", packaged)
    atoms.calc = pretrained.calculator("toy", kind=kind, root=packaged, device="cpu", dtype="float64")
    assert atoms.get_potential_energy() == pytest.approx(reference[kind]["energy_eV"], abs=1e-8)
    np.testing.assert_allclose(atoms.get_forces(), reference[kind]["forces_eV_A"], atol=1e-8)


def test_the_two_kinds_are_different_models(packaged):
    _, reference = pretrained.check_structure("toy", packaged)
    assert reference["4g"]["energy_eV"] != reference["2g"]["energy_eV"]


def test_models_list_prints_the_test_errors(packaged):
    hipqeq = Path(sys.executable).parent / "hipqeq"
    out = subprocess.run([str(hipqeq), "models", "list", "--root", str(packaged)],
                         capture_output=True, text=True, check=True).stdout
    metrics = pretrained.info("toy", packaged)["test_errors"]["4g"]["xtb"]
    assert "toy: toy study" in out and f"{metrics['energy_mae_mev_per_atom']:.1f} meV/atom" in out


def test_unknown_names_and_kinds_are_refused(packaged):
    with pytest.raises(HipqeqError, match="available: toy"):
        pretrained.calculator("cspbi-nope", root=packaged)
    with pytest.raises(HipqeqError, match="kind must be"):
        pretrained.model_dirs("toy", "3g", packaged)
    with pytest.raises(HipqeqError, match="exists"):
        pretrained.package_study(packaged, ROOT / "config" / "toy.yaml", "toy", "again", root=packaged)
