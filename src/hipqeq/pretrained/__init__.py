"""Pretrained potentials that ship with hipqeq, usable without running a study::

    from hipqeq import pretrained
    calc = pretrained.calculator("cspbi-gfn1")             # the 4G committee
    base = pretrained.calculator("cspbi-gfn1", kind="2g")  # the short-range-only baseline
    pretrained.names()                                      # what ships

Each potential is a folder of this package, made from a finished study by
:func:`package_study` (``hipqeq models package``) and listed by ``hipqeq models list``::

    <name>/
      manifest.json     description, level of theory, training data, test errors (from the
                        study's validation), hipqeq version and git commit that made it,
                        and a caveat: what the potential is not fit for (every load warns
                        with it, :class:`PretrainedCaveat`; null when none)
      config.yaml       the study's config: rerun or extend it with Snakemake
      models/4g_<k>/    the 4G committee members (model directories, training logs dropped)
      models/baseline_<k>/
      data/             xtb.parquet, dft.parquet (the labelled datasets, with provenance),
                        xtb_test.parquet and dft_test.parquet (more labels of the test
                        parents, where the study made them) and splits.json
                        (train/valid/test parents)
      metrics.json      the study's full validation metrics (per family, per band)
      check/            one test-split structure (structure.extxyz) and the energies and
                        forces each kind gave on it when packaged (reference.json): a
                        fresh install must reproduce them (tests/unit/test_pretrained.py)

Units: eV, Angstrom, e, as everywhere in hipqeq.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from hipqeq import __version__, plan
from hipqeq.errors import HipqeqError

ROOT = Path(__file__).parent
MANIFEST = "manifest.json"
#: Public kind names -> the study's model directory prefix.
KINDS = {"4g": "4g", "2g": "baseline"}
#: What a shipped model directory keeps (hippynn's experiment files and plots are dropped).
MODEL_FILES = ("model.json", "hyperparameters.json", "weights.pt", "training_curves.csv")
CHARGE_MODEL_DIR = "charge_model"
CHECK_DIR = "check"


class PretrainedCaveat(UserWarning):
    """A pretrained potential's stated limits (its manifest's ``caveat``), on every load."""


def names(root: str | os.PathLike | None = None) -> list[str]:
    """Names of the pretrained potentials under ``root`` (default: the installed package)."""
    root = Path(root) if root is not None else ROOT
    return sorted(p.parent.name for p in root.glob(f"*/{MANIFEST}"))


def _folder(name: str, root: str | os.PathLike | None) -> Path:
    available = names(root)
    if name not in available:
        raise HipqeqError(f"no pretrained potential named {name!r}; available: {', '.join(available) or 'none'}")
    return (Path(root) if root is not None else ROOT) / name


def info(name: str, root: str | os.PathLike | None = None) -> dict:
    """The manifest of a pretrained potential (see the module docstring)."""
    return json.loads((_folder(name, root) / MANIFEST).read_text())


def model_dirs(name: str, kind: str = "4g", root: str | os.PathLike | None = None) -> list[Path]:
    """The model directories of a pretrained potential: the 4G committee (``kind="4g"``)
    or the short-range-only baseline (``kind="2g"``)."""
    if kind not in KINDS:
        raise HipqeqError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    folder = _folder(name, root)
    return [folder / d for d in info(name, root)["models"][kind]]


def calculator(name: str = "cspbi-gfn1", kind: str = "4g", root: str | os.PathLike | None = None,
               **kwargs):
    """The ASE calculator (:class:`hipqeq.calculator.HipQEqCalculator`) of a pretrained
    potential; ``kwargs`` go to it (``device``, ``dtype``, ``qeq_solver``, ``charge``: the
    total charge, e, of structures that carry none in ``atoms.info``). Warns with the
    potential's caveat (:class:`PretrainedCaveat`) when its manifest has one."""
    from hipqeq.calculator import HipQEqCalculator

    caveat = info(name, root).get("caveat")
    if caveat:
        warnings.warn(f"pretrained potential {name!r}: {caveat}", PretrainedCaveat, stacklevel=2)
    return HipQEqCalculator(model_dirs(name, kind, root), **kwargs)


