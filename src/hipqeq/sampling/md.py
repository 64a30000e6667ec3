"""Molecular dynamics driven by an xTB calculator, checkpointed in an ASE trajectory.

The trajectory is both the record and the checkpoint: a snapshot (positions, momenta,
cell, the step and the random generator's state) is written at fixed step boundaries,
so a killed run continues from its last snapshot and reproduces, bit for bit, the run
that was never interrupted. Frames are the snapshots every ``frame_interval`` steps
after the equilibration steps.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixCom
from ase.io.trajectory import Trajectory
from tqdm import tqdm

from hipqeq.data import atoms_id
from hipqeq.errors import HipqeqError
from hipqeq.geometry import closest_pair
from hipqeq.units import BOLTZMANN_EV_K

log = logging.getLogger(__name__)

#: Berendsen NPT defaults (ensemble "npt"): thermostat and barostat times (fs), and the
#: compressibility of soft lead-iodide perovskites (bulk modulus ~15 GPa; lit. 12-20 GPa),
#: in Angstrom^3/eV.
NPT_TAUT_FS = 100.0
NPT_TAUP_FS = 1000.0
NPT_COMPRESSIBILITY_A3_EV = 1.0 / (15.0 * units.GPa)

#: MDSettings fields that only the NPT ensemble reads.
NPT_FIELDS = ("pressure_GPa", "taut_fs", "taup_fs")

#: A trajectory is stopped as unstable when two atoms come closer than this (Angstrom).
UNSTABLE_DISTANCE_A = 1.0


@dataclasses.dataclass(frozen=True)
class MDSettings:
    """One trajectory's settings; ``production_steps`` may grow between resumed runs."""

    temperature_K: float
    timestep_fs: float = 2.0
    equilibration_steps: int = 200
    production_steps: int = 1000
    frame_interval: int = 50
    friction_per_fs: float = 0.01
    ensemble: str = "nvt"
    #: NPT only: target pressure (GPa), Berendsen thermostat and barostat times (fs)
    pressure_GPa: float = 0.0
    taut_fs: float = NPT_TAUT_FS
    taup_fs: float = NPT_TAUP_FS
    seed: int = 0
    #: the engine and its settings (JSON), so that a trajectory of another level of
    #: theory is never resumed
    engine: str = ""

    @property
    def total_steps(self) -> int:
        return self.equilibration_steps + self.production_steps

    def frame_steps(self) -> list[int]:
        """Steps at which frames are taken: equilibration + k * frame_interval."""
        return list(range(self.equilibration_steps + self.frame_interval, self.total_steps + 1,
                          self.frame_interval))

    def snapshot_steps(self) -> list[int]:
        """Steps at which the trajectory is checkpointed (every ``frame_interval`` steps
        during equilibration, the end of equilibration, every frame, the last step)."""
        eq = self.equilibration_steps
        steps = set(range(self.frame_interval, eq, self.frame_interval)) | {eq, self.total_steps}
        return sorted(s for s in steps | set(self.frame_steps()) if s > 0)

    def fingerprint(self, atoms: Atoms) -> str:
        """What a resumable trajectory must share with this run (not its length)."""
        fields = dataclasses.asdict(self)
        fields.pop("production_steps")
        if self.ensemble != "npt":  # settings an NVT run never reads do not tell runs apart
            for name in NPT_FIELDS:
                fields.pop(name)
        fields["structure_id"] = atoms_id(atoms)
        return json.dumps(fields, sort_keys=True)


@dataclasses.dataclass
class MDOutcome:
    """Frames of a trajectory and how it ended (steps in MD steps)."""

    frames: list[Atoms]
    steps_done: int
    resumed_from_step: int
    stopped_early: bool = False
    reason: str | None = None


