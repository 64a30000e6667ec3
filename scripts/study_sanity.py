"""Physics sanity checks of a pretrained potential (issue 15), written to JSON and a figure.

1. In-plane lattice constant of the RP n = 1 slab: the 2x2 slab strained biaxially over
   a grid, internal positions relaxed with the potential at each strain, E(a) fitted by a
   parabola. The reference level's energies (CP2K GFN1-xTB, the study's k-mesh) are taken
   on the same relaxed geometries (a relaxation with CP2K costs too much here), so its
   minimum is that of the reference on the potential's geometries.
2. Stability: NVT Langevin MD of the 3x3 n = 1 slab (63 atoms) at each temperature for
   ``--md-ps`` ps, then an NVE tail, judged by :func:`hipqeq.md.run_md` (an atom with no
   neighbour within 5 A has flown off: 4 A, the issue's number, flags every Cs of the
   ideal slab, whose Cs-I distances are 4.2-4.5 A; a pair closer than 1.5 A has
   collapsed; a potential energy more than 0.1 eV/atom below the start's has fallen); the
   NVE energy drift per atom is reported.

    python scripts/study_sanity.py --name cspbi-gfn1 --output docs/study/sanity
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from ase.optimize import BFGS

from hipqeq import pretrained
from hipqeq.data.io import record_from_atoms
from hipqeq.labels.common import label_structure
from hipqeq.md import run_md
from hipqeq.structures.builders import ruddlesden_popper
from hipqeq.structures.transform import strain


def in_plane_scan(calc, labeller, strains_percent, vacuum_A: float) -> dict:
    seed = ruddlesden_popper(1, kind="slab", vacuum=vacuum_A).repeat((2, 2, 1))
    a_seed = float(np.linalg.norm(seed.cell[0])) / 2
    rows = []
    for percent in strains_percent:
        atoms = strain(seed, percent)
        atoms.calc = calc
        BFGS(atoms, logfile=None).run(fmax=0.02, steps=300)
        row = {"strain_percent": percent, "a_A": a_seed * (1 + percent / 100),
               "energy_model_eV_per_atom": atoms.get_potential_energy() / len(atoms)}
        if labeller is not None:
            # through the labelling stage's retry: a failed SCF leaves the point out, named
            label = label_structure(record_from_atoms(atoms), labeller)
            row["reference_status"] = label["status"]
            if label["status"] == "ok":
                row["energy_reference_eV_per_atom"] = label["energy"] / len(atoms)
        rows.append(row)
    result = {"a_seed_A": a_seed, "points": rows}
    for key in ("model", "reference"):
        column = f"energy_{key}_eV_per_atom"
        points = [r for r in rows if column in r]
        if len(points) >= 3:
            a0, r2 = parabola_minimum(np.array([r["a_A"] for r in points]), np.array([r[column] for r in points]))
            result[f"a0_{key}_A"], result[f"fit_r2_{key}"] = a0, r2
    return result


def parabola_minimum(a, energy, min_r2: float = 0.9) -> tuple[float | None, float]:
    """The minimum of a least-squares parabola E(a) and the fit's R^2; None unless the
    parabola is convex, fits (R^2 >= ``min_r2``) and has its minimum inside the scan: a
    flat or ragged E(a) has no lattice constant to report."""
    coefficients = np.polyfit(a, energy, 2)
    residual = energy - np.polyval(coefficients, a)
    r2 = float(1.0 - residual.var() / energy.var()) if energy.var() > 0 else 0.0
    c2, c1, _ = coefficients
    a0 = -c1 / (2 * c2) if c2 > 0 else None
    return (float(a0) if a0 is not None and r2 >= min_r2 and a.min() <= a0 <= a.max() else None), r2


def stability(calc, temperature_K: float, md_ps: float, timestep_fs: float, workdir: Path) -> dict:
    slab = ruddlesden_popper(1, kind="slab", vacuum=30.0).repeat((3, 3, 1))
    steps = round(md_ps * 1000 / timestep_fs)
    summary = run_md(slab, calc, steps=steps, temperature_K=temperature_K, timestep_fs=timestep_fs,
                     trajectory=workdir / f"md_{temperature_K:g}K.traj", nve_steps=min(steps // 10, 1000),
                     frame_interval=100, seed=int(temperature_K))  # isolation: 5 A, as Cs-I is 4.2-4.5 A
    keep = ("n_atoms", "steps", "nve_steps", "timestep_fs", "mean_temperature_K", "stable", "atoms_flew_off",
            "atoms_collapsed", "min_distance_A", "energy_fell", "potential_energy_drop_eV_per_atom",
            "max_force_eV_A", "energy_drift_eV_per_atom_ps", "charge_min_e", "charge_max_e", "reason",
            "wall_time_s")
    return {"temperature_K": temperature_K, **{k: summary[k] for k in keep},
            "series": {k: summary[k] for k in ("time_fs", "temperature_K", "total_energy_eV")}}


def figure(scan: dict, runs: list[dict], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("model", "4G potential"), ("reference", "CP2K GFN1-xTB")):
        column = f"energy_{key}_eV_per_atom"
        points = [p for p in (scan["points"] if scan else []) if column in p]
        if f"fit_r2_{key}" in (scan or {}):
            a = [p["a_A"] for p in points]
            energies = np.array([p[column] for p in points])
            a0 = scan[f"a0_{key}_A"]
            fit = f"a0 = {a0:.3f} A" if a0 is not None else f"no minimum (parabola R^2 {scan[f'fit_r2_{key}']:.2f})"
            left.plot(a, 1000 * (energies - energies.min()), "o-", label=f"{label}: {fit}")
    left.set(xlabel="in-plane pseudo-cubic a (A)", ylabel="E - E_min (meV/atom)", title="RP n = 1 slab, 2x2")
    left.legend()
    for run in runs:
        series = run["series"]
        t_ps = np.array(series["time_fs"]) / 1000
        right.plot(t_ps, series["temperature_K"], lw=0.5, label=f"{run['temperature_K']:g} K target")
    right.set(xlabel="time (ps)", ylabel="temperature (K)", title="3x3 RP n = 1 slab (63 atoms), Langevin + NVE")
    right.legend()
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=150)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="cspbi-gfn1", help="pretrained potential")
    parser.add_argument("--output", type=Path, required=True, help="output stem (writes .json and .png)")
    parser.add_argument("--strains", type=float, nargs="*", default=[-4, -2, 0, 2, 4],
                        help="biaxial strains (%%); none: no lattice scan")
    parser.add_argument("--temperatures-K", type=float, nargs="+", default=[300, 500])
    parser.add_argument("--md-ps", type=float, default=20.0)
    parser.add_argument("--timestep-fs", type=float, default=2.0)
    parser.add_argument("--no-reference", action="store_true", help="skip the CP2K energies of the scan")
    args = parser.parse_args()

    from hipqeq.config import load_config
    from hipqeq.labels.cp2k import CP2KLabeller

    config = load_config(pretrained.dataset(args.name).parents[1] / "config.yaml")
    labeller = None if args.no_reference else CP2KLabeller(config["xtb"])
    calc = pretrained.calculator(args.name, device="cpu")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    scan = None
    if args.strains:
        started = time.perf_counter()
        scan = in_plane_scan(calc, labeller, args.strains, config["structures"]["seeds"][0].get("vacuum_A", 30.0))
        scan["wall_time_s"] = time.perf_counter() - started
    runs = [stability(calc, t, args.md_ps, args.timestep_fs, args.output.parent) for t in args.temperatures_K]
    args.output.with_suffix(".json").write_text(json.dumps(
        {"potential": args.name, "lattice": scan, "md": [{k: v for k, v in r.items() if k != "series"} for r in runs]},
        indent=1) + "\n")
    figure(scan, runs, args.output)
    print(json.dumps({"a0": {k: v for k, v in (scan or {}).items() if k.startswith("a0") or k == "a_seed_A"},
                      "md": [{k: r[k] for k in ("temperature_K", "stable", "energy_drift_eV_per_atom_ps")}
                             for r in runs]}, indent=1))


if __name__ == "__main__":
    main()
