"""Error metrics of predicted energies, forces and charges against a reference dataset.

Inputs are plain data, so that everything here is testable without a trained model:
*records* are dataset rows (dicts with the columns of :mod:`hipqeq.data.schema`, as
:func:`hipqeq.data.read_records` returns them) and *predictions* are dicts aligned
with them, one per row, with ``energy`` (eV), ``forces`` ((n_atoms, 3) eV/Angstrom)
and ``charges`` ((n_atoms,) e, absent or ``None`` for a model without charges).

Compared values and the units of the metrics:

- energy per atom, E / n_atoms: MAE and RMSE in meV/atom;
- force components (every Cartesian component of every atom): MAE and RMSE in meV/Angstrom;
- per-atom charges: MAE and RMSE in e.

With ``x`` the reference and ``y`` the prediction over ``n`` compared values,

.. math::

    \\mathrm{MAE} = \\frac{1}{n} \\sum_k |y_k - x_k|, \\qquad
    \\mathrm{RMSE} = \\sqrt{\\frac{1}{n} \\sum_k (y_k - x_k)^2}, \\qquad
    R^2 = 1 - \\frac{\\sum_k (y_k - x_k)^2}{\\sum_k (x_k - \\bar x)^2}.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from typing import Sequence

import numpy as np

from hipqeq.data.schema import STATUS_OK
from hipqeq.data.split import assign_splits
from hipqeq.errors import ConfigError, HipqeqError

logger = logging.getLogger(__name__)

#: Compared quantities, in the order tables and figures list them.
QUANTITIES = ("energy", "forces", "charges")

#: Per quantity: prefix of its metric keys, scale from dataset units (eV, eV/Angstrom, e)
#: to metric units, and the metric unit's key suffix.
_METRIC_NAMING = {
    "energy": ("energy", 1000.0, "mev_per_atom"),
    "forces": ("force", 1000.0, "mev_per_A"),
    "charges": ("charge", 1.0, "e"),
}

#: Keys of one metrics block (one reference, one model, one group of rows), in order.
#: MAE/RMSE are in the units their names say; R^2 is dimensionless; ``n_*`` count the
#: compared values (structures for energies, force components, atoms for charges).
#: Charges also get the Pearson correlation and the slope of predicted against reference:
#: charges of different partition schemes differ in scale, so trends are what compares.
METRIC_KEYS = (
    "energy_mae_mev_per_atom", "energy_rmse_mev_per_atom", "energy_r2", "n_energy",
    "force_mae_mev_per_A", "force_rmse_mev_per_A", "force_r2", "n_force",
    "charge_mae_e", "charge_rmse_e", "charge_r2", "charge_pearson_r", "charge_slope", "n_charge",
)

#: Groups of rows metrics are reported for besides the overall block, in report order.
GROUP_KINDS = ("family", "charge_state", "temperature_band")

#: Name of the temperature band of rows without an MD temperature (built, rattled and
#: strained structures).
STATIC_BAND = "static"


@dataclasses.dataclass(frozen=True)
class Pairs:
    """Reference and predicted values of one quantity, flattened, in dataset units.

    ``row[k]`` is the index of the record value ``k`` came from, so that any group of
    rows selects its values with ``pairs.subset(row_mask)``.
    """

    reference: np.ndarray
    predicted: np.ndarray
    row: np.ndarray

    def subset(self, row_mask: np.ndarray) -> "Pairs":
        """The values of the rows where ``row_mask`` (one bool per record) is true."""
        keep = np.asarray(row_mask, dtype=bool)[self.row]
        return Pairs(self.reference[keep], self.predicted[keep], self.row[keep])

    def __len__(self) -> int:
        return len(self.reference)


def error_metrics(reference: np.ndarray, predicted: np.ndarray) -> dict:
    """``{"mae", "rmse", "r2", "n"}`` of ``predicted`` against ``reference`` (same units).

    MAE and RMSE are ``None`` without values; R^2 is ``None`` with fewer than two values
    or a constant reference (it is undefined there).
    """
    reference = np.asarray(reference, dtype=float).ravel()
    predicted = np.asarray(predicted, dtype=float).ravel()
    n = len(reference)
    if n == 0:
        return {"mae": None, "rmse": None, "r2": None, "n": 0}
    error = predicted - reference
    spread = float(np.sum((reference - reference.mean()) ** 2))
    r2 = 1.0 - float(np.sum(error**2)) / spread if n > 1 and spread > 0 else None
    return {"mae": float(np.mean(np.abs(error))), "rmse": float(np.sqrt(np.mean(error**2))),
            "r2": r2, "n": n}


def trend_metrics(reference: np.ndarray, predicted: np.ndarray) -> dict:
    """``{"pearson_r", "slope"}``: correlation of ``predicted`` with ``reference`` and the
    least-squares slope of predicted = a + slope * reference (``None`` with fewer than two
    values or a constant series)."""
    reference = np.asarray(reference, dtype=float).ravel()
    predicted = np.asarray(predicted, dtype=float).ravel()
    if len(reference) < 2 or np.ptp(reference) == 0:
        return {"pearson_r": None, "slope": None}
    slope = float(np.polyfit(reference, predicted, 1)[0])
    r = None if np.ptp(predicted) == 0 else float(np.corrcoef(reference, predicted)[0, 1])
    return {"pearson_r": r, "slope": slope}


def reference_charge_gap(xtb_rows: Sequence[dict], dft_rows: Sequence[dict]) -> dict | None:
    """How far the two references' charges (e) are apart on the frames both label: the
    DFT charges as reference, the xTB ones as prediction (MAE, RMSE, R^2, Pearson r and
    slope over all atoms; per element the mean of each and the MAE). A model trained on
    one cannot be closer to the other than this, on average, by learning alone. None
    when no frame has ok charges in both."""
    from ase.data import chemical_symbols

    xtb = {r["structure_id"]: r for r in xtb_rows if r.get("charges") is not None}
    pairs = [(xtb[r["structure_id"]], r) for r in dft_rows
             if r.get("charges") is not None and r["structure_id"] in xtb]
    if not pairs:
        return None
    numbers = np.concatenate([np.asarray(d["numbers"], dtype=int) for _, d in pairs])
    q_xtb = np.concatenate([np.asarray(x["charges"], dtype=float) for x, _ in pairs])
    q_dft = np.concatenate([np.asarray(d["charges"], dtype=float) for _, d in pairs])
    overall = {**error_metrics(q_dft, q_xtb), **trend_metrics(q_dft, q_xtb)}
    by_element = {chemical_symbols[z]: {"n_atoms": int(np.count_nonzero(numbers == z)),
                                        "xtb_mean_e": float(q_xtb[numbers == z].mean()),
                                        "dft_mean_e": float(q_dft[numbers == z].mean()),
                                        "mae_e": float(np.abs(q_xtb - q_dft)[numbers == z].mean())}
                  for z in np.unique(numbers)}
    return {"n_structures": len(pairs), "n_atoms": overall.pop("n"), "mae_e": overall.pop("mae"),
            "rmse_e": overall.pop("rmse"), **overall, "by_element": by_element}


#: Pseudo-status of an ok row whose energy, forces or charges hold a NaN or an infinity:
#: excluded and counted like a failed label (training drops such rows too).
NON_FINITE_LABEL = "non_finite_label"


def row_status(record: dict) -> str:
    """The row's ``status``, or :data:`NON_FINITE_LABEL` for an ok row with a label that
    is present but not finite."""
    if record["status"] == STATUS_OK and not all(np.all(np.isfinite(np.asarray(record[q], dtype=float)))
                                                 for q in QUANTITIES if record.get(q) is not None):
        return NON_FINITE_LABEL
    return record["status"]


def _label(prediction: dict, key: str):
    value = prediction.get(key)
    return None if value is None else np.asarray(value, dtype=float)


def _refuse_non_finite(records: Sequence[dict], predictions: Sequence[dict]) -> None:
    """A NaN or infinite prediction of a quantity the row has is an error naming the row:
    a model that diverges on a row has no error to average (the metrics would be NaN,
    which JSON and the tables show as "no data")."""
    for i, (record, prediction) in enumerate(zip(records, predictions)):
        for key in QUANTITIES:
            value = _label(prediction, key)
            if record.get(key) is not None and value is not None and not np.all(np.isfinite(value)):
                raise HipqeqError(f"row {i} ({record.get('structure_id')}, {record.get('structure_name')}): "
                                  f"the model predicted a non-finite {key}")


def element_counts(records: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(elements, counts): the atomic numbers present and a (n_rows, n_elements) matrix of
    how many atoms of each every row has."""
    numbers = [np.asarray(r["numbers"], dtype=int) for r in records]
    elements = np.unique(np.concatenate(numbers)) if numbers else np.zeros(0, dtype=int)
    counts = np.array([[np.count_nonzero(z == e) for e in elements] for z in numbers], dtype=float)
    return elements, counts.reshape(len(records), len(elements))


