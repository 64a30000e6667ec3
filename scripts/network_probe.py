"""Is the study's 4G short range short of capacity? Retrain member 0 with another HIP-NN.

Trains the 4G short-range model of committee member 0 (the study's frozen charge model 0,
its labels, split and schedule) with ``training.network`` widened, deepened or made
HIP-NN-TS (``--tensor-order``), for a fixed number of epochs, one thread, then validates
it on the held-out frames like `hipqeq validate`. Compare the training and validation
curves (training_curves.csv) with the study's own member 0 at the same epochs: a larger
network that fits the training rows better but not the validation rows says the model is
short of data, not of capacity.

    python scripts/network_probe.py --name deep3 --n-features 32 --n-sensitivities 20 \\
        --n-interaction-layers 3 --n-atom-layers 3 --epochs 200 --output-dir /tmp/probe
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from hipqeq.config import load_config
from hipqeq.plan import TEST_LABELS_DATASET, study_config, training_dataset
from hipqeq.training import train_model

HIPQEQ = str(Path(sys.executable).parent / "hipqeq")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, default=Path("studies/cspbi-gfn1"))
    parser.add_argument("--config", type=Path,
                        help="the study's config (default: STUDY/study.yaml, the one its run used)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--n-features", type=int, required=True)
    parser.add_argument("--n-sensitivities", type=int, required=True)
    parser.add_argument("--n-interaction-layers", type=int, required=True)
    parser.add_argument("--n-atom-layers", type=int, required=True)
    parser.add_argument("--lower-cutoff-A", type=float,
                        help="distance of the first sensitivity's midpoint (Angstrom; default: the config's)")
    parser.add_argument("--tensor-order", type=int, choices=(0, 1, 2),
                        help="1 or 2: HIP-NN-TS (pair directions in the interactions); default: the config's")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--output-dir", type=Path, required=True)
    args = parser.parse_args()
    args.config = study_config(args.study, args.config)

    torch.set_num_threads(1)
    config = load_config(args.config)
    config["training"]["network"].update(n_features=args.n_features, n_sensitivities=args.n_sensitivities,
                                         n_interaction_layers=args.n_interaction_layers,
                                         n_atom_layers=args.n_atom_layers)
    for key, value in (("lower_cutoff_A", args.lower_cutoff_A), ("tensor_order", args.tensor_order)):
        if value is not None:
            config["training"]["network"][key] = value
    config["training"]["short_range"]["max_epochs"] = args.epochs
    results = args.study / "results"
    model = args.output_dir / args.name
    summary = train_model("short-range", config, dataset=args.study / training_dataset(config),
                          splits=results / "splits.json", member=0, output=model,
                          charge_model=results / "models/charges_0", device="cpu")
    validation = args.output_dir / f"validation_{args.name}"
    subprocess.run([HIPQEQ, "validate", "--config", str(args.config), "--xtb", str(args.study / training_dataset(config)),
                    "--xtb-test", str(args.study / TEST_LABELS_DATASET), "--dft", str(results / "datasets/dft.parquet"),
                    "--splits", str(results / "splits.json"), "--model", str(model),
                    "--baseline", str(results / "models/baseline_0"), "--output-dir", str(validation)],
                   check=True, capture_output=True)
    overall = json.loads((validation / "metrics.json").read_text())["metrics"]["xtb"]["4g"]["overall"]
    print(json.dumps({"name": args.name, **summary, "test_energy_mae_mev_per_atom": overall["energy_mae_mev_per_atom"],
                      "test_force_mae_mev_per_A": overall["force_mae_mev_per_A"]}))


if __name__ == "__main__":
    main()
