"""Does a charged sibling teach the 4G model a charge state's energy on a slab?

The gated study's GFN1-trained 4G committee (the base; it shipped until the one this
script makes) is 80 meV/atom off on the test parent rp1 V_I+ (the n = 1 slab without its
most central iodide, an apical one, at Q = +1): the charged iodine vacancy is in training
on the n = 2 slab only. This script adds siblings, new parents such as the same slab's V_I+
at an equatorial site, to every member's training rows and measures what they bring, with
nothing else changed:

  label    build the siblings (the study's config with its defects replaced by --defect,
           its strains by --strain), sample each with the study's MD and rattle settings,
           pick --frames frames of each by the study's farthest-point selection, label them
           with the study's xTB settings (CP2K GFN1-xTB on its gated k-mesh) and gather;
           each step is a `hipqeq` verb, and a step whose output exists is skipped (a
           stopped run goes on); then the members'
           training files: the study's training rows plus the siblings' labelled ones, and
           the study's split with the siblings' parents in every member's training split
  train    member k: stage two and its energy-reference refits from the base member's
           first-stage weights (restored from git at --stage-one-commit and checked against
           the sha256 its model.json records), on label's training files (the charge model
           is the base member's). The base member is the same run without them.
           --stage-two-force-weight, --stage-two-l2-weight, --charge-energy and
           --charge-hardness change one setting each, in a folder of their own (compare and
           parents take them too)
  compare  `hipqeq validate` of the new committee and of each member on the study's test
           frames (with the study's baselines), and a JSON of E / F / q MAE overall and per
           family beside the base committee's; the new committee's is validation_xtb/, so
           `hipqeq models package --committee <study>/results/<experiment>
           --charge-reference xtb` packages it

    python scripts/charged_siblings.py label
    python scripts/charged_siblings.py train --member 0
    python scripts/charged_siblings.py compare

Files go to <study>/results/<experiment>/, summaries to docs/study/<experiment>/ (--experiment
names a set of siblings: the shipped committee's is charged_siblings; more, e.g.

    python scripts/charged_siblings.py label --experiment charged_twins \
        --defect '{"kind": "vacancy", "species": "I", "total_charge": 1, "site": "equatorial",
                   "seeds": ["rp1_slab", "rp2_slab"]}' \
        --defect '{"kind": "vacancy", "species": "I", "site": "equatorial", "seeds": ["rp1_slab"]}'

adds the n = 2 slab's equatorial V_I+ and the n = 1 sibling's neutral twin).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute)
import torch
import yaml

from hipqeq.config import load_config
from hipqeq.calculator import predict
from hipqeq.data import read_table
from hipqeq.data.io import atoms_from_record, label_pbc, read_records, write_table
from hipqeq.data.split import assign_splits, read_splits, write_splits
from hipqeq.plan import (SPLITS, TEST_LABELS_DATASET, n_chunks, structure_plan, study_config, training_dataset,
                         validate_options, validation_inputs)
from hipqeq.training import train_model
from hipqeq.training.data import file_sha256

HIPQEQ = str(Path(sys.executable).parent / "hipqeq")
BASE = Path("results/charge_reference/mulliken")  # the GFN1-trained committee the siblings join
DEFAULT_DEFECT = {"kind": "vacancy", "species": "I", "total_charge": 1, "site": "equatorial", "seeds": ["rp1_slab"]}
# what `label` writes for the members to train on (once, so that both train from one file)
TRAINING_DATASET, TRAINING_SPLIT = "xtb_with_siblings.parquet", "splits.json"
# stage-two settings the command line may override, and their tags in the members' folder name
STAGE_TWO_TAGS = {"force_weight": "fw", "l2_weight": "l2w", "learning_rate": "lr"}
KEYS = ("energy_mae_mev_per_atom", "energy_rmse_mev_per_atom", "force_mae_mev_per_A", "charge_mae_e")


def hipqeq(*args) -> None:
    subprocess.run([HIPQEQ, *map(str, args)], check=True)


def sibling_config(study_yaml: Path, defects: list, frames: int, output: Path,
                   strains_percent: list[float] = ()) -> Path:
    """The study's config with ``defects`` and the biaxial ``strains_percent`` of every seed
    as its only variants and ``frames`` xTB frames (no DFT)."""
    seeds = [seed["name"] for seed in yaml.safe_load(study_yaml.read_text())["structures"]["seeds"]]
    variants = {"strains": {"biaxial_percent": list(strains_percent), "seeds": seeds if strains_percent else []},
                "tilts": {"angles_deg": [], "seeds": []}, "defects": defects}
    return variants_config(study_yaml, variants, frames, output)


def variants_config(study_yaml: Path, variants: dict, frames: int, output: Path, seeds_added: list = ()) -> Path:
    """The study's config with ``variants`` (its ``structures`` strains, tilts and defects) in
    place of its own, ``seeds_added`` after its seeds, and ``frames`` xTB frames (no DFT)."""
    config = yaml.safe_load(study_yaml.read_text())
    config["structures"]["seeds"] += list(seeds_added)
    config["structures"].update(variants)
    config["selection"].update(n_xtb=frames, n_dft=0, n_xtb_test=0, dft_test=False)  # xTB labels only
    config["validation"]["md_structures"] = []  # they name the study's structures
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(yaml.safe_dump(config, sort_keys=False))
    return output


def sibling_names(config: dict) -> list[str]:
    return [spec.name for spec in structure_plan(config) if spec.transform is not None]


def label(args) -> None:
    work = experiment_dir(args)
    config = sibling_config(args.config, args.defect, args.frames, work / "siblings.yaml", args.strain)
    settings = load_config(config)
    structures = work / "structures.parquet"
    if not structures.exists():
        hipqeq("build", "--config", config, "--output", structures)
    chunks = []
    for name in sibling_names(settings):
        chunks += label_sibling(config, settings, structures, name, work)
    hipqeq("gather", *chunks, "--output", work / "xtb.parquet", "--counts", work / "xtb_counts.json")
    training_files(args.study, load_config(args.config), work, args.study_rows)


def label_sibling(config: Path, settings: dict, structures: Path, name: str, work: Path) -> list[Path]:
    """Sample sibling ``name``, select its ``selection.n_xtb`` frames (each sibling its own
    farthest-point selection, so that every one gets as many labels) and label them; the
    label chunks' paths. A step whose output exists is skipped."""
    selection = select_sibling(config, settings, structures, name, work)
    return label_chunks(config, selection, settings["xtb"]["chunk_size"], work / f"labels/{name}")