def fit_element_offsets(records: Sequence[dict], predictions: Sequence[dict]) -> dict:
    """Per-element energies (eV/atom) that best shift predictions onto the reference.

    Energies of another method (DFT, while the models learn xTB) sit on another absolute
    reference, and comparing them directly measures nothing but that offset. The offsets
    ``mu_Z`` minimise ``sum_rows ((E_ref - E_pred - sum_Z n_Z mu_Z) / n_atoms)^2`` (least
    squares, minimum norm where compositions do not determine every ``mu_Z``), over the
    rows that have both energies.

    Returns ``{"offsets_eV": {Z: mu_Z}, "rank": r, "n_rows": n}``: ``r`` of the ``n``
    energy differences are absorbed by the fit, so metrics need ``n > r``.
    """
    _refuse_non_finite(records, predictions)
    rows = [i for i, (r, p) in enumerate(zip(records, predictions))
            if r.get("energy") is not None and _label(p, "energy") is not None]
    used = [records[i] for i in rows]
    elements, counts = element_counts(used)
    if not rows:
        return {"offsets_eV": {}, "rank": 0, "n_rows": 0}
    n_atoms = counts.sum(axis=1)
    difference = np.array([records[i]["energy"] - float(_label(predictions[i], "energy")) for i in rows])
    design = counts / n_atoms[:, None]
    offsets, _, rank, _ = np.linalg.lstsq(design, difference / n_atoms, rcond=None)
    return {"offsets_eV": {int(z): float(mu) for z, mu in zip(elements, offsets)},
            "rank": int(rank), "n_rows": len(rows)}


