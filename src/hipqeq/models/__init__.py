"""The potential's models: charge model (HIP-NN electronegativities + QEq), short-range
HIP-NN, their combination, and the model directory format.
"""

import hipqeq._hippynn  # noqa: F401  (configures hippynn before its first import)

