"""Arguments and helpers shared by several verbs."""

from __future__ import annotations

import argparse
from pathlib import Path


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1 (argparse names the option and exits 2 otherwise)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse ``type``: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0 (temperatures in K, time steps, frictions)."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def add_config_argument(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--config FILE``: the workflow config the verb reads its settings from."""
    parser.add_argument("--config", type=Path, required=required, metavar="FILE",
                        help="workflow config (YAML), validated against the package schema; "
                             "e.g. config/toy.yaml")


def add_model_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--model DIR [DIR ...]``: the model directories a verb evaluates (several: a committee)."""
    parser.add_argument("--model", type=Path, nargs="+", required=True, metavar="DIR", help=help)


def add_output_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--output FILE`` for a verb that writes one dataset file."""
    parser.add_argument("--output", "-o", type=Path, required=True, metavar="FILE",
                        help=f"{what} (Parquet, hipqeq dataset contract)")


def add_seed_argument(parser: argparse.ArgumentParser) -> None:
    """``--seed N`` overriding the config's master seed for this job."""
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed (default: derived from the config's seed)")


def load(args: argparse.Namespace) -> dict:
    """The validated config named by ``args.config``."""
    from hipqeq.config import load_config

    return load_config(args.config)


def add_device_argument(parser: argparse.ArgumentParser, use: str) -> None:
    """``--device``: the torch device ``use`` runs on (checked by the model code)."""
    parser.add_argument("--device", default="auto",
                        help=f"torch device {use}: auto (CUDA when present), cpu, cuda, cuda:1 "
                             "(default auto)")