def paired_values(records: Sequence[dict], predictions: Sequence[dict],
                  energy_offsets_eV: dict | None = None) -> dict[str, Pairs]:
    """Reference/prediction pairs of every quantity in dataset units.

    Energies are per atom (eV/atom); with ``energy_offsets_eV`` (``{Z: eV}``, from
    :func:`fit_element_offsets`) each predicted energy is shifted by its composition's
    offset first. Forces are flattened to components (eV/Angstrom), charges to atoms (e).
    A row contributes a quantity only where both the record and the prediction have it.
    A non-finite predicted value is an error naming the row; rows with non-finite labels
    never get here (:func:`usable_rows`).
    """
    if len(records) != len(predictions):
        raise HipqeqError(f"{len(predictions)} predictions for {len(records)} dataset rows")
    _refuse_non_finite(records, predictions)
    values = {q: ([], [], []) for q in QUANTITIES}
    for i, (record, prediction) in enumerate(zip(records, predictions)):
        numbers = np.asarray(record["numbers"], dtype=int)
        n_atoms = len(numbers)
        energy = _label(prediction, "energy")
        if record.get("energy") is not None and energy is not None:
            shift = sum(energy_offsets_eV.get(int(z), 0.0) for z in numbers) if energy_offsets_eV else 0.0
            _append(values["energy"], i, record["energy"] / n_atoms, (float(energy) + shift) / n_atoms)
        for key in ("forces", "charges"):
            predicted = _label(prediction, key)
            if record.get(key) is not None and predicted is not None:
                reference = np.asarray(record[key], dtype=float)
                if reference.size != predicted.size:
                    raise HipqeqError(f"row {i} ({record.get('structure_id')}): predicted {key} have "
                                      f"{predicted.size} values, the reference {reference.size}")
                _append(values[key], i, reference.ravel(), predicted.ravel())
    return {q: Pairs(np.concatenate(ref) if ref else np.zeros(0), np.concatenate(pred) if pred else np.zeros(0),
                     np.concatenate(row) if row else np.zeros(0, dtype=int))
            for q, (ref, pred, row) in values.items()}


def aligned_pairs(records: Sequence[dict], predictions: Sequence[dict]) -> tuple[dict[str, Pairs | None], dict]:
    """:func:`paired_values` for a reference whose energies sit on another absolute
    reference than the model's: energies compared after :func:`fit_element_offsets`.

    Returns ``(pairs, fit)``; ``pairs["energy"]`` is ``None`` (not comparable) when the
    fitted offsets absorb every energy difference (no more rows than the fit's rank).
    """
    fit = fit_element_offsets(records, predictions)
    pairs: dict[str, Pairs | None] = dict(paired_values(records, predictions, fit["offsets_eV"]))
    if fit["n_rows"] <= fit["rank"]:
        pairs["energy"] = None
    return pairs, fit


