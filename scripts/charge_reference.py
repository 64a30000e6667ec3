"""Which charge reference makes the better potential? Issue 11's two modes on a finished study.

A study's 4G models learn the charges of its ``training.charge_reference`` (the accuracy
study's: ``xtb``; the toy's: ``dft``); this script trains the other mode's committee beside
them (same labels, split, networks and schedule) and measures both on the held-out frames:

  train     charge model k of the other mode: on the study's DFT charges (Mulliken, or
            with --scheme Hirshfeld the Hirshfeld charges every CP2K DFT row keeps in
            calc_params) or on its xTB labels' charges; then the 4G short range k on the
            study's xTB labels with it (a finished one trained before the settings had
            a stage two is finished with it, its first stage kept as 4g_k_stage_one)
  compare   `hipqeq validate` of both committees, and of each member (xTB energies,
            forces and charges, DFT charges of the held-out frames), and a JSON of E / F /
            q MAE per charge state, q vs xTB and vs DFT
  residual  what the DFT mode leaves to the short range: the difference
            dE_elec(R) = E_elec(q*_DFT) - E_elec(q*_xTB) of the two modes' charge models
            (label boundary, every labelled frame) and its forces; its spread before and
            after the least-squares zeroth term (per species and per unit of total
            charge, which the 4G short range fits exactly); and the test error of a
            short-range HIP-NN (the study's network and cutoff, no core) trained on what
            is left: the part a local model with that cutoff does not learn from these data

    python scripts/charge_reference.py train --member 0 [--dft FILE]
    python scripts/charge_reference.py compare
    python scripts/charge_reference.py residual --member 0 [--epochs 400]
    # the toy (after `make run`):
    python scripts/charge_reference.py train --study . --config config/toy.yaml --docs docs/toy/charge_reference

Models and validation go to <study>/results/charge_reference/<scheme>/, the summaries to
<docs>/<scheme>/ (default docs/study/charge_reference/).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute)
import torch

from hipqeq.calculator import predict
from hipqeq.config import load_config
from hipqeq.data import read_table
from hipqeq.data.io import atoms_from_record, label_pbc, write_table
from hipqeq.data.split import assign_splits, read_splits
from hipqeq.plan import study_config, validate_options, validation_inputs
from hipqeq.training import train_model
from hipqeq.training.stages import energy_reference_weights, finish_stage_two, stage_one_dir

HIPQEQ = str(Path(sys.executable).parent / "hipqeq")
KEYS = ("energy_mae_mev_per_atom", "force_mae_mev_per_A", "charge_mae_e", "charge_slope", "n_energy", "n_charge")


def dft_charges(source: Path, scheme: str, output: Path) -> Path:
    """``source`` with the charges of ``scheme``: the file itself for its own scheme, else a
    copy whose charges column holds ``calc_params.other_charges[scheme]``."""
    table = read_table(source)
    if scheme == table.column("charge_scheme")[0].as_py():
        return source
    charges = []
    for params, status in zip(table.column("calc_params").to_pylist(), table.column("status").to_pylist()):
        other = json.loads(params).get("other_charges", {}) if params else {}
        if status == "ok" and scheme not in other:
            raise SystemExit(f"{source}: a labelled row has no {scheme} charges in calc_params.other_charges")
        charges.append(other.get(scheme))
    table = table.set_column(table.schema.get_field_index("charges"), "charges",
                             pa.array(charges, type=table.schema.field("charges").type))
    table = table.set_column(table.schema.get_field_index("charge_scheme"), "charge_scheme",
                             pa.array([scheme] * len(table), type=pa.string()))
    output.parent.mkdir(parents=True, exist_ok=True)
    write_table(table, output)
    return output


def study_paths(args) -> dict:
    """The study's files, and where each mode's models are: ``models[mode]`` (the model
    directory names' prefix) for the study's own mode and for the other one, trained here.
    ``validation``: what ``hipqeq validate`` reads, the DFT sets with ``--scheme``'s charges."""
    config = load_config(args.config)
    results = args.study / "results"
    work = results / "charge_reference" / args.scheme.lower()
    validation = validation_inputs(config, args.study)
    validation["dft"] = dft_charges(args.dft or Path(validation["dft"]), args.scheme, work / "dft.parquet")
    if "dft_test" in validation:
        validation["dft_test"] = dft_charges(Path(validation["dft_test"]), args.scheme, work / "dft_test.parquet")
    own = config["training"]["charge_reference"]
    other = {"dft": "xtb", "xtb": "dft"}[own]
    return {"config": config, "results": results, "work": work, "validation": validation,
            **{name: Path(validation[name]) for name in ("xtb", "xtb_test", "dft", "splits")},
            "other": other, "models": {own: results / "models", other: work},
            "docs": args.docs / args.scheme.lower()}


def train(args) -> None:
    paths = study_paths(args)
    summaries = {}
    charges = paths["work"] / f"charges_{args.member}"
    model = paths["work"] / f"4g_{args.member}"
    for stage, dataset, out, charge_model in (("charges", paths[paths["other"]], charges, None),
                                              ("short-range", paths["xtb"], model, charges)):
        settings = dict(dataset=dataset, splits=paths["splits"], member=args.member, output=out,
                        charge_model=charge_model, device="cpu")
        if (out / "model.json").exists() or stage_one_dir(out).exists():
            summaries[stage] = finish_stage_two(stage, paths["config"], **settings)
        else:
            summaries[stage] = train_model(stage, paths["config"], **settings)
    paths["docs"].mkdir(parents=True, exist_ok=True)
    (paths["docs"] / f"train_{args.member}.json").write_text(json.dumps(summaries, indent=1) + "\n")


def validate(paths: dict, config_path: Path, models: list, output_dir: Path) -> dict:
    results = paths["results"]
    n = paths["config"]["training"]["n_models"]
    subprocess.run([HIPQEQ, "validate", "--config", str(config_path), *validate_options(paths["validation"]),
                    "--model", *map(str, models),
                    "--baseline", *(str(results / f"models/baseline_{k}") for k in range(n)),
                    "--output-dir", str(output_dir)], check=True, capture_output=True)
    return json.loads((output_dir / "metrics.json").read_text())


def summary(metrics: dict) -> dict:
    """E / F / q MAE of the 4G model against each reference, overall and per charge state."""
    out = {}
    for reference in ("xtb", "dft"):
        four_g = metrics["metrics"][reference]["4g"]
        out[reference] = {"overall": {k: four_g["overall"].get(k) for k in KEYS},
                          **{group: {k: four_g["charge_state"][group].get(k) for k in KEYS}
                             for group in four_g["charge_state"]}}
    return out


def compare(args) -> None:
    paths = study_paths(args)
    n = paths["config"]["training"]["n_models"]
    models = {mode: [paths["models"][mode] / f"4g_{k}" for k in range(n)] for mode in ("dft", "xtb")}
    out = {"scheme": args.scheme, "models": {mode: [str(m) for m in dirs] for mode, dirs in models.items()}}
    for mode, dirs in models.items():
        out[mode] = {"committee": summary(validate(paths, args.config, dirs, paths["work"] / f"validation_{mode}"))}
        for k, model in enumerate(dirs):
            out[mode][f"member_{k}"] = summary(validate(paths, args.config, [model],
                                                        paths["work"] / f"validation_{mode}_{k}"))
    paths["docs"].mkdir(parents=True, exist_ok=True)
    (paths["docs"] / "compare.json").write_text(json.dumps(out, indent=1) + "\n")
    for mode in models:
        overall = out[mode]["committee"]
        print(f"{mode}: E {overall['xtb']['overall']['energy_mae_mev_per_atom']:.1f} meV/atom, "
              f"F {overall['xtb']['overall']['force_mae_mev_per_A']:.1f} meV/A, "
              f"q vs xTB {overall['xtb']['overall']['charge_mae_e']:.3f} e, "
              f"q vs DFT {overall['dft']['overall']['charge_mae_e']:.3f} e")


def electrostatic_difference(records: list, dft_charges_dir: Path, xtb_charges_dir: Path) -> tuple:
    """dE_elec (eV) and dF_elec (list of (n, 3) eV/A) between two charge models, label boundary."""
    atoms = [atoms_from_record(r) for r in records]
    boundaries = [label_pbc(r) for r in records]
    dft, xtb = (predict([d], atoms, device="cpu", charge_pbc=boundaries) for d in (dft_charges_dir, xtb_charges_dir))
    return (np.array([a["energy"] - b["energy"] for a, b in zip(dft, xtb)]),
            [a["forces"] - b["forces"] for a, b in zip(dft, xtb)])


def zeroth_term(records: list, fit_rows: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """The 4G short range's zeroth term (per-species energies and energy per unit of total
    charge, :func:`energy_reference_weights`) fitted on ``fit_rows``, for every record (eV)."""
    species = sorted({z for r in records for z in r["numbers"]})
    counts = torch.tensor([[np.count_nonzero(np.asarray(r["numbers"]) == z) for z in species] for r in records],
                          dtype=torch.float64)
    charge = torch.tensor([r["total_charge"] for r in records], dtype=torch.float64)
    weights = energy_reference_weights(counts[fit_rows], torch.as_tensor(energies[fit_rows]), charge[fit_rows])
    return (torch.cat([counts, charge.reshape(-1, 1)], dim=1) @ weights).numpy()


def residual(args) -> None:
    paths = study_paths(args)
    config = paths["config"]
    table = labelled_rows(paths["xtb"], paths["xtb_test"])
    records = table.to_pylist()
    names = assign_splits([r["parent_id"] for r in records], read_splits(paths["splits"]), args.member)
    n_atoms = np.array([len(r["numbers"]) for r in records])
    d_energy, d_forces = electrostatic_difference(records, *(paths["models"][mode] / f"charges_{args.member}"
                                                             for mode in ("dft", "xtb")))
    left = d_energy - zeroth_term(records, names == "train", d_energy)

    def spread(values_per_atom, mask):  # None for an empty split (the toy has no valid parent)
        return float(np.sqrt(np.mean(values_per_atom[mask] ** 2)) * 1000) if mask.any() else None

    stats = {"n_rows": len(records), "n_train": int((names == "train").sum()), "n_test": int((names == "test").sum()),
             "delta_energy_std_mev_per_atom": float(np.std(d_energy / n_atoms) * 1000),
             "after_zeroth_term_rms_mev_per_atom": {split: spread(left / n_atoms, names == split)
                                                    for split in ("train", "valid", "test")},
             "delta_force_rms_mev_per_A": float(np.sqrt(np.mean(np.concatenate(d_forces) ** 2)) * 1000)}

    # A short-range HIP-NN on what is left: the study's network, cutoff and schedule, no core
    # (the targets are electrostatic differences, not a label).
    table = with_labels(table, left, d_forces)
    dataset = paths["work"] / f"residual_{args.member}.parquet"
    write_table(table, dataset)
    model = paths["work"] / f"residual_{args.member}"
    config["training"]["network"]["repulsive_core"] = None
    if args.epochs:
        config["training"]["short_range"]["max_epochs"] = args.epochs
    if not (model / "model.json").exists():
        stats["fit"] = train_model("baseline", config, dataset=dataset, splits=paths["splits"], member=args.member,
                                   output=model, device="cpu")
    test = np.flatnonzero(names == "test")
    fitted = predict([model], [atoms_from_record(records[i]) for i in test], device="cpu")
    stats["fit_test_energy_mae_mev_per_atom"] = float(np.mean(
        [abs(p["energy"] - left[i]) / n_atoms[i] for p, i in zip(fitted, test)]) * 1000)
    stats["fit_test_force_mae_mev_per_A"] = float(np.mean(
        np.abs(np.concatenate([p["forces"] - d_forces[i] for p, i in zip(fitted, test)]))) * 1000)
    paths["docs"].mkdir(parents=True, exist_ok=True)
    (paths["docs"] / f"residual_{args.member}.json").write_text(json.dumps(stats, indent=1) + "\n")
    print(json.dumps(stats, indent=1))


def labelled_rows(*paths: Path) -> pa.Table:
    """The rows with status ok of datasets of one schema."""
    tables = [read_table(path) for path in paths]
    return pa.concat_tables([t.filter(pa.compute.equal(t.column("status"), "ok")) for t in tables])


def with_labels(table: pa.Table, energies: np.ndarray, forces: list) -> pa.Table:
    """``table`` with energy (eV) and forces (eV/A) replaced and stress dropped (not a target here)."""
    for name, values in (("energy", energies.tolist()), ("forces", [np.reshape(f, (-1, 3)).tolist() for f in forces]),
                         ("stress", [None] * len(table))):
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, pa.array(values, type=table.schema.field(name).type))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("train", "compare", "residual"))
    parser.add_argument("--study", type=Path, default=Path("studies/cspbi-gfn1"))
    parser.add_argument("--config", type=Path,
                        help="the study's config (default: STUDY/study.yaml, the one its run used)")
    parser.add_argument("--scheme", default="Mulliken", choices=("Mulliken", "Hirshfeld"),
                        help="which DFT charges the DFT mode learns (default: Mulliken, the study's)")
    parser.add_argument("--dft", type=Path, default=None,
                        help="DFT charges to learn instead of the study's results/datasets/dft.parquet")
    parser.add_argument("--member", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None,
                        help="residual: at most this many epochs for its fit (default: the study's short_range.max_epochs)")
    parser.add_argument("--docs", type=Path, default=Path("docs/study/charge_reference"))
    args = parser.parse_args()
    args.config = study_config(args.study, args.config)
    torch.set_num_threads(1)
    {"train": train, "compare": compare, "residual": residual}[args.command](args)


if __name__ == "__main__":
    main()
