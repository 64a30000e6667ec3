"""The charged-slab gate's residual under both background conventions of hipqeq.qeq.coulomb.

Reads relabelled_rows.json (relabel.py: CP2K labels of the gate geometries of the study's
n = 1 V_I+ and V_Cs- slabs at 29.89, 40 and 50 A of vacuum) and writes
background_convention.json: per vacuum, the change of the raw label and of the label minus
E_elec of its own Mulliken charges (3D-periodic, covalent-radius widths) against 50 A,
with the Gaussian and the point background.

    python docs/study/gates/charged/background_convention.py
"""
import json
from pathlib import Path

import numpy as np
from ase import Atoms

from hipqeq.models.charges import element_sigma_A
from hipqeq.qeq import fixed_charge_electrostatics

here = Path(__file__).parent
rows = json.loads((here / "relabelled_rows.json").read_text())
result = []
for name in dict.fromkeys(r["name"] for r in rows):
    mine = [r for r in rows if r["name"] == name]
    for r in mine:
        atoms = Atoms(numbers=r["numbers"], positions=r["positions"], cell=r["cell"], pbc=True)
        q, sigma = np.array(r["charges"]), [element_sigma_A(z) for z in atoms.numbers]
        r["e_gaussian"], r["f_elec"] = fixed_charge_electrostatics(atoms, q, sigma, background="gaussian")
        r["e_point"], _ = fixed_charge_electrostatics(atoms, q, sigma, background="point")
    ref, n = mine[-1], len(mine[-1]["numbers"])
    for r in mine:
        def target(key):
            return 1000 * ((r["energy"] - r[key]) - (ref["energy"] - ref[key])) / n
        target_forces = np.array(r["forces"]) - r["f_elec"]
        reference_forces = np.array(ref["forces"]) - ref["f_elec"]
        out = {"name": name, "vacuum_A": r["vacuum_A"], "sum_q": round(float(np.sum(r["charges"])), 6),
               "d_label_meV_atom": 1000 * (r["energy"] - ref["energy"]) / n,
               "d_target_gauss_bg_meV_atom": target("e_gaussian"), "d_target_point_bg_meV_atom": target("e_point"),
               "max_d_label_force_meV_A": 1000 * float(np.abs(np.array(r["forces"]) - ref["forces"]).max()),
               "max_d_target_force_meV_A": 1000 * float(np.abs(target_forces - reference_forces).max()),
               "max_d_charge_e": float(np.abs(np.array(r["charges"]) - ref["charges"]).max())}
        result.append(out)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}))
(here / "background_convention.json").write_text(json.dumps(result, indent=1) + "\n")
