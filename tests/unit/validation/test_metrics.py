"""Metrics against hand-computed values; row selection, groups and energy alignment."""

from __future__ import annotations

import numpy as np
import pytest

from hipqeq.errors import ConfigError, HipqeqError
from hipqeq.validation.metrics import (
    METRIC_KEYS,
    NON_FINITE_LABEL,
    aligned_pairs,
    charge_state,
    compute_metrics,
    error_metrics,
    fit_element_offsets,
    paired_values,
    row_groups,
    temperature_band,
    trend_metrics,
    usable_rows,
)

BANDS_K = [0, 150, 300, 1000]


def _record(numbers, energy, forces, charges, family="pristine", temperature_K=None, status="ok"):
    return {"structure_id": f"s{len(numbers)}{energy}", "parent_id": "p", "numbers": numbers,
            "energy": energy, "forces": forces, "charges": charges, "family": family,
            "temperature_K": temperature_K, "status": status}


@pytest.fixture
def hand_case():
    """Two structures with errors chosen so that every metric is easy by hand:

    energies per atom: reference (-5, -6) eV/atom, predicted (-4.9, -6.1): errors +-0.1 eV/atom
      -> MAE = RMSE = 100 meV/atom; R^2 = 1 - 0.02 / 0.5 = 0.96.
    forces: 18 components, two wrong by 0.1 and 0.3 eV/A
      -> MAE = 0.4/18 eV/A = 22.22 meV/A; RMSE = sqrt(0.10/18) eV/A = 74.54 meV/A.
    charges: 6 atoms, two wrong by -0.1 and +0.1 e -> MAE = 0.2/6 e; RMSE = sqrt(0.02/6) e.
    """
    records = [
        _record([55, 53], -10.0, [[0.1, 0, 0], [-0.1, 0, 0]], [0.5, -0.5], "pristine", None),
        _record([55, 55, 53, 53], -24.0, np.zeros((4, 3)).tolist(), [0.2, 0.2, -0.2, -0.2],
                "vacancy_I", 120.0),
    ]
    forces2 = np.zeros((4, 3))
    forces2[2, 1] = 0.3
    predictions = [
        {"energy": -9.8, "forces": [[0.2, 0, 0], [-0.1, 0, 0]], "charges": [0.4, -0.4]},
        {"energy": -24.4, "forces": forces2, "charges": [0.2, 0.2, -0.2, -0.2]},
    ]
    return records, predictions