def select_sibling(config: Path, settings: dict, structures: Path, name: str, work: Path) -> Path:
    """Sample sibling ``name`` with the config's MD temperatures and rattles and select its
    ``selection.n_xtb`` frames (``work/selection/<name>.parquet``); a step whose output
    exists is skipped."""
    sampled = []
    for temperature in settings["sampling"]["temperatures_K"]:
        frames = work / f"sampling/{name}/T{temperature:g}.parquet"
        if not frames.exists():
            hipqeq("sample", "md", "--config", config, "--structures", structures, "--name", name,
                   "--temperature-K", temperature, "--output", frames, "--trajectory", frames.with_suffix(".traj"))
        sampled.append(frames)
    rattles = work / f"sampling/{name}/rattle.parquet"
    if not rattles.exists():
        hipqeq("sample", "rattle", "--config", config, "--structures", structures, "--name", name,
               "--output", rattles)
    sampled.append(rattles)
    selection = work / f"selection/{name}.parquet"
    if not selection.exists():
        hipqeq("select", "--config", config, "--output-xtb", selection, *sampled)
    return selection


def label_chunks(config: Path, selection: Path, chunk_size: int, output: Path) -> list[Path]:
    """``hipqeq label xtb`` of ``selection`` with ``config``'s xTB settings, ``chunk_size``
    frames a job, as ``output/chunk_<k>.parquet``; the chunks' paths. A chunk that exists is
    skipped."""
    chunks = []
    for chunk in range(n_chunks(read_table(selection).num_rows, chunk_size)):
        labels = output / f"chunk_{chunk}.parquet"
        if not labels.exists():
            hipqeq("label", "xtb", "--config", config, "--input", selection, "--chunk", chunk, "--output", labels,
                   "--no-progress")
        chunks.append(labels)
    return chunks


