"""Execute the structure plan: one checked ``Atoms`` per :class:`hipqeq.plan.StructureSpec`.

Each structure carries the dataset identity in ``atoms.info``: ``structure_name``,
``family``, ``source`` (``build`` for seeds, ``cif`` for CIF seeds, ``strain`` for
strained and tilted variants, ``defect`` for vacancies and substitutions),
``total_charge`` (e), ``structure_id`` and ``parent_id`` (a built structure is its own
parent; sampled frames point back to it) and ``config_hash`` (hash of the seed entry,
the transformation and the charge: adding another seed leaves existing hashes alone).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

from ase import Atoms

from hipqeq.data import atoms_id, config_hash
from hipqeq.errors import StructureError
from hipqeq.geometry import slab_normal, with_vacuum
from hipqeq.plan import StructureSpec, structure_plan
from hipqeq.structures import transform
from hipqeq.structures.builders import phase, ruddlesden_popper
from hipqeq.structures.checks import check_structure, formal_charge
from hipqeq.structures.cif import read_cif

log = logging.getLogger(__name__)

#: Seeds whose octahedra :func:`hipqeq.structures.transform.tilt` can rotate.
TILTABLE = ("ruddlesden_popper", "alpha")


def _scaled_to_pseudocubic(atoms: Atoms, a: float) -> Atoms:
    """``atoms`` scaled isotropically so that (volume per Pb)^(1/3) equals ``a``."""
    n_pb = max(1, atoms.get_chemical_symbols().count("Pb"))
    factor = a / (atoms.get_volume() / n_pb) ** (1 / 3)
    scaled = atoms.copy()
    scaled.set_cell(atoms.cell.array * factor, scale_atoms=True)
    return scaled


def seed_structure(seed: dict, supercell=None) -> Atoms:
    """The seed described by a ``structures.seeds`` config entry (its own supercell
    unless ``supercell`` is given). For a phase, ``a_A`` rescales the cell
    isotropically to that pseudo-cubic parameter, (volume per Pb)^(1/3)."""
    supercell = tuple(supercell or seed.get("supercell", (1, 1, 1)))
    builder = seed["builder"]
    if builder == "ruddlesden_popper":
        return ruddlesden_popper(seed["n"], seed.get("kind", "slab"), a=seed.get("a_A"),
                                 vacuum=seed.get("vacuum_A", 20.0), supercell=supercell)
    if builder == "phase":
        atoms = phase(seed["phase"], supercell)
        return _scaled_to_pseudocubic(atoms, seed["a_A"]) if "a_A" in seed else atoms
    if builder == "cif":
        if "a_A" in seed:
            raise StructureError(f"seed {seed['name']}: a_A does not apply to a CIF seed")
        return read_cif(seed["path"]).repeat(supercell)
    raise StructureError(f"seed {seed['name']}: unknown builder '{builder}'")


def _transformed(spec: StructureSpec) -> tuple[Atoms, str, float]:
    """The structure of ``spec``, its ``source`` and the strain tolerance of its checks."""
    seed_source = "cif" if spec.seed["builder"] == "cif" else "build"
    t = spec.transform
    if t is None:
        return seed_structure(spec.seed), seed_source, 0.0
    if t["type"] == "strain":
        return transform.strain(seed_structure(spec.seed), t["percent"], t["mode"]), "strain", abs(t["percent"]) / 100
    if t["type"] == "tilt":
        kind = spec.seed["builder"] if spec.seed["builder"] != "phase" else spec.seed["phase"]
        if kind not in TILTABLE:
            raise StructureError(f"{spec.name}: tilts apply to untilted corner-sharing seeds "
                                 f"(ruddlesden_popper, phase alpha), not {kind}")
        supercell = transform.even_in_plane(spec.seed.get("supercell", (1, 1, 1)))
        return transform.tilt(seed_structure(spec.seed, supercell), t["angle_deg"]), "strain", 0.0
    if t["type"] == "defect":
        atoms = seed_structure(spec.seed)
        if "vacuum_A" in t:
            atoms = with_vacuum(atoms, slab_normal(atoms), t["vacuum_A"])
        if t["kind"] == "vacancy":
            return transform.vacancy(atoms, t["species"], t.get("site")), "defect", 0.0
        return transform.substitution(atoms, t["species"], t["by"], t.get("site")), "defect", 0.0
    raise StructureError(f"{spec.name}: unknown transformation '{t['type']}'")


def build_structure(spec: StructureSpec) -> Atoms:
    """Build, check and label one planned structure (see the module docstring).

    Tilted variants use the seed's supercell with in-plane repeats rounded up to even
    numbers (a 1x1 RP cell becomes 2x2, 3x3 becomes 4x4), because alternating
    octahedral rotations need an even number of octahedra along a and b. Defects sit
    on the most central site of the seed's supercell (the most central halide of the
    defect's ``site`` kind where it names one), in a slab with the defect's own
    ``vacuum_A`` where it sets one.
    """
    atoms, source, tolerance = _transformed(spec)
    check_structure(atoms, spec.name, tolerance=tolerance)
    atoms.info.update(structure_name=spec.name, family=spec.family, source=source,
                      total_charge=float(spec.total_charge),
                      config_hash=config_hash({"seed": spec.seed, "transform": spec.transform,
                                               "total_charge": spec.total_charge}))
    atoms.info["structure_id"] = atoms.info["parent_id"] = atoms_id(atoms)
    return atoms


def build_structures(config: dict) -> list[Atoms]:
    """Every structure of ``hipqeq.plan.structure_plan(config)``, in plan order."""
    structures = []
    for spec in structure_plan(config):
        atoms = build_structure(spec)
        log.info("built %s: %s, %d atoms, total charge %+g e", spec.name,
                 atoms.get_chemical_formula(), len(atoms), atoms.info["total_charge"])
        structures.append(atoms)
    return structures


def cif_structures(paths: Sequence[str | os.PathLike]) -> list[Atoms]:
    """The CIF files ``paths`` as checked, neutral structures named by file stem."""
    structures, names = [], set()
    for path in map(Path, paths):
        if path.stem in names:
            raise StructureError(f"{path}: two CIF files are named '{path.stem}'")
        names.add(path.stem)
        atoms = read_cif(path)
        check_structure(atoms, str(path))
        try:
            if formal_charge(atoms):
                log.warning("%s: formal ionic charges sum to %+d e; built with total charge 0",
                            path, formal_charge(atoms))
        except StructureError:
            log.info("%s: elements without a formal charge; total charge 0 assumed", path)
        atoms.info.update(structure_name=path.stem, family="cif", source="cif", total_charge=0.0,
                          config_hash=config_hash({"cif": path.name, "content": path.read_text()}))
        atoms.info["structure_id"] = atoms.info["parent_id"] = atoms_id(atoms)
        structures.append(atoms)
    return structures


def write_extxyz(structures: Sequence[Atoms], directory: str | os.PathLike) -> None:
    """Write each structure as ``directory/<structure_name>.extxyz`` (for viewers)."""
    import ase.io

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for atoms in structures:
        ase.io.write(directory / f"{atoms.info['structure_name']}.extxyz", atoms, format="extxyz")
