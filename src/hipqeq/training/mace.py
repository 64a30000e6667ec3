"""``hipqeq train mace``: the MACE peer model, trained on the baseline's rows.

The peer sees exactly what the short-range and baseline stages see: the usable rows
(status ok, finite energy and forces) of the xTB dataset outside the test split, divided
into train and valid by the committee member's split (:func:`load_stage_table`), and
the species of the whole dataset file. The total charge is not an input (a local model
cannot see it; see :mod:`hipqeq.models.mace`).

Training (mace-torch's Python API; the loop is this module's, in the manner of
:mod:`hipqeq.training.fit`):

- per-element reference energies :math:`E_0` fitted by least squares to the training
  energies (mace's ``compute_average_E0s``; an element without training rows gets 0 eV)
  and kept fixed; the interaction energies scaled by the RMS training force component;
- loss :math:`\\mathrm{MSE}(E/N) + w_F\\,\\mathrm{MSE}(F)` in (eV/atom)^2 and (eV/A)^2, the
  baseline's loss (mace's ``WeightedEnergyForcesLoss``; ``w_F`` is
  ``training.peer.fit.force_weight``);
- Adam, the learning rate halved after ``patience`` epochs without a better validation
  loss, stop after ``termination_patience`` such epochs or ``max_epochs``; the weights of
  the best validation epoch are kept. The per-epoch training loss is the mean of the
  batch losses over the epoch (weights changing meanwhile); the validation loss is
  evaluated with the epoch's final weights;
- with ``training.peer.fit.stage_two``, a second schedule from those weights under its
  own force weight and learning rate, as the HIP-NN energy stages have;
- after each schedule the E0s are refit by least squares to the trained model's
  residuals on the training rows (:func:`refit_e0s`), as the HIP-NN energy stages refit
  their zeroth term;
- an interrupted run resumes from its checkpoint, as the HIP-NN stages do
  (:mod:`hipqeq.training.checkpoint`).

Everything runs in ``training.peer.dtype`` (float64 by default), set as torch's default
dtype only while this stage builds and trains (mace builds its tensors in the default
dtype).
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import hipqeq._mace  # noqa: F401  (imports mace with torch's safe loading kept on)
from mace import __version__ as mace_version
from mace import data as mace_data
from mace import modules
from mace.tools import AtomicNumberTable, torch_geometric

from hipqeq import __version__
from hipqeq.errors import HipqeqError
from hipqeq.models.mace import (WEIGHTS_FILE, build_mace, default_dtype, load_mace, mace_hyperparameters,
                                read_peer_metadata, save_peer)
from hipqeq.models.potential import resolve_device
from hipqeq.models.store import read_json
from hipqeq.training.checkpoint import TrainingCheckpoint, checkpoint_path, run_fingerprint
from hipqeq.training.common import (STOPPING_KEY, FitResult, fit_section, joined_history, member_seed,
                                    reference_refit, seed_stage_two, stage_two_output, stage_two_settings,
                                    write_curves)
from hipqeq.training.data import file_sha256, load_stage_table, train_valid_rows
from hipqeq.units import DATASET_UNITS

log = logging.getLogger(__name__)

STAGE = "mace"


def configuration(record: dict) -> mace_data.Configuration:
    """mace's ``Configuration`` of a dataset row: geometry (Angstrom), energy (eV) and
    forces (eV/A), nothing else (no total charge)."""
    return mace_data.Configuration(
        atomic_numbers=np.asarray(record["numbers"], dtype=int),
        positions=np.asarray(record["positions"], dtype=float).reshape(-1, 3),
        properties={"energy": float(record["energy"]),
                    "forces": np.asarray(record["forces"], dtype=float).reshape(-1, 3)},
        property_weights={"energy": 1.0, "forces": 1.0},
        cell=np.asarray(record["cell"], dtype=float).reshape(3, 3),
        pbc=tuple(bool(p) for p in record["pbc"]))


def _validation_metrics(model, loader, device, force_weight: float) -> dict:
    """Validation metrics over every structure of ``loader``: the loss
    (:data:`STOPPING_KEY`), RMSE and MAE of energies per atom (eV/atom) and of force
    components (eV/A), with the column names of the HIP-NN stages."""
    model.eval()
    energy_errors, force_errors = [], []
    for batch in loader:
        batch = batch.to(device)
        output = model(batch.to_dict(), training=False, compute_force=True)
        n_atoms = batch.ptr[1:] - batch.ptr[:-1]
        energy_errors.append(((output["energy"] - batch.energy) / n_atoms).detach().cpu().numpy())
        force_errors.append((output["forces"] - batch.forces).detach().cpu().numpy().ravel())
    energy, forces = np.concatenate(energy_errors), np.concatenate(force_errors)
    return {STOPPING_KEY: float(np.mean(energy**2) + force_weight * np.mean(forces**2)),
            "E_per_atom-RMSE": float(np.sqrt(np.mean(energy**2))), "E_per_atom-MAE": float(np.mean(np.abs(energy))),
            "F-RMSE": float(np.sqrt(np.mean(forces**2))), "F-MAE": float(np.mean(np.abs(forces)))}


def _fit(model, train_loader, valid_loader, fit_settings: dict, device, description: str,
         checkpoint: TrainingCheckpoint, valid_is_train: bool) -> FitResult:
    """Train ``model`` in place (best validation weights restored), saving the state to
    ``checkpoint`` after each epoch training goes on from and resuming from it; returns
    the per-epoch history (epoch, lr, train_Loss, valid_<metric>), the best epoch
    (0-based) and the number of epochs resumed from the checkpoint."""
    loss_fn = modules.WeightedEnergyForcesLoss(energy_weight=1.0, forces_weight=fit_settings["force_weight"]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=fit_settings["learning_rate"])
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=fit_settings["patience"])
    history, best_epoch, best_state = [], -1, None
    state = checkpoint.load()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best_epoch, best_state = state["history"], state["best_epoch"], state["best_state"]
    resumed_epochs = len(history)
    bar = tqdm(range(resumed_epochs, fit_settings["max_epochs"]), desc=description, unit="epoch", leave=False,
               initial=resumed_epochs, total=fit_settings["max_epochs"])
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        lr = optimizer.param_groups[0]["lr"]
        for batch in train_loader:
            batch = batch.to(device)
            optimizer.zero_grad(set_to_none=True)
            output = model(batch.to_dict(), training=True, compute_force=True)
            loss = loss_fn(pred=output, ref=batch)
            loss.backward()
            optimizer.step()
            total += loss.item() * batch.num_graphs
            count += batch.num_graphs
        valid = _validation_metrics(model, valid_loader, device, fit_settings["force_weight"])
        scheduler.step(valid[STOPPING_KEY])
        history.append({"epoch": epoch, "lr": lr, f"train_{STOPPING_KEY}": total / count,
                        **{f"valid_{k}": v for k, v in valid.items()}})
        new_best = best_epoch < 0 or valid[STOPPING_KEY] < history[best_epoch][f"valid_{STOPPING_KEY}"]
        if new_best:
            best_epoch, best_state = epoch, copy.deepcopy(model.state_dict())
        bar.set_postfix(train=f"{total / count:.4g}", valid=f"{valid[STOPPING_KEY]:.4g}")
        log.info("%s epoch %d: train loss %.6g, valid loss %.6g, lr %.3g%s", description, epoch, total / count,
                 valid[STOPPING_KEY], lr, " (best)" if new_best else "")
        if epoch - best_epoch >= fit_settings["termination_patience"]:
            break
        if epoch + 1 < fit_settings["max_epochs"]:
            checkpoint.save(history, model=model.state_dict(), optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), best_epoch=best_epoch, best_state=best_state)
    model.load_state_dict(best_state)
    return FitResult(history, best_epoch, history[best_epoch][f"valid_{STOPPING_KEY}"], valid_is_train,
                     resumed_epochs)


def refit_e0s(model, graphs: list, device) -> dict:
    """Refit the peer's fixed per-element energies (E0s, mace's ``AtomicEnergiesBlock``)
    to its residuals on the training ``graphs``: least squares of E_label - E_model on
    the element counts (:func:`hipqeq.training.common.reference_refit`), added to
    the E0s, as the HIP-NN stages refit their zeroth energy term. Returns
    :func:`hipqeq.training.common.reference_refit`'s record."""
    model.eval()
    residuals, counts = [], []
    for batch in torch_geometric.DataLoader(graphs, batch_size=1, shuffle=False):
        batch = batch.to(device)
        energy = model(batch.to_dict(), training=False, compute_force=False)["energy"].detach()
        residuals.append(float(batch.energy.sum() - energy.sum()))
        counts.append(batch.node_attrs.sum(dim=0).detach().cpu().to(torch.float64))
    weights, refit = reference_refit(torch.stack(counts), torch.tensor(residuals, dtype=torch.float64))
    block = model.atomic_energies_fn
    block.atomic_energies += weights.to(block.atomic_energies)
    return refit


