"""Learning curve of a finished study (issue 15): test error against the number of
training labels, the 4G potential against the short-range-only baseline.

For each committee member k and fraction f, a random fraction f of the labelled frames
of each of member k's training parents is kept, at least one of each (the labels the
study's models trained on: with active learning, every round's; same held-out test and
validation parents). Every training parent keeps a frame because `hipqeq split` chose
them so that the training rows span every composition and total charge: a subsample
that drops the only neutral iodine vacancy leaves the 4G energy reference to extrapolate
to it, and the curve would measure that, not the number of labels. The short-range
model (with the study's frozen charge model k) and the baseline are retrained on them
with the study's settings, and `hipqeq validate` measures both on the test split (with
the study's extra held-out labels, `selection.n_xtb_test`, where it has them). f = 1
uses the study's own models of member k. A model already trained on the same subset is
reused, one trained on another (an older subsample) is retrained; one trained before the
study's settings had a stage two is finished with it (its first stage kept beside it as
``4g_stage_one``, ``baseline_stage_one``). Each point is the mean
over the members, with their lowest and highest as error bars (members differ in
validation parents, initial weights and the subsample).

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
from hipqeq.plan import study_config, training_dataset, validate_options, validation_inputs
from hipqeq.training import train_model
from hipqeq.training.data import file_sha256
from hipqeq.training.stages import finish_stage_two, stage_one_dir

HIPQEQ = str(Path(sys.executable).parent / "hipqeq")
METRICS = ("energy_mae_mev_per_atom", "force_mae_mev_per_A")
KINDS = ("4g", "baseline")


def subset_dataset(xtb: Path, splits: dict, member: int, fraction: float, seed: int, output: Path) -> int:
    """Write ``xtb`` with ``fraction`` of the ok rows of each of ``member``'s training
    parents (at least one each) and every row of the other parents; return how many
    training rows it kept."""
    table = read_table(xtb)
    train = sorted(splits["members"][member]["train"])
    parents = np.array(table.column("parent_id").to_pylist())
    ok = np.array(table.column("status").to_pylist()) == "ok"
    rng = np.random.default_rng(seed)
    in_train = np.isin(parents, train)
    mask = ~in_train
    for parent in train:
        rows = np.flatnonzero((parents == parent) & ok)
        if len(rows):
            mask[rng.choice(rows, size=max(1, round(fraction * len(rows))), replace=False)] = True
    write_table(table.filter(pa.array(mask)), output)
    return int(np.count_nonzero(mask & in_train))


def trained_on(model: Path, dataset: Path) -> bool:
    """Whether ``model`` is a finished model trained on ``dataset`` as it is now."""
    summary = model / "model.json"
    return summary.exists() and json.loads(summary.read_text())["dataset"]["sha256"] == file_sha256(dataset)


def test_errors(study: Path, config: dict, config_path: Path, model: Path, baseline: Path, output_dir: Path) -> dict:
    subprocess.run([HIPQEQ, "validate", "--config", str(config_path),
                    *validate_options(validation_inputs(config, study)), "--model", str(model),
                    "--baseline", str(baseline), "--output-dir", str(output_dir)],
                   check=True, capture_output=True)
    metrics = json.loads((output_dir / "metrics.json").read_text())["metrics"]["xtb"]
    return {kind: {k: metrics[kind]["overall"][k] for k in METRICS} for kind in KINDS}


def member_points(study: Path, config: dict, config_path: Path, labels: Path, splits: dict, member: int,
                  fractions: list[float]) -> list[dict]:
    """Test errors of ``member``'s models retrained on each fraction of its training rows."""
    results = study / "results"
    work = study / "learning_curve" / f"m{member}"
    work.mkdir(parents=True, exist_ok=True)
    points = [{"fraction": 1.0,
               "n_train": subset_dataset(labels, splits, member, 1.0, 0, work / "full.parquet"),
               **test_errors(study, config, config_path, results / f"models/4g_{member}",
                             results / f"models/baseline_{member}", work / "validation_1")}]
    for fraction in sorted(fractions):
        where = work / f"f{fraction:g}"
        dataset = where / "xtb.parquet"
        n_train = subset_dataset(labels, splits, member, fraction, config["seed"] + member, dataset)
        for stage, out in (("short-range", where / "4g"), ("baseline", where / "baseline")):
            settings = dict(dataset=dataset, splits=results / "splits.json", member=member, output=out, device="cpu",
                            charge_model=results / f"models/charges_{member}" if stage == "short-range" else None)
            if trained_on(out, dataset) or trained_on(stage_one_dir(out), dataset):
                finish_stage_two(stage, config, **settings)
            else:
                train_model(stage, config, **settings)
        points.append({"fraction": fraction, "n_train": n_train,
                       **test_errors(study, config, config_path, where / "4g", where / "baseline", where / "validation")})
        print(f"member {member}:", points[-1], flush=True)
    return points


