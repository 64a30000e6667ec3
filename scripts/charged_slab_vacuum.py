"""Does a charged slab's label depend on its vacuum, and does the model follow it?

A slab cell labelled by a 3D-periodic engine (CP2K, tblite) with a total charge Q != 0
carries a neutralising background: its energy holds a term that grows with the vacuum
(the charge's interaction with the background and the periodic images). The 4G model
subtracts its own E_elec under the same boundary, so its short range sees a
vacuum-independent target only if the two terms agree. The convergence gates ran on
neutral seeds only; this labels built structures (a charged vacancy, and its neutral
counterpart as a control) at several vacua with the study's labelling settings and
compares the change of the label's energy with the change of the model's prediction
under the label's boundary (3D-periodic), and with the model's prediction under the
physical slab boundary (which should not change).

    python scripts/charged_slab_vacuum.py --study studies/cspbi-gfn1 \\
        --names rp1_slab__vac_I_qp1 rp1_slab__vac_I --vacua-A 20 30 40 --output docs/study/charged_vacuum/rp1.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hipqeq.calculator import predict
from hipqeq.config import load_config
from hipqeq.data import atoms_from_record, read_records
from hipqeq.data.io import record_from_atoms
from hipqeq.labels import xtb_labeller
from hipqeq.labels.common import label_structure
from hipqeq.geometry import slab_normal, vacuum_of, with_vacuum
from hipqeq.plan import study_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, required=True, help="study directory (results/structures, results/models)")
    parser.add_argument("--config", type=Path,
                        help="the study's config (default: STUDY/study.yaml, the one its run used)")
    parser.add_argument("--names", nargs="+", required=True, help="built structure names (slabs)")
    parser.add_argument("--vacua-A", nargs="+", type=float, required=True, help="vacuum gaps (Angstrom)")
    parser.add_argument("--output", type=Path, required=True, help="JSON of every label and prediction")
    args = parser.parse_args()
    args.config = study_config(args.study, args.config)

    config = load_config(args.config)
    labeller = xtb_labeller({**config["xtb"], "allow_small_cells": True})
    built = {r["structure_name"]: r for r in read_records(args.study / "results" / "structures" / "structures.parquet")}
    models = sorted(d for d in (args.study / "results" / "models").glob("4g_[0-9]*") if d.is_dir())
    rows = []
    for name in args.names:
        seed = atoms_from_record(built[name])
        axis = slab_normal(seed)
        if axis is None:
            raise SystemExit(f"{name} is not a slab")
        print(f"{name}: own vacuum {vacuum_of(seed, axis):.1f} A, total charge {seed.info.get('total_charge', 0)}")
        for vacuum in args.vacua_A:
            atoms = with_vacuum(seed, axis, vacuum)
            label = label_structure(record_from_atoms(atoms), labeller)
            periodic, slab = (predict(models, [atoms], charge_pbc=[pbc], progress=False)[0]
                              for pbc in ((True, True, True), tuple(atoms.pbc)))
            row = {"name": name, "vacuum_A": vacuum, "n_atoms": len(atoms),
                   "total_charge": float(atoms.info.get("total_charge", 0.0)), "status": label["status"],
                   "label_energy_eV": label["energy"], "label_wall_s": round(label["wall_time_s"], 1),
                   "model_periodic_energy_eV": float(periodic["energy"]),
                   "model_periodic_elec_eV": float(periodic["energy_elec"]),
                   "model_slab_energy_eV": float(slab["energy"]), "model_slab_elec_eV": float(slab["energy_elec"])}
            rows.append(row)
            print(json.dumps(row))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"models": [str(m) for m in models], "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
