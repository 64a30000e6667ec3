"""One hippynn training run: database, controller, early stopping, per-epoch log.

hippynn's ``setup_training`` / ``train_model`` do the work (Adam, a learning rate cut by
half after ``patience`` epochs without validation improvement, stop after
``termination_patience``, best weights restored at the end). Their console output goes
to ``hippynn/hippynn.log`` in the model directory; this module shows one tqdm bar over
epochs with the current losses and logs each epoch's losses. Given a
:class:`~hipqeq.training.checkpoint.TrainingCheckpoint`, a run saves its state after every
epoch it goes on from and resumes from a saved state. A run that stops before its
controller says so (hippynn ends training quietly on Ctrl-C) raises instead of returning
a half-trained model.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import hipqeq.models  # noqa: F401  (configures hippynn before its first import)
from hippynn import settings as hippynn_settings
from hippynn.databases import Database
from hippynn.experiment import assemble_for_training
from hippynn.experiment.controllers import PatienceController
from hippynn.experiment.routines import SetupParams, setup_training, train_model
from hippynn.tools import active_directory

from hipqeq.errors import HipqeqError
from hipqeq.training.checkpoint import TrainingCheckpoint
from hipqeq.training.common import STOPPING_KEY, FitResult
from hipqeq.training.data import train_valid_rows

log = logging.getLogger(__name__)

#: hippynn evaluates a random fraction of the training set each epoch; small sets are
#: evaluated whole (the fraction falls from 1 to 0.1 as the set grows to this size).
FULL_TRAIN_EVAL_ROWS = 256


def _database(arrays: dict, splits: np.ndarray, db_info: dict, seed: int) -> tuple[Database, bool]:
    """A hippynn Database split into train and valid as ``splits`` says (an empty side
    falls back as :func:`hipqeq.training.data.train_valid_rows` says)."""
    train, valid, valid_is_train = train_valid_rows(splits)
    order = np.concatenate([train, valid])
    arr = {k: v[order] for k, v in arrays.items()}
    arr["indices"] = np.arange(len(order))
    db = Database(arr, inputs=db_info["inputs"], targets=db_info["targets"], seed=seed,
                  quiet=True, pin_memory=False, allow_unfound=False)
    db.make_explicit_split("valid", torch.arange(len(train), len(order)))
    db.split_the_rest("train")
    return db, valid_is_train


def fit(train_loss, validation_losses: dict, arrays: dict, splits: np.ndarray, fit_settings: dict,
        device: torch.device, workdir: Path, seed: int, before_training=None,
        description: str = "training", checkpoint: TrainingCheckpoint | None = None) -> FitResult:
    """Train the graph behind ``train_loss`` on ``arrays`` (hippynn database arrays).

    ``validation_losses`` maps metric names to loss nodes and must contain
    :data:`STOPPING_KEY`. ``before_training(database)`` runs once the database exists
    (e.g. to fit per-species energy references). hippynn's files go to ``workdir``.
    ``checkpoint``: where to save the state after each epoch and resume from.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    hippynn_log = open(workdir / "hippynn.log", "w")
    with hippynn_log, contextlib.redirect_stdout(hippynn_log):
        return _fit(train_loss, validation_losses, arrays, splits, fit_settings, device, workdir,
                    seed, before_training, description, checkpoint)


def _fit(train_loss, validation_losses, arrays, splits, fit_settings, device, workdir, seed,
         before_training, description, checkpoint) -> FitResult:
    training_modules, db_info = assemble_for_training(train_loss, validation_losses)
    database, valid_is_train = _database(arrays, splits, db_info, seed)
    n_train = int((splits == "train").sum())
    model = training_modules.model
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                                 lr=fit_settings["learning_rate"])
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5,
                                                           patience=fit_settings["patience"])
    controller = PatienceController(
        optimizer=optimizer, scheduler=scheduler, batch_size=fit_settings["batch_size"],
        eval_batch_size=fit_settings["batch_size"], max_epochs=fit_settings["max_epochs"],
        stopping_key=STOPPING_KEY, termination_patience=fit_settings["termination_patience"],
        fraction_train_eval=min(1.0, max(0.1, FULL_TRAIN_EVAL_ROWS / max(n_train, 1))), quiet=True)

    history: list[dict] = []
    resumed_epochs = 0
    bar = tqdm(total=fit_settings["max_epochs"], desc=description, unit="epoch", leave=False)

    def record_epoch(epoch: int, new_best: bool) -> None:
        metrics = tracker.epoch_metric_values[-1]
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        for split in ("train", "valid"):
            row.update({f"{split}_{name}": float(value) for name, value in metrics[split].items()})
        history.append(row)
        bar.update(1)
        bar.set_postfix(train=f"{row['train_' + STOPPING_KEY]:.4g}", valid=f"{row['valid_' + STOPPING_KEY]:.4g}")
        log.info("%s epoch %d: train loss %.6g, valid loss %.6g, lr %.3g%s", description, epoch,
                 row["train_" + STOPPING_KEY], row["valid_" + STOPPING_KEY], row["lr"],
                 " (best)" if new_best else "")
        if checkpoint is not None and controller.current_epoch < controller.max_epochs:
            if new_best:  # hippynn records the new best weights only after the callbacks
                tracker.best_model = copy.deepcopy(model.state_dict())
            checkpoint.save(history, model=model.state_dict(), controller=controller.state_dict(),
                            metric_tracker=tracker)

    saved_progress = hippynn_settings.PROGRESS
    hippynn_settings.PROGRESS = None  # one epoch bar here instead of hippynn's batch bars
    try:
        with active_directory(str(workdir)):
            if before_training is not None:
                before_training(database)
            training_modules, controller, tracker = setup_training(
                training_modules, SetupParams(controller=controller, device=device))
            state = None if checkpoint is None else checkpoint.load()
            if state is not None:
                model.load_state_dict(state["model"])
                controller.load_state_dict(state["controller"])
                tracker = state["metric_tracker"]
                history.extend(state["history"])
                resumed_epochs = len(history)
                bar.update(resumed_epochs)
            train_model(training_modules, database, controller, tracker, callbacks=[record_epoch],
                        batch_callbacks=None, store_metrics=False, quiet=True)
    finally:
        hippynn_settings.PROGRESS = saved_progress
        bar.close()
    if controller.current_epoch < controller.max_epochs:
        resume = "" if checkpoint is None else f"; rerun to resume from {checkpoint.path}"
        raise HipqeqError(f"{description}: interrupted after {len(history)} epochs, no model written{resume}")
    losses = [row["valid_" + STOPPING_KEY] for row in history]
    best = int(np.argmin(losses))
    return FitResult(history, best, float(losses[best]), valid_is_train, resumed_epochs)
