"""What a config asks for, as names: the structures to build and the jobs to fan out.

The Snakefile and the CLI both use these functions, so the DAG Snakemake draws and the
files the verbs write always agree; nothing here runs an engine.

Structure names are ``<seed>`` for a seed and ``<seed>__<variant>`` for a derived
structure, e.g. ``rp1_slab__biaxial_p2`` (+2 % biaxial strain), ``rp1_slab__vac_I``
(iodine vacancy), ``rp1_slab__vac_I_qp1`` (charged, total charge +1 e),
``rp1_slab__sub_Br_I`` (Br on an I site), ``rp1_slab__tilt_5`` (5 degree tilt).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import PurePath


@dataclasses.dataclass(frozen=True)
class StructureSpec:
    """One structure ``hipqeq build`` makes.

    ``transform`` is ``None`` for a seed, else a dict with a ``type`` key (``strain``,
    ``tilt``, ``defect``) and the entry's parameters; ``family`` groups structures for
    validation (``pristine``, ``strained``, ``tilted``, ``vacancy_I``,
    ``substitution_Br_I``...).
    """

    name: str
    seed: dict
    transform: dict | None
    family: str
    total_charge: int = 0


def number_tag(value: float) -> str:
    """A number as a file-name-safe tag: 2 -> 'p2', -1.5 -> 'm1p5', 300 -> 'p300'."""
    sign = "m" if value < 0 else "p"
    text = f"{abs(value):g}".replace(".", "p")
    return sign + text


def seed_selected(seed: dict, selector: list[str]) -> bool:
    """Whether a ``seeds`` selector of the structures section (empty: every seed) takes ``seed``."""
    return not selector or seed["name"] in selector


def _defect_name(defect: dict) -> tuple[str, str]:
    if defect["kind"] == "vacancy":
        tag, family = f"vac_{defect['species']}", f"vacancy_{defect['species']}"
    else:
        tag, family = f"sub_{defect['by']}_{defect['species']}", f"substitution_{defect['by']}_{defect['species']}"
    if "site" in defect:
        tag += f"_{defect['site']}"
    charge = defect.get("total_charge", 0)
    if charge:
        tag += f"_q{number_tag(charge)}"
    return tag, family


def structure_plan(config: dict) -> list[StructureSpec]:
    """Every structure the config's ``structures`` section asks for, seeds first."""
    section = config["structures"]
    specs = [StructureSpec(s["name"], s, None, "cif" if s["builder"] == "cif" else "pristine")
             for s in section["seeds"]]
    for seed in section["seeds"]:
        strains = section["strains"]
        if seed_selected(seed, strains["seeds"]):
            for mode in ("biaxial", "uniaxial"):
                for pct in strains[f"{mode}_percent"]:
                    specs.append(StructureSpec(f"{seed['name']}__{mode}_{number_tag(pct)}", seed,
                                               {"type": "strain", "mode": mode, "percent": pct}, "strained"))
        tilts = section["tilts"]
        if seed_selected(seed, tilts["seeds"]):
            for angle in tilts["angles_deg"]:
                specs.append(StructureSpec(f"{seed['name']}__tilt_{number_tag(angle)[1:]}", seed,
                                           {"type": "tilt", "angle_deg": angle}, "tilted"))
        for defect in section["defects"]:
            if seed_selected(seed, defect.get("seeds", [])):
                tag, family = _defect_name(defect)
                transform = {"type": "defect", **{k: v for k, v in defect.items() if k != "seeds"}}
                specs.append(StructureSpec(f"{seed['name']}__{tag}", seed, transform, family,
                                           defect.get("total_charge", 0)))
    return specs


def structure_names(config: dict) -> list[str]:
    """Names of every structure :func:`structure_plan` yields."""
    return [s.name for s in structure_plan(config)]


def is_slab_seed(seed: dict) -> bool:
    """Whether a seed builds a slab with vacuum (a Ruddlesden-Popper seed of kind slab)."""
    return seed["builder"] == "ruddlesden_popper" and seed.get("kind", "slab") == "slab"


def charged_slab_names(config: dict) -> list[str]:
    """Built structures with a total charge that are slabs of a Ruddlesden-Popper seed:
    their labels hold the charge's interaction with the engine's neutralising background,
    which grows with the vacuum, so each has a vacuum gate of its own."""
    return [s.name for s in structure_plan(config)
            if s.total_charge and s.transform is not None and is_slab_seed(s.seed)]


