"""Typed errors. Each labelling failure maps onto a dataset ``status`` value.

The status strings equal ``hipqeq.data.schema.STATUS_*`` (a test checks it); they are
spelled out here because this module must import nothing heavy: importing the schema
would load pyarrow for every hipqeq import and make a cycle (``hipqeq.data`` imports
this module).
"""


class HipqeqError(Exception):
    """Base class of every error hipqeq raises on purpose."""


class ConfigError(HipqeqError):
    """The configuration file is invalid; the message names the offending key."""


class DatasetError(HipqeqError):
    """A dataset file does not follow the Parquet contract (see ``hipqeq.data``)."""


class TooManyFailures(DatasetError):
    """More labels failed than the configured maximum fraction allows."""


class StructureError(HipqeqError):
    """A structure cannot be built or read (bad CIF, partial occupancy, ...)."""


class LabellingFailed(HipqeqError):
    """A reference calculation failed; ``status`` is the dataset status to record."""

    status = "error"


class SCFNotConverged(LabellingFailed):
    """The self-consistent field iterations of an engine did not converge."""

    status = "scf_not_converged"


class StructureRejected(LabellingFailed):
    """A structure was refused before any engine ran (overlapping atoms, NaN, ...).

    ``status`` is set per instance so that the reason is visible in the dataset.
    """

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


class ConvergenceGateFailed(HipqeqError):
    """A seed's labels change with the vacuum or the in-plane sampling by more than the
    config's tolerance; the message names the seed, the quantity and the numbers."""