def restore_stage_one(study: Path, member: int, commit: str, output: Path) -> Path:
    """The base member's first-stage model directory, as committed at ``commit``, checked
    against the weights' sha256 the base member's model.json names (its ``init_from``)."""
    base = study / BASE / f"4g_{member}"
    expected = json.loads((base / "model.json").read_text())["init_from"]["sha256"]
    if not (output / "weights.pt").exists():
        archive = subprocess.run(["git", "archive", "--format=tar", commit, str(base)], check=True,
                                 capture_output=True).stdout
        output.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            for member_info in tar.getmembers():
                if member_info.isfile():
                    target = output / Path(member_info.name).relative_to(base)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(tar.extractfile(member_info).read())
    found = file_sha256(output / "weights.pt")
    if found != expected:
        raise SystemExit(f"{output}: weights sha256 {found[:12]} is not the base member's first stage "
                         f"({expected[:12]}); pass the commit that holds it with --stage-one-commit")
    return output


def training_files(study: Path, config: dict, work: Path, study_rows: Path | None = None) -> tuple[Path, Path]:
    """The study's training rows (``study_rows``, by default the dataset its own models
    trained on) plus the siblings' labelled ones, and the study's split with the siblings'
    parents in every member's training split."""
    siblings = read_table(work / "xtb.parquet")
    siblings = siblings.filter(pa.compute.equal(siblings.column("status"), "ok"))
    dataset = work / TRAINING_DATASET
    rows = read_table(study_rows or study / training_dataset(config))
    write_table(pa.concat_tables([rows, siblings.select(rows.schema.names).cast(rows.schema)]), dataset)
    splits = read_splits(study / SPLITS)
    parents = sorted(set(siblings.column("parent_id").to_pylist()))
    for member in splits["members"]:
        member["train"] = sorted(set(member["train"]) | set(parents))
    write_splits(splits, work / TRAINING_SPLIT)
    return dataset, work / TRAINING_SPLIT


def experiment_dir(args) -> Path:
    """The experiment's folder: its siblings' files and the members' training files."""
    return args.study / "results" / args.experiment


def stage_two_overrides(args) -> dict:
    """The stage-two settings given on the command line, by their config names."""
    return {key: getattr(args, f"stage_two_{key}") for key in STAGE_TWO_TAGS
            if getattr(args, f"stage_two_{key}") is not None}


def run_dir(args) -> Path:
    """Where the members trained on the experiment's rows go: the experiment's folder, or
    with --stage-two-force-weight / --stage-two-l2-weight / --charge-energy /
    --charge-hardness a folder of their own in it."""
    tags = [f"{STAGE_TWO_TAGS[key]}{value:g}" for key, value in stage_two_overrides(args).items()]
    if args.charge_energy is not None:
        tags.append(f"charge_energy_{args.charge_energy}")
    if args.charge_hardness:
        tags.append("charge_hardness")
    return experiment_dir(args) / ("stage_two_" + "_".join(tags)) if tags else experiment_dir(args)


def train(args) -> None:
    work = experiment_dir(args)
    config = load_config(args.config)
    config["training"]["short_range"]["stage_two"].update(stage_two_overrides(args))
    if args.charge_energy is not None:
        config["training"]["network"]["charge_energy"] = args.charge_energy
    config["training"]["network"]["charge_hardness"] |= args.charge_hardness
    stage_one = restore_stage_one(args.study, args.member, args.stage_one_commit, work / f"stage_one/4g_{args.member}")
    summary = train_model("short-range", config, dataset=work / TRAINING_DATASET, splits=work / TRAINING_SPLIT,
                          member=args.member, output=run_dir(args) / f"4g_{args.member}",
                          charge_model=args.study / BASE / f"charges_{args.member}", device="cpu",
                          init_from=stage_one)
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / f"train_{args.member}.json").write_text(json.dumps(summary, indent=1) + "\n")


def validate(args, config: dict, models: list, output_dir: Path) -> dict:
    """``hipqeq validate`` of ``models`` on the study's test frames, with the study's baselines
    (the metrics a package of the committee reports for both kinds)."""
    study = args.study
    hipqeq("validate", "--config", args.config, *validate_options(validation_inputs(config, study)), "--model", *models,
           "--baseline", *(study / f"results/models/baseline_{k}" for k in range(config["training"]["n_models"])),
           "--output-dir", output_dir)
    return json.loads((output_dir / "metrics.json").read_text())


