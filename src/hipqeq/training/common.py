"""What every training stage shares, HIP-NN or MACE: seeds, the stopping metric's name
and the training-curve files of the model directory."""

from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path

import torch

from hipqeq.seeds import derive_seed

log = logging.getLogger(__name__)

#: The stopping metric (hippynn's name for the validation loss used for early stopping).
STOPPING_KEY = "Loss"


@dataclasses.dataclass
class FitResult:
    """Per-epoch history (list of dicts: epoch, lr, train_<metric>, valid_<metric>),
    the best epoch (0-based) and its validation loss, whether valid was the train set, and
    how many epochs came from a checkpoint (0 for a run from the start)."""

    history: list[dict]
    best_epoch: int
    best_valid_loss: float
    valid_is_train: bool
    resumed_epochs: int = 0


def member_seed(config: dict, stage: str, member: int, seed: int | None = None) -> int:
    """The training seed of a stage's committee member: :func:`hipqeq.seeds.derive_seed`
    of the master seed (``seed`` if given, else the config's), "train", stage and member."""
    return derive_seed(config["seed"] if seed is None else seed, "train", stage, member)


def fit_section(config: dict, stage: str) -> dict:
    """The config's fit settings of a training stage: ``training.charges`` for the charge
    model, ``training.peer.fit`` for the MACE peer (``mace``), ``training.short_range``
    for the short range and the baseline, which train alike."""
    training = config["training"]
    if stage == "mace":
        return training["peer"]["fit"]
    return training["charges" if stage == "charges" else "short_range"]


def stage_two_settings(fit_settings: dict) -> dict | None:
    """The fit settings of an energy model's second stage (``stage_two`` of the config's
    fit section: max_epochs, learning_rate, force_weight; the main stage's batch size and
    patience), or None where it has none."""
    two = fit_settings.get("stage_two")
    if two is None:
        return None
    return {**{k: v for k, v in fit_settings.items() if k != "stage_two"}, **two}


def seed_stage_two(run_seed: int) -> None:
    """Seed torch's generator (batch order) for stage two from the run's seed, so that the
    stage depends on its starting weights only: a whole run's stage two and stage two
    alone from that run's first-stage model (``init_from``) train alike."""
    torch.manual_seed(derive_seed(run_seed, "stage_two"))


def stage_two_output(output: Path) -> Path:
    """Where the second stage of the run writing ``output`` keeps its checkpoint: a name
    of its own, so that a rerun resumes the stage it was in."""
    return output.with_name(f"{output.name}.stage_two")