def test_error_metrics_by_hand():
    m = error_metrics([1.0, 2.0, 3.0], [1.5, 2.0, 2.0])
    assert m["n"] == 3
    assert m["mae"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(np.sqrt(1.25 / 3))
    assert m["r2"] == pytest.approx(1 - 1.25 / 2.0)
    assert error_metrics([], [])["mae"] is None
    assert error_metrics([2.0, 2.0], [2.0, 2.1])["r2"] is None, "R^2 of a constant reference is undefined"


def test_overall_metrics_match_hand_computed_values(hand_case):
    metrics = compute_metrics(*hand_case, BANDS_K)
    overall = metrics["overall"]
    assert tuple(overall) == METRIC_KEYS
    assert overall["energy_mae_mev_per_atom"] == pytest.approx(100.0)
    assert overall["energy_rmse_mev_per_atom"] == pytest.approx(100.0)
    assert overall["energy_r2"] == pytest.approx(0.96)
    assert overall["force_mae_mev_per_A"] == pytest.approx(400.0 / 18)
    assert overall["force_rmse_mev_per_A"] == pytest.approx(1000 * np.sqrt(0.10 / 18))
    assert overall["charge_mae_e"] == pytest.approx(0.2 / 6)
    assert overall["charge_rmse_e"] == pytest.approx(np.sqrt(0.02 / 6))
    assert (overall["n_energy"], overall["n_force"], overall["n_charge"]) == (2, 18, 6)


def test_groups_split_rows_by_family_and_temperature_band(hand_case):
    metrics = compute_metrics(*hand_case, BANDS_K)
    assert sorted(metrics["family"]) == ["pristine", "vacancy_I"]
    assert list(metrics["temperature_band"]) == ["0-150K", "static"]
    vacancy = metrics["family"]["vacancy_I"]
    # second structure alone: forces 12 components, one off by 0.3 eV/A; charges exact
    assert vacancy["force_mae_mev_per_A"] == pytest.approx(300.0 / 12)
    assert vacancy["charge_mae_e"] == pytest.approx(0.0)
    assert vacancy["energy_r2"] is None, "one structure: R^2 undefined"
    assert metrics["temperature_band"]["static"] == metrics["family"]["pristine"]


def test_model_without_charges_has_null_charge_metrics(hand_case):
    records, predictions = hand_case
    no_charges = [dict(p, charges=None) for p in predictions]
    overall = compute_metrics(records, no_charges, BANDS_K)["overall"]
    assert overall["charge_mae_e"] is None and overall["charge_rmse_e"] is None
    assert overall["n_charge"] == 0
    assert overall["energy_mae_mev_per_atom"] == pytest.approx(100.0)


@pytest.mark.parametrize("temperature, band", [
    (None, "static"), (float("nan"), "static"), (0.0, "0-150K"), (149.9, "0-150K"),
    (150.0, "150-300K"), (999.0, "300-1000K"), (1000.0, "above_1000K")])
def test_temperature_bands_are_half_open(temperature, band):
    assert temperature_band(temperature, BANDS_K) == band


def test_band_below_first_edge_and_bad_edges():
    assert temperature_band(10.0, [50, 300]) == "below_50K"
    with pytest.raises(ConfigError, match="temperature_bands_K"):
        temperature_band(10.0, [300, 50])


def test_row_groups_list_only_present_groups(hand_case):
    groups = row_groups(hand_case[0], BANDS_K)
    assert list(groups["overall"]["all"]) == [True, True]
    assert list(groups["temperature_band"]["0-150K"]) == [False, True]


def test_charge_states_split_a_family_by_total_charge(hand_case):
    """A neutral and a charged iodide vacancy share the family vacancy_I; charge states
    tell them apart (a row without total_charge is neutral)."""
    records, predictions = hand_case
    charged = dict(records[1], structure_id="charged", total_charge=1.0)
    records = [records[0], dict(records[1], total_charge=0.0), charged]
    assert [charge_state(r) for r in records] == ["pristine Q=0", "vacancy_I Q=0", "vacancy_I Q=+1"]
    groups = row_groups(records, BANDS_K)
    assert list(groups["charge_state"]) == ["pristine Q=0", "vacancy_I Q=+1", "vacancy_I Q=0"]
    assert list(groups["charge_state"]["vacancy_I Q=+1"]) == [False, False, True]
    assert list(groups["family"]["vacancy_I"]) == [False, True, True]
    # the charged row predicted 0.5 eV/atom off: only its charge state shows it alone
    wrong = dict(predictions[1], energy=predictions[1]["energy"] - 0.5 * 4)
    metrics = compute_metrics(records, [*predictions, wrong], BANDS_K)
    assert metrics["charge_state"]["vacancy_I Q=0"]["energy_mae_mev_per_atom"] == pytest.approx(100.0)
    assert metrics["charge_state"]["vacancy_I Q=+1"]["energy_mae_mev_per_atom"] == pytest.approx(600.0)
    assert metrics["family"]["vacancy_I"]["energy_mae_mev_per_atom"] == pytest.approx(350.0)


def test_mismatched_predictions_are_refused(hand_case):
    records, predictions = hand_case
    with pytest.raises(HipqeqError, match="2 predictions for 1 dataset rows"):
        paired_values(records[:1], predictions)
    bad = [dict(predictions[0], forces=[[0.0, 0.0, 0.0]]), predictions[1]]
    with pytest.raises(HipqeqError, match="forces have 3 values, the reference 6"):
        paired_values(records, bad)


@pytest.mark.parametrize("key", ["energy", "forces", "charges"])
def test_a_non_finite_prediction_is_an_error_naming_the_row(hand_case, key):
    """A diverged prediction would make every MAE NaN, which the report writes as "no data"."""
    records, predictions = hand_case
    bad = dict(predictions[1])
    bad[key] = np.where(np.ones_like(np.asarray(bad[key], dtype=float), dtype=bool), np.nan, 0.0)
    with pytest.raises(HipqeqError, match=rf"row 1 \(s4-24.0, .*\): the model predicted a non-finite {key}"):
        paired_values(records, [predictions[0], bad])
    with pytest.raises(HipqeqError, match=rf"row 1 .* non-finite {key}"):
        aligned_pairs(records, [predictions[0], bad])  # before the offset fit would see it


def test_rows_with_non_finite_labels_are_excluded_and_counted(hand_case):
    """As training drops them: the MAE is over the rows with finite labels, and the
    report says how many were left out."""
    records, predictions = hand_case
    nan_forces = dict(records[1], forces=np.full((4, 3), np.nan).tolist())
    rows, report = usable_rows([records[0], nan_forces], None)
    assert rows == [records[0]] and report["excluded"] == {NON_FINITE_LABEL: 1}
    overall = compute_metrics(rows, predictions[:1], BANDS_K)["overall"]
    assert overall["energy_mae_mev_per_atom"] == pytest.approx(100.0) and overall["n_energy"] == 1


def test_element_offsets_remove_a_per_element_reference_shift():
    """Predictions = reference minus sum_Z n_Z mu_Z: the fitted offsets recover mu_Z and
    the aligned energies agree exactly. Charge-balanced compositions (CsI, PbI2, CsPbI3,
    Cs2PbI4) are all sums of CsI and PbI2 and fix only two combinations of the three
    offsets; the iodide vacancy (CsPbI2) fixes the third."""
    mu = {55: -2.0, 82: -5.0, 53: -1.0}
    compositions = [[55, 82, 53, 53, 53], [55, 55, 82, 53, 53, 53, 53], [82, 53, 53], [55, 82, 53, 53]]
    records = [_record(z, -3.0 * len(z), None, None) for z in compositions]
    predictions = [{"energy": r["energy"] - sum(mu[z] for z in r["numbers"])} for r in records]
    balanced = fit_element_offsets(records[:3], predictions[:3])
    assert balanced["rank"] == 2
    fit = fit_element_offsets(records, predictions)
    assert fit["rank"] == 3 and fit["n_rows"] == 4
    for z, value in mu.items():
        assert fit["offsets_eV"][z] == pytest.approx(value)
    aligned = compute_metrics(records, predictions, BANDS_K, fit["offsets_eV"])["overall"]
    assert aligned["energy_mae_mev_per_atom"] == pytest.approx(0.0, abs=1e-9)
    raw = compute_metrics(records, predictions, BANDS_K)["overall"]
    assert raw["energy_mae_mev_per_atom"] > 1000.0


def test_usable_rows_keep_ok_test_rows_and_count_failures(splits, xtb_path):
    from hipqeq.data import read_records

    rows, report = usable_rows(read_records(xtb_path), splits)
    assert report["subset"] == "test" and report["warning"] is None
    assert {r["parent_id"] for r in rows} == set(splits["test"])
    assert all(r["status"] == "ok" for r in rows)
    # 5 ok test rows + 2 failed test rows; the failed training row is not in the subset
    assert (report["rows_total"], report["rows_in_subset"], report["rows_used"]) == (10, 7, 5)
    assert report["excluded"] == {"error": 1, "scf_not_converged": 1}


def test_usable_rows_fall_back_to_all_rows_loudly(splits, xtb_path):
    from hipqeq.data import read_records

    no_test = dict(splits, test=[], members=[{"train": ["slab", "slab_vac_I", "slab_strained"], "valid": []}])
    rows, report = usable_rows(read_records(xtb_path), no_test, source="xtb")
    assert report["subset"] == "all" and len(rows) == 7
    assert "ALL 10 rows" in report["warning"] and report["warning"].startswith("xtb")
    assert report["excluded"] == {"error": 2, "scf_not_converged": 1}


def test_aligned_pairs_refuse_energies_the_offsets_absorb():
    """Two compositions and two or three offsets: the fit can make both energies exact,
    so there is nothing left to compare; forces are unaffected by the alignment."""
    records = [_record([55, 82, 53, 53, 53], -15.0, [[0.0, 0.0, 0.0]] * 5, None),
               _record([55, 82, 53, 53], -12.5, [[0.0, 0.0, 0.0]] * 4, None)]
    predictions = [{"energy": -300.0, "forces": np.full((5, 3), 0.1)},
                   {"energy": -250.0, "forces": np.full((4, 3), 0.1)}]
    pairs, fit = aligned_pairs(records, predictions)
    assert fit["n_rows"] == 2 and fit["rank"] == 2
    assert pairs["energy"] is None
    assert np.allclose(pairs["forces"].predicted - pairs["forces"].reference, 0.1)
    more = records + [_record([55, 82, 53, 53, 53], -15.5, None, None)]
    pairs, fit = aligned_pairs(more, predictions + [{"energy": -300.0}])
    # the two CsPbI3 rows differ by 0.5 eV in the reference and not at all in the
    # prediction; the least-squares offsets split that: errors -0.05 and +0.05 eV/atom
    assert np.allclose(np.sort(pairs["energy"].predicted - pairs["energy"].reference)[[0, -1]], [-0.05, 0.05])


def test_charge_trends_see_through_a_change_of_scale():
    """Charges of another scheme, scaled by 0.5 and shifted: poor MAE, perfect trend."""
    reference = np.array([0.8, 0.9, -0.4, -0.5, -0.6, -0.2])
    trend = trend_metrics(reference, 0.5 * reference + 0.01)
    assert trend["pearson_r"] == pytest.approx(1.0) and trend["slope"] == pytest.approx(0.5)
    assert trend_metrics([0.3], [0.2]) == {"pearson_r": None, "slope": None}
    records = [_record([55, 82, 53, 53, 53, 53], None, None, reference.tolist())]
    block = compute_metrics(records, [{"charges": 0.5 * reference}], BANDS_K)["overall"]
    assert block["charge_slope"] == pytest.approx(0.5)
    assert block["charge_mae_e"] == pytest.approx(np.mean(np.abs(0.5 * reference)))
