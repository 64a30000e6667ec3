"""The MACE peer model: a local, charge-blind equivariant potential to compare with.

A small MACE (mace-torch, the ``peer`` extra; Batatia et al., NeurIPS 2022) is trained by
``hipqeq train mace`` on the rows the short-range and baseline stages train on. Its energy
is a sum of per-atom energies of the environment within ``r_max`` (Angstrom),

.. math::

    E = \\sum_i \\left[ E_0(Z_i) + s\\, \\varepsilon_i(\\{\\mathbf r_{ij}\\}_{r_{ij} < r_\\mathrm{max}}) \\right],

with per-element reference energies :math:`E_0` (eV) fitted by least squares on the
training rows and kept fixed, and :math:`s` the RMS training force component (eV/A,
MACE's ``rms_forces_scaling``). The total charge is not an input: a neutral and a charged
cell of the same geometry get the same energy, which is what the comparison with the 4G
potential measures.

Model directory (kind ``mace``)::

    <model dir>/
      model.json            format_version (:data:`FORMAT_VERSION`), kind "mace", species,
                            dtype, units, dataset and split provenance (sha256), seed,
                            device, best_epoch, best_valid_loss, epochs_run, stage_two,
                            energy_reference_refits, init_from (as
                            :mod:`hipqeq.models.store` says), e0s_eV (after the refits),
                            avg_num_neighbors, force_scale_eV_per_A, hipqeq_version,
                            mace_version, torch_version
      hyperparameters.json  {"model": architecture (:func:`mace_hyperparameters`),
                             "fit": optimiser settings}
      weights.pt            torch state_dict of the model, which hipqeq rebuilds from
                            hyperparameters.json and model.json (loaded with torch's safe
                            ``weights_only``: no code runs from the file)
      mace.model            the same model as a whole pickled torch module, MACE's own
                            model file for mace's calculator and tools (a pickle: load it
                            only from a directory you trust, as any MACE model)
      training_curves.csv   per-epoch losses (train and valid) and learning rate
      training_curves.png   the same, plotted
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

import hipqeq._mace  # noqa: F401  (imports mace with torch's safe loading kept on)
from e3nn import o3
from mace import modules
from mace.calculators import MACECalculator

from hipqeq.errors import HipqeqError
from hipqeq.models.potential import resolve_device
from hipqeq.models.store import load_weights, read_json

KIND = "mace"
FORMAT_VERSION = 1
MODEL_FILE = "mace.model"
WEIGHTS_FILE = "weights.pt"

#: MACE's defaults (mace/tools/arg_parser.py) for what the config does not set.
_FIXED_ARCHITECTURE = {"num_radial_basis": 8, "num_cutoff_basis": 5, "max_ell": 3,
                       "radial_MLP": [64, 64, 64], "MLP_irreps": "16x0e", "gate": "silu"}


def mace_hyperparameters(peer: dict, cutoff_A: float, species: list[int]) -> dict:
    """The architecture of a peer model: the config's ``training.peer`` (channels,
    max_L, interactions, correlation order), the short-range cutoff ``cutoff_A`` as
    ``r_max`` (Angstrom), the species (atomic numbers) and MACE's defaults for the rest."""
    return {"species": [int(z) for z in species], "r_max": float(cutoff_A),
            "num_channels": peer["num_channels"], "max_L": peer["max_L"],
            "num_interactions": peer["num_interactions"], "correlation": peer["correlation"],
            **_FIXED_ARCHITECTURE}


def hidden_irreps(num_channels: int, max_L: int) -> o3.Irreps:
    """``num_channels`` channels of each irrep up to ``max_L`` of alternating parity
    (MACE's convention: 32 channels, max_L 1 -> 32x0e + 32x1o)."""
    return o3.Irreps(" + ".join(f"{num_channels}x{ell}{'e' if ell % 2 == 0 else 'o'}"
                                for ell in range(max_L + 1)))


def build_mace(hyperparameters: dict, e0s_eV: dict[int, float], avg_num_neighbors: float,
               force_scale_eV_per_A: float) -> torch.nn.Module:
    """A fresh MACE (``ScaleShiftMACE``, no shift) in torch's current default dtype.

    ``e0s_eV`` maps each species to its fixed reference energy (eV);
    ``avg_num_neighbors`` normalises the message sums; ``force_scale_eV_per_A`` scales the
    interaction energies."""
    h = hyperparameters
    return modules.ScaleShiftMACE(
        r_max=h["r_max"], num_bessel=h["num_radial_basis"], num_polynomial_cutoff=h["num_cutoff_basis"],
        max_ell=h["max_ell"], interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=h["num_interactions"], num_elements=len(h["species"]),
        hidden_irreps=hidden_irreps(h["num_channels"], h["max_L"]), MLP_irreps=o3.Irreps(h["MLP_irreps"]),
        atomic_energies=np.array([e0s_eV[z] for z in h["species"]]), avg_num_neighbors=avg_num_neighbors,
        atomic_numbers=h["species"], correlation=h["correlation"], gate=modules.gate_dict[h["gate"]],
        radial_MLP=h["radial_MLP"], atomic_inter_scale=force_scale_eV_per_A, atomic_inter_shift=0.0)


