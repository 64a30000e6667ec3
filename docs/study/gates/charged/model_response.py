"""How much of a charged slab's label change with the vacuum does the shipped 4G committee
reproduce, predicting under the label's own boundary (3D-periodic, neutralising
background)? The rows are relabelled_rows.json (relabel.py: CP2K GFN1-xTB at 29.89, 40
and 50 A of the same geometry); the 2G baseline, blind to the cell's length, is the zero
line. Writes model_response.json:

    python docs/study/gates/charged/model_response.py
"""
import json
import warnings
from pathlib import Path

import numpy as np
from ase import Atoms

from hipqeq import pretrained
from hipqeq.calculator import predict

HERE = Path(__file__).parent


def rms(x):
    return float(np.sqrt(np.mean(np.square(x))))


rows = json.loads((HERE / "relabelled_rows.json").read_text())
structures = []
for row in rows:
    atoms = Atoms(numbers=row["numbers"], positions=row["positions"], cell=row["cell"], pbc=(True, True, False))
    atoms.info["total_charge"] = row["total_charge"]
    structures.append(atoms)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", pretrained.PretrainedCaveat)
    model = predict(pretrained.model_dirs("cspbi-gfn1", "4g"), structures, device="cpu", dtype="float64",
                    progress=False, charge_pbc=[(True, True, True)] * len(rows))
manifest = pretrained.info("cspbi-gfn1")
result = {"model": f"cspbi-gfn1 4G committee, {manifest['training_data']['n_xtb_labels']} labels "
                   f"(packaged from commit {manifest['git_commit']})", "pairs": {}}
for name in sorted({row["name"] for row in rows}):
    at = {row["vacuum_A"]: k for k, row in enumerate(rows) if row["name"] == name}
    reference_vacuum = max(at)
    for vacuum in sorted(at)[:-1]:
        a, b = at[vacuum], at[reference_vacuum]
        n_atoms = len(structures[a])
        d_ref = np.array(rows[a]["forces"]) - np.array(rows[b]["forces"])
        d_model = np.array(model[a]["forces"]) - np.array(model[b]["forces"])
        result["pairs"][f"{name}: {vacuum:g} -> {reference_vacuum:g} A"] = {
            "label_dE_meV_per_atom": 1000 * (rows[a]["energy"] - rows[b]["energy"]) / n_atoms,
            "model_dE_meV_per_atom": 1000 * (model[a]["energy"] - model[b]["energy"]) / n_atoms,
            "label_dF_rms_meV_per_A": 1000 * rms(d_ref), "label_dF_max_meV_per_A": 1000 * np.abs(d_ref).max(),
            "model_dF_rms_meV_per_A": 1000 * rms(d_model), "model_dF_max_meV_per_A": 1000 * np.abs(d_model).max(),
            "dF_cosine": float((d_model * d_ref).sum() / np.linalg.norm(d_model) / np.linalg.norm(d_ref)),
            "not_reproduced_dF_rms_meV_per_A": 1000 * rms(d_model - d_ref),
            "label_dq_max_e": float(np.abs(np.subtract(rows[a]["charges"], rows[b]["charges"])).max()),
            "model_dq_max_e": float(np.abs(model[a]["charges"] - model[b]["charges"]).max()),
        }
(HERE / "model_response.json").write_text(json.dumps(result, indent=1) + "\n")
print(json.dumps(result, indent=1))