def write_curves(history: list[dict], model_dir: Path, title: str) -> None:
    """``training_curves.csv`` (one row per epoch: epoch, lr, train_<metric>,
    valid_<metric>, and ``stage`` 1 or 2 where a second stage ran; the loss of each row is
    its own stage's) and ``training_curves.png`` (train and valid :data:`STOPPING_KEY`)."""
    with open(model_dir / "training_curves.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for split in ("train", "valid"):
        ax.plot(epochs, [row[f"{split}_{STOPPING_KEY}"] for row in history], label=split)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(model_dir / "training_curves.png", dpi=120)
    plt.close(fig)


def joined_history(results: list[FitResult], first_stage: int = 1) -> FitResult:
    """One :class:`FitResult` of consecutive stages of a run (the main schedule, then the
    energy-weighted stage two, or stage two alone), numbered ``first_stage`` on: their
    epochs in one history (numbered on, each row with its ``stage``), the best epoch the
    last stage's (its weights are the ones kept), resumed epochs summed."""
    if len(results) == 1 and first_stage == 1:
        return results[0]
    history = []
    for stage, result in enumerate(results, start=first_stage):
        offset = len(history)
        history.extend({**row, "epoch": offset + row["epoch"], "stage": stage} for row in result.history)
    last = results[-1]
    return FitResult(history, len(history) - len(last.history) + last.best_epoch, last.best_valid_loss,
                     last.valid_is_train, sum(r.resumed_epochs for r in results))


def reference_design(counts: torch.Tensor, total_charge_e: torch.Tensor | None = None,
                     charge_hardness: bool = False) -> torch.Tensor:
    """The design matrix of the zeroth energy term: species ``counts`` (n_rows,
    n_species) and, where given, the total charges Q (e, rounded to 1e-4 e: see
    :func:`energy_reference_weights`) as a further column, and with ``charge_hardness``
    Q^2 / 2 as the last."""
    columns = [counts.to(torch.float64)]
    if total_charge_e is not None:
        columns.append(torch.round(total_charge_e.to(torch.float64).reshape(-1, 1) * 1e4) / 1e4)
        if charge_hardness:
            columns.append(columns[-1] ** 2 / 2)
    elif charge_hardness:
        raise ValueError("a charge hardness needs the total charges")
    return torch.cat(columns, dim=1)


def energy_reference_weights(counts: torch.Tensor, energy_eV: torch.Tensor,
                             total_charge_e: torch.Tensor | None = None, per_atom: bool = False,
                             charge_hardness: bool = False) -> torch.Tensor:
    """Least-squares per-species energies (eV) from the species ``counts`` (n_rows,
    n_species) and, when ``total_charge_e`` (n_rows,) is given, the energy per unit of
    total charge (eV/e, the next weight) and with ``charge_hardness`` the energy's
    curvature in the total charge (eV/e^2, the last: E = ... + mu_Q Q + eta_Q Q^2 / 2);
    the minimum-norm solution where the rows do not determine a weight (an absent species
    gets 0 eV; a charge state seen in one composition only leaves its split between Q and
    that composition to the network).

    ``per_atom``: fit the energies per atom (rows divided by their atom counts), as the
    training loss weighs them.

    The total charges are rounded to 1e-4 e: summed float32 charges are off by ~1e-7 e,
    which would make a rank-deficient design look determined, with weights of 1e5 eV."""
    design = reference_design(counts, total_charge_e, charge_hardness)
    energy_eV = energy_eV.to(torch.float64).reshape(-1)
    if per_atom:
        atoms = counts.to(torch.float64).sum(dim=1)
        design, energy_eV = design / atoms[:, None], energy_eV / atoms
    present = design.abs().sum(dim=0) > 0
    rank = int(torch.linalg.matrix_rank(design[:, present]))
    if rank < int(present.sum()):
        log.warning("energy reference: the %d training rows determine %d of %d weights (species present%s): "
                    "structures whose composition and charge are not combinations of the training "
                    "ones get an extrapolated energy (see `hipqeq split`)", len(design), rank,
                    int(present.sum()), "" if total_charge_e is None else
                    " and the energy's terms in the total charge")
    return torch.linalg.pinv(design) @ energy_eV


def reference_refit(counts: torch.Tensor, residuals_eV: torch.Tensor,
                    total_charge_e: torch.Tensor | None = None,
                    charge_hardness: bool = False) -> tuple[torch.Tensor, dict]:
    """The shift of a trained model's zeroth energy term that fits its energy residuals
    (eV) on the training rows per atom (:func:`energy_reference_weights`), and what a model
    directory records of it: the rows' energy RMSE per atom (meV/atom) before and after
    (the fit minimises it) and the shift (eV per species in the model's species order,
    then eV/e for a charge-aware model, then eV/e^2 with a charge hardness)."""
    weights = energy_reference_weights(counts, residuals_eV, total_charge_e, per_atom=True,
                                       charge_hardness=charge_hardness)
    after = residuals_eV - reference_design(counts, total_charge_e, charge_hardness) @ weights
    n_atoms = counts.to(torch.float64).sum(dim=1)

    def rmse(values):
        return float(((values / n_atoms) ** 2).mean().sqrt() * 1e3)

    return weights, {"train_rmse_meV_per_atom": [rmse(residuals_eV), rmse(after)], "shift": weights.tolist()}
