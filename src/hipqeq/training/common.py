"""What every training stage shares, HIP-NN or MACE: seeds, the stopping metric's name
and the training-curve files of the model directory."""

from __future__ import annotations

import csv
from pathlib import Path

from hipqeq.seeds import derive_seed

#: The stopping metric (hippynn's name for the validation loss used for early stopping).
STOPPING_KEY = "Loss"


def member_seed(config: dict, stage: str, member: int, seed: int | None = None) -> int:
    """The training seed of a stage's committee member: :func:`hipqeq.seeds.derive_seed`
    of the master seed (``seed`` if given, else the config's), "train", stage and member."""
    return derive_seed(config["seed"] if seed is None else seed, "train", stage, member)


def write_curves(history: list[dict], model_dir: Path, title: str) -> None:
    """``training_curves.csv`` (one row per epoch: epoch, lr, train_<metric>,
    valid_<metric>) and ``training_curves.png`` (train and valid :data:`STOPPING_KEY`)."""
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
