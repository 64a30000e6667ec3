"""Load and validate the workflow configuration.

The schema (``schemas/config.schema.yaml``, also ``workflow/schemas/`` for Snakemake)
is the single source of truth for keys, defaults and ranges; every CLI verb and the
Snakefile validate against it, so a mistyped key fails at start-up with its path.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from importlib.resources import files
from pathlib import Path

import jsonschema
import yaml

from hipqeq.errors import ConfigError
from hipqeq.plan import (
    STRUCTURE_FILE_SUFFIXES,
    is_slab_seed,
    is_structure_file,
    property_structure_name,
    seed_selected,
    structure_names,
)

SCHEMA_PATH = Path(str(files("hipqeq") / "schemas" / "config.schema.yaml"))

#: Names used in file names and wildcards (the schema's ``$defs/name``).
NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_]*"


@functools.cache
def schema() -> dict:
    """The config JSON schema as a dict."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _extend_with_defaults(validator_class):
    """A validator that fills ``default`` values in place while it validates
    (the jsonschema FAQ recipe, also used by Snakemake's ``validate``)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for name, prop in properties.items():
                if "default" in prop:
                    instance.setdefault(name, copy.deepcopy(prop["default"]))
        yield from validate_properties(validator, properties, instance, subschema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _validate_with_defaults(instance, subschema: dict, source: str, prefix: tuple = ()) -> None:
    """Validate ``instance`` against ``subschema`` (filling defaults); raise
    :class:`ConfigError` for the first error, naming its key path."""
    validator = _extend_with_defaults(jsonschema.Draft202012Validator)(subschema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(p) for p in (*prefix, *errors[0].absolute_path)) or "(top level)"
        raise ConfigError(f"{source}: invalid config at '{where}': {errors[0].message}")


def validate_config(config: dict, source: str = "config") -> dict:
    """Validate ``config`` in place, filling defaults; return it.

    Raises :class:`ConfigError` naming the key path and the problem, e.g.
    ``invalid config at 'sampling': Additional properties are not allowed
    ('temperature' was unexpected)``.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: the config must be a mapping, got {type(config).__name__}")
    _validate_with_defaults(config, schema(), source)
    _check_cross_references(config, source)
    return config


def validate_section(name: str, section: dict, source: str = "settings") -> dict:
    """One top-level section (e.g. ``"xtb"``) validated on its own, defaults filled.

    For verbs run without a config file (settings from flags): the same schema, defaults
    and ranges apply. Returns a filled deep copy; raises :class:`ConfigError` naming the
    key, e.g. ``invalid config at 'xtb/method'``.
    """
    full = schema()
    settings = copy.deepcopy(section)
    _validate_with_defaults(settings, {"$defs": full["$defs"], **full["properties"][name]}, source, (name,))
    return settings


def _check_listed_once(values: list, where: str, source: str, unit: str = "") -> None:
    """Refuse an entry listed twice in ``values`` (config key ``where``): it would run the
    same MD job or walker twice (same name, same seed) and count its frames twice."""
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        shown = ", ".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in repeated)
        raise ConfigError(f"{source}: invalid config at '{where}': {shown}{unit} listed more than once")


