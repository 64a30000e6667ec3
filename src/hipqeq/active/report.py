"""What a user sees of the rounds: fractions, labels added, held-out errors, a histogram.

Per round (and per structure family and walker temperature): the fractions of explored
frames the trust window classed accurate, candidate and failed; the labels the round
added (rows of the final dataset whose frames the round explored, per status); the
committee's errors on the fixed held-out set (round 0's test parents of the xTB
dataset, :func:`round_validation`); which criterion stopped the loop; and the
distribution of the force deviation per round with the trust bounds drawn in.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

from hipqeq.active.stop import stopped_by
from hipqeq.active.trust import CLASSES, TrustWindow
from hipqeq.data import atoms_from_record, label_pbc, read_records, read_splits, read_table

#: Columns of the per-group fraction table, in order.
FRACTION_COLUMNS = ("round", "family", "temperature_K", "n_frames", *(f"{c}_fraction" for c in CLASSES))


def round_validation(model_dirs: Sequence[str | os.PathLike], held_out: str | os.PathLike,
                     splits: str | os.PathLike, device: str = "auto") -> dict:
    """Errors of the committee ``model_dirs`` (its mean prediction) on the ok rows of the
    held-out test parents of ``held_out`` (:func:`hipqeq.validation.metrics.usable_rows`),
    energies after per-element offsets as in ``hipqeq validate``'s xTB block; returns
    the metrics block plus ``subset``, ``rows_used`` and ``warning``."""
    from hipqeq.calculator import predict
    from hipqeq.validation.metrics import aligned_pairs, metrics_block, usable_rows

    rows, report = usable_rows(read_records(held_out), read_splits(splits), source=f"held-out set {held_out}")
    atoms = []
    for row in rows:
        frame = atoms_from_record(row)
        frame.calc = None  # the model must not see the labels
        atoms.append(frame)
    predictions = predict(model_dirs, atoms, device=device, progress=False,
                          charge_pbc=[label_pbc(r) for r in rows]) if rows else []
    pairs, _ = aligned_pairs(rows, predictions) if rows else ({}, None)
    return {"subset": report["subset"], "rows_used": report["rows_used"], "warning": report["warning"],
            **metrics_block(pairs)}


def fraction_table(deviations: pa.Table) -> list[dict]:
    """One row per (round, family, temperature) with the class fractions of its frames."""
    groups: dict[tuple, Counter] = {}
    for row in deviations.select(["round", "family", "temperature_K", "classification"]).to_pylist():
        key = (row["round"], row["family"], row["temperature_K"])
        groups.setdefault(key, Counter())[row["classification"]] += 1
    table = []
    for (round_, family, temperature), counts in sorted(groups.items()):
        n = sum(counts.values())
        table.append({"round": round_, "family": family, "temperature_K": temperature, "n_frames": n,
                      **{f"{c}_fraction": counts[c] / n for c in CLASSES}})
    return table


def labels_added(deviations: pa.Table, dataset: pa.Table | None) -> dict[int, dict[str, int]]:
    """Per round, the status counts of the dataset rows whose frames the round explored."""
    status_of = {} if dataset is None else dict(zip(dataset.column("structure_id").to_pylist(),
                                                    dataset.column("status").to_pylist()))
    added: dict[int, Counter] = {}
    for round_, sid in zip(deviations.column("round").to_pylist(), deviations.column("structure_id").to_pylist()):
        counts = added.setdefault(round_, Counter())
        if sid in status_of:
            counts[status_of.pop(sid)] += 1  # pop: a frame visited twice is one label
    return {r: dict(sorted(c.items())) for r, c in sorted(added.items())}


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` (floats to 3 significant digits)."""
    def cell(value):
        return f"{value:.3g}" if isinstance(value, float) else ("" if value is None else str(value))

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def deviation_histogram(deviations: pa.Table, window: TrustWindow):
    """Histogram of the force deviation (eV/A, log bins) per round, trust bounds marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    force = deviations.column("force_deviation_eV_A").to_numpy(zero_copy_only=False)
    rounds = np.array(deviations.column("round").to_pylist())
    finite = np.isfinite(force) & (force > 0)
    figure, axes = plt.subplots(figsize=(6, 4))
    if finite.any():
        low = min(force[finite].min(), window.force_lo_eV_A) / 2
        high = max(force[finite].max(), window.force_hi_eV_A) * 2
        bins = np.geomspace(low, high, 40)
        for round_ in sorted(set(rounds.tolist())):
            axes.hist(force[finite & (rounds == round_)], bins=bins, histtype="step", linewidth=1.5,
                      label=f"round {round_}")
        axes.set_xscale("log")
    for bound, name in ((window.force_lo_eV_A, "trust lo"), (window.force_hi_eV_A, "trust hi")):
        axes.axvline(bound, color="k", linestyle="--", linewidth=1)
        axes.annotate(name, (bound, 1), xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right")
    axes.set_xlabel("committee force deviation, max over atoms (eV/A)")
    axes.set_ylabel("explored frames")
    axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    return figure


def write_active_report(config: dict, deviations_paths: Sequence, decision_paths: Sequence,
                        walker_paths: Sequence, validation_paths: Sequence, dataset: str | os.PathLike | None,
                        output_dir: str | os.PathLike) -> dict:
    """Write ``summary.json``, ``rounds.md``, ``fractions.md`` and
    ``deviation_histogram.png`` into ``output_dir``; returns the summary."""
    from hipqeq.active.deviation import read_deviations

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    deviations = read_deviations(deviations_paths)
    added = labels_added(deviations, read_table(dataset) if dataset else None)
    rounds = []
    for decision_path, walker_path, validation_path in zip(decision_paths, walker_paths, validation_paths):
        decision = json.loads(Path(decision_path).read_text())
        walkers = json.loads(Path(walker_path).read_text())["walkers"]
        validation = json.loads(Path(validation_path).read_text())
        rounds.append({**decision, "labels_added": added.get(decision["round"], {}),
                       "walkers_stopped_early": sum(w["stopped_early"] for w in walkers),
                       "validation": validation})
    summary = {"rounds": rounds, "stopped_by": stopped_by(rounds),
               "fractions": fraction_table(deviations)}
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    round_rows = [{"round": r["round"], "frames": r["n_frames"],
                   **{f"{c}_fraction": r["counts"][c] / max(r["n_frames"], 1) for c in CLASSES},
                   "selected": r["n_selected"], "labels_ok": r["labels_added"].get("ok", 0),
                   "labels_failed": sum(v for k, v in r["labels_added"].items() if k != "ok"),
                   "walkers_stopped": r["walkers_stopped_early"],
                   # "all" when the test parents had no ok row: training rows included, not a test error
                   "errors_on": r["validation"]["subset"],
                   "force_mae_mev_per_A": r["validation"]["force_mae_mev_per_A"],
                   "energy_mae_mev_per_atom": r["validation"]["energy_mae_mev_per_atom"],
                   "decision": r["reason"]} for r in rounds]
    (output_dir / "rounds.md").write_text(markdown_table(round_rows, list(round_rows[0]) if round_rows else []))
    (output_dir / "fractions.md").write_text(markdown_table(summary["fractions"], FRACTION_COLUMNS))
    figure = deviation_histogram(deviations, TrustWindow.from_config(config))
    figure.savefig(output_dir / "deviation_histogram.png", dpi=150)
    return summary
