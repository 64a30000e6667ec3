"""Learning curve of a finished study (issue 15): test error against the number of
training labels, the 4G potential against the short-range-only baseline.

For each fraction f, a random fraction f of the training rows of committee member 0
(the labels the study's models trained on: with active learning, every round's; same
held-out test and validation parents, the frames drawn within the training parents so
every family keeps some) is kept, the short-range model (with the study's frozen charge
model 0) and the baseline are retrained on them with the study's settings, and `hipqeq
validate` measures both on the test split (with the study's extra held-out labels,
`selection.n_xtb_test`, where it has them). f = 1 uses the study's own member-0 models.

    python scripts/learning_curve.py --study studies/cspbi-gfn1 \\
        --output docs/study/learning_curve
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pyarrow as pa

from hipqeq.config import load_config
from hipqeq.data import read_table
from hipqeq.data.io import write_table
from hipqeq.data.split import read_splits
from hipqeq.plan import TEST_LABELS_DATASET, study_config, training_dataset
from hipqeq.training import train_model

HIPQEQ = str(Path(sys.executable).parent / "hipqeq")


def subset_dataset(xtb: Path, splits: dict, fraction: float, seed: int, output: Path) -> int:
    """Write ``xtb`` with only ``fraction`` of member 0's training rows; return their count."""
    table = read_table(xtb)
    train = set(splits["members"][0]["train"])
    parents = np.array(table.column("parent_id").to_pylist())
    ok = np.array(table.column("status").to_pylist()) == "ok"
    train_rows = np.flatnonzero(np.isin(parents, list(train)) & ok)
    keep = np.random.default_rng(seed).choice(train_rows, size=max(1, round(fraction * len(train_rows))),
                                              replace=False)
    mask = ~np.isin(parents, list(train))
    mask[keep] = True
    write_table(table.filter(pa.array(mask)), output)
    return len(keep)


def test_errors(study: Path, config: dict, config_path: Path, model: Path, baseline: Path, output_dir: Path) -> dict:
    more_test_labels = study / TEST_LABELS_DATASET
    subprocess.run([HIPQEQ, "validate", "--config", str(config_path), "--xtb", str(study / training_dataset(config)),
                    *(["--xtb-test", str(more_test_labels)] if more_test_labels.exists() else []),
                    "--dft", str(study / "results/datasets/dft.parquet"), "--splits", str(study / "results/splits.json"),
                    "--model", str(model), "--baseline", str(baseline), "--output-dir", str(output_dir)],
                   check=True, capture_output=True)
    metrics = json.loads((output_dir / "metrics.json").read_text())["metrics"]["xtb"]
    return {kind: {k: metrics[kind]["overall"][k] for k in ("energy_mae_mev_per_atom", "force_mae_mev_per_A")}
            for kind in ("4g", "baseline")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, required=True)
    parser.add_argument("--config", type=Path,
                        help="the study's config (default: STUDY/study.yaml, the one its run used)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--output", type=Path, required=True, help="output stem (writes .json and .png)")
    args = parser.parse_args()
    args.config = study_config(args.study, args.config)

    config = load_config(args.config)
    results = args.study / "results"
    splits = read_splits(results / "splits.json")
    work = args.study / "learning_curve"
    work.mkdir(exist_ok=True)
    labels = args.study / training_dataset(config)  # every round's labels with active learning
    n_full = subset_dataset(labels, splits, 1.0, 0, work / "full.parquet")
    points = [{"fraction": 1.0, "n_train": n_full,
               **test_errors(args.study, config, args.config, results / "models/4g_0", results / "models/baseline_0",
                             work / "validation_1")}]
    for fraction in sorted(args.fractions):
        where = work / f"f{fraction:g}"
        dataset = where / "xtb.parquet"
        n_train = subset_dataset(labels, splits, fraction, config["seed"], dataset)
        for stage, out in (("short-range", where / "4g"), ("baseline", where / "baseline")):
            if not (out / "model.json").exists():
                train_model(stage, config, dataset=dataset, splits=results / "splits.json", member=0, output=out,
                            charge_model=results / "models/charges_0" if stage == "short-range" else None,
                            device="cpu")
        points.append({"fraction": fraction, "n_train": n_train,
                       **test_errors(args.study, config, args.config, where / "4g", where / "baseline", where / "validation")})
        print(points[-1], flush=True)
    points.sort(key=lambda p: p["n_train"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(points, indent=1) + "\n")

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, unit in zip(axes, ("energy_mae_mev_per_atom", "force_mae_mev_per_A"), ("meV/atom", "meV/A")):
        for kind, label in (("4g", "4G (QEq + short range)"), ("baseline", "2G baseline")):
            ax.plot([p["n_train"] for p in points], [p[kind][key] for p in points], "o-", label=label)
        ax.set(xscale="log", yscale="log", xlabel="training structures", ylabel=f"test MAE ({unit})")
        ax.legend()
    fig.suptitle("Learning curve, test parents held out (vs CP2K GFN1-xTB)")
    fig.tight_layout()
    fig.savefig(args.output.with_suffix(".png"), dpi=150)


if __name__ == "__main__":
    main()