def committee_points(per_member: list[list[dict]]) -> list[dict]:
    """Per fraction: mean training-set size and, per model kind and metric, the members'
    mean, lowest and highest test error."""
    points = []
    for rows in zip(*per_member):
        point = {"fraction": rows[0]["fraction"], "n_train": float(np.mean([r["n_train"] for r in rows])),
                 "members": list(rows)}
        for kind in KINDS:
            point[kind] = {}
            for metric in METRICS:
                values = [r[kind][metric] for r in rows]
                point[kind][metric] = float(np.mean(values))
                point[kind][f"{metric}_range"] = [float(min(values)), float(max(values))]
        points.append(point)
    return sorted(points, key=lambda p: p["n_train"])


def plot(points: list[dict], output: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, metric, unit in zip(axes, METRICS, ("meV/atom", "meV/A")):
        for kind, label in zip(KINDS, ("4G (QEq + short range)", "2G baseline")):
            mean = np.array([p[kind][metric] for p in points])
            low, high = np.array([p[kind][f"{metric}_range"] for p in points]).T
            ax.errorbar([p["n_train"] for p in points], mean, yerr=[mean - low, high - mean], fmt="o-",
                        capsize=3, label=label)
        ax.set(xscale="log", yscale="log", xlabel="training structures", ylabel=f"test MAE ({unit})")
        ax.legend()
    fig.suptitle("Learning curve, committee mean (bars: lowest and highest member), vs CP2K GFN1-xTB")
    fig.tight_layout()
    fig.savefig(output.with_suffix(".png"), dpi=150)


def subsample_fraction(text: str) -> float:
    """A ``--fractions`` value: 0 < f < 1 (f = 1 is the study's own models, not a retraining)."""
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text}: a fraction must lie strictly between 0 and 1; "
                                         "the full training set (1) is always a point, from the study's own models")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, required=True)
    parser.add_argument("--config", type=Path,
                        help="the study's config (default: STUDY/study.yaml, the one its run used)")
    parser.add_argument("--fractions", type=subsample_fraction, nargs="+", default=[0.25, 0.5],
                        help="fractions below 1 to retrain on (1, the study's own models, is always a point)")
    parser.add_argument("--members", type=int, nargs="+",
                        help="committee members to retrain (default: every member of the study's split)")
    parser.add_argument("--output", type=Path, required=True, help="output stem (writes .json and .png)")
    args = parser.parse_args()
    args.config = study_config(args.study, args.config)

    config = load_config(args.config)
    splits = read_splits(args.study / "results" / "splits.json")
    members = args.members if args.members is not None else list(range(len(splits["members"])))
    labels = args.study / training_dataset(config)  # every round's labels with active learning
    points = committee_points([member_points(args.study, config, args.config, labels, splits, member, args.fractions)
                               for member in members])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(points, indent=1) + "\n")
    plot(points, args.output)


if __name__ == "__main__":
    main()
