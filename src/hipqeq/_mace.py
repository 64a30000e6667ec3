"""mace-torch (the ``peer`` extra), imported for this project.

Import this module (``import hipqeq._mace``) before anything from mace or e3nn:

- mace's ``__init__`` sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the whole process
  (so that its pickled models load), which would turn off torch's safe loading for every
  later ``torch.load`` that does not pass ``weights_only``. The variable is put back as
  it was before; hipqeq loads its peer models from state dicts
  (:func:`hipqeq.models.mace.load_mace`).
- e3nn loads its Wigner constants with a bare ``torch.load`` at import: they hold a
  ``slice``, allowed here for that one load.
- e3nn and mace decorate helpers with ``torch.jit.script`` at import, which torch >=
  2.10 flags as deprecated (the project's tests turn warnings into errors): that one
  warning is silenced while they load, as in :mod:`hipqeq._hippynn`. e3nn would also
  script the code it generates for every layer it builds or unpickles; that is turned off
  (``jit_script_fx``: its FX graphs run eagerly, as in mace's own ``torch.compile`` path).
"""

import os
import warnings

import torch

from hipqeq.errors import HipqeqError

_FORCE_NO_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
_saved = os.environ.pop(_FORCE_NO_WEIGHTS_ONLY, None)  # unset while e3nn loads (set if mace came first)
try:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script(_method)?` is deprecated",
                                category=DeprecationWarning)
        with torch.serialization.safe_globals([slice]):
            import e3nn.o3  # noqa: F401
        e3nn.set_optimization_defaults(jit_script_fx=False)
        import mace  # noqa: F401
        import mace.calculators  # noqa: F401
        import mace.data  # noqa: F401
        import mace.modules  # noqa: F401
        import mace.tools  # noqa: F401
except ImportError as exc:
    raise HipqeqError(f"the MACE peer model needs mace-torch ({exc}); install the peer extra: "
                      "pip install 'hipqeq[peer]'") from None
finally:
    if _saved is None:
        os.environ.pop(_FORCE_NO_WEIGHTS_ONLY, None)
    else:
        os.environ[_FORCE_NO_WEIGHTS_ONLY] = _saved
