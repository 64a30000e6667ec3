"""Padded arrays in the layout hippynn databases take.

hippynn's ``Database`` wants one array per quantity with a leading system axis, atoms
padded to the largest system with atomic number 0.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from hipqeq.data.io import label_pbc


def _ragged(column: pa.ChunkedArray, width: int | None) -> list[np.ndarray | None]:
    rows = column.to_pylist()
    return [None if r is None else np.asarray(r, dtype=float).reshape((-1, width) if width else -1)
            for r in rows]


def padded_arrays(table: pa.Table, dtype=np.float64) -> dict[str, np.ndarray]:
    """Arrays for a hippynn database from a dataset table.

    Returns a dict with (n_sys = rows, n_max = most atoms in a row):

    ========= ===================== ==================================================
    key       shape                 meaning (units)
    ========= ===================== ==================================================
    Z         (n_sys, n_max) int64  atomic numbers, 0 for padding
    R         (n_sys, n_max, 3)     positions (Angstrom)
    cell      (n_sys, 3, 3)         lattice vectors as rows (Angstrom)
    pbc       (n_sys, 3) bool       periodic directions of the structure
    label_pbc (n_sys, 3) bool       periodic directions of the reference engine's
                                    electrostatics (:func:`hipqeq.data.io.label_pbc`)
    Qtot      (n_sys, 1)            total charge (e)
    n_atoms   (n_sys,) int64        real atoms per system
    T         (n_sys, 1)            energy (eV), NaN where absent
    F         (n_sys, n_max, 3)     forces (eV/Angstrom), NaN where absent
    q         (n_sys, n_max)        charges (e), NaN where absent
    ========= ===================== ==================================================
    """
    numbers = [np.asarray(z, dtype=np.int64) for z in table.column("numbers").to_pylist()]
    n_sys = len(numbers)
    n_atoms = np.array([len(z) for z in numbers], dtype=np.int64)
    n_max = int(n_atoms.max()) if n_sys else 0
    Z = np.zeros((n_sys, n_max), dtype=np.int64)
    R = np.zeros((n_sys, n_max, 3), dtype=dtype)
    F = np.full((n_sys, n_max, 3), np.nan, dtype=dtype)
    q = np.full((n_sys, n_max), np.nan, dtype=dtype)
    positions = _ragged(table.column("positions"), 3)
    forces = _ragged(table.column("forces"), 3)
    charges = _ragged(table.column("charges"), None)
    for i, n in enumerate(n_atoms):
        Z[i, :n] = numbers[i]
        R[i, :n] = positions[i]
        if forces[i] is not None:
            F[i, :n] = forces[i]
        if charges[i] is not None:
            q[i, :n] = charges[i]
    energy = np.array([np.nan if e is None else e for e in table.column("energy").to_pylist()], dtype=dtype)
    return {
        "Z": Z,
        "R": R,
        "cell": np.asarray(table.column("cell").to_pylist(), dtype=dtype).reshape(n_sys, 3, 3),
        "pbc": np.asarray(table.column("pbc").to_pylist(), dtype=bool).reshape(n_sys, 3),
        "label_pbc": np.array([label_pbc(r) for r in table.select(["structure_id", "pbc", "label_boundary"])
                               .to_pylist()], dtype=bool).reshape(n_sys, 3),
        "Qtot": np.asarray(table.column("total_charge").to_pylist(), dtype=dtype).reshape(n_sys, 1),
        "n_atoms": n_atoms,
        "T": energy.reshape(n_sys, 1),
        "F": F,
        "q": q,
    }
