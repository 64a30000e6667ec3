"""MD summaries: reading, the metrics rows, the stability figure."""

from __future__ import annotations

import json

import matplotlib.image
import pytest

from hipqeq.errors import HipqeqError
from hipqeq.validation.md_check import MD_REPORT_KEYS, md_report, md_stability_figure, read_md_summaries
from hipqeq.validation.parity import save_figure


def _summary(tmp_path, name, flew_off=False, collapsed=False, **changes):
    """A summary in the format of hipqeq.md.run_md_from_config (keys it writes that the
    check does not read left out): 3 Langevin steps, then a 2-step NVE tail."""
    summary = {"name": name, "models": ["results/models/4g_0", "results/models/4g_1"], "n_atoms": 28,
               "time_fs": [0.0, 10.0, 20.0, 30.0, 40.0], "temperature_K": [300.0, 310.0, 290.0, 305.0, 300.0],
               "total_energy_eV": [-100.0, -99.99, -100.01, -99.98, -99.98], "phase": ["nvt"] * 3 + ["nve"] * 2,
               "energy_drift_eV_per_atom_ps": 2.0e-4, "max_force_eV_A": 1.5, "max_displacement_A": 0.4,
               "atoms_flew_off": flew_off, "atoms_collapsed": collapsed, "energy_fell": False,
               "mean_temperature_K": 300.0,
               "stable": not (flew_off or collapsed),
               "stopped_early": False, "reason": None, **changes}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(summary))
    return path


def test_report_rows_convert_units(tmp_path):
    summaries = read_md_summaries([_summary(tmp_path, "rp1_slab"), _summary(tmp_path, "rp1_slab__vac_I", True),
                                   _summary(tmp_path, "rp1_slab__vac_Cs", collapsed=True),
                                   _summary(tmp_path, "rp2_slab", energy_fell=True, stable=False)])
    rows = md_report(summaries)
    assert [tuple(r) for r in rows] == [MD_REPORT_KEYS] * 4
    assert rows[0]["energy_drift_mev_per_atom_per_ps"] == pytest.approx(0.2)
    assert rows[0]["duration_ps"] == pytest.approx(0.04)
    assert rows[0]["model"] == "4g", "committee members 4g_0 and 4g_1 are one model"
    assert rows[0]["structure"] == "rp1_slab"
    assert [(r["flew_off"], r["collapsed"], r["energy_fell"], r["stable"]) for r in rows] == [
        (False, False, False, True), (True, False, False, False), (False, True, False, False),
        (False, False, True, False)]
    assert rows[1]["file"].endswith("rp1_slab__vac_I.json")


def test_bad_summaries_name_the_file(tmp_path):
    path = _summary(tmp_path, "short", time_fs=[0.0, 10.0])
    with pytest.raises(HipqeqError, match="short.json: MD time series of different lengths"):
        read_md_summaries([path])
    path.write_text(json.dumps({"name": "x"}))
    with pytest.raises(HipqeqError, match="short.json: MD summary lacks models, n_atoms"):
        read_md_summaries([path])


@pytest.mark.parametrize("n_runs", [0, 2])
def test_stability_figure_is_written_with_or_without_runs(tmp_path, n_runs):
    """Each run's NVE tail (its drift fit) starts at its own time, marked in its colour:
    the second run here has a longer NVT part."""
    paths = [_summary(tmp_path, f"run{k}", flew_off=k == 1, collapsed=k == 1,
                      phase=["nvt"] * (3 + k) + ["nve"] * (2 - k)) for k in range(n_runs)]
    figure = md_stability_figure(read_md_summaries(paths))
    png, pdf = save_figure(figure, tmp_path / "md_stability")
    assert matplotlib.image.imread(png).shape[0] > 300 and pdf.stat().st_size > 1000
    energy_ax = figure.axes[0]
    if n_runs:
        labels = [t.get_text() for t in energy_ax.get_legend().get_texts()]
        assert "drift 0.2 meV/atom/ps" in labels[0] and "ATOM FLEW OFF" in labels[1]
        assert "ATOMS COLLAPSED" in labels[1] and "COLLAPSED" not in labels[0]
        runs = [line for line in energy_ax.lines if line.get_linestyle() == "-"]
        starts = [line for line in energy_ax.lines if line.get_linestyle() == ":"]
        assert [line.get_xdata()[0] for line in starts] == [0.03, 0.04]
        assert [line.get_color() for line in starts] == [line.get_color() for line in runs]
    else:
        assert [t.get_text() for t in energy_ax.texts] == ["no MD summaries"]


def test_stability_figure_with_a_run_that_failed_at_its_first_step(tmp_path):
    """`hipqeq md` writes empty series when the model fails on the start structure."""
    failed = _summary(tmp_path, "failed", time_fs=[], temperature_K=[], total_energy_eV=[], phase=[],
                      energy_drift_eV_per_atom_ps=None, mean_temperature_K=None, stable=False,
                      stopped_early=True, reason="QEqNotConverged on the start structure: 1000 iterations")
    summaries = read_md_summaries([_summary(tmp_path, "ok"), failed])
    png, _ = save_figure(md_stability_figure(summaries), tmp_path / "md_stability")
    assert matplotlib.image.imread(png).shape[0] > 300
    rows = md_report(summaries)
    assert [(r["stable"], r["stopped_early"]) for r in rows] == [(True, False), (False, True)]
    assert rows[1]["reason"].startswith("QEqNotConverged")
