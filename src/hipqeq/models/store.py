"""The model directory: everything needed to rebuild, run and trace a trained model.

::

    <model dir>/
      model.json            kind, species, units, dtype, versions, dataset and split
                            provenance (sha256), seed, best epoch and losses
      hyperparameters.json  network (and QEq) settings the modules are rebuilt from,
                            plus the fit settings used
      weights.pt            torch state_dict of the model's modules
      training_curves.csv   per-epoch losses (train and valid) and learning rate (and the
                            stage, 1 or 2, where an energy-weighted second stage ran)
      training_curves.png   the same, plotted
      charge_model/         (4G potentials only) the frozen charge model, a complete
                            model directory of kind "charges"
      hippynn/              hippynn's own experiment files and log

Kinds: ``charges`` (charge model), ``short-range`` (complete 4G potential: short-range
HIP-NN + the charge model it was trained with), ``baseline`` (short-range HIP-NN only).

``model.json`` keys: ``format_version``, ``kind``, ``species`` (atomic numbers), ``dtype``,
``units`` (energy, forces, stress, charges, positions), ``dataset`` and ``split`` (path,
sha256; split also member, n_train, n_valid, valid_is_train), ``seed``, ``device``,
``best_epoch``, ``best_valid_loss``, ``epochs_run`` (rows of ``training_curves.csv``; with
a second stage the best epoch is that stage's, its loss the stage's own), ``stage_two``
(its fit settings, or null), ``energy_reference_refits`` (energy models: one per schedule,
the training rows' energy RMSE before and after and the shift added to the zeroth
term, :func:`hipqeq.training.common.reference_refit`) and ``init_from`` (path and weights sha256 of the model the
run started from, or null), ``hipqeq_version``,
``hippynn_version``, ``torch_version``, and for ``short-range`` ``charge_model`` (path and
sha256 of the charge model's model.json). ``hyperparameters.json`` holds ``model`` (the
network settings of :func:`hipqeq.models.network.network_hyperparameters`, plus
``qeq_tolerance``, ``qeq_background``, ``hardness_eV`` and ``sigma_A`` for charge models, ``charge_features``
for 4G short-range models, ``repulsive_core`` for energy models) and ``fit`` (the optimiser settings).

Format versions: 1, the QEq boundary fixed per model (``qeq_boundary``; slabs trained as
3D periodic); 2, the QEq boundary of every structure from its own ``pbc``, in training
and deployment alike (no ``qeq_boundary`` key); 3, training under each label's own
boundary (``label_boundary``) and deployment under the physical one, per-element initial
``hardness_eV`` and ``sigma_A`` in the charge model's hyperparameters, and a
charge-aware short range (``charge_features``) in 4G potentials; 4, the charge-aware
short range's zeroth energy term reads the charges too (an energy per unit of total
charge); 5, energy models (short range and baseline) may add a fixed ZBL repulsive core
(``repulsive_core`` in their hyperparameters, :mod:`hipqeq.models.repulsion`); 6, a
charged periodic cell's Coulomb sum meets the neutralising background as point charges
(``qeq_background: point``, the xTB engines' convention) where formats <= 5 used Gaussian
charges (:mod:`hipqeq.qeq.coulomb`). Format 4 is read as format 5 without a core, and
both with the Gaussian background, which is what they are; older directories are refused
rather than reinterpreted: retrain them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from hipqeq.errors import HipqeqError
from hipqeq.models.charges import ChargeModel
from hipqeq.models.potential import Potential
from hipqeq.models.short_range import ShortRangeModel

FORMAT_VERSION = 6
#: Formats this hipqeq reads (see the module docstring).
READABLE_FORMATS = (4, 5, 6)
KINDS = ("charges", "short-range", "baseline")
CHARGE_MODEL_DIR = "charge_model"
#: What a model directory may hold beside the model: hippynn's experiment files, and
#: MACE's pickled copy of ``weights.pt``. Neither is committed with a study nor shipped.
WORKING_FILES = ("hippynn", "mace.model")


def model_files(model_dir: str | os.PathLike) -> list[Path]:
    """The files that make the model in ``model_dir``, sorted: every file under it but the
    :data:`WORKING_FILES`, so that what is computed from them (a provenance hash, a training
    run's fingerprint) is the same in a fresh clone as where the model was trained."""
    root = Path(model_dir)
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and set(WORKING_FILES).isdisjoint(p.relative_to(root).parts))


