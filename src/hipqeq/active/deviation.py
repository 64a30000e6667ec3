r"""Model deviation of a committee on one frame (DP-GEN's definition), and its table.

For a committee of M members with forces :math:`\mathbf F_i^{(m)}` on atom i,

.. math::

    \sigma_F = \max_i \sqrt{\tfrac1M \sum_m \lVert \mathbf F_i^{(m)}
                - \langle \mathbf F_i \rangle \rVert^2}  \quad (\mathrm{eV/\AA})

(the largest per-atom ``force_disagreement`` of :func:`hipqeq.calculator.combine_members`),
and for the charges the largest per-atom standard deviation over members,
:math:`\sigma_q = \max_i \operatorname{std}_m q_i^{(m)}` (e). A committee of identical
members has zero deviation on every frame.

Every explored frame's deviation becomes one row of the deviation table
(:data:`DEVIATION_SCHEMA`): its provenance (round, walker, MD step, structure, family,
temperature) and its trust-window class.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hipqeq.errors import DatasetError

#: One row per explored frame; units in the names (eV/Angstrom, e, eV, K).
DEVIATION_SCHEMA = pa.schema([
    ("round", pa.int32()),
    ("walker", pa.string()),
    ("step", pa.int64()),
    ("structure_id", pa.string()),
    ("structure_name", pa.string()),
    ("family", pa.string()),
    ("temperature_K", pa.float64()),
    ("force_deviation_eV_A", pa.float64()),
    ("charge_deviation_e", pa.float64()),
    ("energy_std_eV", pa.float64()),
    ("classification", pa.string()),
])


def deviation_from_members(members: Sequence[dict]) -> dict[str, float]:
    """``force_deviation_eV_A``, ``charge_deviation_e`` (NaN for models without charges)
    and ``energy_std_eV`` of a committee's per-member results on one frame
    (:func:`hipqeq.calculator.committee_members`)."""
    from hipqeq.calculator import combine_members

    combined = combine_members(members)
    if "charges" in members[0]:
        charge = float(np.std([m["charges"] for m in members], axis=0).max())
    else:
        charge = float("nan")
    return {"force_deviation_eV_A": float(combined["force_disagreement"].max()),
            "charge_deviation_e": charge, "energy_std_eV": combined["energy_std"]}


def frame_deviation(potentials: Sequence, atoms) -> dict[str, float]:
    """:func:`deviation_from_members` of the committee ``potentials`` on ``atoms``."""
    from hipqeq.calculator import committee_members

    return deviation_from_members(committee_members(potentials, atoms, want_stress=False))


def deviation_table(rows: Sequence[dict]) -> pa.Table:
    """Rows (dicts keyed by :data:`DEVIATION_SCHEMA`'s names) as a table."""
    try:
        return pa.Table.from_pylist(list(rows), schema=DEVIATION_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DatasetError(f"deviation rows do not fit the deviation schema: {exc}") from exc


def write_deviations(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write a deviation table atomically (as :func:`hipqeq.data.write_table` does)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def read_deviations(paths: Sequence[str | os.PathLike]) -> pa.Table:
    """The deviation tables of ``paths``, concatenated; raises :class:`DatasetError`
    for a file that is not one."""
    tables = []
    for path in paths:
        table = pq.read_table(path)
        missing = sorted(set(DEVIATION_SCHEMA.names) - set(table.schema.names))
        if missing:
            raise DatasetError(f"{path}: not a deviation table (lacks {', '.join(missing)})")
        tables.append(table.select(DEVIATION_SCHEMA.names).cast(DEVIATION_SCHEMA))
    return pa.concat_tables(tables) if tables else DEVIATION_SCHEMA.empty_table()