def _append(store: tuple[list, list, list], row: int, reference, predicted) -> None:
    reference = np.atleast_1d(np.asarray(reference, dtype=float))
    store[0].append(reference)
    store[1].append(np.atleast_1d(np.asarray(predicted, dtype=float)))
    store[2].append(np.full(len(reference), row, dtype=int))


def metrics_block(pairs: dict[str, Pairs | None]) -> dict:
    """One block of :data:`METRIC_KEYS` from the pairs of each quantity (``None`` or a
    missing quantity: not applicable, every metric of it null)."""
    block = {}
    for quantity in QUANTITIES:
        prefix, scale, unit = _METRIC_NAMING[quantity]
        values = pairs.get(quantity)
        result = (error_metrics(values.reference, values.predicted) if values is not None
                  else {"mae": None, "rmse": None, "r2": None, "n": 0})
        block[f"{prefix}_mae_{unit}"] = None if result["mae"] is None else result["mae"] * scale
        block[f"{prefix}_rmse_{unit}"] = None if result["rmse"] is None else result["rmse"] * scale
        block[f"{prefix}_r2"] = result["r2"]
        if quantity == "charges":
            trend = (trend_metrics(values.reference, values.predicted) if values is not None
                     else {"pearson_r": None, "slope": None})
            block["charge_pearson_r"], block["charge_slope"] = trend["pearson_r"], trend["slope"]
        block[f"n_{prefix}"] = result["n"]
    return block


def _checked_edges(edges_K: Sequence[float]) -> list[float]:
    edges = [float(e) for e in edges_K]
    if not edges or any(hi <= lo for lo, hi in zip(edges[:-1], edges[1:])):
        raise ConfigError(f"validation.temperature_bands_K must be one or more increasing "
                          f"temperatures, got {list(edges_K)}")
    return edges


def band_names(edges_K: Sequence[float]) -> list[str]:
    """Names of every temperature band ``edges_K`` cut, coldest first, then
    :data:`STATIC_BAND`; e.g. [0, 150, 300] -> ['0-150K', '150-300K', 'above_300K',
    'static'] (and 'below_<edge>K' first when the first edge is above 0 K)."""
    edges = _checked_edges(edges_K)
    names = [f"{lo:g}-{hi:g}K" for lo, hi in zip(edges[:-1], edges[1:])]
    below = [f"below_{edges[0]:g}K"] if edges[0] > 0 else []
    return below + names + [f"above_{edges[-1]:g}K", STATIC_BAND]


def temperature_band(temperature_K: float | None, edges_K: Sequence[float]) -> str:
    """The band of one temperature: [lo, hi) intervals between the increasing ``edges_K``;
    ``None`` (a structure that never ran MD) is :data:`STATIC_BAND`."""
    if temperature_K is None or np.isnan(temperature_K):
        return STATIC_BAND
    edges = _checked_edges(edges_K)
    if temperature_K >= edges[-1]:
        return f"above_{edges[-1]:g}K"
    if temperature_K < edges[0]:
        return f"below_{edges[0]:g}K"
    index = int(np.searchsorted(edges, temperature_K, side="right")) - 1
    return f"{edges[index]:g}-{edges[index + 1]:g}K"


def charge_state(record: dict) -> str:
    """The family and total charge of a row, e.g. ``vacancy_I Q=+1``, ``vacancy_I Q=0``
    (e): a neutral and a charged defect share a family and differ only in what a local,
    charge-blind model cannot see."""
    charge = float(record.get("total_charge") or 0.0)
    return f"{record['family']} Q={'0' if charge == 0 else f'{charge:+g}'}"


def row_groups(records: Sequence[dict], temperature_bands_K: Sequence[float]) -> dict[str, dict[str, np.ndarray]]:
    """Row masks of every group metrics are reported for.

    ``{"overall": {"all": mask}, "family": {family: mask}, "charge_state": {family and
    total charge: mask}, "temperature_band": {band: mask}}`` with only the groups present in
    ``records`` (families and charge states sorted, bands in temperature order; see
    :func:`charge_state`).
    """
    n = len(records)
    families = np.array([r["family"] for r in records], dtype=object)
    states = np.array([charge_state(r) for r in records], dtype=object)
    bands = np.array([temperature_band(r.get("temperature_K"), temperature_bands_K) for r in records],
                     dtype=object)
    return {
        "overall": {"all": np.ones(n, dtype=bool)},
        "family": {f: families == f for f in sorted(set(families.tolist()))},
        "charge_state": {c: states == c for c in sorted(set(states.tolist()))},
        "temperature_band": {b: bands == b for b in band_names(temperature_bands_K) if np.any(bands == b)},
    }