def _snapshot(atoms: Atoms, step: int, rng: np.random.Generator, fingerprint: str) -> Atoms:
    """A checkpoint of ``atoms`` (with its energy and forces, when computed, for the record)."""
    snapshot = atoms.copy()
    snapshot.set_constraint()
    if atoms.calc is not None and "energy" in atoms.calc.results:
        snapshot.calc = SinglePointCalculator(snapshot, **{k: v for k, v in atoms.calc.results.items()
                                                           if k in ("energy", "forces", "stress")})
    snapshot.info = {"md_step": step, "md_fingerprint": fingerprint,
                     "md_rng_state": json.dumps(rng.bit_generator.state)}
    return snapshot


def _read_snapshots(path: Path, fingerprint: str) -> list[Atoms]:
    """Snapshots of a trajectory written by this same run, else an empty list.

    A job killed while writing leaves a broken last snapshot: the readable ones are kept
    and the file is rewritten without the broken tail, so that appending stays clean.
    """
    if not path.exists():
        return []
    snapshots = []
    try:
        with Trajectory(path) as traj:
            for index in range(len(traj)):
                snapshots.append(traj[index])
    except Exception as exc:  # noqa: BLE001 - whatever the damage, keep what could be read
        log.warning("%s: snapshot %d unreadable (%s); keeping the %d before it", path, len(snapshots),
                    exc, len(snapshots))
        if snapshots:
            with Trajectory(path, "w") as traj:
                for snapshot in snapshots:
                    traj.write(snapshot)
    if not snapshots or snapshots[0].info.get("md_fingerprint") != fingerprint:
        log.warning("%s: no snapshot of this run (structure or settings differ); starting over", path)
        return []
    return snapshots


def _dynamics(atoms: Atoms, settings: MDSettings, rng: np.random.Generator):
    if settings.ensemble == "nvt":
        from ase.md.langevin import Langevin

        return Langevin(atoms, timestep=settings.timestep_fs * units.fs,
                        temperature_K=settings.temperature_K,
                        friction=settings.friction_per_fs / units.fs, fixcm=False, rng=rng)
    if settings.ensemble == "npt":
        from ase.md.nptberendsen import Inhomogeneous_NPTBerendsen

        # pbc masks the barostat: a slab (T, T, F) breathes in-plane only
        return Inhomogeneous_NPTBerendsen(
            atoms, timestep=settings.timestep_fs * units.fs, temperature_K=settings.temperature_K,
            pressure_au=settings.pressure_GPa * units.GPa, taut=settings.taut_fs * units.fs,
            taup=settings.taup_fs * units.fs,
            compressibility_au=NPT_COMPRESSIBILITY_A3_EV, mask=tuple(int(p) for p in atoms.pbc))
    raise HipqeqError(f"unknown MD ensemble '{settings.ensemble}' (nvt or npt)")


def _unstable(atoms: Atoms) -> str | None:
    if not np.all(np.isfinite(atoms.positions)):
        return "non-finite positions"
    pair = closest_pair(atoms, UNSTABLE_DISTANCE_A)
    if pair is not None:
        return f"atoms {pair[2]:.2f} A apart (unstable trajectory)"
    return None


def _initial_state(atoms: Atoms, snapshots: list[Atoms], settings: MDSettings,
                   rng: np.random.Generator) -> tuple[Atoms, int]:
    """The state to start from and its step: the last snapshot (momenta and random
    generator state restored), else ``atoms`` with Maxwell-Boltzmann momenta."""
    state = atoms.copy()
    if snapshots:
        last = snapshots[-1]
        state.positions, state.cell, state.pbc = last.positions, last.cell, last.pbc
        state.set_momenta(last.get_momenta())
        rng.bit_generator.state = json.loads(last.info["md_rng_state"])
        return state, int(last.info["md_step"])
    from ase.md.velocitydistribution import Stationary

    # Maxwell-Boltzmann momenta from this run's generator, whose state every checkpoint
    # stores, so that a resumed run continues the same random sequence
    kT = settings.temperature_K * BOLTZMANN_EV_K
    state.set_momenta(rng.standard_normal((len(state), 3)) * np.sqrt(state.get_masses() * kT)[:, None])
    Stationary(state)
    return state, 0


