"""Which of two potentials is better, where no test split holds out the same parents from both?

Each study holds out its own test parents and trains on every other: the shipped
cspbi-gfn1 (the gated run, studies/cspbi-gfn1-k72, and its siblings) learned the sr35
run's test parents, and the sr35 run learned the gated run's. Nor do the two runs share a
labeller: the gated run's CP2K GFN1-xTB switches GFN1's short-range Coulomb kernel off at
CP2K's own 20 bohr, the sr35 run's at 35 bohr (README "Reference labels"). This benchmark
builds parents that neither run has seen, labels the same frames with every run's
labeller, and compares each potential with its own labeller's labels (and with the
others', where the labellers' own difference is part of the error):

  label    build the benchmark parents (PARENTS: the n = 1 and n = 2 slabs at a strain, a
           tilt, a defect site or a lattice parameter no run trained on, neutral and
           charged) from --study-config's seeds, sample each with its settings (MD and
           rattles), select --frames of each by farthest point, and label them with every
           --labeller's xTB settings; each step is a `hipqeq` verb, and a step whose output
           exists is skipped (a stopped run goes on; one process per labeller, each with
           its own --labeller, label side by side)
  compare  E / F / q MAE of every --potential against every labeller's labels, overall, per
           family and charge, and per parent; how far the labellers are from each other on
           the same frames; compare.json and compare.md in --docs

    python scripts/common_benchmark.py label
    python scripts/common_benchmark.py compare

A potential is NAME LABELLER SOURCE: SOURCE a pretrained potential (`pretrained:<name>[:2g]`,
from the package) or a glob of model directories (a committee); LABELLER the labeller it
learned, whose labels are its own. Labels run one CP2K process at a time: run it with
`nice -n 19` beside a study and it takes the cores the study leaves idle.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import yaml

from charged_siblings import hipqeq, label_chunks, predict_records, select_sibling, sibling_names, variants_config
from hipqeq import pretrained
from hipqeq.config import load_config
from hipqeq.data.io import read_records
from hipqeq.structures.builders import structure_data

# Variants of the studies' seed slabs that no run trained on: the runs strain biaxially by
# -3, -1.5, 1.5 and 3 %, tilt by 4 and 8 degrees and put a defect on the most central site
# of the unstrained slab (and, in the shipped potential's siblings, V_I+ and V_I at an
# equatorial iodide). The charged ones sit in slabs scaled to another lattice parameter
# (seeds rp1_expanded and rp1_compressed, `a_A`: the Pb-I bonds of the whole slab 2 %
# longer or shorter, not a biaxial strain).
A_RP_A = structure_data()["ruddlesden_popper"]["a"]  # the seeds' lattice parameter
PARENTS = {
    "seeds_added": [
        {"name": "rp1_expanded", "builder": "ruddlesden_popper", "n": 1, "kind": "slab",
         "a_A": round(1.02 * A_RP_A, 4)},
        {"name": "rp1_compressed", "builder": "ruddlesden_popper", "n": 1, "kind": "slab",
         "a_A": round(0.98 * A_RP_A, 4)},
    ],
    "strains": {"biaxial_percent": [2.25], "seeds": ["rp1_slab", "rp2_slab"]},
    "tilts": {"angles_deg": [6], "seeds": ["rp1_slab"]},
    "defects": [
        {"kind": "substitution", "species": "I", "by": "Br", "site": "equatorial", "seeds": ["rp2_slab"]},
        {"kind": "vacancy", "species": "I", "total_charge": 1, "seeds": ["rp1_expanded"]},
        {"kind": "vacancy", "species": "Cs", "total_charge": -1, "seeds": ["rp1_compressed"]},
    ],
}
DEFAULT_LABELLERS = [["sr35", "config/study.yaml"], ["k72", "studies/cspbi-gfn1-k72/study.yaml"]]
DEFAULT_POTENTIALS = [["shipped_4g", "k72", "pretrained:cspbi-gfn1"],
                      ["shipped_2g", "k72", "pretrained:cspbi-gfn1:2g"],
                      ["sr35_4g", "sr35", "studies/cspbi-gfn1-sr35/results/models/4g_[0-9]"],
                      ["sr35_2g", "sr35", "studies/cspbi-gfn1-sr35/results/models/baseline_[0-9]"]]


def benchmark_config(study_yaml: Path, frames: int, output: Path) -> Path:
    """The study's config with PARENTS as its only variants (the added seeds with the
    vacuum and supercell of the study's first seed) and ``frames`` xTB frames a parent."""
    template = yaml.safe_load(study_yaml.read_text())["structures"]["seeds"][0]
    seeds = [{**seed, "vacuum_A": template["vacuum_A"], "supercell": list(template["supercell"])}
             for seed in PARENTS["seeds_added"]]
    variants = {key: PARENTS[key] for key in ("strains", "tilts", "defects")}
    return variants_config(study_yaml, variants, frames, output, seeds_added=seeds)


