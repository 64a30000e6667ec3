"""Validation of trained potentials: error metrics, parity plots, the MD stability check.

- :mod:`~hipqeq.validation.metrics`: MAE / RMSE / R^2 of energies per atom, force
  components and charges against a reference dataset, overall, per family, per family
  and total charge, and per temperature band; which rows are validated on (test
  parents, status ok).
- :mod:`~hipqeq.validation.parity`: parity figures (PNG and PDF).
- :mod:`~hipqeq.validation.md_check`: summaries of `hipqeq md` runs, tabulated and plotted.
- :mod:`~hipqeq.validation.report`: metrics.json and metrics.md.
- :mod:`~hipqeq.validation.pipeline`: :func:`run_validation`, what `hipqeq validate` runs.
"""

from hipqeq.validation.md_check import md_report, md_stability_figure, read_md_summaries
from hipqeq.validation.metrics import (
    GROUP_KINDS,
    METRIC_KEYS,
    QUANTITIES,
    aligned_pairs,
    charge_state,
    compute_metrics,
    error_metrics,
    fit_element_offsets,
    paired_values,
    row_groups,
    temperature_band,
    usable_rows,
)
from hipqeq.validation.parity import ParitySeries, parity_figure, save_figure
from hipqeq.validation.pipeline import MODELS, REFERENCES, run_validation
from hipqeq.validation.report import METRICS_JSON_KEYS, directory_hash, metrics_markdown, write_metrics_json

__all__ = [
    "GROUP_KINDS", "METRICS_JSON_KEYS", "METRIC_KEYS", "MODELS", "QUANTITIES", "REFERENCES", "ParitySeries",
    "aligned_pairs", "charge_state", "compute_metrics", "directory_hash", "error_metrics", "fit_element_offsets",
    "md_report", "md_stability_figure", "metrics_markdown", "paired_values", "parity_figure", "read_md_summaries",
    "row_groups", "run_validation", "save_figure", "temperature_band", "usable_rows",
    "write_metrics_json",
]
