"""Config-level sampling jobs, one per Snakemake job: read the built structure, sample,
write unlabelled frames through the dataset contract.

Frames inherit ``structure_name``, ``family`` and ``total_charge`` from the built
structure; ``parent_id`` is the built structure's id; ``source`` is ``md`` or
``rattle``; ``config_hash`` hashes the settings that produced them. The MD's own xTB
energies are not labels: they stay in the trajectory file only.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
from ase import Atoms

from hipqeq.data import config_hash, read_structure, write_dataset
from hipqeq.engines import XTB_ENGINE_SETTINGS
from hipqeq.sampling.md import MDSettings, run_md
from hipqeq.sampling.rattle import rattle_frames
from hipqeq.seeds import derive_seed

log = logging.getLogger(__name__)

#: Identity keys a frame inherits from its built structure.
INHERITED = ("structure_name", "family", "total_charge")


def frame_records(parent: Atoms, frames: list[Atoms], source: str, temperature_K, hash_: str,
                  active_round: int = 0, trajectory: str | os.PathLike | None = None) -> list[Atoms]:
    """``frames`` (in place) with the identity of their built structure ``parent`` and
    their provenance (``source``, temperature, config hash, the sampling round and the
    trajectory file the frames were sampled into; each frame keeps its own ``md_step``)."""
    for frame in frames:
        frame.info.update({key: parent.info[key] for key in INHERITED})
        frame.info.update(parent_id=parent.info["structure_id"], source=source, temperature_K=temperature_K,
                          config_hash=hash_, active_round=active_round,
                          trajectory=None if trajectory is None else str(trajectory))
    return frames


def md_engine(config: dict) -> dict:
    """The xTB engine an MD job runs with: sampling.method and the xtb section's engine
    settings (keyword arguments of :func:`hipqeq.engines.xtb_calculator`)."""
    return {"method": config["sampling"]["method"], **{key: config["xtb"][key] for key in XTB_ENGINE_SETTINGS}}


def md_settings(config: dict, name: str, temperature_K: float, replica: int,
                seed: int | None = None) -> MDSettings:
    """The :class:`MDSettings` of one (structure, temperature, replica) job."""
    sampling = config["sampling"]
    master = config["seed"] if seed is None else seed
    return MDSettings(temperature_K=float(temperature_K), timestep_fs=sampling["timestep_fs"],
                      equilibration_steps=sampling["equilibration_steps"],
                      production_steps=sampling["production_steps"],
                      frame_interval=sampling["frame_interval"], friction_per_fs=sampling["friction_per_fs"],
                      ensemble=sampling["ensemble"],
                      seed=derive_seed(master, "md", name, float(temperature_K), int(replica)),
                      engine=json.dumps(md_engine(config), sort_keys=True))


def sample_md_job(config: dict, structures: str | os.PathLike, name: str, temperature_K: float,
                  replica: int, output: str | os.PathLike, trajectory: str | os.PathLike,
                  seed: int | None = None) -> dict:
    """Run one MD job and write its frames to ``output`` (possibly zero frames).

    Also writes ``<output stem>.summary.json`` (frames, steps done, whether and why
    the trajectory ended early, wall time) and returns the same dict. An engine
    failure never raises: the frames so far are written and the reason recorded.
    """
    from hipqeq.engines import xtb_calculator

    parent = read_structure(structures, name)
    settings = md_settings(config, name, temperature_K, replica, seed)
    engine = md_engine(config)
    calculator = xtb_calculator(engine="tblite", total_charge=parent.info.get("total_charge", 0.0), **engine)
    started = time.perf_counter()
    outcome = run_md(parent, calculator, settings, trajectory, label=f"{name} {temperature_K:g} K r{replica}")
    hash_ = config_hash({"sampling": config["sampling"], "seed": settings.seed,
                         "engine": engine})
    write_dataset(frame_records(parent, outcome.frames, "md", float(temperature_K), hash_, trajectory=trajectory),
                  output)
    summary = {"structure_name": name, "temperature_K": float(temperature_K), "replica": int(replica),
               "seed": settings.seed, "n_frames": len(outcome.frames), "steps_done": outcome.steps_done,
               "total_steps": settings.total_steps, "resumed_from_step": outcome.resumed_from_step,
               "stopped_early": outcome.stopped_early, "reason": outcome.reason,
               "wall_time_s": round(time.perf_counter() - started, 3)}
    summary_path = Path(output).with_suffix(".summary.json")
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    log.info("%s: %s", name, summary)
    return summary


def sample_rattle_job(config: dict, structures: str | os.PathLike, name: str,
                      output: str | os.PathLike, seed: int | None = None) -> int:
    """Write ``sampling.rattle.n_frames`` rattled and strained copies of ``name``."""
    parent = read_structure(structures, name)
    settings = config["sampling"]["rattle"]
    master = config["seed"] if seed is None else seed
    rng = np.random.default_rng(derive_seed(master, "rattle", name))
    frames = rattle_frames(parent, settings["n_frames"], tuple(settings["amplitude_A"]),
                           settings["strain_percent"], rng)
    write_dataset(frame_records(parent, frames, "rattle", None, config_hash({"rattle": settings, "seed": master})),
                  output)
    return len(frames)
