"""Thermal expansion, dU/dT and octahedral tilts from NPT MD with a trained potential.

For one structure (a built one: --structures the Parquet file of `hipqeq build` and
--name; or a user CIF / extxyz file: --structures PATH, named by its stem) runs
Berendsen NPT MD with the potential (a committee when several --model directories are
given) at each temperature of properties.temperatures_K, and writes to --output-dir:

  properties.parquet  one row per temperature: mean volume per atom (A^3/atom) and
                      potential energy per atom (eV/atom) with block-averaging standard
                      errors, tilt-angle mean and spread (degrees), frames averaged, the
                      time of the first one (fs), and whether blocking found a plateau
  summary.json        the rows, the time series, and weighted linear fits: thermal
                      expansion 1/V dV/dT (1/K) and dU/dT (eV/atom/K and k_B/atom)
  volume.png, energy.png, tilts.png    V(T), U(T) with error bars; tilt distributions
  T<temperature>.traj the NPT trajectories (a killed run resumes from them)

A slab (pbc T,T,F) relaxes its in-plane cell only: its volume per atom includes the
fixed vacuum height, so its expansion coefficient is the in-plane (areal) one. Run
length, time step, pressure (GPa), thermostat and barostat times and the equilibration
rule come from the config's properties section; flags override a few. Short runs (the
toy's) give error bars, not converged numbers: check blocking_converged in the table.

example:
  hipqeq properties --config config/toy.yaml --model results/models/4g_0 \\
      --structures results/structures/structures.parquet --name alpha \\
      --output-dir results/properties/alpha
  hipqeq properties --config config/config.yaml --model results/models/4g_0 results/models/4g_1 \\
      --structures cifs/CsPbI3_delta.cif --temperatures-K 150 300 450 --output-dir results/properties/CsPbI3_delta
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hipqeq.cli._common import (
    add_config_argument,
    add_device_argument,
    add_model_argument,
    add_seed_argument,
    load,
    positive_float,
    positive_int,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    add_model_argument(parser, "model directory (several: a committee)")
    parser.add_argument("--structures", type=Path, required=True, metavar="FILE",
                        help="Parquet file of built structures (hipqeq build output; needs --name), "
                             "or a user structure: CIF (read with pymatgen) or extxyz")
    parser.add_argument("--name", help="structure_name in the Parquet file; for a user file, the name in the "
                                       "outputs (default: the file's stem)")
    parser.add_argument("--output-dir", type=Path, required=True, metavar="DIR", dest="output_dir",
                        help="directory of the table, summary, plots and trajectories")
    parser.add_argument("--temperatures-K", type=positive_float, nargs="+", dest="temperatures_K", metavar="T",
                        help="temperature grid in K (default: properties.temperatures_K)")
    parser.add_argument("--steps", type=positive_int, help="NPT steps per temperature (default: properties.steps)")
    parser.add_argument("--supercell", type=positive_int, nargs=3, metavar=("N1", "N2", "N3"),
                        help="repeats of the structure for the MD cell (default: properties.supercell)")
    add_device_argument(parser, "of the potential")
    add_seed_argument(parser)


def run(args: argparse.Namespace) -> int:
    from hipqeq.data import read_structure
    from hipqeq.errors import ConfigError
    from hipqeq.plan import is_structure_file
    from hipqeq.properties import properties_from_config, read_structure_file

    config = load(args)
    if is_structure_file(str(args.structures)):
        atoms, name = read_structure_file(args.structures), args.name or args.structures.stem
    elif args.name is None:
        raise ConfigError(f"--structures {args.structures}: name the structure in it with --name")
    else:
        atoms, name = read_structure(args.structures, args.name), args.name
    summary = properties_from_config(config, args.model, atoms, name, args.output_dir, device=args.device,
                                     seed=args.seed, temperatures_K=args.temperatures_K, steps=args.steps,
                                     supercell=args.supercell)
    print(json.dumps({key: summary[key] for key in ("structure", "thermal_expansion_per_K",
                                                      "thermal_expansion_err_per_K", "dU_dT_kB_per_atom",
                                                      "dU_dT_err_kB_per_atom", "expansion")}))
    return 0