def initial_peer(init_from: str | os.PathLike, hyper: dict) -> tuple[torch.nn.Module, dict]:
    """The trained peer of model directory ``init_from`` and its metadata, to train on
    from; its hyperparameters must be this run's (``hyper``: the config's peer and the
    dataset's species). Its reference energies and scales are kept."""
    stored = read_json(Path(init_from) / "hyperparameters.json")["model"]
    if stored != hyper:
        differ = sorted(k for k in set(stored) | set(hyper) if stored.get(k) != hyper.get(k))
        raise HipqeqError(f"--init-from {init_from}: a MACE of other hyperparameters ({', '.join(differ)}) "
                          "than this config's peer on this dataset")
    return load_mace(init_from).train(), read_peer_metadata(init_from)


def train_mace(config: dict, dataset: str | os.PathLike, splits: str | os.PathLike, member: int,
               output: str | os.PathLike, device: str = "auto", seed: int | None = None,
               init_from: str | os.PathLike | None = None) -> dict:
    """Train the MACE peer of committee member ``member`` and write its model directory
    (:mod:`hipqeq.models.mace`): the main schedule, then ``stage_two`` where the fit
    settings have one; from the weights of the peer in ``init_from`` where given (only
    stage two then, where there is one). Returns a summary dict (best_epoch,
    best_valid_loss, n_train, n_valid, wall_time_s, epochs_resumed), as
    :func:`hipqeq.training.train_model` does."""
    started = time.perf_counter()
    training = config["training"]
    peer = training["peer"]
    fit_settings = dict(fit_section(config, STAGE))
    run_seed = member_seed(config, STAGE, member, seed)
    torch_device = resolve_device(device)
    output = Path(output)
    fingerprint = run_fingerprint([dataset, splits, *([] if init_from is None else [init_from])],
                                  stage=STAGE, member=member, seed=run_seed, training=training)
    stage_two = stage_two_settings(fit_settings)

    table, split_names, species = load_stage_table(STAGE, dataset, splits, member)
    train_rows, valid_rows, valid_is_train = train_valid_rows(split_names)
    hyper = mace_hyperparameters(peer, training["network"]["cutoff_A"], species)
    records = table.to_pylist()
    with default_dtype(peer["dtype"]):
        torch.manual_seed(run_seed)
        z_table = AtomicNumberTable(hyper["species"])
        configs = [configuration(r) for r in records]
        e0s = {int(z): float(e) for z, e in
               mace_data.compute_average_E0s([configs[i] for i in train_rows], z_table).items()}
        graphs = [mace_data.AtomicData.from_config(c, z_table=z_table, cutoff=hyper["r_max"])
                  for c in tqdm(configs, desc="MACE graphs", unit="structure", leave=False)]
        batch_size = fit_settings["batch_size"]
        train_loader = torch_geometric.DataLoader([graphs[i] for i in train_rows], batch_size=batch_size,
                                                  shuffle=True)
        valid_loader = torch_geometric.DataLoader([graphs[i] for i in valid_rows], batch_size=batch_size,
                                                  shuffle=False)
        avg_num_neighbors = modules.compute_avg_num_neighbors(train_loader)
        if not avg_num_neighbors > 0:
            raise HipqeqError(f"{dataset}: the training rows of member {member} have no neighbours within "
                              f"r_max = {hyper['r_max']} A (training.network.cutoff_A)")
        _, force_rms = modules.compute_mean_rms_energy_forces(
            train_loader, np.array([e0s[z] for z in hyper["species"]]))
        force_scale = float(np.ravel(force_rms)[0])
        if init_from is None:
            model = build_mace(hyper, e0s, avg_num_neighbors, force_scale)
        else:
            model, initial = initial_peer(init_from, hyper)
            avg_num_neighbors, force_scale = initial["avg_num_neighbors"], initial["force_scale_eV_per_A"]
        model = model.to(torch_device)
        description = f"train mace (member {member})"
        results, refits = [], []

        def refit() -> None:
            refits.append(refit_e0s(model, [graphs[i] for i in train_rows], torch_device))
            log.info("%s: E0s refit to the %d training rows: energy RMSE %.2f -> %.2f meV/atom",
                     description, len(train_rows), *refits[-1]["train_rmse_meV_per_atom"])

        if init_from is None or stage_two is None:
            results.append(_fit(model, train_loader, valid_loader, fit_settings, torch_device, description,
                                TrainingCheckpoint(output, fingerprint), valid_is_train))
        refit()
        if stage_two is not None:
            seed_stage_two(run_seed)
            results.append(_fit(model, train_loader, valid_loader, stage_two, torch_device,
                                f"{description}, stage two",
                                TrainingCheckpoint(stage_two_output(output), fingerprint), valid_is_train))
            refit()
        result = joined_history(results, first_stage=2 if init_from is not None and stage_two is not None else 1)
        e0s = dict(zip(hyper["species"], model.atomic_energies_fn.atomic_energies.reshape(-1).tolist()))
        history, best_epoch = result.history, result.best_epoch

    if output.exists():
        shutil.rmtree(output)
    n_train, n_valid = len(train_rows), 0 if valid_is_train else len(valid_rows)
    best_valid_loss = result.best_valid_loss
    metadata = {
        "dtype": peer["dtype"],
        "units": {k: DATASET_UNITS[k] for k in ("energy", "forces", "positions")},
        "dataset": {"path": str(dataset), "sha256": file_sha256(dataset)},
        "split": {"path": str(splits), "sha256": file_sha256(splits), "member": member,
                  "n_train": n_train, "n_valid": n_valid, "valid_is_train": valid_is_train},
        "seed": run_seed,
        "device": str(torch_device),
        "best_epoch": best_epoch,
        "best_valid_loss": best_valid_loss,
        "epochs_run": len(history),
        "epochs_resumed": result.resumed_epochs,
        "stage_two": stage_two,
        "energy_reference_refits": refits,
        "init_from": None if init_from is None else {
            "path": str(init_from), "sha256": file_sha256(Path(init_from) / WEIGHTS_FILE)},
        "e0s_eV": e0s,
        "avg_num_neighbors": avg_num_neighbors,
        "force_scale_eV_per_A": force_scale,
        "hipqeq_version": __version__,
        "mace_version": mace_version,
        "torch_version": torch.__version__,
    }
    save_peer(output, model, metadata, hyper, fit_settings)
    write_curves(history, output, f"MACE peer member {member}")
    for stage_output in (output, stage_two_output(output)):
        checkpoint_path(stage_output).unlink(missing_ok=True)
    wall = time.perf_counter() - started
    log.info("trained the MACE peer (member %d) on %d rows (valid %d) in %.1f s; best epoch %d",
             member, n_train, n_valid, wall, best_epoch)
    return {"best_epoch": best_epoch, "best_valid_loss": best_valid_loss, "n_train": n_train,
            "n_valid": n_valid, "wall_time_s": wall, "epochs_resumed": result.resumed_epochs}