def label(args) -> None:
    config = benchmark_config(args.study_config, args.frames, args.work / "benchmark.yaml")
    settings = load_config(config)
    structures = args.work / "structures.parquet"
    if not structures.exists():
        hipqeq("build", "--config", config, "--output", structures)
    selections = {name: select_sibling(config, settings, structures, name, args.work)
                  for name in sibling_names(settings)}
    for labeller, labeller_config in args.labeller:
        chunk_size = load_config(labeller_config)["xtb"]["chunk_size"]
        chunks = [chunk for name, selection in selections.items()
                  for chunk in label_chunks(labeller_config, selection, chunk_size,
                                            args.work / f"labels/{labeller}/{name}")]
        hipqeq("gather", *chunks, "--output", args.work / f"{labeller}.parquet",
               "--counts", args.work / f"{labeller}_counts.json")


def model_dirs(source: str) -> list[str]:
    """The model directories of a potential's SOURCE (see the module docstring)."""
    if source.startswith("pretrained:"):
        name, _, kind = source.removeprefix("pretrained:").partition(":")
        return [str(d) for d in pretrained.model_dirs(name, kind or "4g")]
    dirs = sorted(glob.glob(source))
    if not dirs:
        raise SystemExit(f"no model directory matches {source}")
    return dirs


def group_names(record: dict) -> list[str]:
    return ["overall", f"{record['family']}, Q = {record['total_charge']:+g}", record["structure_name"]]


def errors(models: list[str], records: list[dict]) -> dict:
    """E MAE / RMSE (meV/atom), F MAE (meV/A) and, for a 4G potential, q MAE (e) of ``models``
    against ``records``, overall, per family and charge and per parent; each structure's
    charges solved under its label's boundary, as `hipqeq validate` compares them."""
    predicted = predict_records(models, records)
    groups = defaultdict(lambda: defaultdict(list))
    for record, prediction in zip(records, predicted):
        n_atoms = len(record["numbers"])
        for name in group_names(record):
            group = groups[name]
            group["energy"].append((prediction["energy"] - record["energy"]) / n_atoms * 1000)
            group["force"].extend(np.abs(prediction["forces"] - np.asarray(record["forces"])).ravel() * 1000)
            if "charges" in prediction:
                group["charge"].extend(np.abs(prediction["charges"] - np.asarray(record["charges"])))
    return {name: summary(group) for name, group in groups.items()}


def summary(group: dict) -> dict:
    energy = np.asarray(group["energy"])
    out = {"n_frames": len(energy), "energy_mae_mev_per_atom": float(np.mean(np.abs(energy))),
           "energy_rmse_mev_per_atom": float(np.sqrt(np.mean(energy ** 2))),
           "energy_mean_signed_mev_per_atom": float(np.mean(energy)),
           "force_mae_mev_per_A": float(np.mean(group["force"]))}
    if group["charge"]:
        out["charge_mae_e"] = float(np.mean(group["charge"]))
    return {key: round(value, 4) if isinstance(value, float) else value for key, value in out.items()}


def labeller_distance(first: list[dict], second: list[dict]) -> dict:
    """How far two labellers are on the frames both labelled: the per-atom energy
    difference (its mean and its spread about each composition's mean, the part no energy
    reference absorbs), force and charge MAE, overall and per parent."""
    by_id = {r["structure_id"]: r for r in second}
    pairs = [(r, by_id[r["structure_id"]]) for r in first if r["structure_id"] in by_id]
    groups = defaultdict(lambda: defaultdict(list))
    for a, b in pairs:
        for name in group_names(a):
            group = groups[name]
            group["energy"].append((a["energy"] - b["energy"]) / len(a["numbers"]) * 1000)
            group["formula"].append(tuple(sorted(a["numbers"])))
            group["force"].extend(np.abs(np.asarray(a["forces"]) - np.asarray(b["forces"])).ravel() * 1000)
            group["charge"].extend(np.abs(np.asarray(a["charges"]) - np.asarray(b["charges"])))
    out = {}
    for name, group in groups.items():
        energy = np.asarray(group["energy"])
        means = {f: energy[[k for k, g in enumerate(group["formula"]) if g == f]].mean() for f in set(group["formula"])}
        spread = energy - np.array([means[f] for f in group["formula"]])
        out[name] = {"n_frames": len(energy), "energy_mean_mev_per_atom": round(float(energy.mean()), 3),
                     "energy_spread_mae_mev_per_atom": round(float(np.mean(np.abs(spread))), 3),
                     "force_mae_mev_per_A": round(float(np.mean(group["force"])), 2),
                     "charge_mae_e": round(float(np.mean(group["charge"])), 4)}
    return out


