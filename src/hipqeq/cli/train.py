"""Train one model of the potential (the charge model, the short-range model or the
baseline) or the MACE peer model it is compared with.

Three HIP-NN stages trained with hippynn, and a MACE trained with mace-torch, each with
early stopping on the validation split and learning rate cuts on plateaus, writing a
self-contained model directory (weights, hyperparameters.json, species, units, dataset
hashes, split, training curves CSV + PNG, package version):

  charges      HIP-NN electronegativities + charge equilibration, fitted to reference
               charges (DFT by default; training.charge_reference: xtb selects xTB's)
  short-range  HIP-NN short-range energy fitted to E_xTB - E_elec(q*) and the matching
               forces, with the frozen charge model of --charge-model; the output
               directory is the complete 4G potential (the charge model is copied in)
  baseline     the same short-range HIP-NN on the full xTB energies and forces, no
               electrostatics (a second-generation potential to compare against)
  mace         a small MACE (training.peer: channels, max_L, layers; r_max the network
               cutoff) on the baseline's rows, energies and forces: a charge-blind peer
               from the field, validated next to the 4G potential (`hipqeq validate
               --peer`); needs the peer extra (pip install 'hipqeq[peer]')

Rows whose status is not ok, or whose needed labels are missing or NaN, are dropped
with a count in the log. Rows are assigned to train/valid/test by parent structure
from --splits; test rows are never read for training.

Energy models can end with an energy-weighted second stage (the fit section's
stage_two: more epochs from the best weights with another force_weight and learning
rate); --init-from starts from a trained model instead of training afresh.

A run saves its state after every epoch to OUTPUT.resume.pt (beside the model directory);
the same command run again after a kill, a time limit or Ctrl-C resumes from there (on CPU
to the weights an uninterrupted run gives) and removes the file once the model is written.

example:
  hipqeq train charges --config config/toy.yaml --dataset results/datasets/dft.parquet \\
      --splits results/splits.json --member 0 --output results/models/charges_0
  hipqeq train short-range --config config/toy.yaml --dataset results/datasets/xtb.parquet \\
      --splits results/splits.json --charge-model results/models/charges_0 --member 0 \\
      --output results/models/4g_0
  hipqeq train mace --config config/toy.yaml --dataset results/datasets/xtb.parquet \\
      --splits results/splits.json --member 0 --output results/models/mace_0
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hipqeq.cli._common import add_config_argument, add_device_argument, add_seed_argument, load
from hipqeq.training import STAGES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=STAGES, help="which model to train")
    add_config_argument(parser)
    parser.add_argument("--dataset", type=Path, required=True, metavar="FILE",
                        help="training dataset (Parquet, hipqeq dataset contract)")
    parser.add_argument("--splits", type=Path, required=True, metavar="JSON",
                        help="split by parent structure (hipqeq split output)")
    parser.add_argument("--member", type=int, default=0,
                        help="committee member index: picks the member's split and seed (default 0)")
    parser.add_argument("--charge-model", type=Path, metavar="DIR",
                        help="trained charge model directory (short-range only)")
    parser.add_argument("--output", "-o", type=Path, required=True, metavar="DIR",
                        help="model directory to write")
    parser.add_argument("--init-from", type=Path, metavar="DIR",
                        help="start from this trained model directory's weights (same stage, network "
                             "and species; short-range: trained with --charge-model) instead of "
                             "training afresh: with the config's stage_two only that stage runs "
                             "(refine a trained model), without it the main schedule does "
                             "(fine-tune, e.g. a pretrained potential on new labels)")
    add_device_argument(parser, "to train on")
    add_seed_argument(parser)


def run(args: argparse.Namespace) -> int:
    from hipqeq.training import train_model

    config = load(args)
    summary = train_model(args.stage, config, dataset=args.dataset, splits=args.splits,
                          member=args.member, output=args.output, charge_model=args.charge_model,
                          device=args.device, seed=args.seed, init_from=args.init_from)
    resumed = f" (resumed after {summary['epochs_resumed']} epochs)" if summary["epochs_resumed"] else ""
    print(f"trained {args.stage} model in {args.output}{resumed}: best epoch {summary['best_epoch']}, "
          f"best validation loss {summary['best_valid_loss']:.6g}")
    return 0