def is_peer(model_dir: str | os.PathLike) -> bool:
    """Whether ``model_dir`` holds a MACE peer model (``model.json`` kind ``mace``)."""
    return read_json(Path(model_dir) / "model.json").get("kind") == KIND


def read_peer_metadata(model_dir: str | os.PathLike) -> dict:
    """``model.json`` of a peer model directory; another kind or format raises
    :class:`HipqeqError` naming the directory."""
    meta = read_json(Path(model_dir) / "model.json")
    if meta.get("kind") != KIND or meta.get("format_version") != FORMAT_VERSION:
        raise HipqeqError(f"{model_dir}: holds kind {meta.get('kind')!r} (format {meta.get('format_version')}), "
                          f"expected a MACE peer model (kind {KIND!r}, format {FORMAT_VERSION}) written by "
                          "`hipqeq train mace`")
    return meta


@contextlib.contextmanager
def default_dtype(dtype: str | torch.dtype):
    """torch's default dtype set to ``dtype`` inside the block, restored on the way out
    (an exception included): mace builds its modules and graphs in the default dtype."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def save_peer(model_dir: str | os.PathLike, model: torch.nn.Module, metadata: dict,
              hyperparameters: dict, fit_settings: dict) -> Path:
    """Write ``weights.pt``, ``mace.model``, ``hyperparameters.json`` and ``model.json``
    (model moved to CPU). ``metadata`` must hold what :func:`load_mace` rebuilds the model
    from: ``dtype``, ``e0s_eV``, ``avg_num_neighbors``, ``force_scale_eV_per_A``."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu")
    torch.save(model.state_dict(), model_dir / WEIGHTS_FILE)
    # e3nn pickles its generated code as TorchScript, scripting it on the way (deprecated
    # in torch >= 2.10, still working): the deprecation and the TorchScript compiler's
    # own remarks are silenced for this one file
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The TorchScript type system", category=UserWarning)
        torch.save(model, model_dir / MODEL_FILE)
    hyper = {"model": hyperparameters, "fit": fit_settings}
    (model_dir / "hyperparameters.json").write_text(json.dumps(hyper, indent=1) + "\n")
    meta = {"format_version": FORMAT_VERSION, "kind": KIND, "species": hyperparameters["species"], **metadata}
    (model_dir / "model.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return model_dir


_RETRAIN = "re-run `hipqeq train mace` for this model (or restore the directory from a copy)"


def load_mace(model_dir: str | os.PathLike) -> torch.nn.Module:
    """The trained MACE of a peer model directory, rebuilt from its hyperparameters and
    metadata and loaded from ``weights.pt``, on CPU in eval mode, in its stored dtype."""
    meta = read_peer_metadata(model_dir)
    hyper = read_json(Path(model_dir) / "hyperparameters.json")["model"]
    with default_dtype(meta["dtype"]):
        model = build_mace(hyper, {int(z): e for z, e in meta["e0s_eV"].items()}, meta["avg_num_neighbors"],
                           meta["force_scale_eV_per_A"])
    load_weights(Path(model_dir) / WEIGHTS_FILE, model, _RETRAIN)
    return model.eval()


def peer_calculator(model_dirs, device: str = "auto") -> MACECalculator:
    """mace's ASE calculator of a peer model (or the mean of several: a committee), on
    ``device`` (auto: CUDA when present), in the models' stored dtype."""
    dirs = [model_dirs] if isinstance(model_dirs, (str, os.PathLike)) else list(model_dirs)
    if not dirs:
        raise HipqeqError("no peer model directory given")
    dtypes = {read_peer_metadata(d)["dtype"] for d in dirs}
    if len(dtypes) > 1:
        raise HipqeqError(f"peer models {', '.join(map(str, dirs))} mix dtypes {sorted(dtypes)}")
    return MACECalculator(models=[load_mace(d) for d in dirs], device=str(resolve_device(device)),
                          default_dtype=dtypes.pop())


def predict_peer(model_dirs, atoms_list, device: str = "auto", progress: bool = True) -> list[dict]:
    """Energies (eV) and forces ((n, 3) eV/A) of a peer model (or committee mean) for
    many structures, the models loaded once: one dict per structure with ``energy``,
    ``forces`` and ``charges`` (None: the peer has no charges). ``atoms.info`` (e.g. the
    total charge) is not read by the model."""
    from tqdm.auto import tqdm

    calculator = peer_calculator(model_dirs, device=device)
    out = []
    for atoms in tqdm(atoms_list, desc="predict (MACE peer)", unit="structure", disable=not progress,
                      leave=False):
        atoms = atoms.copy()
        atoms.calc = calculator
        out.append({"energy": float(atoms.get_potential_energy()), "forces": atoms.get_forces().copy(),
                    "charges": None})
    return out
