"""Pick the frames to label in a round: candidates of the trust window, diverse first.

Among the frames classed ``candidate`` (:mod:`hipqeq.active.trust`), up to ``budget``
are chosen by farthest-point sampling on the radial-histogram descriptors of
:mod:`hipqeq.selection` (one frame per family first), starting from the candidate the
committee disagrees on most. Accurate and failed frames are never chosen. The chosen
rows are copied unchanged from the explored frames (dataset contract, unlabelled), so
that ``hipqeq label`` reads them like round 0's selection.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from hipqeq.active.deviation import read_deviations
from hipqeq.active.stop import CONVERGED, stop_decision
from hipqeq.active.trust import CANDIDATE, CLASSES, TrustWindow, classify
from hipqeq.data import atoms_from_record, read_table, write_table
from hipqeq.errors import DatasetError
from hipqeq.selection import farthest_point_order, radial_descriptor

log = logging.getLogger(__name__)


def classify_table(deviations: pa.Table, window: TrustWindow) -> pa.Table:
    """``deviations`` with its ``classification`` column recomputed under ``window``."""
    classes = classify(deviations.column("force_deviation_eV_A").to_numpy(zero_copy_only=False),
                       deviations.column("charge_deviation_e").to_numpy(zero_copy_only=False), window)
    index = deviations.schema.get_field_index("classification")
    return deviations.set_column(index, "classification", pa.array(classes.tolist(), pa.string()))


def select_candidates(frames: pa.Table, deviations: pa.Table, window: TrustWindow, budget: int,
                      cutoff_A: float = 6.0, n_bins: int = 24) -> tuple[pa.Table, pa.Table]:
    """The rows of ``frames`` to label (FPS order) and the classified ``deviations``.

    ``deviations`` rows are matched to ``frames`` by ``structure_id``; a deviation row
    whose frame is missing is a :class:`DatasetError`.
    """
    deviations = classify_table(deviations, window)
    ids = deviations.column("structure_id").to_pylist()
    is_candidate = np.array(deviations.column("classification").to_pylist()) == CANDIDATE
    row_of = {sid: k for k, sid in enumerate(frames.column("structure_id").to_pylist())}
    missing = sorted({sid for sid in ids if sid not in row_of})
    if missing:
        raise DatasetError(f"{len(missing)} explored frame(s) have a deviation but no geometry, "
                           f"e.g. {missing[0]}")
    # one row per distinct frame: a walker may revisit a geometry (e.g. a frozen slab)
    candidate_ids = list(dict.fromkeys(sid for sid, c in zip(ids, is_candidate) if c))
    if not candidate_ids or budget == 0:
        return frames.slice(0, 0), deviations
    force = dict(zip(ids, deviations.column("force_deviation_eV_A").to_pylist()))
    records = frames.take([row_of[sid] for sid in candidate_ids]).to_pylist()
    atoms = [atoms_from_record(r) for r in records]
    elements = sorted({int(z) for a in atoms for z in a.numbers})
    features = np.array([radial_descriptor(a, elements, cutoff_A, n_bins) for a in atoms])
    most_uncertain = int(np.argmax([force[sid] for sid in candidate_ids]))
    order = farthest_point_order(features, [r["family"] for r in records], budget, first=most_uncertain)
    log.info("%d candidate(s) of %d explored frame(s); %d selected", len(candidate_ids), len(ids), len(order))
    return frames.take([row_of[candidate_ids[k]] for k in order]), deviations


def select_round(config: dict, frames_path, deviations_paths, round_: int, output_selection,
                 output_decision) -> dict:
    """``hipqeq select-candidates``: classify round ``round_``'s explored frames, select
    up to ``active_learning.budget`` candidates (none once the round stops the loop by
    convergence; none selected also stops it) and write the selection and the round's
    decision (JSON, see :func:`hipqeq.active.stop.stop_decision`); returns the decision dict."""
    section = config["active_learning"]
    frames = read_table(frames_path)
    deviations = read_deviations(deviations_paths)
    selected, deviations = select_candidates(frames, deviations, TrustWindow.from_config(config), section["budget"],
                                             config["selection"]["cutoff_A"], config["selection"]["n_bins"])
    classes = deviations.column("classification").to_pylist()
    decision = stop_decision(classes, round_, section["stop_accurate_fraction"], selected.num_rows)
    if decision.reason == CONVERGED:
        selected = selected.slice(0, 0)  # the committee is good enough: no labels needed
    write_table(selected, output_selection)
    result = {**dataclasses.asdict(decision), "n_selected": selected.num_rows,
              "counts": {c: classes.count(c) for c in CLASSES}}
    Path(output_decision).parent.mkdir(parents=True, exist_ok=True)
    Path(output_decision).write_text(json.dumps(result, indent=1) + "\n")
    return result