def dataset(name: str, level: str = "xtb", root: str | os.PathLike | None = None) -> Path:
    """Path of a pretrained potential's labelled dataset: ``"xtb"`` (energies, forces,
    charges of the reference level: what the models trained on, the test parents'
    frames included), ``"dft"`` (DFT charges) or, where the study labelled more frames
    of its test parents (``selection.n_xtb_test``), ``"xtb_test"`` (never trained on) and,
    with ``selection.dft_test``, ``"dft_test"`` (their DFT charges)."""
    folder = _folder(name, root) / "data"
    path = folder / f"{level}.parquet"
    if not path.exists():
        shipped = ", ".join(sorted(p.stem for p in folder.glob("*.parquet")))
        raise HipqeqError(f"{name}: no {level!r} dataset (shipped: {shipped})")
    return path


def check_structure(name: str, root: str | os.PathLike | None = None):
    """The shipped check structure (ASE Atoms) and its stored results per kind
    (``{"4g": {"energy_eV": ..., "forces_eV_A": ...}, "2g": ...}``)."""
    from ase.io import read

    folder = _folder(name, root) / CHECK_DIR
    atoms = read(folder / "structure.extxyz")
    return atoms, json.loads((folder / "reference.json").read_text())


# --- packaging a finished study ----------------------------------------------------


def _copy_model(source: Path, destination: Path) -> None:
    destination.mkdir(parents=True)
    for file in MODEL_FILES:
        if (source / file).exists():
            shutil.copy2(source / file, destination / file)
    if (source / CHARGE_MODEL_DIR).is_dir():
        _copy_model(source / CHARGE_MODEL_DIR, destination / CHARGE_MODEL_DIR)


