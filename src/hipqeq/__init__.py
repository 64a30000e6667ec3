"""hipqeq: fourth-generation ML interatomic potentials (HIP-NN + charge equilibration)
for 2D CsPbI perovskites, from structure generation to a deployable ASE calculator.

Units everywhere: eV, Angstrom, elementary charge e (see :mod:`hipqeq.units`).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hipqeq")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