def compute_metrics(records: Sequence[dict], predictions: Sequence[dict],
                    temperature_bands_K: Sequence[float],
                    energy_offsets_eV: dict | None = None) -> dict:
    """Metrics of ``predictions`` against ``records``, overall and per group (:func:`row_groups`).

    Returns ``{"overall": block, "family": {name: block}, "charge_state": {name: block},
    "temperature_band": {name: block}}`` where every block has exactly the keys
    :data:`METRIC_KEYS`.
    """
    pairs = paired_values(records, predictions, energy_offsets_eV)
    return grouped_metrics(pairs, row_groups(records, temperature_bands_K))


def grouped_metrics(pairs: dict[str, Pairs | None], groups: dict[str, dict[str, np.ndarray]]) -> dict:
    """:func:`metrics_block` of every group of :func:`row_groups`."""
    subset = {kind: {name: metrics_block({q: None if p is None else p.subset(mask) for q, p in pairs.items()})
                     for name, mask in masks.items()}
              for kind, masks in groups.items()}
    return {"overall": subset["overall"]["all"], **{kind: subset[kind] for kind in GROUP_KINDS}}


#: Split names, in report order.
SPLIT_NAMES = ("train", "valid", "test")


def failures_by_split(records: Sequence[dict], splits: dict, source: str = "dataset") -> dict[str, dict[str, int]]:
    """``{split: {status: count}}`` of the rows whose label failed (status other than ok),
    for every split name of :data:`SPLIT_NAMES` (train and valid of committee member 0).
    A failed training row is a structure the models never saw: it belongs in the report
    as much as a failed test row."""
    failed = [r for r in records if r["status"] != STATUS_OK]
    try:
        names = assign_splits([r["parent_id"] for r in failed], splits)
    except HipqeqError as exc:
        raise HipqeqError(f"{source}: {exc}") from None
    return {split: dict(sorted(Counter(r["status"] for r, name in zip(failed, names) if name == split).items()))
            for split in SPLIT_NAMES}


def usable_rows(records: Sequence[dict], splits: dict | None, source: str = "dataset") -> tuple[list[dict], dict]:
    """The rows to validate on: status ok with finite labels (:func:`row_status`), and
    held-out test parents when ``splits`` is given.

    Falls back to every row (and says so in the returned report's ``warning``) when the
    test parents have no ok row, so that a tiny study still gets numbers.

    Returns ``(rows, report)`` with report keys ``subset`` ("test" or "all"),
    ``rows_total``, ``rows_in_subset``, ``rows_used``, ``excluded`` (``{status: count}``
    of the subset's rows that are not ok, :data:`NON_FINITE_LABEL` included) and
    ``warning`` (``None`` or a message).
    """
    records = list(records)
    status = {id(r): row_status(r) for r in records}
    subset, warning = "all", None
    chosen = records
    if splits is not None:
        try:
            names = assign_splits([r["parent_id"] for r in records], splits)
        except HipqeqError as exc:
            raise HipqeqError(f"{source}: {exc}") from None
        test = [r for r, name in zip(records, names) if name == "test"]
        if any(status[id(r)] == STATUS_OK for r in test):
            subset, chosen = "test", test
        else:
            warning = (f"{source}: the held-out test parents have {len(test)} row(s) and none is ok; "
                       f"validating on ALL {len(records)} rows instead, training rows included: "
                       "these errors are not test errors")
    used = [r for r in chosen if status[id(r)] == STATUS_OK]
    excluded = Counter(status[id(r)] for r in chosen if status[id(r)] != STATUS_OK)
    if excluded.get(NON_FINITE_LABEL):
        logger.warning("%s: excluding %d ok row(s) whose labels are not finite", source, excluded[NON_FINITE_LABEL])
    return used, {"subset": subset, "rows_total": len(records), "rows_in_subset": len(chosen),
                  "rows_used": len(used), "excluded": dict(sorted(excluded.items())), "warning": warning}