def gated_structures(config: dict) -> list[str]:
    """What the convergence gates label: every seed, and the charged slabs
    (``convergence.charged_slabs``)."""
    seeds = [s["name"] for s in config["structures"]["seeds"]]
    return seeds + (charged_slab_names(config) if config["convergence"]["charged_slabs"] else [])


def temperature_tags(config: dict) -> list[str]:
    """The sampling temperatures as wildcard values ('50', '150', '297p5')."""
    return [number_tag(t)[1:] for t in config["sampling"]["temperatures_K"]]


#: Suffixes that make a ``properties.structures`` entry a user file rather than the
#: name of a built structure.
STRUCTURE_FILE_SUFFIXES = (".cif", ".extxyz", ".xyz")


def is_structure_file(entry: str) -> bool:
    """Whether a ``properties.structures`` entry names a user file (by its suffix)."""
    return PurePath(entry).suffix.lower() in STRUCTURE_FILE_SUFFIXES


def property_structure_name(entry: str) -> str:
    """The name of a ``properties.structures`` entry: a built structure's own name, a
    user file's stem (``cifs/CsPbI3_delta.cif`` -> ``CsPbI3_delta``)."""
    return PurePath(entry).stem if is_structure_file(entry) else entry


def property_structures(config: dict) -> dict[str, str | None]:
    """``properties.structures`` by name (:func:`property_structure_name`): a user
    file's path, or None for a built structure."""
    return {property_structure_name(e): e if is_structure_file(e) else None
            for e in config["properties"]["structures"]}


def n_chunks(n_items: int, chunk_size: int) -> int:
    """Number of labelling jobs for ``n_items`` structures, ``chunk_size`` per job."""
    return max(1, math.ceil(n_items / chunk_size))


def chunk_bounds(chunk: int, chunk_size: int, n_items: int) -> tuple[int, int]:
    """Row range ``[start, stop)`` of ``chunk`` (0-based); empty past the end."""
    start = min(chunk * chunk_size, n_items)
    return start, min(start + chunk_size, n_items)


def model_members(config: dict) -> list[int]:
    """Committee member indices (0 .. n_models-1)."""
    return list(range(config["training"]["n_models"]))


def peer_members(config: dict) -> list[int]:
    """Member indices of the MACE peer model (0 .. training.peer.n_models-1), none when
    training.peer is not enabled."""
    peer = config["training"]["peer"]
    return list(range(peer["n_models"])) if peer["enabled"] else []


#: Where active-learning round ``r`` (>= 1) keeps its files.
ACTIVE_ROOT = "results/active"


def active_rounds(config: dict) -> list[int]:
    """Rounds 1..active_learning.max_rounds when active learning is enabled, else none."""
    section = config.get("active_learning", {})
    return list(range(1, section["max_rounds"] + 1)) if section.get("enabled") else []


def round_dir(round_: int) -> str:
    """The directory of round ``round_`` (``results/active/r1``...)."""
    return f"{ACTIVE_ROOT}/r{round_}"


def active_dataset(round_: int) -> str:
    """Every xTB label after round ``round_``: round 0's gathered dataset, then each
    round's gather of the previous dataset and its new labels."""
    return "results/datasets/xtb.parquet" if round_ == 0 else f"{round_dir(round_)}/xtb.parquet"


def active_charge_dataset(config: dict, round_: int) -> str:
    """The charges round ``round_``'s committee learns: the DFT set (not extended by
    rounds), or with ``training.charge_reference: xtb`` every xTB label before the round."""
    if config["training"]["charge_reference"] == "xtb":
        return active_dataset(round_ - 1)
    return DFT_DATASET


def active_model_dir(config: dict, round_: int, member: int, kind: str) -> str:
    """Model directory of committee ``member`` of round ``round_``; ``kind`` is
    ``charges`` or ``4g``.

    Round committees live under ``results/active`` and never reuse the study's own
    models (``results/models``): with active learning those train on every label after
    the last round (:func:`training_dataset`), which round 1's committee comes before.
    Charge models learning DFT charges (a dataset the rounds do not extend) are trained
    once for all rounds.
    """
    if kind == "charges" and config["training"]["charge_reference"] == "dft":
        return f"{ACTIVE_ROOT}/models/charges_{member}"
    return f"{round_dir(round_)}/models/{kind}_{member}"


