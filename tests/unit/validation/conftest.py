"""Fixtures of the validation tests: small xTB/DFT datasets, a split, a fixture potential.

The fixture potential returns each structure's own xTB labels plus known errors
(:data:`ERRORS_4G`, :data:`ERRORS_BASELINE`), so that every metric of a validation run
is known by hand: an energy error of ``x`` eV per atom gives an energy MAE and RMSE of
``1000 x`` meV/atom, a constant force-component error ``f`` gives ``1000 f`` meV/Angstrom.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from hipqeq.data import atoms_id, read_records, write_dataset
from hipqeq.models.store import FORMAT_VERSION

#: Errors of the fixture 4G potential: energy per atom (eV/atom), every force component
#: (eV/Angstrom), every charge (e).
ERRORS_4G = {"energy_per_atom": 0.010, "force": 0.002, "charge": 0.003}
#: Errors of the fixture baseline (it predicts no charges).
ERRORS_BASELINE = {"energy_per_atom": -0.020, "force": -0.005, "charge": None}
#: Errors of the fixture MACE peer (no charges either).
ERRORS_PEER = {"energy_per_atom": 0.030, "force": 0.008, "charge": None}

#: (parent_id, family, temperatures of its MD frames; None: a static structure)
PARENTS = (("slab", "pristine", (None, 100.0, 250.0)),
           ("slab_vac_I", "vacancy_I", (None, 250.0)),
           ("slab_strained", "strained", (100.0, 400.0)))
#: The held-out test parents of the fixture split.
TEST_PARENTS = ("slab", "slab_vac_I")


def _frame(parent: str, family: str, temperature_K: float | None, index: int,
           rng: np.random.Generator, **info) -> Atoms:
    """A rattled 5-atom CsPbI3 cell (one I fewer for a vacancy) with random labels."""
    a = 6.29
    positions = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]]) * a
    symbols = "PbCsI3"
    if family.startswith("vacancy"):
        symbols, positions = "PbCsI2", positions[:4]
    atoms = Atoms(symbols, positions=positions + rng.normal(scale=0.05, size=positions.shape),
                  cell=[a, a, a], pbc=True)
    atoms.info.update(parent_id=parent, structure_name=f"{parent}_{index}", family=family,
                      source="build" if temperature_K is None else "md", temperature_K=temperature_K,
                      **info)
    charges = rng.normal(scale=0.3, size=len(atoms))
    atoms.calc = SinglePointCalculator(
        atoms, energy=-3.5 * len(atoms) + rng.normal(scale=0.05),
        forces=rng.normal(scale=0.5, size=(len(atoms), 3)), charges=charges - charges.mean())
    return atoms


def make_frames(seed: int = 3) -> list[Atoms]:
    """xTB frames of every parent and temperature, plus two failed rows of test parents
    (scf_not_converged, error) and one failed row of a training parent."""
    rng = np.random.default_rng(seed)
    frames = [_frame(parent, family, t, k, rng, method="GFN1-xTB", charge_scheme="Mulliken")
              for parent, family, temperatures in PARENTS for k, t in enumerate(temperatures)]
    failures = (("slab", "pristine", "scf_not_converged"), ("slab_vac_I", "vacancy_I", "error"),
                ("slab_strained", "strained", "error"))
    for k, (parent, family, status) in enumerate(failures):
        failed = _frame(parent, family, 300.0, 10 + k, rng, method="GFN1-xTB", status=status,
                        error=f"fixture failure {status}")
        failed.calc = None
        frames.append(failed)
    return frames


@pytest.fixture(scope="module")
def xtb_path(tmp_path_factory):
    """xTB dataset: 7 ok rows (5 of test parents), 3 failed rows (2 of test parents)."""
    return write_dataset(make_frames(), tmp_path_factory.mktemp("xtb") / "xtb.parquet")


@pytest.fixture(scope="module")
def dft_path(tmp_path_factory, xtb_path):
    """DFT dataset: charges only (no energies), Mulliken scheme, on the static test
    structures of the xTB set (same structure ids) with charges scaled by 1.5."""
    records = []
    for record in read_records(xtb_path):
        if record["status"] == "ok" and record["temperature_K"] is None:
            record = dict(record, energy=None, forces=None, stress=None, method="PBE/gth-szv",
                          charge_scheme="Mulliken", charges=(1.5 * np.asarray(record["charges"])).tolist())
            records.append(record)
    return write_dataset(records, tmp_path_factory.mktemp("dft") / "dft.parquet")


@pytest.fixture(scope="module")
def splits():
    return {"seed": 0, "fractions": [0.4, 0.0, 0.6], "test": sorted(TEST_PARENTS),
            "members": [{"train": ["slab_strained"], "valid": []}]}


class FixturePotential:
    """A "model" that knows the xTB labels and adds fixed errors to them.

    Called like ``hipqeq.calculator.predict(model_dirs, atoms_list, charge_pbc=...)``:
    the directory name says which model it is (``baseline`` in it: the baseline, ``mace``:
    the MACE peer, else the 4G model). ``charge_pbc`` is recorded per call.
    """

    def __init__(self, xtb_path):
        self.labels = {r["structure_id"]: r for r in read_records(xtb_path) if r["status"] == "ok"}
        self.calls = []

    def __call__(self, model_dirs, atoms_list, charge_pbc=None, device="auto", progress=True):
        self.calls.append(([str(d) for d in model_dirs], len(atoms_list)))
        name = str(model_dirs[0])
        if "mace" not in name:  # hipqeq potentials solve for charges under the labels' boundaries
            assert len(charge_pbc) == len(atoms_list)
            self.charge_pbc = [tuple(pbc) for pbc in charge_pbc]
        errors = ERRORS_BASELINE if "baseline" in name else ERRORS_PEER if "mace" in name else ERRORS_4G
        out = []
        for atoms in atoms_list:
            assert atoms.calc is None, "the predictor must not see reference labels"
            label = self.labels[atoms_id(atoms)]
            n = len(atoms)
            charges = (None if errors["charge"] is None
                       else np.asarray(label["charges"]) + errors["charge"])
            out.append({"energy": label["energy"] + errors["energy_per_atom"] * n,
                        "forces": np.asarray(label["forces"]) + errors["force"], "charges": charges})
        return out


@pytest.fixture(scope="module")
def potential(xtb_path):
    return FixturePotential(xtb_path)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """A 4G, a baseline and a MACE peer model directory with a metadata file each (for
    the hashes)."""
    dirs = {}
    for kind, model_kind, version in (("4g_0", "short-range", FORMAT_VERSION),
                                      # 1: hipqeq.models.mace.FORMAT_VERSION (importing it imports mace)
                                      ("baseline_0", "baseline", FORMAT_VERSION), ("mace_0", "mace", 1)):
        d = tmp_path_factory.mktemp("models") / kind
        d.mkdir()
        (d / "hyperparameters.json").write_text(f'{{"kind": "{kind}"}}\n')
        (d / "model.json").write_text(json.dumps({"format_version": version, "kind": model_kind}))
        dirs[kind] = d
    return dirs
