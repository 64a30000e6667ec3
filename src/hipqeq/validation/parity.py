"""Parity plots: predicted against reference energies per atom, force components, charges.

One panel per figure: the full 4G potential as a scatter, coloured by point density
from :data:`DENSITY_MIN_POINTS` points on (a hexbin from :data:`HEXBIN_MIN_POINTS` on);
other models (the short-range-only baseline, the MACE peer) as plain scatters on the same
axes; the y = x line; axis labels with units; MAE / RMSE / R^2 of every model in the
panel. There is no figure without data: asking for one is an error (the validation stage
leaves such a figure out and says why in metrics.md).

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state), and
written as PNG and PDF next to each other.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from hipqeq.validation.metrics import error_metrics, trend_metrics

#: Per quantity: axis label, axis unit (dataset units), metric unit, scale axis -> metric.
QUANTITY_AXES = {
    "energy": ("energy per atom", "eV/atom", "meV/atom", 1000.0),
    "forces": ("force component", "eV/Å", "meV/Å", 1000.0),
    "charges": ("charge", "e", "e", 1.0),
}

#: From this many points on, the primary model's scatter is coloured by point density
#: (below, a plain scatter shows every point anyway).
DENSITY_MIN_POINTS = 200

#: From this many points on, the primary model is drawn as a hexbin rather than a scatter.
HEXBIN_MIN_POINTS = 50_000

#: Scatters with more points are rasterised inside the PDF (keeps vector files small).
RASTERISE_MIN_POINTS = 1_000

#: Colour of the primary model when its points are few enough to draw plainly.
PRIMARY_COLOUR = "tab:blue"

#: Colours of the secondary models (the baseline, the MACE peer), in order.
SECONDARY_COLOURS = ("tab:red", "tab:orange", "tab:purple")

_DENSITY_BINS = 60


@dataclasses.dataclass(frozen=True)
class ParitySeries:
    """One model's predictions against the reference, in dataset units (eV/atom,
    eV/Angstrom, e), as flat arrays of equal length."""

    label: str
    reference: np.ndarray
    predicted: np.ndarray


def file_tag(name: str) -> str:
    """``name`` made safe for a file name (anything but letters, digits, ``._+-`` -> ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", str(name))


def _point_density(x: np.ndarray, y: np.ndarray, extent: tuple[float, float]) -> np.ndarray:
    """Number of points in each point's cell of a 2D histogram: a cheap density estimate
    that scales to millions of force components (a KDE does not)."""
    edges = np.linspace(extent[0], extent[1], _DENSITY_BINS + 1)
    counts, _, _ = np.histogram2d(x, y, bins=(edges, edges))
    ix = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, _DENSITY_BINS - 1)
    iy = np.clip(np.searchsorted(edges, y, side="right") - 1, 0, _DENSITY_BINS - 1)
    return counts[ix, iy]


def _extent(series: Sequence[ParitySeries]) -> tuple[float, float]:
    values = np.concatenate([np.concatenate([s.reference, s.predicted]) for s in series])
    lo, hi = float(values.min()), float(values.max())
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(lo) * 0.05, 1e-3)
    return lo - pad, hi + pad


def _metrics_line(label: str, reference: np.ndarray, predicted: np.ndarray, quantity: str) -> str:
    _, _, unit, scale = QUANTITY_AXES[quantity]
    m = error_metrics(reference, predicted)
    r2 = "n/a" if m["r2"] is None else f"{m['r2']:.4f}"
    line = f"{label}: MAE {m['mae'] * scale:.3g}, RMSE {m['rmse'] * scale:.3g} {unit}, R² {r2}"
    if quantity == "charges":  # schemes differ in scale: the trend is what compares
        trend = {k: "n/a" if v is None else f"{v:.3f}" for k, v in trend_metrics(reference, predicted).items()}
        line += f", r {trend['pearson_r']}, slope {trend['slope']}"
    return line + f", n={m['n']}"