def errors(metrics: dict) -> dict:
    four_g = metrics["metrics"]["xtb"]["4g"]
    return {"overall": {k: four_g["overall"].get(k) for k in KEYS},
            **{family: {k: values.get(k) for k in KEYS} for family, values in four_g["family"].items()}}


def compare(args) -> None:
    work = experiment_dir(args)
    config = load_config(args.config)
    n = config["training"]["n_models"]
    committees = {"with_siblings": [run_dir(args) / f"4g_{k}" for k in range(n)],
                  "without_siblings": [args.study / BASE / f"4g_{k}" for k in range(n)]}
    # the new committee's validation is named for its charge reference, as `hipqeq models
    # package --committee` reads it
    folders = {"with_siblings": "validation_xtb", "without_siblings": "validation_without_siblings"}
    out = {"siblings": sibling_names(load_config(work / "siblings.yaml")),
           "n_sibling_rows": read_table(work / "xtb.parquet").num_rows}
    for name, models in committees.items():
        out[name] = {"committee": errors(validate(args, config, models, run_dir(args) / folders[name]))}
        for k, model in enumerate(models):
            out[name][f"member_{k}"] = errors(validate(args, config, [model], run_dir(args) / f"{folders[name]}_{k}"))
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "compare.json").write_text(json.dumps(out, indent=1) + "\n")
    for name in committees:
        print(name, json.dumps(out[name]["committee"], indent=1))


def predict_records(models: list, records: list[dict]) -> list[dict]:
    """``models``' predictions for labelled ``records``, each structure's charges solved under
    its label's boundary, as ``hipqeq validate`` compares them (the labels kept from the model)."""
    atoms = []
    for record in records:
        atoms.append(atoms_from_record(record))
        atoms[-1].calc = None
    return predict([str(m) for m in models], atoms, device="cpu", progress=False,
                   charge_pbc=[label_pbc(r) for r in records])


def signed_errors(models: list, records: list[dict], splits: dict, member: int) -> dict:
    """Per parent (by structure name): its rows' split for ``member``, how many, and the mean
    signed energy error (model - label) of ``models`` predicting under each label's
    boundary, as ``hipqeq validate`` compares them, per atom (meV/atom) and per structure
    (eV); for a parent derived from a seed whose own rows are there too, the latter less
    the seed's (``against_seed_eV``): the error of the energy of making it from the seed,
    a vacancy's formation energy at fixed chemical potentials. Where an error sits that the
    test MAE alone does not say (a charge state fitted on one slab and not the other, every
    vacancy too costly)."""
    predicted = predict_records(models, records)
    names = assign_splits([r["parent_id"] for r in records], splits, member)
    by_parent = {}
    for record, prediction, split in zip(records, predicted, names):
        entry = by_parent.setdefault(record["structure_name"], {"split": split, "errors_eV": [], "n_atoms": []})
        entry["errors_eV"].append(prediction["energy"] - record["energy"])
        entry["n_atoms"].append(len(record["numbers"]))
    out = {name: {"split": entry["split"], "n": len(entry["errors_eV"]),
                  "signed_energy_mev_per_atom": round(float(np.mean(np.divide(entry["errors_eV"], entry["n_atoms"]))
                                                            * 1000), 2),
                  "signed_energy_eV": float(np.mean(entry["errors_eV"]))}
           for name, entry in sorted(by_parent.items())}
    for name, entry in out.items():
        seed = seed_name(name)
        if seed != name and seed in out:
            entry["against_seed_eV"] = round(entry["signed_energy_eV"] - out[seed]["signed_energy_eV"], 3)
        entry["signed_energy_eV"] = round(entry["signed_energy_eV"], 3)
    return out


def seed_name(structure_name: str) -> str:
    """The seed a structure derives from: its name up to ``__`` (``rp1_slab__vac_I_qp1`` is
    ``rp1_slab``'s V_I+, as :func:`hipqeq.plan.structure_plan` names them)."""
    return structure_name.split("__")[0]


