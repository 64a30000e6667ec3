"""ASE calculators of the xTB engines, built in one place for sampling and labelling.

tblite (GFN1-/GFN2-xTB, periodic cells and slabs at the Gamma point) is the engine for
periodic systems; xtb-python works for finite clusters only (it raises on periodic
cells). Both are optional: they are imported only when a calculator is asked for.
"""

from __future__ import annotations

from ase.calculators.calculator import Calculator

from hipqeq.errors import HipqeqError

XTB_METHODS = ("GFN1-xTB", "GFN2-xTB")
XTB_ENGINES = ("tblite", "xtb-python")

#: Settings of the config's ``xtb`` section passed to :func:`xtb_calculator` by name.
XTB_ENGINE_SETTINGS = ("accuracy", "electronic_temperature_K", "max_iterations")


def xtb_calculator(method: str = "GFN1-xTB", engine: str = "tblite", total_charge: float = 0.0,
                   accuracy: float = 1.0, electronic_temperature_K: float = 300.0,
                   max_iterations: int = 250, unpaired_electrons: int = 0, **engine_options) -> Calculator:
    """An ASE calculator for ``method`` with ``engine`` (energies eV, forces eV/Angstrom).

    ``unpaired_electrons`` (N_alpha - N_beta) sets tblite's spin multiplicity (its
    ``multiplicity`` = unpaired + 1); without ``spin_polarization`` in ``engine_options``
    the Hamiltonian stays spin-restricted with that many more alpha electrons.

    ``engine_options`` go to the engine unchanged (tblite: ``mixer_damping``,
    ``guess``, ...). Raises :class:`HipqeqError` for an unknown method or engine, or
    when the engine's package is not installed.
    """
    if method not in XTB_METHODS:
        raise HipqeqError(f"unknown xTB method '{method}'; choose one of {', '.join(XTB_METHODS)}")
    if engine == "tblite":
        try:
            from tblite.ase import TBLite
        except ImportError as exc:
            raise HipqeqError("engine 'tblite' needs the tblite package (pip install tblite)") from exc
        return TBLite(method=method, charge=total_charge, multiplicity=unpaired_electrons + 1, accuracy=accuracy,
                      electronic_temperature=electronic_temperature_K,
                      max_iterations=max_iterations, verbosity=0, **engine_options)
    if engine == "xtb-python":
        try:
            from xtb.ase.calculator import XTB
        except ImportError as exc:
            raise HipqeqError("engine 'xtb-python' needs the xtb package (pip install xtb)") from exc
        if total_charge:
            raise HipqeqError("engine 'xtb-python' takes the total charge from the atoms' "
                              "initial charges, not as a parameter; use tblite for charged cells")
        if unpaired_electrons:
            raise HipqeqError("engine 'xtb-python' takes the unpaired electrons from the atoms' initial "
                              "magnetic moments, not as a parameter; use tblite for open-shell structures")
        return XTB(method=method, accuracy=accuracy, electronic_temperature=electronic_temperature_K,
                   max_iterations=max_iterations, **engine_options)
    raise HipqeqError(f"unknown xTB engine '{engine}'; choose one of {', '.join(XTB_ENGINES)}")