def _git_commit(directory: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True,
                             check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def _check_atoms(xtb_path: Path, splits: dict):
    """The first labelled test-split structure of the xTB dataset (held out of training)."""
    from hipqeq.data import read_table
    from hipqeq.data.io import atoms_from_record

    test_parents = set(splits["test"])
    for row in read_table(xtb_path).to_pylist():
        if row["status"] == "ok" and row["parent_id"] in test_parents:
            return atoms_from_record(row)
    raise HipqeqError(f"{xtb_path}: no labelled row of a test-split parent to store as the check structure")


def _reference_results(atoms, dirs: list[Path]) -> dict:
    from hipqeq.calculator import HipQEqCalculator

    calc = HipQEqCalculator(dirs, device="cpu", dtype="float64")
    probe = atoms.copy()
    probe.calc = calc
    return {"energy_eV": float(probe.get_potential_energy()), "forces_eV_A": probe.get_forces().tolist()}


def _overall(metrics: dict, model: str) -> dict:
    return {ref: blocks[model]["overall"] for ref, blocks in metrics["metrics"].items()}


def _boundary_name(pbc) -> str:
    """``periodic``, ``slab`` or ``open`` (:data:`hipqeq.data.schema.LABEL_BOUNDARY_PBC`), else the pbc."""
    from hipqeq.data.schema import LABEL_BOUNDARY_PBC

    pbc = tuple(bool(p) for p in pbc)
    return next((name for name, value in LABEL_BOUNDARY_PBC.items() if value == pbc), f"pbc {pbc}")


def _training_data(data: Path, splits: dict) -> dict:
    """What the packaged datasets in ``data`` hold (ok rows; ``n_xtb_test_labels``: the
    held-out labels beside the training set, 0 when none ship)."""
    from hipqeq.data import label_pbc, read_table

    def n_ok(path: Path) -> int:
        return sum(r["status"] == "ok" for r in read_table(path).select(["status"]).to_pylist()) if path.exists() else 0

    columns = ["status", "family", "total_charge", "numbers", "pbc", "label_boundary"]
    xtb = read_table(data / "xtb.parquet").select(columns).to_pylist()
    ok = [r for r in xtb if r["status"] == "ok"]
    sizes = [len(r["numbers"]) for r in ok]
    return {"n_xtb_labels": len(ok), "n_dft_labels": n_ok(data / "dft.parquet"),
            "n_xtb_test_labels": n_ok(data / "xtb_test.parquet"),
            "n_dft_test_labels": n_ok(data / "dft_test.parquet"),
            "label_boundaries": sorted({_boundary_name(label_pbc(r)) for r in ok}),
            "families": sorted({r["family"] for r in ok}),
            "total_charges_e": sorted({float(r["total_charge"]) for r in ok}),
            "atoms_per_structure": [min(sizes, default=0), max(sizes, default=0)],
            "test_parents": list(splits["test"]),
            "parents": {"train": len(splits["members"][0]["train"]), "valid": len(splits["members"][0]["valid"]),
                        "test": len(splits["test"])}}


def _level_of_theory(config: dict, charge_reference: str) -> dict:
    xtb, dft = config["xtb"], config["dft"]
    engine = xtb["engine"]
    sampling = (f"k-point density {xtb['cp2k']['kpoint_density_A']} A" if engine == "cp2k" else "Gamma point")
    computed = {"pyscf": f"PySCF, k-mesh {dft['kmesh']}",
                "cp2k": f"CP2K, k-point density {dft['cp2k']['kpoint_density_A']} A"}
    dft_text = (f"external set ({dft['external']['path']})" if dft["source"] == "external" else
                f"{dft['xc']}/{dft['basis']} ({dft['pseudo']}), {computed[dft['source']]}")
    return {"energy, forces": f"{xtb['method']} ({engine}, {sampling})",
            "charges": f"{xtb['method']} Mulliken; DFT {dft['charge_scheme']}: {dft_text}",
            "charge model learns": f"{charge_reference} charges"}


#: How the shipped test errors were measured, against what the calculator computes.
TEST_ERRORS_BOUNDARY = (
    "each test frame predicted under its label's electrostatic boundary (training_data.label_boundaries: "
    "'periodic' is a slab labelled as a 3D-periodic cell, as the reference engine computed it); the "
    "calculator predicts under the Atoms' own pbc, (T,T,F) for a slab, which differs from it for charged "
    "slabs (README: 'The charge model')")


def _trained_on(dirs: list[Path], study_dir: Path) -> dict[str, Path]:
    """The dataset and split the models ``dirs`` trained on, as their model.json records
    them (the path as run, from the working directory or the study's), checked by sha256:
    ``{"dataset": path, "split": path}``."""
    from hipqeq.training.data import file_sha256

    found = {}
    for key in ("dataset", "split"):
        records = {(r["path"], r["sha256"]) for r in (json.loads((d / "model.json").read_text())[key] for d in dirs)}
        if len(records) != 1:
            raise HipqeqError(f"{dirs[0].parent}: its members trained on different {key} files: {sorted(records)}")
        ((path, sha),) = records
        match = next((c for c in (Path(path), study_dir / path) if c.exists() and file_sha256(c) == sha), None)
        if match is None:
            raise HipqeqError(f"{dirs[0]}: the {key} it trained on ({path}, sha256 {sha[:12]}) is not there as it "
                              "was: package the committee beside the files that made it")
        found[key] = match
    return found


def _only_in(trained_on: dict, study_dataset: Path, study_split: Path) -> list[str]:
    """Structures of the 4G committee's training rows that the study's own (the baselines')
    do not hold; refuses a committee held out on other test parents than the study's."""
    from hipqeq.data import read_table
    from hipqeq.data.split import read_splits

    if set(read_splits(trained_on["split"])["test"]) != set(read_splits(study_split)["test"]):
        raise HipqeqError(f"{trained_on['split']}: holds out other test parents than {study_split}: the "
                          "committee's test errors and the baselines' would not compare")
    parents = set(read_table(study_dataset).column("parent_id").to_pylist())
    rows = read_table(trained_on["dataset"]).select(["parent_id", "structure_name"]).to_pylist()
    return sorted({r["structure_name"] for r in rows if r["parent_id"] not in parents})


def _committee(models: Path, prefix: str) -> list[Path]:
    """The ``<prefix>_<k>`` model directories in ``models`` (not a checkpoint,
    ``<dir>.resume.pt``, nor a first stage kept beside its model, ``<dir>_stage_one``)."""
    dirs = sorted(d for d in models.glob(f"{prefix}_[0-9]*") if d.is_dir() and d.name[len(prefix) + 1:].isdigit())
    if not dirs:
        raise HipqeqError(f"{models}: no {prefix}_<k> model directory: is the study finished?")
    return dirs


def package_study(study_dir: str | os.PathLike, config_path: str | os.PathLike, name: str, description: str,
                  root: str | os.PathLike | None = None, overwrite: bool = False,
                  caveat: str | None = None, committee: str | os.PathLike | None = None,
                  charge_reference: str | None = None) -> Path:
    """Copy a finished study (``<study_dir>/results``, run with ``config_path``) into
    ``root/name`` as a pretrained potential: models, datasets, splits, metrics, a manifest and a check
    structure with the results each kind gives on it now. ``caveat``: what the potential is
    not fit for, stated on every load. Returns the new folder.

    ``committee``: a directory of the study holding another 4G committee (``4g_<k>``, e.g.
    the other charge mode's of ``scripts/charge_reference.py``) and its validation
    (``validation_<charge_reference>/metrics.json``, with the study's baselines);
    ``charge_reference`` (``dft`` or ``xtb``): the charges its charge models learned. The
    labels and split that ship are those its members' model.json record (checked by
    sha256): the study's, or more (``scripts/charged_siblings.py``), with the same test
    parents; the structures the baselines did not train on are named in the manifest.
    Default: the study's own models, labels, validation and ``training.charge_reference``."""
    from hipqeq.config import load_config
    from hipqeq.data.split import read_splits

    study_dir = Path(study_dir)
    results = study_dir / "results"
    config = load_config(config_path)
    destination = (Path(root) if root is not None else ROOT) / name
    if destination.exists() and not overwrite:
        raise HipqeqError(f"{destination} exists; pass overwrite to replace it")
    if (committee is None) != (charge_reference is None):
        raise HipqeqError("committee and charge_reference go together: the charges that committee's charge "
                          "models learned (the study's own models take the config's)")
    sources = {"4g": _committee(results / "models" if committee is None else Path(committee), KINDS["4g"]),
               "2g": _committee(results / "models", KINDS["2g"])}
    metrics_path = (results / "validation" / "metrics.json" if committee is None
                    else Path(committee) / f"validation_{charge_reference}" / "metrics.json")
    if not metrics_path.exists():
        raise HipqeqError(f"{metrics_path} missing: run the study's validation first"
                          + ("" if committee is None else " (scripts/charge_reference.py compare)"))
    # the labels the models trained on: with active learning every round's, not round 0's;
    # another committee's own where it trained on more (scripts/charged_siblings.py)
    trained_on = {"dataset": study_dir / plan.training_dataset(config), "split": results / "splits.json"}
    if committee is not None:
        trained_on = _trained_on(sources["4g"], study_dir)
    copies = [(trained_on["dataset"], "xtb.parquet"), (results / "datasets/dft.parquet", "dft.parquet"),
              (trained_on["split"], "splits.json")]
    if plan.test_label_chunks(config):  # the held-out labels the metrics were measured on too
        copies.append((study_dir / plan.TEST_LABELS_DATASET, "xtb_test.parquet"))
    if plan.test_dft_chunks(config):
        copies.append((study_dir / plan.TEST_DFT_DATASET, "dft_test.parquet"))
    for source, _ in copies:
        if not source.exists():
            raise HipqeqError(f"{source} missing: is the study finished?")
    if destination.exists():  # replaced only once the study is known to be complete
        shutil.rmtree(destination)
    models = {}
    for kind, dirs in sources.items():
        models[kind] = [f"models/{d.name}" for d in dirs]
        for source in dirs:
            _copy_model(source, destination / "models" / source.name)
    data = destination / "data"
    data.mkdir()
    shutil.copy2(config_path, destination / "config.yaml")
    for source, target in copies:
        shutil.copy2(source, data / target)
    shutil.copy2(metrics_path, destination / "metrics.json")
    metrics = json.loads(metrics_path.read_text())
    splits = read_splits(data / "splits.json")

    check = destination / CHECK_DIR
    check.mkdir()
    atoms = _check_atoms(data / "xtb.parquet", splits)
    atoms.calc = None
    atoms.write(check / "structure.extxyz")
    reference = {kind: _reference_results(atoms, [destination / d for d in dirs]) for kind, dirs in models.items()}
    (check / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")

    training_data = _training_data(data, splits)
    if committee is not None:
        training_data["only_4g_structures"] = _only_in(trained_on, study_dir / plan.training_dataset(config),
                                                       results / "splits.json")
    manifest = {
        "name": name,
        "description": description,
        "caveat": caveat,
        "level_of_theory": _level_of_theory(config, charge_reference or config["training"]["charge_reference"]),
        "training_data": training_data,
        "test_errors": {kind: _overall(metrics, KINDS[kind]) for kind in KINDS},
        "test_errors_boundary": TEST_ERRORS_BOUNDARY,
        "models": models,
        "hipqeq_version": __version__,
        "git_commit": _git_commit(study_dir),
        "packaged": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (destination / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return destination


def summary_lines(name: str, root: str | os.PathLike | None = None) -> list[str]:
    """What ``hipqeq models list`` prints for one potential."""
    manifest = info(name, root)
    data = manifest["training_data"]
    lines = [f"{name}: {manifest['description']}"]
    if manifest.get("caveat"):
        lines.append(f"  CAVEAT: {manifest['caveat']}")
    lines += ["  level of theory: " + "; ".join(f"{k} {v}" for k, v in manifest["level_of_theory"].items()),
              (f"  training data: {data['n_xtb_labels']} labelled frames of the train, valid and test parents "
               f"({data['atoms_per_structure'][0]}-{data['atoms_per_structure'][1]} atoms; total charges "
               f"{data['total_charges_e']} e), {data['n_dft_labels']} with DFT charges; families: "
               f"{', '.join(data['families'])}"),
              (f"  parent structures train/valid/test (member 0): {data['parents']['train']}/"
               f"{data['parents']['valid']}/{data['parents']['test']}"
               + (f"; {data['n_xtb_test_labels']} more labels of the test parents"
                  if data.get("n_xtb_test_labels") else "")
               + (f" ({data['n_dft_test_labels']} with DFT charges)" if data.get("n_dft_test_labels") else ""))]
    if data.get("only_4g_structures"):
        lines.append(f"  the 4G committee also trained on {', '.join(data['only_4g_structures'])} "
                     "(the 2G baseline did not)")
    if data.get("label_boundaries"):
        lines.append(f"  test errors under the labels' boundaries ({', '.join(data['label_boundaries'])}), not "
                     "the calculator's (a slab's is pbc T,T,F): they differ for charged slabs")
    for kind, members in manifest["models"].items():
        errors = manifest["test_errors"][kind]
        xtb = errors.get("xtb", {})
        # a charge model learns one reference's charges: show its error against each
        maes = {label: errors.get(ref, {}).get("charge_mae_e") for ref, label in (("xtb", "xTB"), ("dft", "DFT"))}
        charges = [f"{_fmt(mae, 3)} e vs {label}" for label, mae in maes.items() if mae is not None]
        lines.append(f"  {kind} ({len(members)} members), test vs xTB: energy MAE "
                     f"{_fmt(xtb.get('energy_mae_mev_per_atom'))} meV/atom, force MAE "
                     f"{_fmt(xtb.get('force_mae_mev_per_A'))} meV/A"
                     + (f"; charge MAE {', '.join(charges)}" if charges else ""))
    lines.append(f"  made by hipqeq {manifest['hipqeq_version']} (commit {manifest['git_commit']}), "
                 f"packaged {manifest['packaged']}")
    return lines


def _fmt(value, digits: int = 1) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"
