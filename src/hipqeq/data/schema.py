"""The Parquet dataset contract: one row per structure, columns, Arrow types and units.

Every dataset file hipqeq writes (built structures, MD frames, selections, labelled
chunks, gathered datasets) has exactly these columns, in this order. Labels are
nullable: an unlabelled structure, or one whose calculation failed, has null labels and
a ``status`` that says why. The schema version and the units of every quantity travel
in the file's key-value metadata.
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from hipqeq.units import DATASET_UNITS

#: Bumped on any change of the columns below (2: ``unpaired_electrons`` and
#: ``label_boundary``; 3: ``active_round``, ``trajectory`` and ``md_step``).
SCHEMA_VERSION = "3"

#: Columns each older schema version lacks; they are null when such a file is read.
ADDED_SINCE = {"2": ("active_round", "trajectory", "md_step")}

#: Metadata keys written into every Parquet file.
META_SCHEMA_VERSION = b"hipqeq.schema_version"
META_UNITS = b"hipqeq.units"
META_PACKAGE_VERSION = b"hipqeq.package_version"
META_STATUS_COUNTS = b"hipqeq.status_counts"

#: Row outcomes. Rejections are named ``rejected_<reason>`` by the labellers.
STATUS_OK = "ok"
STATUS_UNLABELLED = "unlabelled"
STATUS_SCF_NOT_CONVERGED = "scf_not_converged"
STATUS_ERROR = "error"
STATUS_REJECTED_PREFIX = "rejected_"

#: ``label_boundary`` values and the ``pbc`` of the charge solve that reproduces each.
LABEL_BOUNDARY_PBC = {"open": (False, False, False), "periodic": (True, True, True), "slab": (True, True, False)}

#: ``source`` values: where a structure came from (``active``: ML-MD exploration of an
#: active-learning round).
SOURCES = ("build", "md", "rattle", "strain", "defect", "cif", "external", "active")


@dataclasses.dataclass(frozen=True)
class Column:
    """One dataset column: name, Arrow type, whether it may be null, unit and meaning."""

    name: str
    type: pa.DataType
    nullable: bool
    unit: str
    doc: str


_VEC = pa.list_(pa.float64())
_MAT = pa.list_(pa.list_(pa.float64()))

COLUMNS: tuple[Column, ...] = (
    # identity
    Column("structure_id", pa.string(), False, "", "content hash of numbers, positions, cell, pbc, total charge"),
    Column("parent_id", pa.string(), False, "", "structure_id of the built structure this one derives from; splits are made by parent"),
    Column("structure_name", pa.string(), False, "", "name of the built structure (config seed plus transformations)"),
    Column("family", pa.string(), False, "", "pristine, strained, tilted, vacancy_<X>, substitution_<Y>_<X>, cif or external"),
    Column("source", pa.string(), False, "", "one of " + ", ".join(SOURCES)),
    Column("temperature_K", pa.float64(), True, "K", "MD temperature the frame was sampled at"),
    Column("active_round", pa.int16(), True, "", "sampling round of the frame: 0 for the initial sampling "
           "(md, rattle), r >= 1 for active-learning round r's exploration; null for built and external structures"),
    Column("trajectory", pa.string(), True, "", "the MD trajectory file the frame was sampled into, as its job "
           "named it (relative to the study directory in the workflow); a restarted active-learning walker "
           "continues in <stem>.restart<k>.traj"),
    Column("md_step", pa.int32(), True, "", "MD step of the frame, counted from the start of its trajectory "
           "(an active-learning walker's, across restarts)"),
    Column("config_hash", pa.string(), False, "", "hash of the config section that produced the row"),
    # geometry
    Column("numbers", pa.list_(pa.int8()), False, "", "atomic numbers, shape (n_atoms,)"),
    Column("positions", _MAT, False, DATASET_UNITS["positions"], "Cartesian positions, shape (n_atoms, 3)"),
    Column("cell", _MAT, False, DATASET_UNITS["cell"], "lattice vectors as rows, shape (3, 3)"),
    Column("pbc", pa.list_(pa.bool_()), False, "", "periodic directions, shape (3,)"),
    Column("total_charge", pa.float64(), False, DATASET_UNITS["total_charge"],
           "formal total charge of the structure; a whole number (checked when written)"),
    Column("unpaired_electrons", pa.int16(), False, "",
           "number of unpaired electrons N_alpha - N_beta (2S; 1 for a doublet) the labels are computed with; "
           "by default the lowest the electron count allows, (sum of Z - total_charge) mod 2"),
    # labels
    Column("energy", pa.float64(), True, DATASET_UNITS["energy"], "total energy"),
    Column("forces", _MAT, True, DATASET_UNITS["forces"], "forces, shape (n_atoms, 3)"),
    Column("stress", _VEC, True, DATASET_UNITS["stress"], "stress, Voigt order, shape (6,)"),
    Column("charges", _VEC, True, DATASET_UNITS["charges"], "partial charges, shape (n_atoms,)"),
    Column("charge_scheme", pa.string(), True, "", "Mulliken, meta-Lowdin, Hirshfeld, CM5, Bader, ..."),
    # method
    Column("method", pa.string(), True, "", "level of theory, e.g. GFN1-xTB or PBE/gth-dzvp-molopt-sr"),
    Column("software", pa.string(), True, "", "engine name and version"),
    Column("calc_params", pa.string(), True, "", "all engine parameters, JSON"),
    Column("label_boundary", pa.string(), True, "", "boundary condition of the reference calculation's "
           "electrostatics: periodic (3D, slabs included: tblite, CP2K, PySCF), slab or open; null without labels"),
    # outcome
    Column("status", pa.string(), False, "", "ok, unlabelled, scf_not_converged, error or rejected_<reason>"),
    Column("error", pa.string(), True, "", "error message of a failed calculation"),
    Column("wall_time_s", pa.float64(), True, DATASET_UNITS["wall_time_s"], "wall time of the calculation"),
    # provenance
    Column("created_at", pa.timestamp("us", tz="UTC"), False, "", "when the row was written"),
    Column("package_version", pa.string(), False, "", "hipqeq version that wrote the row"),
)

COLUMN_NAMES = tuple(c.name for c in COLUMNS)
LABEL_COLUMNS = ("energy", "forces", "stress", "charges")
SCHEMA = pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in COLUMNS])


def column(name: str) -> Column:
    """The :class:`Column` called ``name``."""
    return COLUMNS[COLUMN_NAMES.index(name)]
