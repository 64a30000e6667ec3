"""Bring an external DFT reference set (extxyz, ASE db, any ASE-readable file) into the contract.

The config's ``dft.external`` section names the file, its ASE format, the property
names of energy / forces / per-atom charges / total charge, and the units of energy
and length. Units are converted once, here: energy to eV (Hartree, kcal/mol, kJ/mol),
positions and cell to Angstrom (Bohr), forces to eV/Angstrom (energy unit / length
unit). Charges are in e in every code we know of and are taken as they are.

A property is looked up in the frame's calculator results (where ASE's extxyz and db
readers put ``energy``, ``forces``, ``charges``), then in ``atoms.info`` (per frame),
then in ``atoms.arrays`` (per atom). A name the user set (other than the default) that
is found in no frame is a configuration error (the message lists the names the file has), as is a file where
no frame has an energy or charges; a frame with neither energy nor charges gets status
``error``. Total charges must be whole numbers (the file is refused otherwise, naming
the frame). Without a total-charge property the total
charge is the sum of the charges rounded to an integer (0 when there are none).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection
from pathlib import Path

import numpy as np
from ase import Atoms, units as ase_units

from hipqeq.data import status_counts, write_dataset
from hipqeq.data.schema import STATUS_ERROR, STATUS_OK
from hipqeq.errors import ConfigError, DatasetError
from hipqeq.labels.common import external_record
from hipqeq.units import BOHR_A, HARTREE_EV

log = logging.getLogger(__name__)

#: eV per unit of energy.
ENERGY_UNITS_EV = {"eV": 1.0, "Hartree": HARTREE_EV, "kcal/mol": ase_units.kcal / ase_units.mol,
                   "kJ/mol": ase_units.kJ / ase_units.mol}

#: Angstrom per unit of length.
LENGTH_UNITS_A = {"Angstrom": 1.0, "Bohr": BOHR_A}


def _lookup(atoms: Atoms, key: str):
    """The value of property ``key`` of a frame, or ``None``."""
    results = atoms.calc.results if atoms.calc is not None else {}
    for source in (results, atoms.info, atoms.arrays):
        if key in source:
            return source[key]
    return None


def _available_names(frames: list[Atoms]) -> list[str]:
    names = set()
    for atoms in frames:
        names.update(atoms.calc.results if atoms.calc is not None else ())
        names.update(atoms.info)
        names.update(k for k in atoms.arrays if k not in ("numbers", "positions"))
    return sorted(names)


def read_frames(path: str | os.PathLike, format: str | None = None) -> list[Atoms]:
    """All frames of ``path`` (ASE ``format``, e.g. ``extxyz`` or ``db``)."""
    import ase.io

    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such reference file")
    try:
        return ase.io.read(path, index=":", format=format)
    except Exception as exc:  # noqa: BLE001 - ASE raises many types for unreadable files
        raise DatasetError(f"{path}: ASE cannot read it as {format} ({type(exc).__name__}: {exc})") from exc


def external_records(settings: dict, explicit: Collection[str] = ()) -> list[dict]:
    """Dataset records of the reference file described by a validated ``dft.external`` section.

    ``explicit`` names the properties (``energy``, ``forces``, ``charges``,
    ``total_charge``) whose file names the user set to something other than the default
    (config or flags): one that no frame has is a :class:`ConfigError` (a misspelt
    name), while a missing default name only warns.
    """
    frames = read_frames(settings["path"], settings["format"])
    names = settings["properties"]
    energy_eV = ENERGY_UNITS_EV[settings["units"]["energy"]]
    length_A = LENGTH_UNITS_A[settings["units"]["length"]]
    for what in sorted(explicit):
        if frames and all(_lookup(a, names[what]) is None for a in frames):
            raise ConfigError(f"{settings['path']}: no frame has the {what} property '{names[what]}' given in "
                              f"dft.external.properties (or --{what.replace('_', '-')}-key); properties in the "
                              f"file: {', '.join(_available_names(frames))}")
    for what in ("energy", "charges"):
        if frames and all(_lookup(a, names[what]) is None for a in frames):
            log.warning("%s: no frame has a %s property '%s' (it has: %s)", settings["path"], what,
                        names[what], ", ".join(_available_names(frames)))
    if frames and all(_lookup(a, names["energy"]) is None and _lookup(a, names["charges"]) is None
                      for a in frames):
        raise ConfigError(f"{settings['path']}: no frame has an energy ('{names['energy']}') or charges "
                          f"('{names['charges']}'); properties in the file: {', '.join(_available_names(frames))}. "
                          "Map them with dft.external.properties (or --energy-key / --charges-key)")
    return [_frame_record(atoms, i, settings, energy_eV, length_A) for i, atoms in enumerate(frames)]


def _frame_record(atoms: Atoms, index: int, settings: dict, energy_eV: float, length_A: float) -> dict:
    names = settings["properties"]
    energy = _lookup(atoms, names["energy"])
    forces = _lookup(atoms, names["forces"])
    charges = _lookup(atoms, names["charges"])
    total_charge = _lookup(atoms, names["total_charge"])
    if charges is not None:
        charges = np.asarray(charges, dtype=float).reshape(-1)
    if total_charge is None:
        total_charge = float(np.rint(charges.sum())) if charges is not None else 0.0
    geometry = Atoms(numbers=atoms.numbers, positions=atoms.positions * length_A,
                     cell=atoms.cell.array * length_A, pbc=atoms.pbc)
    geometry.info.update({k: v for k, v in atoms.info.items() if k in ("structure_name", "parent_id", "temperature_K")})
    geometry.info["total_charge"] = float(total_charge)
    record = external_record(geometry, f"{Path(settings['path']).stem}_{index}")
    record.update(
        energy=None if energy is None else float(energy) * energy_eV,
        forces=None if forces is None else np.asarray(forces, dtype=float).reshape(-1, 3) * (energy_eV / length_A),
        stress=None, charges=charges,
        charge_scheme=settings["charge_scheme"] if charges is not None else None,
        label_boundary=settings["boundary"],
        method=settings["method"], software="external",
        calc_params=json.dumps({"source_file": str(settings["path"]), "frame": index, "format": settings["format"],
                                "properties": names, "units": settings["units"]}, sort_keys=True),
        status=STATUS_OK, error=None, wall_time_s=None)
    if energy is None and charges is None:
        record.update(status=STATUS_ERROR, error=f"frame {index} has neither '{names['energy']}' nor '{names['charges']}'")
    elif charges is not None and abs(charges.sum() - record["total_charge"]) > 0.1:
        log.warning("frame %d: charges sum to %.3f e, total charge %.3f e", index, charges.sum(), record["total_charge"])
    return record


def ingest(settings: dict, output: str | os.PathLike, explicit: Collection[str] = ()) -> dict[str, int]:
    """Write the reference set of a validated ``dft.external`` section to ``output``;
    return per-status counts (``explicit``: see :func:`external_records`)."""
    records = external_records(settings, explicit)
    write_dataset(records, output)
    return status_counts(records)