def parity_figure(series: Sequence[ParitySeries], quantity: str, title: str,
                  note: str | None = None) -> Figure:
    """A parity figure of ``quantity`` ("energy", "forces" or "charges").

    ``series[0]`` is the primary model (density-coloured when large); later series are
    drawn as plain scatters beneath it. Empty series are left out of the panel; with none
    left, :class:`ValueError`. ``note`` is a second title line (split, charge scheme,
    alignment of energies).
    """
    shown = [s for s in series if len(s.reference)]
    if not shown:
        raise ValueError(f"parity figure '{title}': no series has data")
    name, axis_unit, _, _ = QUANTITY_AXES[quantity]
    # fixed axes rectangles (figure fractions): constrained layout would double the
    # drawing time of the dozens of figures a validation run writes
    figure = Figure(figsize=(5.6, 5.4))
    ax = figure.add_axes((0.14, 0.1, 0.68, 0.76))
    ax.set_xlabel(f"reference {name} ({axis_unit})")
    ax.set_ylabel(f"predicted {name} ({axis_unit})")
    ax.set_title(title if note is None else f"{title}\n" + "\n".join(textwrap.wrap(note, 70)), fontsize=9)
    extent = _extent(shown)
    ax.plot(extent, extent, color="black", linestyle="--", linewidth=0.8, zorder=3, label="y = x")
    lines = []
    primary, secondary = shown[0], shown[1:]
    for index, s in enumerate(secondary):
        colour = SECONDARY_COLOURS[index % len(SECONDARY_COLOURS)]
        ax.scatter(s.reference, s.predicted, s=10, color=colour, alpha=0.45, edgecolors="none",
                   label=s.label, zorder=1, rasterized=len(s.reference) >= RASTERISE_MIN_POINTS)
        lines.append((_metrics_line(s.label, s.reference, s.predicted, quantity), colour))
    n_primary = len(primary.reference)
    if n_primary < DENSITY_MIN_POINTS:
        ax.scatter(primary.reference, primary.predicted, s=14, color=PRIMARY_COLOUR, edgecolors="none",
                   label=primary.label, zorder=2)
    else:
        if n_primary >= HEXBIN_MIN_POINTS:
            mappable = ax.hexbin(primary.reference, primary.predicted, gridsize=_DENSITY_BINS, bins="log",
                                 mincnt=1, cmap="viridis", extent=(*extent, *extent), zorder=2)
            colourbar_label = f"{primary.label}: points per hexagon"
        else:
            density = _point_density(primary.reference, primary.predicted, extent)
            order = np.argsort(density)  # densest points on top
            mappable = ax.scatter(primary.reference[order], primary.predicted[order], c=density[order],
                                  s=12, cmap="viridis", norm="log", edgecolors="none", zorder=2,
                                  rasterized=n_primary >= RASTERISE_MIN_POINTS)
            colourbar_label = f"{primary.label}: points per cell"
        ax.scatter([], [], s=12, color=mappable.cmap(0.6), label=primary.label)
        figure.colorbar(mappable, cax=figure.add_axes((0.86, 0.1, 0.03, 0.76)), label=colourbar_label)
    lines.insert(0, (_metrics_line(primary.label, primary.reference, primary.predicted, quantity), "black"))
    for k, (text, colour) in enumerate(lines):
        ax.text(0.03, 0.97 - 0.055 * k, text, transform=ax.transAxes, ha="left", va="top",
                fontsize=7, color=colour, zorder=4,
                bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})
    ax.set_xlim(extent)
    ax.set_ylim(extent)
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=7, framealpha=0.8)
    return figure


def save_figure(figure: Figure, stem: str | Path) -> list[Path]:
    """Write ``figure`` as ``<stem>.png`` (150 dpi) and ``<stem>.pdf``; return both paths.

    The PDF carries no creation date, so that the same data give the same file.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")
    figure.savefig(png, dpi=150)
    figure.savefig(pdf, metadata={"CreationDate": None})
    return [png, pdf]