#: Every xTB label after the last active-learning round, gathered once the loop stops.
ACTIVE_FINAL_DATASET = f"{ACTIVE_ROOT}/xtb.parquet"


def training_dataset(config: dict) -> str:
    """The xTB labels the study's own models (``results/models``: validated, packaged)
    train and are tested on: round 0's, or with active learning every label after the
    last round (:data:`ACTIVE_FINAL_DATASET`)."""
    return ACTIVE_FINAL_DATASET if active_rounds(config) else active_dataset(0)


def active_chunks(config: dict) -> list[int]:
    """Labelling jobs of a round: its budget in ``xtb.chunk_size`` chunks."""
    return list(range(n_chunks(config["active_learning"]["budget"], config["xtb"]["chunk_size"])))


#: More xTB labels of the test parents (selection.n_xtb_test), for validation only.
TEST_LABELS_DATASET = "results/datasets/xtb_test.parquet"
#: DFT labels of the same held-out frames (``selection.dft_test``).
TEST_DFT_DATASET = "results/datasets/dft_test.parquet"

#: The DFT-charge labels (computed or ingested) and the split of the study's parents.
DFT_DATASET = "results/datasets/dft.parquet"
SPLITS = "results/splits.json"


def validation_inputs(config: dict, study: PurePath | str = "") -> dict[str, str]:
    """The labels ``hipqeq validate`` reads for a study's models (``results/models``), by
    its options' names (``xtb``, ``xtb_test``, ``dft``, ``dft_test``, ``splits``), as paths
    under ``study``: the held-out frames' labels only where the config makes them. The
    workflow's validate rule and the study scripts read the same files through it."""
    inputs = {"xtb": training_dataset(config), "xtb_test": TEST_LABELS_DATASET, "dft": DFT_DATASET,
              "dft_test": TEST_DFT_DATASET, "splits": SPLITS}
    if not test_label_chunks(config):
        del inputs["xtb_test"]
    if not test_dft_chunks(config):
        del inputs["dft_test"]
    return {name: str(PurePath(study) / path) for name, path in inputs.items()}


def validate_options(inputs: dict) -> list[str]:
    """``hipqeq validate``'s command-line options for ``inputs`` (named as by
    :func:`validation_inputs`), e.g. ``["--xtb", "a.parquet", "--xtb-test", ...]``."""
    return [part for name, path in inputs.items() for part in (f"--{name.replace('_', '-')}", str(path))]


#: The config a study directory keeps beside its results: the one its run used.
STUDY_CONFIG = "study.yaml"


def study_config(study: PurePath, config: PurePath | None = None) -> PurePath:
    """``config`` when given, else the study directory's own :data:`STUDY_CONFIG`, so that
    a study's results are never read with another run's settings by default."""
    return config if config is not None else study / STUDY_CONFIG


def test_label_chunks(config: dict) -> list[int]:
    """Labelling jobs of the held-out frames (``selection.n_xtb_test`` in
    ``xtb.chunk_size`` chunks); none when it is 0."""
    n_test = config["selection"]["n_xtb_test"]
    return list(range(n_chunks(n_test, config["xtb"]["chunk_size"]))) if n_test else []


def test_dft_chunks(config: dict) -> list[int]:
    """DFT labelling jobs of the held-out frames (with ``selection.dft_test``: the
    ``n_xtb_test`` frames in ``dft.chunk_size`` chunks); none otherwise, without held-out
    frames, or for an external DFT set, which is not computed here."""
    selection = config["selection"]
    if not selection["dft_test"] or not selection["n_xtb_test"] or config["dft"]["source"] == "external":
        return []
    return list(range(n_chunks(selection["n_xtb_test"], config["dft"]["chunk_size"])))


def held_out_split(config: dict) -> str:
    """The split whose test parents ``hipqeq select-test`` samples: one that no label
    changes, so that the held-out frames are not chosen and labelled again after every
    round. The test parents depend only on the parents, the seed and the fractions
    (:func:`hipqeq.data.split.make_splits`): active learning's split, which is made
    before any label, holds the same ones as the study's, which waits for the labels;
    `hipqeq validate` refuses held-out rows of any parent its split does not hold out."""
    return f"{ACTIVE_ROOT}/splits.json" if active_rounds(config) else SPLITS
