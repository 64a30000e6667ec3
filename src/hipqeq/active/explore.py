"""Exploration walkers: Langevin MD driven by the committee's 4G potential.

A walker is one trajectory of one built structure at one temperature and total charge
(``active_learning.structures`` x ``temperatures_K`` x ``charge_offsets_e`` x
``walkers``), run with
:func:`hipqeq.sampling.md.run_md` (the same checkpointed driver as round 0's xTB MD, so
a killed round resumes each walker from its last snapshot) and the committee's mean
forces (:class:`hipqeq.calculator.HipQEqCalculator`). Every ``frame_interval`` steps a
frame is kept and the committee's deviation on it measured
(:mod:`hipqeq.active.deviation`).

A walker's cell is its built structure repeated ``active_learning.supercell`` times
(:func:`walker_start`: larger cells than xTB MD affords; the total charge scales with
the repeats), plus its charge offset: an offset of +1 e explores the structure with a
hole, -1 e with an extra electron, charge states the xTB sampling never saw (the spin
follows the new electron count). With ``active_learning.restarts`` > 0, a walker whose frame fails (the
committee disagrees beyond the trust window) restarts from its last trusted frame with
fresh velocities and its remaining steps, DP-GEN's optional restart; the frames after
the failure are dropped, since the trajectory had left the region the committee knows
(:func:`explore_walker`).

A walker that blows up (atoms closer than 1 Angstrom, non-finite positions, a model or
solver error: any ``RuntimeError``, torch's included) stops with the frames it has and a
recorded reason; any other exception (a bug) ends it with the reason and no frames. The
other walkers of the round still run. The round writes three files: the explored
frames (dataset contract, unlabelled, ``source`` = ``active``), their deviations with
provenance (one row per frame), and a JSON summary per walker.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms

from hipqeq.active.deviation import deviation_table, frame_deviation, write_deviations
from hipqeq.active.trust import FAILED, TrustWindow, classify
from hipqeq.data import atoms_id, config_hash, read_structure, read_table, write_dataset
from hipqeq.errors import ConfigError
from hipqeq.plan import number_tag, structure_names
from hipqeq.sampling.jobs import frame_records
from hipqeq.sampling.md import MDSettings, run_md
from hipqeq.seeds import derive_seed

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Walker:
    """One exploration trajectory: ``name`` is ``<structure>_T<temperature>_w<index>``,
    with ``_qp<n>`` / ``_qm<n>`` before ``_w`` for a charge offset of +n / -n e."""

    structure_name: str
    temperature_K: float
    index: int
    charge_offset_e: int = 0

    @property
    def name(self) -> str:
        charge = f"_q{number_tag(self.charge_offset_e)}" if self.charge_offset_e else ""
        return f"{self.structure_name}_T{number_tag(self.temperature_K)[1:]}{charge}_w{self.index}"

    def trajectory(self, directory: Path, restart: int = 0) -> Path:
        """The file in ``directory`` this walker's MD writes to (its ``restart``-th restart's)."""
        return directory / f"{self.name}{f'.restart{restart}' if restart else ''}.traj"


def walker_plan(config: dict, held_out: Sequence[str] = ()) -> list[Walker]:
    """Every walker of a round: structures (``active_learning.structures``, default every
    built one) but the ``held_out`` structure names x temperatures x charge offsets x
    ``walkers``."""
    section = config["active_learning"]
    skipped = set(held_out)
    names = [name for name in section["structures"] or structure_names(config) if name not in skipped]
    if not names:
        raise ConfigError(f"active_learning: every structure to explore is a held-out test parent "
                          f"({', '.join(held_out)}); name others in active_learning.structures")
    return [Walker(name, float(t), k, int(q)) for name in names for t in section["temperatures_K"]
            for q in section["charge_offsets_e"] for k in range(section["walkers"])]


def committee_fingerprint(model_dirs: Sequence[str | os.PathLike]) -> str:
    """Hash of every file of the committee's model directories: a walker's checkpoint
    is resumed only with the very models that wrote it."""
    digest = hashlib.sha256()
    for model_dir in model_dirs:
        for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
            digest.update(path.relative_to(model_dir).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def walker_settings(config: dict, walker: Walker, round_: int, fingerprint: str, restart: int = 0,
                    steps: int | None = None) -> MDSettings:
    """The MD settings of ``walker`` in round ``round_`` (its own random stream; a
    restart ``k`` > 0 gets another), for ``steps`` steps (default ``active_learning.steps``)."""
    section = config["active_learning"]
    parts = ("explore", round_, walker.name) + (("restart", restart) if restart else ())
    return MDSettings(temperature_K=walker.temperature_K, timestep_fs=section["timestep_fs"],
                      equilibration_steps=0, production_steps=section["steps"] if steps is None else steps,
                      frame_interval=section["frame_interval"], friction_per_fs=section["friction_per_fs"],
                      ensemble="nvt",
                      seed=derive_seed(config["seed"], *parts),
                      engine=json.dumps({"committee": fingerprint}))


def walker_start(parent: Atoms, supercell, charge_offset_e: int = 0) -> Atoms:
    """``parent`` repeated ``supercell`` times along its periodic directions, with its
    total charge (e, per cell) scaled by the number of repeats, plus ``charge_offset_e``
    (e, on the whole walker cell; the spin then follows the electron count)."""
    supercell = tuple(int(n) for n in supercell)
    if supercell == (1, 1, 1) and not charge_offset_e:
        return parent
    bad = [axis for axis in range(3) if supercell[axis] != 1 and not parent.pbc[axis]]
    if bad:
        raise ConfigError(f"active_learning/supercell {list(supercell)}: {parent.info.get('structure_name')} is "
                          f"not periodic along axis {bad[0]} (pbc {parent.pbc.tolist()}); repeat periodic axes only")
    start = parent.repeat(supercell)
    start.info["total_charge"] = (float(parent.info.get("total_charge", 0.0)) * int(np.prod(supercell))
                                  + charge_offset_e)
    if charge_offset_e:
        start.info.pop("unpaired_electrons", None)  # the built structure's spin is not this cell's
    return start


def run_walker(parent: Atoms, walker: Walker, calculator, settings: MDSettings,
               trajectory: str | os.PathLike) -> tuple[list[Atoms], list[dict], dict]:
    """Run one walker; returns its frames, their deviations and its summary.

    Never raises for a model failure: the reason goes into the summary. A frame whose
    deviation cannot be computed keeps NaN deviations (classed failed).
    """
    started = time.perf_counter()
    try:
        outcome = run_md(parent, calculator, settings, trajectory, label=walker.name)
        frames, steps_done, stopped, reason = outcome.frames, outcome.steps_done, outcome.stopped_early, outcome.reason
        resumed = outcome.resumed_from_step
    except Exception as exc:  # noqa: BLE001 - a walker that blows up must never stop the round
        frames, steps_done, stopped, reason = [], 0, True, f"{type(exc).__name__}: {exc}"
        resumed = 0
        log.warning("%s: walker failed: %s", walker.name, reason)
    deviations = []
    for frame in frames:
        frame.info["total_charge"] = parent.info.get("total_charge", 0.0)
        try:
            deviation = frame_deviation(calculator.potentials, frame)
        except Exception as exc:  # noqa: BLE001 - recorded as a failed frame
            log.warning("%s step %s: no deviation (%s)", walker.name, frame.info["md_step"], exc)
            deviation = {"force_deviation_eV_A": float("nan"), "charge_deviation_e": float("nan"),
                         "energy_std_eV": float("nan")}
        deviations.append({"step": int(frame.info["md_step"]), **deviation})
    summary = {"walker": walker.name, "structure_name": walker.structure_name,
               "temperature_K": walker.temperature_K, "n_frames": len(frames), "steps_done": steps_done,
               "total_steps": settings.total_steps, "resumed_from_step": resumed, "stopped_early": stopped, "reason": reason,
               "wall_time_s": round(time.perf_counter() - started, 3)}
    return frames, deviations, summary


def _first_failure(deviations: list[dict], window: TrustWindow) -> int | None:
    classes = classify([d["force_deviation_eV_A"] for d in deviations], [d["charge_deviation_e"] for d in deviations],
                       window)
    failed = np.flatnonzero(classes == FAILED)
    return int(failed[0]) if len(failed) else None


def explore_walker(parent: Atoms, walker: Walker, calculator, config: dict, round_: int, fingerprint: str,
                   window: TrustWindow, trajectory_dir: Path) -> tuple[list[Atoms], list[dict], dict]:
    """Run one walker with up to ``active_learning.restarts`` restarts from its last
    trusted frame (see the module docstring); returns its frames, their deviations (steps
    counted from the walker's start) and its summary (``restarts``: where each failure
    was and which step the walker went on from)."""
    total = config["active_learning"]["steps"]
    start, offset, frames, deviations, restarts, summaries = parent, 0, [], [], [], []
    for attempt in range(config["active_learning"]["restarts"] + 1):
        settings = walker_settings(config, walker, round_, fingerprint, attempt, steps=total - offset)
        segment, segment_deviations, summary = run_walker(start, walker, calculator, settings,
                                                          walker.trajectory(trajectory_dir, attempt))
        for frame, deviation in zip(segment, segment_deviations):
            frame.info["md_step"] = int(frame.info["md_step"]) + offset
            deviation["step"] += offset
        summaries.append(summary)
        failed = _first_failure(segment_deviations, window)
        if failed is None or attempt == config["active_learning"]["restarts"]:
            frames, deviations = frames + segment, deviations + segment_deviations
            break
        # keep the failed frame (it counts as failed), drop what the walker did after it
        frames, deviations = frames + segment[:failed + 1], deviations + segment_deviations[:failed + 1]
        if failed > 0:
            start, offset = segment[failed - 1], segment_deviations[failed - 1]["step"]
        restarts.append({"failed_step": segment_deviations[failed]["step"], "restarted_from_step": offset})
        start = start.copy()
        start.info["total_charge"] = parent.info.get("total_charge", 0.0)
    combined = {**summaries[0], "n_frames": len(frames), "steps_done": offset + summaries[-1]["steps_done"],
                "total_steps": total, "stopped_early": summaries[-1]["stopped_early"],
                "reason": summaries[-1]["reason"], "restarts": restarts,
                "wall_time_s": round(sum(s["wall_time_s"] for s in summaries), 3)}
    return frames, deviations, combined


def held_out_names(structures: str | os.PathLike, held_out_parents: Sequence[str]) -> list[str]:
    """Names of the built structures (``hipqeq build`` output) whose ``parent_id`` is one
    of ``held_out_parents``."""
    table = read_table(structures)
    parents = set(held_out_parents)
    return sorted({name for name, parent in zip(table.column("structure_name").to_pylist(),
                                                 table.column("parent_id").to_pylist()) if parent in parents})


def explore_round(config: dict, model_dirs: Sequence[str | os.PathLike], structures: str | os.PathLike,
                  round_: int, output_frames: str | os.PathLike, output_deviations: str | os.PathLike,
                  output_summary: str | os.PathLike, trajectory_dir: str | os.PathLike,
                  device: str = "auto", held_out_parents: Sequence[str] = ()) -> dict:
    """Run every walker of round ``round_`` with the committee ``model_dirs``; write the
    explored frames, their deviations (classified with the config's trust window) and
    the walkers' summaries; returns the summary dict.

    No walker starts from a built structure whose ``parent_id`` is in
    ``held_out_parents`` (the study's test parents): their frames would be labelled only
    to land in the test split, where no model learns from them, and the held-out set would
    stop being the same every round."""
    from hipqeq.calculator import HipQEqCalculator

    window = TrustWindow.from_config(config)
    calculator = HipQEqCalculator([str(d) for d in model_dirs], device=device)
    fingerprint = committee_fingerprint(model_dirs)
    hash_ = config_hash({"active_learning": config["active_learning"], "committee": fingerprint})
    all_frames, rows, walkers = [], [], []
    held_out = held_out_names(structures, held_out_parents)
    trajectory_dir = Path(trajectory_dir)
    if held_out:
        log.info("round %d: no walker starts from the held-out test parents %s", round_, ", ".join(held_out))
    for walker in walker_plan(config, held_out):
        parent = walker_start(read_structure(structures, walker.structure_name),
                              config["active_learning"]["supercell"], walker.charge_offset_e)
        calculator.reset_warm_start()
        frames, deviations, summary = explore_walker(parent, walker, calculator, config, round_, fingerprint,
                                                     window, trajectory_dir)
        frame_records(parent, frames, "active", walker.temperature_K, hash_, round_, walker.trajectory(trajectory_dir))
        for frame, deviation in zip(frames, deviations):
            frame.info["structure_id"] = atoms_id(frame)
            rows.append({"round": round_, "walker": walker.name, "structure_id": frame.info["structure_id"],
                         "structure_name": walker.structure_name, "family": parent.info["family"],
                         "temperature_K": walker.temperature_K, **deviation})
        all_frames += frames
        walkers.append(summary)
    classes = classify([r["force_deviation_eV_A"] for r in rows], [r["charge_deviation_e"] for r in rows], window)
    for row, label in zip(rows, classes):
        row["classification"] = str(label)
    write_dataset(unique_frames(all_frames), output_frames)
    write_deviations(deviation_table(rows), output_deviations)
    result = {"round": round_, "models": [str(d) for d in model_dirs], "n_frames": len(rows),
              "walkers": walkers}
    Path(output_summary).parent.mkdir(parents=True, exist_ok=True)
    Path(output_summary).write_text(json.dumps(result, indent=1) + "\n")
    return result


def unique_frames(frames: list[Atoms]) -> list[Atoms]:
    """The first frame of each ``structure_id`` (the dataset contract keys rows by it;
    two walkers can visit the same geometry, e.g. when a model freezes the atoms)."""
    first: dict[str, Atoms] = {}
    for frame in frames:
        first.setdefault(frame.info["structure_id"], frame)
    return list(first.values())