def _frames(snapshots: list[Atoms], settings: MDSettings) -> list[Atoms]:
    """Bare copies of the snapshots at :meth:`MDSettings.frame_steps`, with the step, the
    kinetic temperature (K) and, when computed, the potential energy (eV) in ``info``."""
    wanted = set(settings.frame_steps())
    frames = []
    for s in snapshots:
        if int(s.info["md_step"]) not in wanted:
            continue
        # the centre of mass is fixed (FixCom, dropped from snapshots): 3N - 3 degrees of freedom
        temperature_K = 2.0 * s.get_kinetic_energy() / (max(3 * len(s) - 3, 1) * BOLTZMANN_EV_K)
        info = {"md_step": int(s.info["md_step"]), "md_temperature_K": float(temperature_K)}
        if s.calc is not None and "energy" in s.calc.results:
            info["md_potential_energy_eV"] = float(s.calc.results["energy"])
        frames.append(Atoms(s.numbers, positions=s.positions, cell=s.cell.array, pbc=s.pbc, info=info))
    return frames


def run_md(atoms: Atoms, calculator: Calculator, settings: MDSettings,
           trajectory: str | os.PathLike, label: str = "md") -> MDOutcome:
    """Run (or resume) MD of ``atoms`` with ``calculator`` and return its frames.

    Initial velocities are Maxwell-Boltzmann at ``settings.temperature_K`` (centre of
    mass at rest, kept there by :class:`ase.constraints.FixCom`); ``ensemble`` "nvt" is
    Langevin (friction ``friction_per_fs``), "npt" is Berendsen with the cell scaled
    along periodic directions only, at ``pressure_GPa`` (times ``taut_fs``, ``taup_fs``). If
    ``trajectory`` holds snapshots of the same run (:meth:`MDSettings.fingerprint`),
    the run continues from the last one. A calculator error (an SCF failure; for a torch
    model e.g. CUDA out of memory or a singular charge solve, both ``RuntimeError``) or
    atoms closer than 1 Angstrom end the run: the outcome keeps the frames so far and
    says why. Frames are bare ``Atoms`` (no calculator) with ``info['md_step']``,
    ``info['md_temperature_K']`` and ``info['md_potential_energy_eV']``.
    """
    path = Path(trajectory)
    fingerprint = settings.fingerprint(atoms)
    snapshots = _read_snapshots(path, fingerprint)
    rng = np.random.default_rng(settings.seed)
    state, start = _initial_state(atoms, snapshots, settings, rng)
    if snapshots:
        log.info("%s: resuming from step %d of %s", label, start, path)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        snapshots = [_snapshot(state, 0, rng, fingerprint)]
        with Trajectory(path, "w") as traj:
            traj.write(snapshots[0])
    outcome = MDOutcome([], max(int(s.info["md_step"]) for s in snapshots), start)
    todo = [s for s in settings.snapshot_steps() if s > start]
    if todo:
        state.set_constraint(FixCom())
        state.calc = calculator
        dynamics = _dynamics(state, settings, rng)
        step = start
        with Trajectory(path, "a") as traj, tqdm(total=settings.total_steps, initial=start, unit="step",
                                                 desc=label, mininterval=5.0) as bar:
            for target in todo:
                try:
                    dynamics.run(target - step)
                except (RuntimeError, HipqeqError) as exc:  # ASE's CalculatorError and torch's errors
                    outcome.stopped_early = True
                    outcome.reason = f"{type(exc).__name__} between steps {step} and {target}: {exc}"
                    break
                unstable = _unstable(state)
                if unstable:
                    outcome.stopped_early, outcome.reason = True, f"step {target}: {unstable}"
                    break
                bar.update(target - step)
                step = target
                snapshots.append(_snapshot(state, step, rng, fingerprint))
                traj.write(snapshots[-1])
        outcome.steps_done = step
    if outcome.stopped_early:
        log.warning("%s: trajectory ended early: %s", label, outcome.reason)
    outcome.frames = _frames(snapshots, settings)
    return outcome