def _check_cross_references(config: dict, source: str) -> None:
    """Checks a JSON schema cannot express (or not with a message naming the value): seed
    names, sampling and walker temperatures and walker structures unique, referenced
    names exist."""
    _check_listed_once(config["sampling"]["temperatures_K"], "sampling/temperatures_K", source, " K")
    _check_listed_once(config["active_learning"]["temperatures_K"], "active_learning/temperatures_K", source, " K")
    _check_listed_once(config["active_learning"]["structures"], "active_learning/structures", source)
    seeds = config["structures"]["seeds"]
    names = [s["name"] for s in seeds]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{source}: structures.seeds has duplicate name(s) {', '.join(duplicates)}")
    required = {"ruddlesden_popper": "n", "phase": "phase", "cif": "path"}
    for i, seed in enumerate(seeds):
        key = required[seed["builder"]]
        if key not in seed:
            raise ConfigError(f"{source}: invalid config at 'structures/seeds/{i}': "
                              f"builder {seed['builder']} needs '{key}'")
    selectors = [("structures/strains/seeds", config["structures"]["strains"]["seeds"]),
                 ("structures/tilts/seeds", config["structures"]["tilts"]["seeds"])]
    selectors += [(f"structures/defects/{i}/seeds", d.get("seeds", []))
                  for i, d in enumerate(config["structures"]["defects"])]
    for where, selected in selectors:
        unknown = sorted(set(selected) - set(names))
        if unknown:
            raise ConfigError(f"{source}: invalid config at '{where}': unknown seed(s) {', '.join(unknown)}")
    for i, defect in enumerate(config["structures"]["defects"]):
        if defect["kind"] == "substitution" and "by" not in defect:
            raise ConfigError(f"{source}: invalid config at 'structures/defects/{i}': a substitution needs 'by'")
        if "vacuum_A" not in defect:
            continue
        not_slabs = [s["name"] for s in seeds if seed_selected(s, defect.get("seeds", [])) and not is_slab_seed(s)]
        if not_slabs:
            raise ConfigError(f"{source}: invalid config at 'structures/defects/{i}/vacuum_A': applies to "
                              f"Ruddlesden-Popper slab seeds, not {', '.join(not_slabs)} (select seeds with 'seeds')")
    selection = config["selection"]
    if selection["n_dft"] > selection["n_xtb"]:
        raise ConfigError(f"{source}: invalid config at 'selection/n_dft': {selection['n_dft']} "
                          f"exceeds n_xtb = {selection['n_xtb']} (DFT frames are a subset)")
    training = config["training"]
    if training["peer"]["n_models"] > training["n_models"]:
        raise ConfigError(f"{source}: invalid config at 'training/peer/n_models': {training['peer']['n_models']} "
                          f"exceeds training.n_models = {training['n_models']} (the split has that many members)")
    if training["charges"]["stage_two"] is not None:
        raise ConfigError(f"{source}: invalid config at 'training/charges/stage_two': the charge model has no "
                          "energy to weight; stage_two applies to short_range and peer.fit")
    built = structure_names(config)
    unknown = sorted(set(config["validation"]["md_structures"]) - set(built))
    if unknown:
        raise ConfigError(f"{source}: invalid config at 'validation/md_structures': unknown structure(s) "
                          f"{', '.join(unknown)}; built structures are {', '.join(built)}")
    unknown = sorted(set(config["active_learning"]["structures"]) - set(built))
    if unknown:
        raise ConfigError(f"{source}: invalid config at 'active_learning/structures': unknown structure(s) "
                          f"{', '.join(unknown)}; built structures are {', '.join(built)}")
    _check_property_structures(config, built, source)
    active = config["active_learning"]
    if active["trust_lo_force_eV_A"] >= active["trust_hi_force_eV_A"]:
        raise ConfigError(f"{source}: invalid config at 'active_learning/trust_lo_force_eV_A': "
                          f"{active['trust_lo_force_eV_A']} is not below trust_hi_force_eV_A")
    charged = active["trust_lo_charge_e"] is not None or active["trust_hi_charge_e"] is not None
    if active["enabled"] and charged and config["training"]["charge_reference"] == "dft":
        raise ConfigError(f"{source}: invalid config at 'active_learning/trust_lo_charge_e': charge bounds need "
                          "training.charge_reference xtb (DFT-charge models learn nothing new between rounds, "
                          "so their spread cannot shrink and the rounds would never stop on accuracy)")
    if config["dft"]["source"] == "external" and "external" not in config["dft"]:
        raise ConfigError(f"{source}: invalid config at 'dft': source 'external' needs dft.external.path")


def _check_property_structures(config: dict, built: list[str], source: str) -> None:
    """``properties.structures``: built names that exist, user files whose stems are
    usable names, no name twice, and some structure when the rules are enabled."""
    where = f"{source}: invalid config at 'properties/structures'"
    entries = config["properties"]["structures"]
    if config["properties"]["enabled"] and not entries:
        raise ConfigError(f"{where}: properties.enabled but no structure listed")
    names = [property_structure_name(e) for e in entries]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{where}: name(s) {', '.join(twice)} listed more than once (a file is named by its stem)")
    unknown = sorted(e for e in entries if not is_structure_file(e) and e not in built)
    if unknown:
        raise ConfigError(f"{where}: unknown structure(s) {', '.join(unknown)}; built structures are "
                          f"{', '.join(built)}, or give a file ({', '.join(STRUCTURE_FILE_SUFFIXES)})")
    bad = sorted(e for e in entries
                 if is_structure_file(e) and not re.fullmatch(NAME_PATTERN, property_structure_name(e)))
    if bad:
        raise ConfigError(f"{where}: file(s) {', '.join(bad)} need a stem of letters, digits and underscores, "
                          "starting with a letter (it names the outputs)")


def load_config(path: str | os.PathLike) -> dict:
    """Read a YAML config file, validate it and fill defaults."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    return validate_config(config, source=str(path))
