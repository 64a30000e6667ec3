"""metrics.json and its Markdown table metrics.md; model directory hashes.

Layout of ``metrics.json`` (:data:`METRICS_JSON_KEYS` at the top level)::

    {
      "schema_version": 1,
      "units": {metric key suffix: unit},
      "split": {"file", "requested" ("test" or "all"), "n_test_parents", "test_parents"},
      "models": {"4g" | "baseline" | "peer": {"dirs": [...], "sha256": {dir: hash}}},
      "datasets": {"xtb" | "dft": {"path", "method", "software", "charge_scheme", "subset",
                   "rows_total", "rows_in_subset", "rows_used", "excluded": {status: n},
                   "warning", "mixed_levels" (a warning when the rows differ in method,
                   software or charge scheme, or null),
                   "failed_by_split": {"train" | "valid" | "test": {status: n}},
                   "energy_alignment" (DFT: {model: per-element offsets}),
                   "test_labels_path" (more labels of the test parents, or null),
                   "xtb_charge_gap" (DFT: the xTB vs DFT reference charges on the frames both
                   label, see hipqeq.validation.metrics.reference_charge_gap, or null)}},
      "metrics": {"xtb" | "dft": {"4g" | "baseline" | "peer": {
                   "overall": block, "family": {name: block},
                   "charge_state": {"<family> Q=<total charge>": block},
                   "temperature_band": {name: block}}}},
      "fit": {"4g" | "baseline" | "peer" (the kinds given): overall block on the ok xTB rows
              of the non-test parents} or null (--all-rows, or no such row),
      "md": [MD stability rows, see hipqeq.validation.md_check.MD_REPORT_KEYS],
      "figures_omitted": {figure name: why it was not drawn (no data)},
      "warnings": [...],
      "package_version": "..."
    }

Every ``block`` has exactly the keys :data:`hipqeq.validation.metrics.METRIC_KEYS`
(null where a quantity does not apply, e.g. baseline and peer charges, or has no data, e.g.
every block of a model kind not given: "models" lists its directories as empty). The
"peer" is the MACE model of ``hipqeq train mace``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

from hipqeq.models.store import model_files
from hipqeq.validation.metrics import QUANTITIES

SCHEMA_VERSION = 1

#: Top-level keys of metrics.json.
METRICS_JSON_KEYS = ("schema_version", "units", "split", "models", "datasets", "metrics", "fit", "md",
                     "figures_omitted", "warnings", "package_version")

#: Units of the metric keys, by key suffix (MD rows: by key).
UNITS = {"mev_per_atom": "meV/atom", "mev_per_A": "meV/Angstrom", "e": "e", "r2": "1",
         "pearson_r": "1", "slope": "1",
         "energy_drift_mev_per_atom_per_ps": "meV/atom/ps", "max_force_eV_per_A": "eV/Angstrom",
         "max_displacement_A": "Angstrom", "duration_ps": "ps", "mean_temperature_K": "K"}

#: Markdown column header and metric-key prefix of every quantity.
_COLUMNS = {"energy": ("E", "energy", "mev_per_atom", "meV/atom"),
            "forces": ("F", "force", "mev_per_A", "meV/Å"),
            "charges": ("q", "charge", "e", "e")}


def directory_hash(path: str | os.PathLike) -> str:
    """sha256 over the model files under ``path`` (:func:`hipqeq.models.store.model_files`:
    not hippynn's working files): relative paths and contents, in sorted order, so that
    the same model always gives the same hash, wherever it was trained or cloned."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in model_files(root):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _jsonable(value):
    """NaN and infinities become null (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_metrics_json(metrics: dict, path: str | os.PathLike) -> Path:
    """Write ``metrics`` as indented JSON (strict: NaN written as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(metrics), indent=2, allow_nan=False) + "\n")
    return path


