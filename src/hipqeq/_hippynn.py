"""hippynn, configured for this project before its first import.

Import this module (``import hipqeq._hippynn``) before anything from hippynn: hippynn's
optional custom kernels (numba, triton, cupy) are not installed, so the plain-torch
message-passing kernels are selected explicitly (hippynn's default fallback wraps them
in ``torch.compile``, which costs tens of seconds of compilation per new shape on a CPU
and is slower than eager mode for the small batches here), and torch's
sparse-invariant setting, which hippynn's import otherwise warns about, is stated
(disabled, torch's default).
"""


import os
import warnings

os.environ.setdefault("HIPPYNN_USE_CUSTOM_KERNELS", "False")

import torch  # noqa: E402

torch.sparse.check_sparse_tensor_invariants.disable()

# hippynn 0.1.3 decorates a few helpers with torch.jit.script at import time, which
# torch >= 2.10 flags as deprecated; the helpers still work, so that one warning is
# silenced while hippynn loads (the project's tests turn warnings into errors).
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script(_method)?` is deprecated", category=DeprecationWarning)
    import hippynn  # noqa: E402,F401
    import hippynn.experiment  # noqa: E402,F401
    import hippynn.graphs  # noqa: E402,F401
    from hippynn import custom_kernels as _custom_kernels

    warnings.filterwarnings("ignore", message="Using non-standard custom kernel implementation")
    _custom_kernels.set_custom_kernels("_pytorch_raw")
