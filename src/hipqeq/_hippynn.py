"""hippynn, configured for this project before its first import.

Import this module (``import hipqeq._hippynn``) before anything from hippynn. It sets
hippynn's message-passing kernels (the interaction sums of every HIP-NN layer) from
hippynn's own setting, the environment variable ``HIPPYNN_USE_CUSTOM_KERNELS``:

- unset, ``False`` or ``pytorch`` (the default): plain torch, selected explicitly
  (hippynn's own fallback wraps them in ``torch.compile``, which costs tens of seconds of
  compilation per new shape on a CPU and is slower than eager mode for the small batches
  here). Fast to start; its pair-by-sensitivity-by-feature intermediates are the largest
  tensors of a big system.
- ``numba``: hippynn's numba kernels (``pip install numba``, in the ``ml`` extra), for MD
  of large systems on CPUs: no such intermediates (half the memory from 10^4 atoms, and
  faster at every size measured, see the README's benchmark), at about 10 s of
  compilation per process.
  numba runs them on as many threads as torch uses (:func:`select_kernels`), in its
  ``workqueue`` threading layer unless ``NUMBA_THREADING_LAYER`` says otherwise: numba's
  default there, OpenMP, keeps its idle threads spinning (a 1080-atom step took 2.5x as
  long on one thread) and hangs in a process forked from one that has imported hipqeq.
- any other name hippynn knows (``triton``, ``cupy``, ``auto``) is passed on.

It also states torch's sparse-invariant setting, which hippynn's import otherwise warns
about (disabled, torch's default).
"""


import os
import warnings

#: The environment variable (hippynn's own) that chooses the message-passing kernels.
KERNELS_VARIABLE = "HIPPYNN_USE_CUSTOM_KERNELS"

_requested_kernels = os.environ.get(KERNELS_VARIABLE, "False")
# hippynn reads the variable at import; the choice is made below, after the import.
os.environ[KERNELS_VARIABLE] = "False"

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

os.environ[KERNELS_VARIABLE] = _requested_kernels


def select_kernels(name: str) -> str:
    """Use hippynn's message-passing kernels ``name`` in this process from now on.

    :param name: ``"pytorch"`` (or ``"false"``), ``"numba"``, ``"true"``, or another name
        hippynn's ``set_custom_kernels`` accepts.
    :return: the implementation now active (``"_pytorch_raw"`` for plain torch).
    :raises HipqeqError: the implementation is not installed.
    """
    from hipqeq.errors import HipqeqError

    name = name.strip().lower()
    if name in ("false", "0", "no", "pytorch"):
        name = "_pytorch_raw"
    elif name in ("true", "1", "yes"):
        name = True  # hippynn's meaning: the best GPU kernels, an error if none
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using non-standard custom kernel implementation")
        warnings.filterwarnings("ignore", message="triton, cupy and numba are not available")
        try:
            active = _custom_kernels.set_custom_kernels(name)
        except _custom_kernels.CustomKernelError as error:
            raise HipqeqError(
                f"hippynn kernels {name!r} ({KERNELS_VARIABLE}) are not available here "
                f"(available: {', '.join(_custom_kernels.CUSTOM_KERNELS_AVAILABLE)}): {error}"
            ) from error
    if active == "numba":
        import numba

        if "NUMBA_THREADING_LAYER" not in os.environ:
            numba.config.THREADING_LAYER = "workqueue"  # chosen at the first launch, below
        # numba's default is every core; next to torch's threads that oversubscribes.
        numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    return active


select_kernels(_requested_kernels)