def parents(args) -> None:
    """Each member's signed energy error per parent, with and without the siblings, on the
    members' training rows and the study's test labels."""
    work = experiment_dir(args)
    config = load_config(args.config)
    records = [r for path in (work / TRAINING_DATASET, args.study / TEST_LABELS_DATASET)
               for r in read_records(path) if r["status"] == "ok"]
    splits = read_splits(work / TRAINING_SPLIT)
    out = {}
    for k in range(config["training"]["n_models"]):
        out[f"member_{k}"] = {"with_siblings": signed_errors([run_dir(args) / f"4g_{k}"], records, splits, k),
                              "without_siblings": signed_errors([args.study / BASE / f"4g_{k}"], records, splits, k)}
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "parents.json").write_text(json.dumps(out, indent=1) + "\n")
    for member, models in out.items():
        print(member)
        for name, entry in models["with_siblings"].items():
            against_seed = (f"  {entry['against_seed_eV']:+6.2f} eV against the seed"
                            if "against_seed_eV" in entry else "")
            print(f"  {name:45s} {entry['split']:5s} n={entry['n']:2d} with {entry['signed_energy_mev_per_atom']:+7.1f}"
                  f"  without {models['without_siblings'][name]['signed_energy_mev_per_atom']:+7.1f} meV/atom"
                  + against_seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("label", "train", "compare", "parents"))
    parser.add_argument("--study", type=Path, default=Path("studies/cspbi-gfn1-k72"))
    parser.add_argument("--config", type=Path, help="the study's config (default: STUDY/study.yaml)")
    parser.add_argument("--defect", type=json.loads, action="append",
                        help=f"a sibling, as a structures.defects entry in JSON (repeatable; default: "
                             f"{json.dumps(DEFAULT_DEFECT)})")
    parser.add_argument("--strain", type=float, action="append", default=[],
                        help="a biaxial strain (%%) of every seed slab as a sibling too (repeatable; with no "
                             "--defect, only the strains)")
    parser.add_argument("--experiment", default="charged_siblings",
                        help="the set of siblings: its files' folder in STUDY/results and docs/study "
                             "(default: charged_siblings, the shipped committee's)")
    parser.add_argument("--frames", type=int, default=6, help="labelled frames of each sibling (default: 6)")
    parser.add_argument("--study-rows", type=Path,
                        help="label: the study's rows the members train on beside the siblings' (default: the "
                             "dataset its own models trained on; e.g. a later round's results/active/r<k>/xtb.parquet)")
    parser.add_argument("--member", type=int, default=0)
    parser.add_argument("--stage-one-commit", default="b29af5f",
                        help="the commit holding the base members' first-stage weights (default: b29af5f)")
    parser.add_argument("--stage-two-force-weight", type=float,
                        help="train (and compare) members whose stage two weighs the forces by this in place of "
                             "the config's training.short_range.stage_two.force_weight, in a folder of their own")
    parser.add_argument("--stage-two-l2-weight", type=float,
                        help="likewise for the L2 penalty's weight in stage two (the config's "
                             "training.short_range.l2_weight by default)")
    parser.add_argument("--stage-two-learning-rate", type=float,
                        help="likewise for stage two's learning rate (training.short_range.stage_two.learning_rate)")
    parser.add_argument("--charge-energy", choices=("global", "environment"),
                        help="likewise for the short range's energy of the total charge (training.network."
                             "charge_energy; environment: its head starts at zero in stage two)")
    parser.add_argument("--charge-hardness", action="store_true",
                        help="likewise with the energy's curvature in the total charge (training.network."
                             "charge_hardness; set by the energy reference refit before stage two)")
    parser.add_argument("--docs", type=Path,
                        help="where summaries go (default: docs/study/EXPERIMENT[/stage_two_<the options' tags>])")
    args = parser.parse_args()
    args.config = study_config(args.study, args.config)
    args.defect = args.defect or ([] if args.strain else [DEFAULT_DEFECT])
    args.docs = args.docs or Path("docs/study") / run_dir(args).relative_to(args.study / "results")
    torch.set_num_threads(1)
    {"label": label, "train": train, "compare": compare, "parents": parents}[args.command](args)


if __name__ == "__main__":
    main()
