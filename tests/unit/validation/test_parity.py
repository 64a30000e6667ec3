"""Parity figures: written as non-empty PNG and PDF, with and without data."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest

from hipqeq.validation import parity
from hipqeq.validation.parity import ParitySeries, file_tag, parity_figure, save_figure


def _image_shape(path):
    return matplotlib.image.imread(path).shape


@pytest.fixture
def series():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    return [ParitySeries("4G", x, x + 0.05 * rng.normal(size=200)),
            ParitySeries("baseline", x, x + 0.2 * rng.normal(size=200))]


def test_parity_figure_is_written_as_png_and_pdf(tmp_path, series):
    figure = parity_figure(series, "forces", "xTB reference: force components", "test parents")
    png, pdf = save_figure(figure, tmp_path / "sub" / "parity_xtb_forces")
    height, width, channels = _image_shape(png)
    assert height > 300 and width > 300 and channels in (3, 4)
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 1000
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert any(t.startswith("4G: MAE") and "meV/Å" in t for t in texts)
    assert any(t.startswith("baseline: MAE") for t in texts)
    assert figure.axes[0].get_xlabel() == "reference force component (eV/Å)"


def test_metrics_in_the_panel_use_metric_units(series):
    figure = parity_figure(series[:1], "energy", "energy")
    (text,) = [t.get_text() for t in figure.axes[0].texts]
    rmse_mev = 1000 * np.sqrt(np.mean((series[0].predicted - series[0].reference) ** 2))
    assert f"RMSE {rmse_mev:.3g} meV/atom" in text


def test_a_figure_without_data_is_refused():
    empty = ParitySeries("4G", np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="no series has data"):
        parity_figure([empty], "charges", "DFT reference: charges", "Mulliken charge scheme")


def test_large_sets_are_drawn_as_hexbin(monkeypatch, series):
    monkeypatch.setattr(parity, "HEXBIN_MIN_POINTS", 100)
    figure = parity_figure(series, "charges", "charges")
    assert any(type(c).__name__ == "PolyCollection" for c in figure.axes[0].collections)


def test_file_tag_keeps_names_readable():
    assert file_tag("substitution_Br_I") == "substitution_Br_I"
    assert file_tag("0-150K") == "0-150K"
    assert file_tag("my family/x y") == "my_family_x_y"


def test_density_colouring_only_for_large_sets(series):
    """A colour bar (second axes) explains the density colours of a large set; a small
    set is drawn plainly, without one."""
    assert len(parity_figure(series, "forces", "forces").axes) == 2
    small = [ParitySeries(s.label, s.reference[:20], s.predicted[:20]) for s in series]
    assert len(parity_figure(small, "forces", "forces").axes) == 1
