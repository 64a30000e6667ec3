"""Training the potential's models with hippynn (``hipqeq train``).

See :mod:`hipqeq.training.stages` for the three HIP-NN stages and
:mod:`hipqeq.models.store` for the model directory they write; :mod:`hipqeq.training.mace`
for the MACE peer model (``mace``, the ``peer`` extra) and :mod:`hipqeq.models.mace` for its
directory.

:data:`STAGES` is defined here and :func:`train_model` is imported on first use, so the
CLI can list the stages without importing torch and hippynn (``hipqeq --help`` stays fast).
"""

#: The training stages (the verbs of `hipqeq train`).
STAGES = ("charges", "short-range", "baseline", "mace")

__all__ = ["STAGES", "train_model"]


def __getattr__(name: str):
    if name == "train_model":
        from hipqeq.training.stages import train_model

        return train_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
