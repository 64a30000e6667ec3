"""Resuming an interrupted training run (``hipqeq train`` stopped by a SLURM time limit, a
lost node or the end of an interactive session).

After every epoch that training goes on from, the run's state (weights, optimizer and
learning-rate schedule, early-stopping counters, the per-epoch history, the best weights so
far and torch's random state) is written to ``<output>.resume.pt`` beside the model
directory: outside it, because Snakemake deletes an incomplete job's outputs before it
reruns the job. The next ``hipqeq train`` with the same output continues from there. On CPU
the resumed run ends with the weights an uninterrupted run would have: the random state
restored, the same batches come in the same order.

A checkpoint written for other inputs (dataset, split, charge model, training settings,
stage, member, seed or hipqeq version), or one that cannot be read, is not resumed:
training starts afresh with a warning naming the file. The file is removed once the model
directory is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from hipqeq import __version__
from hipqeq.models.store import model_files
from hipqeq.training.data import file_sha256

log = logging.getLogger(__name__)


def checkpoint_path(output: str | os.PathLike) -> Path:
    """Where the training run writing model directory ``output`` keeps its checkpoint (an
    absolute path: hippynn trains in its own working directory)."""
    return Path(f"{Path(output).absolute()}.resume.pt")


def _input_files(path: Path) -> list[Path]:
    """``path``, or the files of the model in a directory (:func:`hipqeq.models.store.model_files`)."""
    return model_files(path) if path.is_dir() else [path]


def run_fingerprint(inputs: list[str | os.PathLike], **settings) -> str:
    """sha256 of what a training run's outcome depends on: the contents of the ``inputs``
    files and directories, the ``settings`` (JSON-serialisable) and the hipqeq version."""
    digest = hashlib.sha256(json.dumps({**settings, "hipqeq_version": __version__},
                                       sort_keys=True, default=str).encode())
    for item in inputs:
        root = Path(item)
        for path in _input_files(root):
            digest.update(f"{path.relative_to(root) if path != root else path.name}:{file_sha256(path)}".encode())
    return digest.hexdigest()


class TrainingCheckpoint:
    """The resumable state of the training run writing model directory ``output``,
    valid for inputs with ``fingerprint`` (:func:`run_fingerprint`)."""

    def __init__(self, output: str | os.PathLike, fingerprint: str):
        self.path = checkpoint_path(output)
        self.fingerprint = fingerprint

    def load(self) -> dict | None:
        """The saved state with torch's random state restored, or None when there is no
        checkpoint, or it cannot be read or was written for other inputs (then a warning
        says so)."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as error:  # e.g. written by another torch or hippynn version
            log.warning("%s cannot be read (%s: %s): not resuming it, training afresh", self.path,
                        type(error).__name__, error)
            return None
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            log.warning("%s was written for other training inputs (dataset, split, charge model, "
                        "settings, seed or hipqeq version): not resuming it, training afresh", self.path)
            return None
        torch.random.set_rng_state(state["torch_rng_state"])
        log.info("resuming training from %s after epoch %d", self.path, len(state["history"]) - 1)
        return state

    def save(self, history: list[dict], **state) -> None:
        """Write the state after the last epoch of ``history`` (atomically: a run killed
        while writing leaves the previous checkpoint)."""
        partial = self.path.with_name(self.path.name + ".partial")
        torch.save({**state, "history": history, "fingerprint": self.fingerprint,
                    "torch_rng_state": torch.random.get_rng_state()}, partial)
        os.replace(partial, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
