"""The three HIP-NN training stages behind ``hipqeq train`` (and the dispatch of the
fourth, the MACE peer ``mace``, to :mod:`hipqeq.training.mace`).

- ``charges``: HIP-NN electronegativities + QEq fitted to reference charges (loss on
  per-atom charges, optionally on dipoles).
- ``short-range``: the 4G scheme's second stage. The frozen charge model's
  :math:`E_\\mathrm{elec}(q^*)` and its forces, under the boundary each label was computed
  with (``label_boundary``), are subtracted from the xTB labels and a charge-aware
  short-range HIP-NN (the charges :math:`q^*` among its inputs) is fitted to the rest;
  its forces take the charges' response through their Jacobian, computed once per
  structure. The output directory holds the charge model too, so it is the complete
  potential.
- ``baseline``: a charge-blind short-range HIP-NN fitted to the full xTB labels.

Energy models start from per-species energy references fitted by least squares on the
training rows (:func:`fit_energy_reference`; a charge-aware short range also fits its
energy per unit of total charge), kept fixed. Losses:
energy per atom (eV/atom) squared error + force_weight x force squared error (eV/A),
and with ``stage_two`` a second schedule from the best weights under its own
force_weight (a force-heavy first loss learns the forces, the second the energies).
After each schedule the zeroth term is refit by least squares to the trained model's
energy residuals on the training rows (:func:`refit_energy_reference`): with forces
dominating the loss the network drifts a constant per atom that the best epoch keeps
(the study's kept epochs were 20-130 meV/atom off on their own training rows);
charges: charge squared error (e) + dipole_weight x dipole squared error (e*A). The
training loss adds l2_weight x the squared HIP-NN weights (hippynn's ``l2reg``); with losses
in these units (a 10 meV/atom energy error is 1e-4) hippynn's usual 1e-6, made for kcal/mol,
is as large as the fit terms in value (a trained network's squared weights sum to ~400),
though its gradient is not what limits a fit (stage two at 1e-8 fitted the study's
training energies as at 1e-6).

Charge training takes every structure with its own total charge (``total_charge``
column, e.g. +1 e for a charged iodine vacancy next to neutral cells) and its own
boundary from ``pbc`` (clusters open, bulk periodic, slabs periodic in-plane with the
dipole correction), as the deployed potential does. The short-range stage subtracts
E_elec computed by the deployed code path itself (:func:`electrostatic_labels`), so its
QEq settings (boundary, tolerance, solver) are those of the potential it produces.

Species: a model knows every element of every row of its dataset file, failed and test
rows included (:func:`hipqeq.training.data.dataset_species`; elements only, no labels).
The short-range model knows those and the charge model's, and every element of its
dataset must be known to the frozen charge model, which computes E_elec of every row:
the DFT (charge reference) selection is a subset of the xTB selection, so an xTB element
the charge model lacks is one the DFT set never saw (:func:`short_range_species` says
so). An element that occurs only in rows that do not train (test parents, failed rows)
keeps untrained per-species parameters: its QEq hardness and Gaussian width stay at
their initial values, its energy reference is 0 eV (the least-squares fit of the
reference energies gives an absent element zero), and the network weights reading its
one-hot input only feel the L2 penalty. Predictions for such an element are defined
but not fitted.

Seeds: a member's training seed is :func:`hipqeq.seeds.derive_seed` of the master seed
(the config's, or ``--seed``), "train", the stage and the member (:func:`member_seed`;
members differ in initial weights as well as splits).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from ase.data import chemical_symbols
from tqdm.auto import tqdm

import hipqeq._hippynn  # noqa: F401  (configures hippynn before its first import)
from hippynn import __version__ as hippynn_version
from hippynn.graphs.nodes import loss as hippynn_loss
from hippynn.graphs import find_unique_relative
from hippynn.graphs.nodes.inputs import SpeciesNode
from hippynn.graphs.nodes.tags import Encoder

from hipqeq import __version__
from hipqeq.data import atoms_from_record, label_pbc
from hipqeq.errors import HipqeqError
from hipqeq.models.charges import ChargeModel, charge_hyperparameters
from hipqeq.models.graphs import charge_graph, short_range_graph
from hipqeq.models.network import network_hyperparameters, pair_geometry
from hipqeq.models.potential import Potential, charge_response, evaluate, resolve_device
from hipqeq.models.short_range import ChargeHardness, ShortRangeModel
from hipqeq.models.store import CHARGE_MODEL_DIR, load_model, load_weights, read_json, read_metadata, save_model
from hipqeq.qeq import neighbor_pairs
from hipqeq.training import STAGES
from hipqeq.training.checkpoint import TrainingCheckpoint, checkpoint_path, run_fingerprint
from hipqeq.training.common import (STOPPING_KEY, energy_reference_weights, fit_section, joined_history,
                                    member_seed, reference_refit, seed_stage_two, stage_two_output,
                                    stage_two_settings, write_curves)
from hipqeq.training.data import dataset_species, file_sha256, load_stage_table, training_arrays
from hipqeq.training.fit import fit
from hipqeq.units import DATASET_UNITS

log = logging.getLogger(__name__)


def _element_names(numbers) -> str:
    return ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in numbers)


def short_range_species(dataset: str | os.PathLike, species: list[int],
                        charge_model_dir: str | os.PathLike) -> list[int]:
    """The species of a short-range model: those of its dataset and those of the frozen
    charge model. Raises :class:`HipqeqError` naming the elements of the dataset that
    the charge model does not know (it has to compute E_elec for every row)."""
    meta = read_metadata(charge_model_dir)
    if meta["kind"] != "charges":
        raise HipqeqError(f"{charge_model_dir}: holds a {meta['kind']} model, expected a charge model")
    unknown = sorted(set(species) - set(meta["species"]))
    if unknown:
        raise HipqeqError(
            f"{dataset} has {_element_names(unknown)}, unknown to the charge model {charge_model_dir} "
            f"(it knows {_element_names(meta['species'])}); include structures with these elements "
            "in the DFT (charge reference) set and retrain the charge model")
    return sorted(set(species) | set(meta["species"]))


def _rmse_mae(node, label: str) -> dict:
    return {f"{label}-RMSE": hippynn_loss.MSELoss.of_node(node) ** 0.5,
            f"{label}-MAE": hippynn_loss.MAELoss.of_node(node)}


def _l2(network_node_):
    return hippynn_loss.l2reg(network_node_)


def fit_energy_reference(henergy, database, energy_name: str, charge_name: str | None = None,
                         core_name: str | None = None, decay_factor: float = 1e-2,
                         charge_hardness: ChargeHardness | None = None) -> torch.Tensor:
    """Set the zeroth energy term of ``henergy`` (hippynn ``HEnergyNode``) by least squares
    on the training rows (:func:`energy_reference_weights`) and freeze it: per-species
    energies (eV) and, for a charge-aware model (``charge_name``: the database's per-atom
    charges), the energy per unit of total charge (eV/e), the weight of the charge input
    column (sum_i q_i = Q), and with ``charge_hardness`` (the model's module) its
    curvature in Q (eV/e^2). ``energy_name`` is the database's energy target (eV), from which
    the fixed repulsive core's energy (``core_name``, eV per system) is taken first: the
    network's terms fit what the core leaves. The interacting terms are scaled down by
    ``decay_factor`` per layer, as hippynn's ``hierarchical_energy_initialization`` does.
    Returns the weights."""
    module = henergy.torch_module
    encoder = find_unique_relative(henergy, Encoder, "fitting the energy reference").torch_module
    train = database.splits["train"]
    species = train[find_unique_relative(henergy, SpeciesNode, "fitting the energy reference").db_name]
    energy = train[energy_name].reshape(-1)
    if core_name is not None:
        energy = energy - train[core_name].reshape(-1)
    one_hot, _ = encoder(species)
    total_charge = None if charge_name is None else train[charge_name].reshape(len(energy), -1).sum(dim=1)
    weights = energy_reference_weights(one_hot.sum(dim=1), energy, total_charge,
                                       charge_hardness=charge_hardness is not None)
    if charge_hardness is not None:
        charge_hardness.eta.data.fill_(float(weights[-1]))
        weights = weights[:-1]
    layer = module.layers[0]
    if layer.weight.shape[-1] != len(weights):
        raise HipqeqError(f"energy reference: {len(weights)} fitted weights for a zeroth layer of "
                          f"{layer.weight.shape[-1]} inputs")
    layer.weight.data = weights.to(layer.weight.dtype).reshape(1, -1)
    freeze_energy_reference(henergy)
    for later in module.layers[1:]:
        later.weight.data *= decay_factor
        if later.bias is not None:
            later.bias.data *= decay_factor
        decay_factor *= decay_factor
    return weights


def freeze_energy_reference(henergy) -> None:
    """Keep the zeroth (per-species, non-interacting) energy term of ``henergy`` fixed."""
    henergy.torch_module.layers[0].weight.requires_grad_(False)


def load_initial_weights(model: torch.nn.Module, init_from: str | os.PathLike, stage: str,
                         charge_model: str | os.PathLike | None) -> None:
    """Load the weights of the trained model directory ``init_from`` into ``model`` (built
    from this run's config and dataset). It must hold a model of ``stage`` with the same
    species and network, and a short range the charge model it was trained with: its
    targets are E - E_elec of that charge model. A short range with the
    environment-dependent charge energy or the charge hardness may start from one without
    them: they start at zero (the global term alone, as in the stored model), and the
    energy reference refit before stage two sets the hardness."""
    init_from = Path(init_from)
    meta = read_metadata(init_from)
    if meta["kind"] != stage:
        raise HipqeqError(f"--init-from {init_from}: holds a {meta['kind']} model, not a {stage} one")
    if stage == "short-range":
        charge_meta = Path(charge_model) / "model.json"
        if meta["charge_model"]["sha256"] != file_sha256(charge_meta):
            raise HipqeqError(f"--init-from {init_from}: was trained with another charge model than "
                              f"{charge_model} (its targets are E - E_elec of that model); pass "
                              f"--charge-model {init_from / CHARGE_MODEL_DIR}")
    load_weights(init_from / "weights.pt", model, retrain=(
        "--init-from needs a model of this config's network and of the dataset's species "
        "(training.network; the elements of --dataset)"), fresh=("charge_energy", "charge_hardness"))


def refit_energy_reference(model: ShortRangeModel, records: list[dict],
                           charge_model: ChargeModel | None = None) -> dict:
    """Refit the fixed zeroth energy term of a trained energy ``model`` to its residuals
    on the training ``records`` (dataset rows): least squares of E_label - E_model on the
    species counts (and, for a charge-aware model, the total charge, and Q^2 / 2 with a
    charge hardness), added to the term's weights and the hardness
    (:func:`energy_reference_weights`). The network, forces and charges
    are untouched; the training rows' energy residuals lose every component a change of
    per-species energies (and the energy per unit of charge) can remove, which the
    network's slow, noisy drift of a constant per atom otherwise leaves (tens of
    meV/atom when forces dominate the loss). E_model is the deployed evaluation
    (:func:`hipqeq.models.potential.evaluate`; E_elec of ``charge_model`` under each
    label's boundary). Returns the record of :func:`hipqeq.training.common.reference_refit`."""
    potential = Potential(model.eval(), charge_model)
    residuals, counts, totals = [], [], []
    for record in records:
        atoms = atoms_from_record(record)
        with torch.no_grad():
            one_hot = model.one_hot(torch.as_tensor(atoms.numbers))
        counts.append(one_hot.sum(dim=0).to(torch.float64))
        residuals.append(record["energy"] - evaluate(potential, atoms, charge_pbc=label_pbc(record))["energy"])
        totals.append(record["total_charge"])
    weights, refit = reference_refit(torch.stack(counts), torch.tensor(residuals, dtype=torch.float64),
                                      torch.tensor(totals) if model.charge_features else None,
                                      charge_hardness=model.charge_hardness is not None)
    if model.charge_hardness is not None:
        model.charge_hardness.eta.data += float(weights[-1])
        weights = weights[:-1]
    layer = model.energy.layers[0]
    layer.weight.data += weights.to(layer.weight.dtype).reshape(1, -1)
    return refit


def core_energies(model: ShortRangeModel, arrays: dict) -> np.ndarray:
    """Energy (eV) of ``model``'s fixed repulsive core for every system of the training
    arrays (:func:`hipqeq.training.data.training_arrays`), on the pairs the training
    graph's periodic pair finder sees (``pair_cell``, periodic in all three directions)."""
    energies = np.zeros(len(arrays["Z"]))
    for system, (numbers, positions, cell) in enumerate(zip(arrays["Z"], arrays["R"], arrays["pair_cell"])):
        real = numbers > 0
        positions = torch.as_tensor(positions[real], dtype=torch.float64)
        cell = torch.as_tensor(cell, dtype=torch.float64)
        first, second, shifts = neighbor_pairs(positions, cell, (True, True, True), model.core.range_A)
        _, distances = pair_geometry(positions, cell, first, second, shifts)
        mol_index = torch.zeros(len(positions), dtype=torch.long)
        with torch.no_grad():
            core = model.core(model.one_hot(torch.as_tensor(numbers[real])), distances, first, second, mol_index, 1)
        energies[system] = float(core.sum())
    return energies


def _energy_losses(graph, force_weight: float, l2_weight: float):
    """Training loss and validation metrics of an energy model (the L2 penalty in the
    training loss only, so that the validation loss measures the fit)."""
    network = graph.henergy.parents[0]
    fit_loss = (hippynn_loss.MSELoss.of_node(graph.energy_per_atom)
                + force_weight * hippynn_loss.MSELoss.of_node(graph.forces))
    metrics = {STOPPING_KEY: fit_loss, **_rmse_mae(graph.energy_per_atom, "E_per_atom"),
               **_rmse_mae(graph.forces, "F")}
    return fit_loss + l2_weight * _l2(network), metrics


def _charge_losses(model: ChargeModel, dipole_weight: float, l2_weight: float):
    """Training loss and validation metrics of a charge model."""
    graph = charge_graph(model)
    charges = graph.qeq.charges
    fit_loss = hippynn_loss.MSELoss.of_node(charges)
    metrics = _rmse_mae(charges, "q")
    if dipole_weight > 0:
        dipole = graph.qeq.dipoles
        fit_loss = fit_loss + dipole_weight * hippynn_loss.MSELoss.of_node(dipole)
        metrics.update(_rmse_mae(dipole, "D"))
    metrics[STOPPING_KEY] = fit_loss
    return fit_loss + l2_weight * _l2(graph.network), metrics


def electrostatic_labels(charge_model_dir: str | os.PathLike, atoms_list, charge_pbc=None) -> Iterator[dict]:
    """For each structure in turn, E_elec(q*) (``energy``, eV), its forces (``forces``,
    eV/A) and the charges (e) of a frozen charge model (:func:`hipqeq.models.potential.evaluate`
    results), and the charges' Jacobian ``charge_jacobian`` (n, n, 3) e/A
    (:func:`hipqeq.models.potential.charge_response`): what the short-range stage
    subtracts from the labels and feeds its charge-aware network.

    The model is loaded once and evaluated as the deployed potential loads and evaluates
    its charge model (stored dtype, total charge from ``atoms.info``, the deployed default
    solver choice), with the charge solve's boundary from ``charge_pbc`` (one ``pbc`` per
    structure: the labels' own, see :func:`hipqeq.data.label_pbc`) or each structure's
    ``pbc``.
    """
    model = load_model(charge_model_dir, kind="charges")
    potential = Potential(None, model).eval()
    boundaries = [None] * len(atoms_list) if charge_pbc is None else charge_pbc
    for atoms, pbc in tqdm(zip(atoms_list, boundaries), total=len(atoms_list),
                           desc="E_elec and charge response of the charge model", unit="frame", leave=False):
        result = evaluate(potential, atoms, charge_pbc=pbc)
        _, result["charge_jacobian"] = charge_response(model, atoms, pbc)
        yield result


def _short_range_inputs(table, arrays: dict, charge_model_dir: Path) -> None:
    """Replace the energy and force targets by E - E_elec(q*) and F - F_elec of the frozen
    charge model, and add the charge-aware network's inputs ``q_model`` (n_sys, n_max, 1)
    e and ``dq_dR`` (n_sys, n_max, n_max, 3) e/A (:func:`electrostatic_labels`), each
    under the boundary its label was computed with (``label_pbc``): the label holds the
    engine's electrostatics under that boundary, so that is what comes off. Memory of
    ``dq_dR``: 3 n_max^2 numbers per structure (about 0.3 MB in float32 for 150-atom
    cells, 1.4 GB for 5,000 of them)."""
    records = table.to_pylist()
    frames = [atoms_from_record(record) for record in records]
    n_sys, n_max = arrays["Z"].shape
    arrays["q_model"] = np.zeros((n_sys, n_max, 1))
    arrays["dq_dR"] = np.zeros((n_sys, n_max, n_max, 3))
    for k, result in enumerate(electrostatic_labels(charge_model_dir, frames, [label_pbc(r) for r in records])):
        n = int(arrays["n_atoms"][k])
        arrays["T"][k, 0] -= result["energy"]
        arrays["F"][k, :n] -= result["forces"]
        arrays["q_model"][k, :n, 0] = result["charges"]
        arrays["dq_dR"][k, :n, :n] = result["charge_jacobian"]
    arrays["T_per_atom"] = arrays["T"] / arrays["n_atoms"][:, None]


def train_model(stage: str, config: dict, dataset: str | os.PathLike, splits: str | os.PathLike,
                member: int, output: str | os.PathLike, charge_model: str | os.PathLike | None = None,
                device: str = "auto", seed: int | None = None, init_from: str | os.PathLike | None = None) -> dict:
    """Train one model and write its model directory (see :mod:`hipqeq.models.store`; the
    MACE peer's: :mod:`hipqeq.models.mace`).

    Energy models whose fit settings have a ``stage_two`` train on from the main
    schedule's best weights with its settings (:func:`stage_two_settings`); each schedule
    ends with the refit of the zeroth energy term (:func:`refit_energy_reference`).
    ``init_from``: a trained model directory of the same stage, network and species to
    start from instead of fresh weights (its energy reference refit first where stage two
    follows); only stage two runs then, or the main schedule where there is none.

    An interrupted run resumes from its checkpoint ``<output>.resume.pt``
    (:mod:`hipqeq.training.checkpoint`; ``<output>.stage_two.resume.pt`` in stage two).
    Returns a summary dict (best_epoch, best_valid_loss, n_train, n_valid, wall_time_s of
    this process, epochs_resumed).
    """
    if stage not in STAGES:
        raise HipqeqError(f"unknown training stage {stage!r}; choose one of {', '.join(STAGES)}")
    if stage != "short-range" and charge_model is not None:
        raise HipqeqError(f"--charge-model is only used by short-range, not {stage}")
    if stage == "mace":  # the peer model: mace-torch, not hippynn
        from hipqeq.training.mace import train_mace

        return train_mace(config, dataset, splits, member, output, device=device, seed=seed, init_from=init_from)
    if stage == "short-range" and charge_model is None:
        raise HipqeqError("train short-range needs --charge-model DIR, a trained charge model directory")
    if stage == "charges" and init_from is not None:
        raise HipqeqError("--init-from applies to the energy models (short-range, baseline, mace), "
                          "not the charge model")
    started = time.perf_counter()
    training = config["training"]
    fit_settings = dict(fit_section(config, stage))
    dtype = getattr(torch, training["dtype"])
    run_seed = member_seed(config, stage, member, seed)
    torch_device = resolve_device(device)
    torch.manual_seed(run_seed)
    output = Path(output)
    checkpoint = TrainingCheckpoint(output, run_fingerprint(
        [dataset, splits, *(p for p in (charge_model, init_from) if p is not None)],
        stage=stage, member=member, seed=run_seed, training=training))

    table, split_names, species = load_stage_table(stage, dataset, splits, member)
    trained_species = dataset_species(table.filter(pa.array(split_names == "train")))
    untrained = sorted(set(species) - set(trained_species))
    if untrained:
        log.warning("%s: %s occur only in rows that do not train (valid, test or failed rows); the "
                    "model knows them but their per-species parameters stay untrained",
                    Path(dataset).name, _element_names(untrained))
    if stage == "short-range":
        species = short_range_species(dataset, species, charge_model)
    cutoff = training["network"]["cutoff_A"]
    arrays = training_arrays(table, cutoff, dtype=np.float64)
    network_hp = network_hyperparameters(training["network"], species)
    before_training = None
    if stage == "charges":
        model = ChargeModel(charge_hyperparameters(network_hp, training["qeq_tolerance"],
                                                   training["qeq_parameters"])).to(dtype)
        arrays["D"] = np.einsum("sa,sax->sx", arrays["q"][..., 0], arrays["R"])
        train_loss, metrics = _charge_losses(model, fit_settings["dipole_weight"], fit_settings["l2_weight"])
    else:
        if stage == "short-range":
            _short_range_inputs(table, arrays, Path(charge_model))
            network_hp["charge_features"] = True
            network_hp["charge_energy"] = training["network"]["charge_energy"]
            network_hp["charge_hardness"] = training["network"]["charge_hardness"]
        network_hp["repulsive_core"] = training["network"]["repulsive_core"]
        model = ShortRangeModel(network_hp).to(dtype)
        graph = short_range_graph(model)
        train_loss, metrics = _energy_losses(graph, fit_settings["force_weight"], fit_settings["l2_weight"])

        if model.core is not None:
            arrays["E_core"] = core_energies(model, arrays)

        def before_training(database):
            fit_energy_reference(graph.henergy, database, graph.energy.db_name,
                                 "q_model" if model.charge_features else None,
                                 "E_core" if model.core is not None else None,
                                 charge_hardness=model.charge_hardness)

        if init_from is not None:
            load_initial_weights(model, init_from, stage, charge_model)
            freeze_energy_reference(graph.henergy)
            before_training = None

    arrays = {k: v.astype(training["dtype"]) if v.dtype == np.float64 else v for k, v in arrays.items()}
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    description = f"train {stage} (member {member})"
    stage_two = None if stage == "charges" else stage_two_settings(fit_settings)
    results, refits = [], []
    if stage != "charges":
        charges = None if charge_model is None else load_model(charge_model, kind="charges").to(torch_device)
        train_rows = table.filter(pa.array(split_names == "train")).to_pylist()

    def refit_reference() -> None:
        refits.append(refit_energy_reference(model, train_rows, charges))
        log.info("%s: energy reference refit to the %d training rows: energy RMSE %.2f -> %.2f meV/atom",
                 description, len(train_rows), *refits[-1]["train_rmse_meV_per_atom"])

    if init_from is None or stage_two is None:
        results.append(fit(train_loss, metrics, arrays, split_names, fit_settings, torch_device,
                           output / "hippynn", run_seed, before_training=before_training,
                           description=description, checkpoint=checkpoint))
    if stage != "charges":
        refit_reference()
    if stage_two is not None:
        train_loss, metrics = _energy_losses(graph, stage_two["force_weight"], stage_two["l2_weight"])
        seed_stage_two(run_seed)
        results.append(fit(train_loss, metrics, arrays, split_names, stage_two, torch_device,
                           output / "hippynn" / "stage_two", run_seed, description=f"{description}, stage two",
                           checkpoint=TrainingCheckpoint(stage_two_output(output), checkpoint.fingerprint)))
        refit_reference()
    result = joined_history(results, first_stage=2 if init_from is not None and stage_two is not None else 1)
    model.to("cpu")
    n_train, n_valid = int((split_names == "train").sum()), int((split_names == "valid").sum())
    metadata = {
        "dtype": training["dtype"],
        "units": {k: DATASET_UNITS[k] for k in ("energy", "forces", "stress", "charges", "positions")},
        "dataset": {"path": str(dataset), "sha256": file_sha256(dataset)},
        "split": {"path": str(splits), "sha256": file_sha256(splits), "member": member,
                  "n_train": n_train, "n_valid": n_valid, "valid_is_train": result.valid_is_train},
        "seed": run_seed,
        "device": str(torch_device),
        "best_epoch": result.best_epoch,
        "best_valid_loss": result.best_valid_loss,
        "epochs_run": len(result.history),
        "epochs_resumed": result.resumed_epochs,
        "stage_two": stage_two,
        "energy_reference_refits": refits,
        "init_from": None if init_from is None else {
            "path": str(init_from), "sha256": file_sha256(Path(init_from) / "weights.pt")},
        "hipqeq_version": __version__,
        "hippynn_version": hippynn_version,
        "torch_version": torch.__version__,
    }
    if stage == "short-range":
        charge_meta = (Path(charge_model) / "model.json")
        shutil.copytree(charge_model, output / CHARGE_MODEL_DIR,
                        ignore=shutil.ignore_patterns("hippynn"))
        metadata["charge_model"] = {"path": str(charge_model), "sha256": file_sha256(charge_meta)}
    save_model(output, stage, model, metadata, fit_settings)
    write_curves(result.history, output, f"{stage} member {member}")
    checkpoint.remove()
    checkpoint_path(stage_two_output(output)).unlink(missing_ok=True)
    wall = time.perf_counter() - started
    log.info("trained %s model (member %d) on %d rows (valid %d) in %.1f s; best epoch %d",
             stage, member, n_train, n_valid, wall, result.best_epoch)
    return {"best_epoch": result.best_epoch, "best_valid_loss": result.best_valid_loss,
            "n_train": n_train, "n_valid": n_valid, "wall_time_s": wall,
            "epochs_resumed": result.resumed_epochs}


def stage_one_dir(output: str | os.PathLike) -> Path:
    """Where :func:`finish_stage_two` keeps the first-stage model of ``output``."""
    output = Path(output)
    return output.with_name(f"{output.name}_stage_one")


def finish_stage_two(stage: str, config: dict, output: str | os.PathLike, **train_kwargs) -> dict | None:
    """Bring the finished ``stage`` model in ``output``, trained before its fit settings
    had a ``stage_two``, up to them: the model moves to :func:`stage_one_dir` and stage two
    trains from it into ``output`` (:func:`train_model` with ``init_from``, a whole run's
    second half). A run stopped in between (``output`` gone, the stage-one model kept)
    goes on from its checkpoint. Returns :func:`train_model`'s summary, or None where
    nothing was to do: the model already has a stage two, or its settings ask for none.
    ``train_kwargs``: :func:`train_model`'s other arguments (dataset, splits, member, ...).
    """
    output, stage_one = Path(output), stage_one_dir(output)
    if stage_two_settings(fit_section(config, stage)) is None:  # the charge model never has one
        return None
    if (output / "model.json").exists():
        if read_json(output / "model.json").get("stage_two") is not None:
            return None
        if stage_one.exists():
            raise HipqeqError(f"{output}: a first-stage model without stage two, but {stage_one} exists too; "
                              "remove the one that is not the first stage of the other")
        output.rename(stage_one)
    elif not (stage_one / "model.json").exists():
        raise HipqeqError(f"{output}: no trained {stage} model to finish with stage two (nor {stage_one})")
    log.info("%s: stage two from the first-stage model in %s", output, stage_one)
    return train_model(stage, config, output=output, init_from=stage_one, **train_kwargs)
