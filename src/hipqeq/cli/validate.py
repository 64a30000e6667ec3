"""Parity plots, error metrics and the MD stability check of trained potentials.

Predicts energies, forces and charges of the held-out test structures (whole parent
structures, shared by every committee member; --all-rows uses every row) with the full
4G potential (--model), the short-range-only baseline (--baseline) and the MACE peer
model (--peer, `hipqeq train mace`; needs the peer extra), and compares them with the
xTB and the DFT datasets: overall, per structure family, per family and total charge
(a neutral and a charged defect apart) and per temperature band. Rows whose label
failed (status other than ok) or holds a NaN or an infinity (non_finite_label) are
excluded and counted; a model that predicts one is an error naming the row. DFT
energies sit on another reference than the xTB energies the models learn, so they are
compared after removing per-element offsets fitted over the compared rows. Writes
metrics.json, metrics.md, md_stability.png/.pdf (from `hipqeq md` summaries) and,
where a reference has the quantity (metrics.md lists those it lacks),
parity/parity_<reference>_<quantity>.png/.pdf and
families/parity_<reference>_<quantity>_<group>.png/.pdf.

example:
  hipqeq validate --config config/toy.yaml --xtb results/datasets/xtb.parquet \\
      --dft results/datasets/dft.parquet --splits results/splits.json \\
      --model results/models/4g_0 --baseline results/models/baseline_0 \\
      --peer results/models/mace_0 --md results/validation/md/*.json \\
      --output-dir results/validation
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hipqeq.cli._common import add_config_argument, add_device_argument, add_model_argument, load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--xtb", type=Path, required=True, metavar="FILE",
                        help="xTB dataset (gathered Parquet)")
    parser.add_argument("--xtb-test", type=Path, default=None, metavar="FILE",
                        help="more xTB labels of the test parents (`hipqeq select-test`, labelled and "
                             "gathered), validated with the --xtb rows; rows of other parents are an error")
    parser.add_argument("--dft", type=Path, required=True, metavar="FILE",
                        help="DFT dataset (gathered Parquet)")
    parser.add_argument("--dft-test", type=Path, default=None, metavar="FILE",
                        help="DFT labels of held-out test frames (selection.dft_test), validated with the "
                             "--dft rows; rows of other parents are an error")
    parser.add_argument("--splits", type=Path, required=True, metavar="JSON",
                        help="split file written by `hipqeq split`")
    add_model_argument(parser, "model directories of the full 4G potential (a committee)")
    parser.add_argument("--baseline", type=Path, nargs="*", default=[], metavar="DIR",
                        help="model directories of the short-range-only baseline (a committee)")
    parser.add_argument("--peer", type=Path, nargs="*", default=[], metavar="DIR",
                        help="model directories of the MACE peer model (`hipqeq train mace`; a committee)")
    parser.add_argument("--md", type=Path, nargs="*", default=[], metavar="JSON",
                        help="MD summaries written by `hipqeq md`")
    parser.add_argument("--output-dir", type=Path, required=True, metavar="DIR",
                        help="where metrics and figures go, e.g. results/validation")
    add_device_argument(parser, "for the predictions")
    parser.add_argument("--all-rows", action="store_true",
                        help="validate on every ok row, not only the held-out test parents")


def _predictor(device: str):
    """``run_validation``'s predictor: hipqeq potentials through
    :func:`hipqeq.calculator.predict` (charge solves under the labels' boundaries), MACE
    peer models through :func:`hipqeq.models.mace.predict_peer` (no charges, no boundary
    to choose: a local model's energy is the same under either once the vacuum exceeds
    its cutoff)."""
    from hipqeq.calculator import predict

    def predictor(dirs, atoms_list, charge_pbc):
        if _holds_peer(dirs):
            from hipqeq.models.mace import predict_peer

            return predict_peer(dirs, atoms_list, device=device)
        return predict(dirs, atoms_list, device=device, charge_pbc=charge_pbc)

    return predictor


def _holds_peer(dirs) -> bool:
    """Whether ``dirs`` (checked before: all of one kind) are MACE peer model directories
    (``model.json`` kind ``mace``)."""
    return json.loads((Path(dirs[0]) / "model.json").read_text()).get("kind") == "mace"


def run(args: argparse.Namespace) -> int:
    from hipqeq.models.store import require_potential
    from hipqeq.validation import run_validation

    config = load(args)
    for model_dir in [*args.model, *args.baseline]:  # before any dataset is read
        require_potential(model_dir)
    if args.peer:
        from hipqeq.models.mace import read_peer_metadata

        for model_dir in args.peer:
            read_peer_metadata(model_dir)
    result = run_validation(
        config, xtb_path=args.xtb, xtb_test_path=args.xtb_test, dft_path=args.dft,
        dft_test_path=args.dft_test, splits_path=args.splits,
        model_dirs=args.model, baseline_dirs=args.baseline, peer_dirs=args.peer, md_paths=args.md,
        output_dir=args.output_dir, all_rows=args.all_rows, predictor=_predictor(args.device))
    for warning in result["warnings"]:
        print(f"WARNING: {warning}")
    print(result["summary"])
    print(f"metrics: {args.output_dir / 'metrics.json'}, {args.output_dir / 'metrics.md'}; "
          f"figures: {args.output_dir}")
    return 0
