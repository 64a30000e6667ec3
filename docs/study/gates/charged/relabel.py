"""Label the charged-slab gate geometries as check_convergence builds them (the study config,
its built structures) at 29.89, 40 and 50 A and keep the rows (relabelled_rows.json):

    python docs/study/gates/charged/relabel.py rp1_slab__vac_I_qp1 rp1_slab__vac_Cs_qm1
"""
import json, sys
import numpy as np
from hipqeq.config import load_config
from hipqeq.data import read_structure, record_from_atoms
from hipqeq.labels.common import label_structure
from hipqeq.geometry import slab_normal, vacuum_of, with_vacuum
from hipqeq.labels.convergence import _labeller

config = load_config("studies/cspbi-gfn1/study.yaml")  # the first run's settings (5x5x1), which these gates checked
structures = "studies/cspbi-gfn1/results/structures/structures.parquet"
out = []
for name in sys.argv[1:]:
    seed = read_structure(structures, name)
    seed.rattle(config["convergence"]["rattle_A"], seed=config["seed"])
    seed.info = {"total_charge": float(seed.info.get("total_charge", 0.0))}
    axis = slab_normal(seed)
    own = round(vacuum_of(seed, axis), 2)
    seed = with_vacuum(seed, axis, own)
    labeller = _labeller(config, "xtb")
    for v in [own, 40.0, 50.0]:
        atoms = with_vacuum(seed, axis, v)
        atoms.info.update(structure_name=f"{name}_v{v:g}", source="build")
        row = label_structure(record_from_atoms(atoms), labeller)
        out.append({"name": name, "vacuum_A": v, "numbers": atoms.numbers.tolist(), "positions": atoms.positions.tolist(),
                    "cell": atoms.cell.array.tolist(), "total_charge": atoms.info["total_charge"], "status": row["status"],
                    "energy": row["energy"], "forces": np.asarray(row["forces"]).tolist(), "charges": np.asarray(row["charges"]).tolist()})
        print(name, v, row["status"], row["energy"], flush=True)
        json.dump(out, open("relabelled_rows.json", "w"))
