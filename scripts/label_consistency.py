"""Are the study's CP2K labels derivatives of their own energies where the model is wrong?

For the frame of a parent on which the 4G model (member 0) has its largest force RMSE,
the CP2K GFN1-xTB energy (the study's ``xtb`` settings) is recomputed at R +- h u, with u
the unit 3N-vector of the model's force error (F_model - F_label) or a random one, and
the central difference -dE/dh is compared with the label's projection F_label . u and
the model's F_model . u. A label that agrees with its own energy where the model does
not puts the error on the model, not on SCF noise in the labels (issue 15).

    python scripts/label_consistency.py --parent c911a787 --direction error  # ~2 CP2K runs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hipqeq.calculator import predict
from hipqeq.config import load_config
from hipqeq.data.io import atoms_from_record, label_pbc, read_records
from hipqeq.labels import xtb_labeller
from hipqeq.plan import study_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, default=Path("studies/cspbi-gfn1"))
    parser.add_argument("--config", type=Path,
                        help="the study's config (default: STUDY/study.yaml, the one its run used)")
    parser.add_argument("--model", default="results/models/4g_0", help="model directory inside the study")
    parser.add_argument("--parent", required=True, help="parent_id prefix of the frames to consider")
    parser.add_argument("--direction", choices=("error", "random"), default="error")
    parser.add_argument("--step-A", type=float, default=0.01, help="h: length of the 3N displacement (Angstrom)")
    parser.add_argument("--output", type=Path, default=None, help="JSON file (default: print only)")
    args = parser.parse_args()
    args.config = study_config(args.study, args.config)

    records = [r for r in read_records(args.study / "results/active/xtb.parquet")
               if r["status"] == "ok" and r["parent_id"].startswith(args.parent)]
    preds = predict([args.study / args.model], [atoms_from_record(r) for r in records],
                    charge_pbc=[label_pbc(r) for r in records], progress=False)
    rms = [np.sqrt(((p["forces"] - np.asarray(r["forces"]).reshape(-1, 3)) ** 2).mean()) for p, r in zip(preds, records)]
    k = int(np.argmax(rms))
    record, model_forces = records[k], preds[k]["forces"]
    atoms = atoms_from_record(record)
    label_forces = np.asarray(record["forces"]).reshape(-1, 3)
    u = model_forces - label_forces if args.direction == "error" else np.random.default_rng(0).normal(size=label_forces.shape)
    u /= np.linalg.norm(u)
    labeller = xtb_labeller(load_config(args.config)["xtb"])
    energies = {}
    for sign in (1, -1):
        displaced = atoms.copy()
        displaced.calc = None
        displaced.info = dict(atoms.info)
        displaced.positions += sign * args.step_A * u
        energies[sign] = labeller.label(displaced).energy
    result = {"structure_id": record["structure_id"], "parent_id": record["parent_id"], "n_atoms": len(atoms),
              "direction": args.direction, "step_A": args.step_A,
              "finite_difference_eV_per_A": -(energies[1] - energies[-1]) / (2 * args.step_A),
              "label_eV_per_A": float((label_forces * u).sum()), "model_eV_per_A": float((model_forces * u).sum()),
              "frame_force_rmse_model_eV_per_A": float(rms[k])}
    print(json.dumps(result))
    if args.output:
        args.output.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