def _number(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


#: Significant digits of R^2 in tables: per-atom energies of different compositions
#: spread by eV/atom, so a model meV/atom off still has R^2 = 0.99998, which 4 digits
#: would print as 1.
R2_DIGITS = 6


def _metric_header(first: list[str]) -> list[str]:
    header = list(first)
    for quantity in QUANTITIES:
        symbol, _, _, unit = _COLUMNS[quantity]
        header += [f"{symbol} MAE ({unit})", f"{symbol} RMSE ({unit})", f"{symbol} R²"]
    return header + ["q r", "q slope", "n E (structures)", "n F (components)", "n q (atoms)"]


def _metric_cells(block: dict) -> list[str]:
    cells = []
    for quantity in QUANTITIES:
        _, prefix, unit, _ = _COLUMNS[quantity]
        cells += [_number(block[f"{prefix}_mae_{unit}"]), _number(block[f"{prefix}_rmse_{unit}"]),
                  _number(block[f"{prefix}_r2"], R2_DIGITS)]
    return cells + [_number(block["charge_pearson_r"], 4), _number(block["charge_slope"]),
                    *(str(block[key] or "–") for key in ("n_energy", "n_force", "n_charge"))]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _fit_section(fit: dict) -> list[str]:
    rows = [["xtb", model] + _metric_cells(block) for model, block in fit.items()]
    return ["## Fit to the non-test rows", "",
            "The same metrics on the ok xTB rows of the training and validation parents, the labels "
            "the models learned from. Test errors close to these: the models underfit (more data or "
            "training, not regularisation, helps); far above: they overfit or extrapolate.", ""] \
        + _table(_metric_header(["reference", "model"]), rows) + [""]


def _charge_gap_section(gap: dict) -> list[str]:
    """The xTB vs DFT reference charges on the frames both label (Markdown lines)."""
    rows = [[symbol, str(e["n_atoms"]), _number(e["xtb_mean_e"]), _number(e["dft_mean_e"]), _number(e["mae_e"])]
            for symbol, e in gap["by_element"].items()]
    return ["## Reference charges: xTB against DFT", "",
            f"On the {gap['n_structures']} frame(s) both references label ({gap['n_atoms']} atoms): MAE "
            f"{_number(gap['mae_e'])} e, RMSE {_number(gap['rmse_e'])} e, Pearson r {_number(gap['pearson_r'])}, "
            f"slope {_number(gap['slope'])} (xTB on DFT). A charge model trained on one reference is, on "
            "average, this far from the other.", ""] + _table(
        ["element", "atoms", "xTB mean (e)", "DFT mean (e)", "MAE (e)"], rows) + [""]


def metrics_markdown(metrics: dict) -> str:
    """The content of metrics.json as Markdown tables: overall first, then per family, per
    family and charge state, per temperature band (rows of the model kinds given), the
    datasets, the models, the MD stability check and the warnings."""
    results = metrics["metrics"]
    split = metrics["split"]
    lines = ["# Validation metrics", "",
             f"Rows: {'held-out test parents' if split['requested'] == 'test' else 'every ok row'} "
             f"(split file {split['file']}). Energies per atom, force components, per-atom charges; "
             "MAE and RMSE in the units of each column. Charges depend on the partition scheme "
             "(see the datasets table): compare trends across schemes, not absolute values.", ""]
    for warning in metrics["warnings"]:
        lines.append(f"> **WARNING:** {warning}")
    if metrics["warnings"]:
        lines.append("")
    if metrics["figures_omitted"]:
        lines += ["Parity figures not drawn (no data):", ""]
        lines += [f"- {name}: {why}" for name, why in metrics["figures_omitted"].items()] + [""]
    sections = (("Overall", None, "overall"), ("Per family", "family", "family"),
                ("Per family and charge state", "family, total charge (e)", "charge_state"),
                ("Per temperature band", "temperature band", "temperature_band"))
    given = [model for model, m in metrics["models"].items() if m["dirs"]]
    for title, group_label, key in sections:
        rows = []
        for reference, by_model in results.items():
            for model, groups in by_model.items():
                if model not in given:
                    continue
                if key == "overall":
                    rows.append([reference, model] + _metric_cells(groups["overall"]))
                else:
                    rows += [[reference, model, name] + _metric_cells(block)
                             for name, block in groups[key].items()]
        first = ["reference", "model"] + ([group_label] if group_label else [])
        lines += [f"## {title}", ""] + _table(_metric_header(first), rows) + [""]
        if key == "overall" and metrics["fit"]:
            lines += _fit_section(metrics["fit"])
    dataset_rows = [[name, d["method"] or "–", d["software"] or "–", d["charge_scheme"] or "–", d["subset"],
                     str(d["rows_total"]),
                     str(d["rows_in_subset"]), str(d["rows_used"]),
                     ", ".join(f"{s} {n}" for s, n in d["excluded"].items()) or "none"]
                    for name, d in metrics["datasets"].items()]
    lines += ["## Datasets", ""] + _table(
        ["reference", "method", "software", "charge scheme", "subset", "rows total", "rows in subset", "rows used",
         "excluded (status)"], dataset_rows) + [""]
    gap = metrics["datasets"].get("dft", {}).get("xtb_charge_gap")
    if gap:
        lines += _charge_gap_section(gap)
    model_rows = [[kind, str(path), digest[:16]] for kind, m in metrics["models"].items()
                  for path, digest in m["sha256"].items()]
    lines += ["## Models", ""] + _table(["model", "directory", "sha256 (first 16)"], model_rows) + [""]
    if metrics["md"]:
        md_rows = [[r["structure"], r["model"], _number(r["duration_ps"]), _number(r["mean_temperature_K"]),
                    _number(r["energy_drift_mev_per_atom_per_ps"]), _number(r["max_force_eV_per_A"]),
                    _number(r["max_displacement_A"]), _number(r["flew_off"]), _number(r["collapsed"]),
                    _number(r["energy_fell"]), _number(r["stable"]),
                    r["reason"] or "–"]
                   for r in metrics["md"]]
        lines += ["## MD stability", "", "Energy drift: slope of the total energy per atom over the NVE "
                  "tail after the Langevin run.", ""] + _table(
            ["structure", "model", "duration (ps)", "mean T (K)", "energy drift (meV/atom/ps)",
             "max force (eV/Å)", "max displacement (Å)", "atom flew off", "atoms collapsed", "energy fell",
             "stable", "stopped early because"],
            md_rows) + [""]
    return "\n".join(lines)
