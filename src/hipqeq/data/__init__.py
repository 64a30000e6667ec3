"""The Parquet dataset contract as code: schema, I/O, gather, splits, hippynn arrays.

See :mod:`hipqeq.data.schema` for the columns, their Arrow types and units.
"""

from hipqeq.data.arrays import padded_arrays
from hipqeq.data.gather import gather
from hipqeq.data.io import (
    atoms_from_record,
    atoms_id,
    config_hash,
    label_pbc,
    read_atoms,
    read_records,
    read_structure,
    read_table,
    record_from_atoms,
    status_counts,
    structure_id,
    table_from_records,
    write_dataset,
    write_table,
)
from hipqeq.data.schema import COLUMNS, SCHEMA, SCHEMA_VERSION
from hipqeq.data.split import assign_splits, make_splits, outside_span, read_splits, reference_rows, write_splits

__all__ = [
    "COLUMNS", "SCHEMA", "SCHEMA_VERSION", "atoms_from_record", "atoms_id", "config_hash",
    "gather", "label_pbc", "padded_arrays", "read_atoms", "read_records", "read_structure", "read_table",
    "record_from_atoms", "make_splits", "reference_rows", "outside_span", "assign_splits", "read_splits",
    "write_splits", "status_counts", "structure_id",
    "table_from_records", "write_dataset", "write_table",
]
