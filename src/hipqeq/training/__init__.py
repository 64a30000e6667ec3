"""Training the potential's models with hippynn (``hipqeq train``).

See :mod:`hipqeq.training.stages` for the three stages and
:mod:`hipqeq.models.store` for the model directory they write.
"""

from hipqeq.training.stages import STAGES, train_model

__all__ = ["STAGES", "train_model"]
