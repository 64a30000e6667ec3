"""`hipqeq validate` as a function: datasets + models (+ MD summaries) -> metrics and figures.

:func:`run_validation` reads the xTB and DFT datasets, keeps the rows to validate on
(held-out test parents, status ok), counts the failed labels of every split (a warning
when there are any), predicts them with every model kind of :data:`MODELS` given (the 4G
potential, the short-range baseline, the MACE peer) through ``predictor``
(``hipqeq.calculator.predict`` or ``hipqeq.models.mace.predict_peer`` in the CLI, by the
directory's kind; any callable ``(model_dirs, atoms_list, charge_pbc) -> list of
{"energy", "forces", "charges"}`` in tests), and writes metrics.json, metrics.md, the parity figures (``parity/``, ``families/``;
a figure without data is not drawn, and metrics.md says why) and the MD stability figure under
the output directory (layout in :mod:`hipqeq.validation.report`).

Beside the test errors it reports each model's fit to the xTB rows it could learn from
(``fit``: the ok rows of the non-test parents): a test error close to the fit says the
models underfit (their own training labels are not learned better), one far above it
says they overfit or extrapolate. The study's first 4G models fitted their own training
energies to only 35-40 meV/atom, which the test errors alone did not show.

More xTB labels of the test parents (``xtb_test_path``, `hipqeq select-test`) join the
xTB rows, and their DFT labels (``dft_test_path``, ``selection.dft_test``) the DFT rows;
a row of any other parent, or a frame the dataset it joins labels too, is an error (it
would pass for a test row, or count twice).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

from tqdm import tqdm

from hipqeq import __version__
from hipqeq.data import atoms_from_record, label_pbc, read_records, read_splits
from hipqeq.data.schema import STATUS_OK
from hipqeq.errors import DatasetError
from hipqeq.data.split import assign_splits
from hipqeq.validation.md_check import md_report, md_stability_figure, read_md_summaries
from hipqeq.validation.metrics import (
    QUANTITIES,
    aligned_pairs,
    compute_metrics,
    failures_by_split,
    grouped_metrics,
    paired_values,
    reference_charge_gap,
    row_groups,
    row_status,
    usable_rows,
)
from hipqeq.validation.parity import ParitySeries, file_tag, parity_figure, save_figure
from hipqeq.validation.report import (
    SCHEMA_VERSION,
    UNITS,
    directory_hash,
    metrics_markdown,
    write_metrics_json,
)

logger = logging.getLogger(__name__)

#: Reference datasets, in report order, with the label figures use.
REFERENCES = {"xtb": "xTB", "dft": "DFT"}

#: Model kinds, in report order (the first is the primary, density-coloured series).
MODELS = {"4g": "4G", "baseline": "short-range baseline", "peer": "MACE peer"}

#: Figures every run writes (as .png and .pdf) in the output directory, whatever the
#: data: the Snakefile declares them as outputs. Parity figures go to ``parity/`` and
#: ``families/`` (declared as directories), and only where there is data to compare.
OVERALL_FIGURES = ("md_stability",)

#: Subdirectories of the output directory holding parity figures.
PARITY_DIRS = ("parity", "families")

#: Why a reference may lack a quantity, for the note on a figure that is not drawn.
_DFT_ENERGY_HINT = ("DFT energies and forces exist only with dft.energy_forces (PySCF) or in an "
                    "external set that has them")
_MISSING_HINTS = {("dft", "energy"): _DFT_ENERGY_HINT, ("dft", "forces"): _DFT_ENERGY_HINT}

#: References whose energies are compared after per-element offsets: the models learn
#: xTB energies, and DFT energies sit on another absolute reference.
ALIGNED_ENERGY_REFERENCES = ("dft",)

_QUANTITY_TITLES = {"energy": "energy per atom", "forces": "force components", "charges": "charges"}

#: ``predictor(model_dirs, atoms_list, charge_pbc)``: ``charge_pbc`` holds per structure the
#: boundary of the charge solve, that of the label it is compared with.
Predictor = Callable[[Sequence[Path], list, list], list]


#: Provenance columns that say which level labelled a row: rows of one reference that
#: differ in any are pooled by the metrics, so the report warns (CP2K's and tblite's
#: GFN1-xTB energies differ by ~25 meV/atom; Mulliken and CM5 charges by tenths of e).
LEVEL_COLUMNS = ("method", "software", "charge_scheme")


def _levels(rows: list[dict]) -> dict[str, list[str]]:
    """The distinct values of each of :data:`LEVEL_COLUMNS` (charge schemes of rows with charges)."""
    charged = [r for r in rows if r.get("charges") is not None]
    return {key: sorted({r[key] for r in (charged if key == "charge_scheme" else rows) if r.get(key)})
            for key in LEVEL_COLUMNS}


def _load_reference(name: str, path: Path, records: list[dict], splits: dict,
                    all_rows: bool) -> tuple[list[dict], dict]:
    source = f"{name} dataset {path}"
    rows, report = usable_rows(records, None if all_rows else splits, source=source)
    levels = _levels(rows)
    mixed = "; ".join(f"{key} {' / '.join(values)}" for key, values in levels.items() if len(values) > 1)
    report = {"path": str(path), **{key: ", ".join(values) or None for key, values in levels.items()},
              **report, "failed_by_split": failures_by_split(records, splits, source), "energy_alignment": None,
              "mixed_levels": (f"{source}: the validated rows mix {mixed}; their errors are pooled, and labels "
                               "of different levels may differ by a constant") if mixed else None}
    return rows, report


#: Key of the fit rows among the predicted row sets (:func:`_fit_rows`).
FIT = "fit"


def _fit_rows(records: list[dict], splits: dict) -> list[dict]:
    """The ok xTB rows (finite labels) of the non-test parents: what the models trained or
    early-stopped on."""
    names = assign_splits([r["parent_id"] for r in records], splits)
    return [r for r, name in zip(records, names) if name != "test" and row_status(r) == STATUS_OK]


def _held_out_records(path: Path, dataset_records: list[dict], splits: dict) -> list[dict]:
    """The rows of ``path``, more labels of the test parents; a row of another parent or
    a frame of ``dataset_records`` (the rows they join) is a :class:`DatasetError`."""
    records = read_records(path)
    strays = sorted({r["parent_id"] for r in records} - set(splits["test"]))
    if strays:
        raise DatasetError(f"{path}: rows of parent(s) {', '.join(strays)}, which the split does not hold out: "
                           "these labels are for test parents only (was it selected with another split?)")
    twice = sorted({r["structure_id"] for r in records} & {r["structure_id"] for r in dataset_records})
    if twice:
        raise DatasetError(f"{path}: {len(twice)} frame(s) labelled in the dataset it joins too "
                           f"(first {twice[0]}); each test frame must count once")
    return records


def _prediction_key(row: dict) -> tuple:
    return row["structure_id"], tuple(label_pbc(row).tolist())


def _failure_warning(name: str, report: dict) -> str | None:
    """A warning listing the label failures of every split, or None when there are none."""
    failed = report["failed_by_split"]
    total = sum(sum(counts.values()) for counts in failed.values())
    if not total:
        return None
    parts = [f"{split} {sum(counts.values())}" + (f" ({', '.join(f'{s} {n}' for s, n in counts.items())})"
                                                   if counts else "") for split, counts in failed.items()]
    return (f"{name} dataset {report['path']}: {total} failed label(s), left out of training and validation: "
            + ", ".join(parts))


def _predict(predictor: Predictor, model_dirs: Sequence[Path], rows_by_reference: dict) -> dict:
    """Predictions of every reference's rows, each distinct structure predicted once per
    label boundary: a row is compared with the model's prediction under the boundary its
    reference engine used (:func:`hipqeq.data.label_pbc`; a slab labelled by tblite as a
    3D-periodic cell is predicted as one), so both sides hold the same electrostatics."""
    structures = {}
    for rows in rows_by_reference.values():
        for row in rows:
            structures.setdefault(_prediction_key(row), row)
    atoms_list = []
    for row in structures.values():
        atoms = atoms_from_record(row)
        atoms.calc = None  # the predictor must not see the reference labels
        atoms_list.append(atoms)
    logger.info("predicting %d structures with %s", len(atoms_list), ", ".join(map(str, model_dirs)))
    charge_pbc = [label_pbc(row) for row in structures.values()]
    predicted = predictor(list(model_dirs), atoms_list, charge_pbc) if atoms_list else []
    by_key = dict(zip(structures, predicted))
    return {ref: [by_key[_prediction_key(row)] for row in rows] for ref, rows in rows_by_reference.items()}


def _reference_pairs(reference: str, rows: list[dict], predictions: list[dict], report: dict,
                     model: str, warnings: list[str]) -> dict:
    """Pairs of one reference and model; for a reference of :data:`ALIGNED_ENERGY_REFERENCES`
    the fitted offsets go into ``report`` and an uncomparable energy set into ``warnings``."""
    if reference not in ALIGNED_ENERGY_REFERENCES:
        return paired_values(rows, predictions)
    pairs, fit = aligned_pairs(rows, predictions)
    if fit["n_rows"]:
        report["energy_alignment"] = report["energy_alignment"] or {}
        report["energy_alignment"][model] = {"method": "per-element offsets, least squares", **fit}
    if fit["n_rows"] and pairs["energy"] is None:
        warnings.append(f"{reference} energies ({model}): {fit['n_rows']} row(s) cannot be compared after "
                        f"fitting {fit['rank']} per-element offset(s); energy metrics left null")
    return pairs


def _note(report: dict, group: str | None, quantity: str, reference: str) -> str:
    parts = ["held-out test parents" if report["subset"] == "test" else "ALL rows, training rows included"]
    if group:
        parts.append(group)
    if quantity == "charges":
        parts.append(f"{report['charge_scheme'] or 'unknown'} charge scheme")
    if quantity == "energy" and reference in ALIGNED_ENERGY_REFERENCES:
        parts.append("per-element energy offsets removed")
    return " · ".join(parts)


def _figure_jobs(reference: str, report: dict, pairs: dict, groups: dict, output_dir: Path,
                 omitted: dict[str, str]) -> list:
    """(stem, series, quantity, title, note) of every parity figure of one reference with
    data: overall and per family / temperature band. An overall figure without data is
    not drawn; ``omitted`` gets its name and why."""
    title_ref = f"{REFERENCES[reference]} reference ({report['method'] or 'unknown method'})"
    jobs = []
    for quantity in QUANTITIES:
        title = f"{title_ref}: {_QUANTITY_TITLES[quantity]}"
        present = {m: p[quantity] for m, p in pairs.items() if p[quantity] is not None}
        series = [ParitySeries(MODELS[m], p.reference, p.predicted) for m, p in present.items()]
        if not any(len(s.reference) for s in series):
            hint = _MISSING_HINTS.get((reference, quantity))
            omitted[f"parity_{reference}_{quantity}"] = (
                f"the {report['rows_used']} {REFERENCES[reference]} row(s) validated on have no "
                f"{_QUANTITY_TITLES[quantity]} to compare" + (f" ({hint})" if hint else ""))
            continue
        jobs.append((output_dir / "parity" / f"parity_{reference}_{quantity}", series, quantity, title,
                     _note(report, None, quantity, reference)))
        for kind, prefix in (("family", ""), ("temperature_band", "band_")):
            for name, mask in groups[kind].items():
                subset = [ParitySeries(MODELS[m], sub.reference, sub.predicted)
                          for m, p in present.items() for sub in [p.subset(mask)]]
                if any(len(s.reference) for s in subset):
                    label = f"family {name}" if kind == "family" else f"temperature band {name}"
                    jobs.append((output_dir / "families" / f"parity_{reference}_{quantity}_{prefix}{file_tag(name)}",
                                 subset, quantity, title, _note(report, label, quantity, reference)))
    return jobs


def run_validation(config: dict, *, xtb_path: str | os.PathLike, dft_path: str | os.PathLike,
                   splits_path: str | os.PathLike, model_dirs: Sequence[str | os.PathLike],
                   baseline_dirs: Sequence[str | os.PathLike], md_paths: Sequence[str | os.PathLike],
                   output_dir: str | os.PathLike, all_rows: bool, predictor: Predictor,
                   peer_dirs: Sequence[str | os.PathLike] = (),
                   xtb_test_path: str | os.PathLike | None = None,
                   dft_test_path: str | os.PathLike | None = None) -> dict:
    """Validate the 4G potential, the baseline and the MACE peer (each a committee of
    model directories; the last two optional) on the xTB rows (with those of
    ``xtb_test_path``, more labels of the test parents) and the DFT rows (with those of
    ``dft_test_path``); write every
    output; return ``{"metrics": metrics.json content, "warnings": [...], "summary":
    one-line text}``.
    """
    output_dir = Path(output_dir)
    for name in PARITY_DIRS:
        (output_dir / name).mkdir(parents=True, exist_ok=True)  # a declared output even when empty
        for stale in (output_dir / name).glob("parity_*"):  # figures of data no longer present
            stale.unlink()
    edges = config["validation"]["temperature_bands_K"]
    splits = read_splits(splits_path)
    summaries = read_md_summaries(md_paths)  # before the slow part: a bad file fails fast
    warnings: list[str] = []
    if all_rows:
        warnings.append("--all-rows: validated on every ok row, training rows included: "
                        "these errors are not test errors")
    paths = {"xtb": Path(xtb_path), "dft": Path(dft_path)}
    records = {ref: read_records(path) for ref, path in paths.items()}
    test_paths = {"xtb": xtb_test_path, "dft": dft_test_path}
    for ref, path in test_paths.items():
        if path is not None:
            records[ref] += _held_out_records(Path(path), records[ref], splits)
    loaded = {ref: _load_reference(ref, path, records[ref], splits, all_rows) for ref, path in paths.items()}
    rows = {ref: rows for ref, (rows, _) in loaded.items()}
    reports = {ref: report for ref, (_, report) in loaded.items()}
    for ref, path in test_paths.items():
        reports[ref]["test_labels_path"] = None if path is None else str(path)
    reports["dft"]["xtb_charge_gap"] = reference_charge_gap(rows["xtb"], rows["dft"])
    warnings += [r[key] for r in reports.values() for key in ("warning", "mixed_levels") if r[key]]
    warnings += [w for ref, r in reports.items() if (w := _failure_warning(ref, r))]
    for ref, report in reports.items():
        if not report["rows_used"]:
            warnings.append(f"{ref} dataset {report['path']}: no ok row to validate on")
    model_sets = {m: [Path(p) for p in dirs] for m, dirs in
                  zip(MODELS, (model_dirs, baseline_dirs, peer_dirs), strict=True)}
    fit_rows = [] if all_rows else _fit_rows(records["xtb"], splits)
    predictions = {m: _predict(predictor, dirs, {**rows, FIT: fit_rows}) for m, dirs in model_sets.items() if dirs}
    results, jobs, omitted = {}, [], {}
    for ref in REFERENCES:
        groups = row_groups(rows[ref], edges)
        pairs = {m: _reference_pairs(ref, rows[ref], predictions[m][ref], reports[ref], m, warnings)
                 for m in predictions}
        empty = {q: None for q in QUANTITIES}
        results[ref] = {m: grouped_metrics(pairs.get(m, empty), groups) for m in MODELS}
        jobs += _figure_jobs(ref, reports[ref], pairs, groups, output_dir, omitted)
    for stem, series, quantity, title, note in tqdm(jobs, desc="parity figures", unit="figure"):
        save_figure(parity_figure(series, quantity, title, note), stem)
    save_figure(md_stability_figure(summaries), output_dir / "md_stability")
    for warning in warnings:
        logger.warning(warning)
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "units": UNITS,
        "split": {"file": str(splits_path), "requested": "all" if all_rows else "test",
                  "n_test_parents": len(splits["test"]), "test_parents": splits["test"]},
        "models": {m: {"dirs": [str(d) for d in dirs], "sha256": {str(d): directory_hash(d) for d in dirs}}
                   for m, dirs in model_sets.items()},
        "datasets": reports,
        "metrics": results,
        "fit": ({m: compute_metrics(fit_rows, by_rows[FIT], edges)["overall"] for m, by_rows in predictions.items()}
                if fit_rows else None),
        "md": md_report(summaries),
        "figures_omitted": omitted,
        "warnings": warnings,
        "package_version": __version__,
    }
    write_metrics_json(metrics, output_dir / "metrics.json")
    (output_dir / "metrics.md").write_text(metrics_markdown(metrics) + "\n")
    return {"metrics": metrics, "warnings": warnings, "summary": _summary(results, reports, len(jobs))}


def _summary(results: dict, reports: dict, n_figures: int) -> str:
    parts = []
    for ref, by_model in results.items():
        overall = by_model["4g"]["overall"]
        r = reports[ref]
        numbers = [f"{label} {overall[key]:.3g} {unit}" for label, key, unit in (
            ("E MAE", "energy_mae_mev_per_atom", "meV/atom"), ("F MAE", "force_mae_mev_per_A", "meV/A"),
            ("q MAE", "charge_mae_e", "e")) if overall[key] is not None]
        parts.append(f"{ref}: {r['rows_used']} rows ({r['subset']}, {sum(r['excluded'].values())} excluded)"
                     + (", 4g " + ", ".join(numbers) if numbers else ""))
    return "validated on " + "; ".join(parts) + f"; {n_figures} parity figures"
