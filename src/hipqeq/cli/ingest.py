"""Read an external DFT reference set (energies, forces, per-atom charges) into a dataset.

Reads extxyz, an ASE database or any file ASE can read, maps its property names onto
the dataset contract and converts its units once (Hartree, kcal/mol, kJ/mol -> eV;
Bohr -> Angstrom; forces follow energy / length). This is how a lab brings its own
DFT charges (e.g. Bader or DDEC from VASP or CP2K). Rows get source "external",
family "external", status ok, and method / charge_scheme from the config or flags.

With --config the settings come from dft.external (path, format, properties, units);
without it give --input and override names and units with the flags.

examples:
  hipqeq ingest --config config/config.yaml --output results/labels/dft/external.parquet
  hipqeq ingest --input vasp_bader.extxyz --output external.parquet \\
      --charges-key bader_charge --energy-key dft_energy --energy-unit eV
"""

from __future__ import annotations

import argparse

from hipqeq.cli._common import add_config_argument, add_output_argument

#: flag dest -> (section key path inside dft.external)
_OVERRIDES = {
    "input": ("path",),
    "format": ("format",),
    "method": ("method",),
    "charge_scheme": ("charge_scheme",),
    "energy_key": ("properties", "energy"),
    "forces_key": ("properties", "forces"),
    "charges_key": ("properties", "charges"),
    "total_charge_key": ("properties", "total_charge"),
    "energy_unit": ("units", "energy"),
    "length_unit": ("units", "length"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser, required=False)
    add_output_argument(parser, "ingested dataset")
    parser.add_argument("--input", "-i", default=None, metavar="FILE",
                        help="reference file (default: dft.external.path of the config)")
    parser.add_argument("--format", default=None, help="ASE format name (default: extxyz)")
    parser.add_argument("--method", default=None, help="level of theory recorded in each row")
    parser.add_argument("--charge-scheme", default=None, help="charge partition recorded in each row (default Bader)")
    parser.add_argument("--energy-key", default=None, help="name of the energy property")
    parser.add_argument("--forces-key", default=None, help="name of the per-atom forces array")
    parser.add_argument("--charges-key", default=None, help="name of the per-atom charges array")
    parser.add_argument("--total-charge-key", default=None, help="name of the total-charge property")
    parser.add_argument("--energy-unit", choices=("eV", "Hartree", "kcal/mol", "kJ/mol"), default=None)
    parser.add_argument("--length-unit", choices=("Angstrom", "Bohr"), default=None)


def run(args: argparse.Namespace) -> int:
    from hipqeq.cli._common import load
    from hipqeq.errors import ConfigError
    from hipqeq.config import validate_section
    from hipqeq.labels.ingest import ingest

    external = dict(load(args)["dft"].get("external", {})) if args.config else {}
    for dest, keys in _OVERRIDES.items():
        value = getattr(args, dest)
        if value is not None:
            target = external
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = value
    if "path" not in external:
        raise ConfigError("ingest needs a reference file: give --input or a config with dft.external.path")
    settings = validate_section("dft", {"external": external})["external"]
    # names other than the defaults were typed by the user: a file without them is an error
    defaults = validate_section("dft", {"external": {"path": settings["path"]}})["external"]["properties"]
    explicit = {key for key, name in settings["properties"].items() if name != defaults[key]}
    counts = ingest(settings, args.output, explicit)
    summary = ", ".join(f"{status} {n}" for status, n in counts.items())
    print(f"ingested {sum(counts.values())} structure(s) from {settings['path']} into {args.output}: {summary}")
    return 0
