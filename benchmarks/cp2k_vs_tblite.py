"""CP2K (k-points) versus tblite (Gamma point) GFN1-xTB labels on the same frames.

Builds rattled, strained, defective and charged Ruddlesden-Popper CsPbI frames with
hipqeq's own builders (n = 1 and n = 2 slabs, 3x3 in-plane, 63-108 atoms, vacuum
``--vacuum``), labels each with the CP2K labeller (the schema's SCF defaults, k-mesh
from ``--kpoint-density``) and with tblite, and prints:

1. per frame: atoms, total charge, multiplicity, CP2K k-mesh, status, SCF cycles (and
   attempts: a retry with the safer settings counts), CP2K and tblite seconds;
2. the CP2K converged fraction and the median SCF cycles of converged frames;
3. tblite minus CP2K after one energy offset per element (least squares over the
   neutral frames; a charged periodic cell's energy includes each code's own compensating
   background): energy residual (meV/atom), force MAE and largest difference (meV/A),
   Mulliken charge MAE and largest difference (e), and the time ratio.

The two codes' GFN1 implementations differ by a near-constant ~25 meV/atom (PHYSICS.md),
hence the per-element offset; what remains is what choosing tblite costs per frame.

example:
  python benchmarks/cp2k_vs_tblite.py --output benchmarks/cp2k_vs_tblite.json
  python benchmarks/cp2k_vs_tblite.py --frames 2 --supercell 1 --kpoint-density 12   # seconds
  python benchmarks/cp2k_vs_tblite.py --from-json benchmarks/cp2k_vs_tblite.json     # tables again
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def frames(supercell: int, vacuum: float, seed: int = 0) -> list:
    """(name, Atoms) pairs: rattled, strained, defective and charged RP slabs."""
    from hipqeq.structures.builders import ruddlesden_popper
    from hipqeq.structures.transform import strain, substitution, vacancy

    rng = np.random.default_rng(seed)

    def rp(n):
        return ruddlesden_popper(n, "slab", vacuum=vacuum, supercell=(supercell, supercell, 1))

    def rattled(atoms, width):
        atoms = atoms.copy()
        atoms.rattle(width, seed=int(rng.integers(1 << 31)))
        return atoms

    def charged(atoms, charge):
        atoms.info["total_charge"] = float(charge)
        return atoms

    return [
        ("rp1_rattle0.05", rattled(rp(1), 0.05)),
        ("rp1_biaxial+4%", rattled(strain(rp(1), 4.0), 0.05)),
        ("rp1_vac_I_neutral", rattled(vacancy(rp(1), "I"), 0.03)),
        ("rp1_vac_I+1", charged(rattled(vacancy(rp(1), "I"), 0.03), 1)),
        ("rp1_vac_Cs-1", charged(rattled(vacancy(rp(1), "Cs"), 0.03), -1)),
        ("rp1_rattle0.10", rattled(rp(1), 0.10)),
        ("rp2_rattle0.05", rattled(rp(2), 0.05)),
        ("rp1_uniaxial-3%", rattled(strain(rp(1), -3.0, "uniaxial"), 0.05)),
        ("rp1_Sn_on_Pb", rattled(substitution(rp(1), "Pb", "Sn"), 0.05)),
        ("rp1_Br_on_I", rattled(substitution(rp(1), "I", "Br"), 0.05)),
    ]


def label_one(name: str, atoms, labeller) -> dict:
    from hipqeq.data import record_from_atoms
    from hipqeq.labels.common import label_structure

    atoms.info.setdefault("total_charge", 0.0)
    atoms.info.update(structure_name=name, source="build")
    row = label_structure(record_from_atoms(atoms), labeller)
    cycles = json.loads(row["calc_params"]).get("scf_cycles")
    print(f"  {next(iter(labeller.software))}: {name}: {row['status']} in {row['wall_time_s']:.1f} s"
          + (f", {cycles} SCF cycles" if cycles else ""), flush=True)
    return row


def element_offsets(numbers_list, delta) -> np.ndarray:
    """Residuals of ``delta`` (eV) after a least-squares offset per element."""
    elements = sorted({int(z) for numbers in numbers_list for z in numbers})
    counts = np.array([[np.sum(np.asarray(numbers) == z) for z in elements] for numbers in numbers_list], float)
    offsets, *_ = np.linalg.lstsq(counts, delta, rcond=None)
    return delta - counts @ offsets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=None, help="only the first N frames")
    parser.add_argument("--supercell", type=int, default=3, help="in-plane repeats of the RP cells (3: 63-108 atoms)")
    parser.add_argument("--vacuum", type=float, default=30.0, help="slab vacuum (Angstrom)")
    parser.add_argument("--kpoint-density", type=float, default=30.0, help="CP2K kpoint_density_A")
    parser.add_argument("--retry-max-iterations", type=int, default=300,
                        help="SCF cycles of the safer retry (CP2K: ~0.5-2.5 s a cycle at 63 atoms)")
    parser.add_argument("--output", type=Path, default=None, help="write every row and summary as JSON")
    parser.add_argument("--from-json", type=Path, default=None, metavar="JSON",
                        help="print the tables of the rows saved by an earlier (possibly stopped) run")
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        summarize(saved["cp2k"], saved["tblite"][:len(saved["cp2k"])])
        return 0

    from hipqeq.config import validate_section
    from hipqeq.labels import xtb_labeller

    structures = frames(args.supercell, args.vacuum)[:args.frames]
    common = {"allow_small_cells": True}
    common["retry"] = {"max_iterations": args.retry_max_iterations}
    cp2k = xtb_labeller(validate_section("xtb", {**common, "engine": "cp2k",
                                                 "cp2k": {"kpoint_density_A": args.kpoint_density}}))
    tblite = xtb_labeller(validate_section("xtb", {**common, "engine": "tblite"}))
    print(f"{len(structures)} frames; CP2K k-point density {args.kpoint_density} A")
    rows_cp2k, rows_tblite = [], []
    for name, atoms in structures:  # frame by frame, saved as it goes: a long run can be stopped
        rows_cp2k.append(label_one(name, atoms, cp2k))
        rows_tblite.append(label_one(name, atoms, tblite))
        if args.output:
            args.output.write_text(json.dumps({"cp2k": rows_cp2k, "tblite": rows_tblite}, indent=1,
                                              default=lambda x: np.asarray(x).tolist()))
    summary = summarize(rows_cp2k, rows_tblite)
    if args.output:
        args.output.write_text(json.dumps({"summary": summary, "cp2k": rows_cp2k, "tblite": rows_tblite},
                                          indent=1, default=lambda x: np.asarray(x).tolist()))
    return 0


def summarize(rows_cp2k: list[dict], rows_tblite: list[dict]) -> dict:
    """Print the per-frame table, the converged fraction and the comparison; return them."""
    print("\nframe | atoms | Q | mult | k-mesh | CP2K status | SCF cycles (attempts) | CP2K s | tblite s")
    cycles = []
    for rc, rt in zip(rows_cp2k, rows_tblite):
        params = json.loads(rc["calc_params"])
        n_cycles = params.get("scf_cycles")
        if rc["status"] == "ok":
            cycles.append(n_cycles)
        print(f"{rc['structure_name']} | {len(rc['numbers'])} | {rc['total_charge']:+.0f} | {params.get('multiplicity', '-')} | "
              f"{params.get('kmesh', '-')} | {rc['status']} | {n_cycles} ({len(params['attempts'])}) | "
              f"{rc['wall_time_s']:.0f} | {rt['wall_time_s']:.1f}")
    converged = sum(r["status"] == "ok" for r in rows_cp2k)
    print(f"\nCP2K converged {converged}/{len(rows_cp2k)} ({converged / len(rows_cp2k):.0%}); median SCF cycles "
          f"of converged frames: {np.median(cycles) if cycles else float('nan'):.0f}")

    both = [(rc, rt) for rc, rt in zip(rows_cp2k, rows_tblite) if rc["status"] == "ok" and rt["status"] == "ok"]
    summary = {"converged": converged, "n_frames": len(rows_cp2k), "median_scf_cycles": float(np.median(cycles))
               if cycles else None, "comparison": []}
    if len(both) >= 2:
        # charged cells are left out of the energy fit: each code adds its own compensating
        # background to a charged periodic cell, so their absolute energies are not comparable
        neutral = [k for k, (rc, _) in enumerate(both) if rc["total_charge"] == 0]
        delta = np.array([both[k][1]["energy"] - both[k][0]["energy"] for k in neutral])
        residual = dict(zip(neutral, element_offsets([both[k][0]["numbers"] for k in neutral], delta)))
        print("\ntblite - CP2K after one energy offset per element:")
        print("frame | atoms | dE (meV/atom) | force MAE (meV/A) | force max (meV/A) | charge MAE (e) | "
              "charge max (e) | time CP2K/tblite")
        for k, (rc, rt) in enumerate(both):
            name, n_atoms = rc["structure_name"], len(rc["numbers"])
            res = residual.get(k)
            dforce = np.abs(np.asarray(rt["forces"]) - np.asarray(rc["forces"])) * 1000
            dcharge = np.abs(np.asarray(rt["charges"]) - np.asarray(rc["charges"]))
            entry = {"frame": name, "n_atoms": n_atoms,
                     "energy_mev_per_atom": None if res is None else 1000 * res / n_atoms,
                     "force_mae_mev_A": float(dforce.mean()), "force_max_mev_A": float(dforce.max()),
                     "charge_mae_e": float(dcharge.mean()), "charge_max_e": float(dcharge.max()),
                     "time_ratio": rc["wall_time_s"] / rt["wall_time_s"]}
            summary["comparison"].append(entry)
            energy = "charged" if res is None else f"{entry['energy_mev_per_atom']:+.1f}"
            print(f"{name} | {n_atoms} | {energy} | {entry['force_mae_mev_A']:.0f} | "
                  f"{entry['force_max_mev_A']:.0f} | {entry['charge_mae_e']:.3f} | {entry['charge_max_e']:.3f} | "
                  f"{entry['time_ratio']:.1f}")
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