def markdown(out: dict) -> str:
    lines = ["| potential (its own labeller) | labels | group | frames | E MAE / RMSE (meV/atom) | E mean signed | "
             "F MAE (meV/A) | q MAE (e) |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, potential in out["potentials"].items():
        for labeller, groups in potential["errors"].items():
            for group, e in groups.items():
                own = " (own)" if labeller == potential["labeller"] else ""
                lines.append(f"| {name} ({potential['labeller']}) | {labeller}{own} | {group} | {e['n_frames']} | "
                             f"{e['energy_mae_mev_per_atom']:.1f} / {e['energy_rmse_mev_per_atom']:.1f} | "
                             f"{e['energy_mean_signed_mev_per_atom']:+.1f} | {e['force_mae_mev_per_A']:.1f} | "
                             f"{e.get('charge_mae_e', float('nan')):.3f} |")
    lines += ["", "| labellers | group | frames | E mean (meV/atom) | E spread MAE (meV/atom) | F MAE (meV/A) | "
              "q MAE (e) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for pair, groups in out["labeller_distance"].items():
        for group, d in groups.items():
            lines.append(f"| {pair} | {group} | {d['n_frames']} | {d['energy_mean_mev_per_atom']:+.2f} | "
                         f"{d['energy_spread_mae_mev_per_atom']:.2f} | {d['force_mae_mev_per_A']:.1f} | "
                         f"{d['charge_mae_e']:.4f} |")
    return "\n".join(lines) + "\n"


def compare(args) -> None:
    labels = {name: [r for r in read_records(args.work / f"{name}.parquet") if r["status"] == "ok"]
              for name, _ in args.labeller}
    out = {"parents": sibling_names(load_config(args.work / "benchmark.yaml")),
           "n_ok_labels": {name: len(records) for name, records in labels.items()}, "potentials": {},
           "labeller_distance": {}}
    for name, labeller, source in args.potential:
        models = model_dirs(source)
        out["potentials"][name] = {"labeller": labeller, "source": source, "models": models,
                                   "errors": {ref: errors(models, records) for ref, records in labels.items()}}
    names = [name for name, _ in args.labeller]
    for k, first in enumerate(names):
        for second in names[k + 1:]:
            out["labeller_distance"][f"{first} - {second}"] = labeller_distance(labels[first], labels[second])
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "compare.json").write_text(json.dumps(out, indent=1) + "\n")
    table = markdown(out)
    (args.docs / "compare.md").write_text(table)
    sys.stdout.write(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("label", "compare"))
    parser.add_argument("--labeller", nargs=2, action="append", metavar=("NAME", "CONFIG"),
                        help="a labeller: its name and the study config whose xTB settings it labels with "
                             "(repeatable; default: "
                             + ", ".join(" ".join(pair) for pair in DEFAULT_LABELLERS) + ")")
    parser.add_argument("--potential", nargs=3, action="append", metavar=("NAME", "LABELLER", "SOURCE"),
                        help="compare: a potential, the labeller it learned and its models (repeatable; default: "
                             + "; ".join(" ".join(spec) for spec in DEFAULT_POTENTIALS) + ")")
    parser.add_argument("--study-config", type=Path, default=Path("config/study.yaml"),
                        help="label: the study config whose seeds, MD and rattle settings make the parents' frames "
                             "(default: config/study.yaml, the sr35 run's)")
    parser.add_argument("--frames", type=int, default=3, help="labelled frames of each parent (default: 3)")
    parser.add_argument("--work", type=Path, default=Path("studies/common-benchmark"),
                        help="where structures, samples and labels go (default: studies/common-benchmark)")
    parser.add_argument("--docs", type=Path, default=Path("docs/study/common_benchmark"),
                        help="where compare writes its summaries (default: docs/study/common_benchmark)")
    args = parser.parse_args()
    args.labeller = args.labeller or DEFAULT_LABELLERS
    args.potential = args.potential or DEFAULT_POTENTIALS
    torch.set_num_threads(1)
    {"label": label, "compare": compare}[args.command](args)


if __name__ == "__main__":
    main()