def read_json(path: Path) -> dict:
    """A model directory's JSON file; a missing or damaged one raises :class:`HipqeqError`."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise HipqeqError(f"{path.parent}: not a hipqeq model directory (no {path.name})") from None
    except json.JSONDecodeError as exc:
        raise HipqeqError(f"{path}: not valid JSON ({exc}); the model directory is damaged") from None


def read_metadata(model_dir: str | os.PathLike) -> dict:
    """``model.json`` of a model directory."""
    meta = read_json(Path(model_dir) / "model.json")
    if meta.get("kind") == "mace":
        raise HipqeqError(f"{model_dir}: holds a MACE peer model (kind 'mace'), for comparison only: "
                          "validate it with `hipqeq validate --peer`, run it with "
                          "hipqeq.models.mace.peer_calculator")
    if meta.get("format_version") not in READABLE_FORMATS or meta.get("kind") not in KINDS:
        raise HipqeqError(f"{model_dir}: model format {meta.get('format_version')} / kind "
                          f"{meta.get('kind')!r} not readable by this hipqeq (format {FORMAT_VERSION})")
    return meta


def build_model(kind: str, hyperparameters: dict) -> torch.nn.Module:
    """A fresh (untrained) model of ``kind`` from its hyperparameters."""
    if kind == "charges":
        return ChargeModel(hyperparameters)
    return ShortRangeModel(hyperparameters)


def save_model(model_dir: str | os.PathLike, kind: str, model: torch.nn.Module, metadata: dict,
               fit_settings: dict) -> Path:
    """Write ``model.json``, ``hyperparameters.json`` and ``weights.pt``."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), model_dir / "weights.pt")
    hyper = {"model": model.hyperparameters, "fit": fit_settings}
    (model_dir / "hyperparameters.json").write_text(json.dumps(hyper, indent=1) + "\n")
    meta = {"format_version": FORMAT_VERSION, "kind": kind,
            "species": model.hyperparameters["species"], **metadata}
    (model_dir / "model.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return model_dir


#: What a user does about a model directory whose weights cannot be used.
RETRAIN = "re-run `hipqeq train` for this model (or restore the directory from a copy)"


def load_weights(path: Path, model: torch.nn.Module, retrain: str = RETRAIN, fresh: tuple[str, ...] = ()) -> None:
    """Load the state_dict in ``path`` into ``model``; a missing, truncated or foreign
    file raises :class:`HipqeqError` naming it, with ``retrain``: what the user does.
    ``fresh``: names of submodules whose weights the file may lack (parts the stored model
    did not have); they keep ``model``'s own."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise HipqeqError(f"{path}: missing (the model directory is incomplete); {retrain}") from None
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a corrupt file
        raise HipqeqError(f"{path}: not a readable torch state_dict ({type(exc).__name__}: {exc}); "
                          f"{retrain}") from None
    own = {k: v for k, v in model.state_dict().items() if k.split(".")[0] in fresh}
    state = {**own, **state}
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise HipqeqError(f"{path}: weights do not fit hyperparameters.json ({exc}); {retrain}") from None


def load_model(model_dir: str | os.PathLike, kind: str | None = None) -> torch.nn.Module:
    """The trained model (charge or short-range module) of a model directory, on CPU in
    eval mode; ``kind`` checks the directory holds that kind."""
    meta = read_metadata(model_dir)
    if kind is not None and meta["kind"] != kind:
        raise HipqeqError(f"{model_dir}: holds a {meta['kind']} model, expected {kind}")
    hyper = read_json(Path(model_dir) / "hyperparameters.json")["model"]
    model = build_model(meta["kind"], hyper)
    load_weights(Path(model_dir) / "weights.pt", model)
    dtype = getattr(torch, meta.get("dtype", "float32"))
    return model.to(dtype).eval()


def require_potential(model_dir: str | os.PathLike) -> dict:
    """``model.json`` of a model directory that holds a potential (kind ``short-range`` or
    ``baseline``); a charge model alone raises :class:`HipqeqError` saying what it holds:
    its energy would be E_elec only, which is not a potential energy surface."""
    meta = read_metadata(model_dir)
    if meta["kind"] == "charges":
        raise HipqeqError(
            f"{model_dir}: holds a charge model (kind 'charges': electronegativities + charge "
            "equilibration, no short-range energy), not a potential; give a 'short-range' (4G) or "
            "'baseline' model directory, e.g. results/models/4g_0")
    return meta


def load_potential(model_dir: str | os.PathLike, allow_charge_model: bool = False) -> Potential:
    """The :class:`Potential` of a model directory: a 4G potential (short-range + its
    charge model) or a baseline (short-range only); with ``allow_charge_model`` also a
    charge model alone (its charges, and E_elec as its only energy), otherwise refused
    (:func:`require_potential`)."""
    meta = read_metadata(model_dir) if allow_charge_model else require_potential(model_dir)
    if meta["kind"] == "charges":
        return Potential(None, load_model(model_dir)).eval()
    charges = None
    if meta["kind"] == "short-range":
        charges = load_model(Path(model_dir) / CHARGE_MODEL_DIR, kind="charges")
    return Potential(load_model(model_dir), charges).eval()
