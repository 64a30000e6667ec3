"""GFN1-xTB single points with CP2K: k-points and Ewald, so labels do not depend on the cell.

tblite is Gamma-point only and its energies drift with the vacuum of a slab without
converging (PHYSICS.md, "tblite's cell dependence"); CP2K's xTB (``&QS METHOD xTB``,
``&xTB DO_EWALD T``) takes a Monkhorst-Pack k-mesh and its slab energies are flat to
0.01 meV/atom beyond the reach of its short-range Coulomb cutoff (~25 A at CP2K's
defaults, ~37 A at hipqeq's; measured here, CP2K 2023.1).

Why an input writer of our own and not ASE's ``CP2K`` calculator: ASE drives the
interactive ``cp2k_shell``, which keeps no output file to inspect when an SCF fails,
does not report the number of SCF cycles, and cannot return Mulliken charges. Here each
structure is one ``cp2k.psmp -i hipqeq.inp -o hipqeq.out`` run in a fresh temporary
directory; the directory is deleted after a successful parse and kept (its path is in
the error message) after any failure.

Boundary: CP2K treats every cell as 3D periodic with Ewald sums, slabs included (k-mesh
1 along a non-periodic direction); ``calc_params['boundary']`` says so. The short-range
part of the Coulomb kernel is cut where the ``xtb.cp2k`` section says (:func:`gfn1_xtb`):
that cutoff is part of the level of theory, and a slab needs more vacuum than its reach.

Open shells: an odd electron count (sum Z - Q; the xTB cores hold an even number of
electrons for every element here) gets multiplicity 2 and an unrestricted (UKS)
calculation at the Gamma point. CP2K 2023.1's xTB with k-points and UKS fails at the
first SCF step (every population zero, "Atomic charges outside chemical range", measured
here on cubic CsPbI3 even at multiplicity 1), so with a k-mesh an odd-electron cell runs
spin-restricted with Fermi smearing (the odd electron shares the highest level, as in
tblite's default); ``calc_params`` records ``multiplicity`` and ``spin``.

DFT charges (``dft.source: cp2k``, :class:`CP2KDFTLabeller`): the same input writer
and parser run Kohn-Sham DFT with Gaussians and plane waves (GPW), the level of the PySCF
engine (functional, GTH pseudopotentials, MOLOPT basis: CP2K's files are the ones PySCF
ships) with a k-mesh from ``dft.cp2k.kpoint_density_A``. On a 28-atom 2x2 RP n = 1 slab
(30 A vacuum, PBE/DZVP-MOLOPT-SR, 300 Ry) an SCF step took 11 s at Gamma and 13 s with
3x3x1 k-points on one core here, ~35 steps to EPS_SCF 1e-6, where PySCF's k-point code
had not finished a 27-atom 2x2x1 run in 60 min (17 GB). Mulliken and Hirshfeld charges
come from every run (``dft.charge_scheme`` picks the ``charges`` column).

Units at the boundary: CP2K prints Hartree, Hartree/Bohr and GPa; rows hold eV,
eV/Angstrom and eV/Angstrom^3 in ASE's stress sign (CP2K prints the opposite sign).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from ase import Atoms

from hipqeq.data.io import unpaired_electrons
from hipqeq.errors import ConfigError, DatasetError, LabellingFailed, SCFNotConverged
from hipqeq.labels.common import Labels
from hipqeq.units import BOHR_A, HARTREE_EV

#: eV/Angstrom^3 in one GPa (1 GPa = 1e9 J/m^3; 1 eV = 1.602176634e-19 J; 1 A^3 = 1e-30 m^3).
EV_PER_A3_PER_GPA = 1e9 * 1e-30 / 1.602176634e-19

#: Highest atomic number with GFN1-xTB parameters in CP2K (H..Rn).
MAX_CP2K_XTB_NUMBER = 86

#: Settings that do not change a label and stay out of ``calc_params['parameters']``.
_NOT_PARAMETERS = ("chunk_size",)

_INPUT_NAME, _OUTPUT_NAME = "hipqeq.inp", "hipqeq.out"


def kmesh_from_density(atoms: Atoms, kpoint_density_A: float) -> tuple[int, int, int]:
    """Monkhorst-Pack mesh with ``n_i = ceil(kpoint_density_A / |a_i|)`` along periodic
    directions and 1 along non-periodic ones.

    ``n_i |a_i|`` is the length of the Born-von Karman supercell the mesh samples, so the
    density (Angstrom) is the shortest such length, comparable with a Gamma-point
    engine's ``min_periodic_length_A``.
    """
    lengths = atoms.cell.lengths()
    return tuple(max(1, math.ceil(kpoint_density_A / lengths[i] - 1e-9)) if atoms.pbc[i] else 1
                 for i in range(3))


def multiplicity(atoms: Atoms, total_charge: float) -> int:
    """Spin multiplicity of the lowest spin state: 1 for an even electron count, 2 for odd.

    The count is sum Z - Q; xTB's cores are closed shells (even), so the valence count
    has the same parity. Raises :class:`LabellingFailed` for a non-integer charge.
    """
    if abs(total_charge - round(total_charge)) > 1e-8:
        raise LabellingFailed(f"total charge {total_charge} e is not an integer; CP2K needs an integer CHARGE")
    electrons = int(atoms.numbers.sum()) - int(round(total_charge))
    return 2 if electrons % 2 else 1


def scf_settings(settings: dict, safer: bool = False) -> dict:
    """The SCF settings of a run (the ``xtb`` section; ``safer``: its retry values).

    Keys: ``max_scf``, ``eps_scf``, ``mixing_alpha``, ``nbroyden``, ``added_mos``,
    ``electronic_temperature_K``.
    """
    cp2k = settings["cp2k"]
    scf = {"max_scf": settings["max_iterations"], "eps_scf": cp2k["eps_scf"],
           "mixing_alpha": cp2k["mixing_alpha"], "nbroyden": cp2k["nbroyden"],
           "added_mos": cp2k["added_mos"], "electronic_temperature_K": settings["electronic_temperature_K"]}
    if safer:
        retry = settings["retry"]
        scf.update(max_scf=retry["max_iterations"], mixing_alpha=cp2k["retry_mixing_alpha"],
                   electronic_temperature_K=retry["electronic_temperature_K"])
    return scf


@dataclasses.dataclass(frozen=True)
class Hamiltonian:
    """The method-specific parts of a CP2K input.

    ``dft`` goes inside ``&DFT`` before ``&SCF`` (``&QS``, basis files, grids, functional);
    ``kinds`` inside ``&SUBSYS`` (basis and pseudopotential per element); ``populations``
    are the charge analyses printed (CP2K print keys); ``stress``: an analytical stress
    tensor; ``forces``: ``ENERGY_FORCE`` rather than ``ENERGY``.
    """

    dft: str
    kinds: str = ""
    populations: tuple[str, ...] = ("MULLIKEN",)
    stress: bool = True
    forces: bool = True


#: Options of a population analysis's print section. CP2K's default Hirshfeld partition
#: uses Gaussian pro-atoms, which on the 5-atom cubic CsPbI3 cell gave Cs -0.67 e and I
#: +0.06 e (PBE/SZV, here); atomic-density pro-atoms give Cs +0.42, Pb +0.21, I -0.21.
_POPULATION_OPTIONS = {"HIRSHFELD": "        SHAPE_FUNCTION DENSITY\n"}

def gfn1_xtb(cp2k: dict) -> Hamiltonian:
    """GFN1-xTB with Ewald sums and the real-space cutoffs of an ``xtb.cp2k`` section (the
    ``xtb`` labeller).

    CP2K sums GFN1's Coulomb kernel as Ewald 1/r plus a short-range part gamma - 1/r,
    which keeps a shell-dependent 1/r^3 tail; CP2K switches it off over 1 bohr at a radius
    from ``COULOMB_SR_CUT`` (bohr) and ``COULOMB_SR_EPS``. That sum converges slowly over a
    slab and not at all over a 3D crystal: the energies depend on the cutoff (no value
    measured converges them), and pairs passing through the switch make them wiggle along
    any path that changes distances. Measured here (CP2K
    2023.1; README, "Reference labels"): CP2K's defaults (20, 1e-3) leave the RP n = 1
    slab's E(strain) 6.7 meV/atom off a cubic, with a 25 meV/atom step from -3 to -2 %; 35
    and 1e-14 (the schema's defaults) 2.1, reaching ~37 A across a slab's vacuum; from 40
    on, cubic CsPbI3's SCF diverges. The coordination-number and dispersion cutoffs are
    tightened too (1 % of the change).
    """
    parameters = (f"          COULOMB_SR_CUT {cp2k['coulomb_sr_cut_bohr']}\n"
                  f"          COULOMB_SR_EPS {cp2k['coulomb_sr_eps']:.3E}\n"
                  f"          COORDINATION_CUTOFF {cp2k['coordination_cutoff']:.3E}\n"
                  f"          DISPERSION_RADIUS {cp2k['dispersion_radius_bohr']}\n")
    return Hamiltonian(dft="    &QS\n      METHOD xTB\n      &xTB\n        DO_EWALD T\n        &PARAMETER\n"
                           f"{parameters}        &END PARAMETER\n      &END xTB\n    &END QS\n")


def spin_treatment(open_shell: bool, uks: bool, why_restricted: str) -> str:
    """``calc_params['spin']`` of a run: unrestricted, restricted, or an open shell run
    restricted with Fermi smearing for the reason ``why_restricted``."""
    if uks:
        return "unrestricted (UKS)"
    return f"restricted with Fermi smearing ({why_restricted})" if open_shell else "restricted"


def write_input(atoms: Atoms, kmesh, scf: dict, total_charge: int, spin_multiplicity: int, uks: bool,
                hamiltonian: Hamiltonian) -> str:
    """The CP2K input (text) of a single point of ``atoms``: energy, forces and stress as
    ``hamiltonian`` asks, and its population analyses.

    Positions and cell in Angstrom (CP2K's default input unit); every cell 3D periodic
    (``PERIODIC XYZ``, Ewald); the k-mesh is omitted at the Gamma point (CP2K's faster
    real-matrix path).
    """
    cell = "\n".join(f"      {v} {x:.10f} {y:.10f} {z:.10f}" for v, (x, y, z) in zip("ABC", atoms.cell.array))
    coords = "\n".join(f"      {s} {x:.10f} {y:.10f} {z:.10f}"
                       for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions))
    kpoints = ("" if tuple(kmesh) == (1, 1, 1) else
               "    &KPOINTS\n      SCHEME MONKHORST-PACK {} {} {}\n    &END KPOINTS\n".format(*kmesh))
    spin = f"    UKS T\n    MULTIPLICITY {spin_multiplicity}\n" if uks else ""
    populations = "".join(f"      &{key} ON\n{_POPULATION_OPTIONS.get(key, '')}      &END {key}\n"
                          for key in hamiltonian.populations)
    stress = ("  STRESS_TENSOR ANALYTICAL\n", "    &STRESS_TENSOR ON\n    &END STRESS_TENSOR\n") \
        if hamiltonian.stress else ("", "")
    forces = "    &FORCES ON\n    &END FORCES\n" if hamiltonian.forces else ""
    return f"""&GLOBAL
  PROJECT hipqeq
  RUN_TYPE {"ENERGY_FORCE" if hamiltonian.forces else "ENERGY"}
  PRINT_LEVEL LOW
&END GLOBAL
&FORCE_EVAL
  METHOD Quickstep
{stress[0]}  &DFT
    CHARGE {total_charge}
{spin}{hamiltonian.dft}{kpoints}    &SCF
      EPS_SCF {scf['eps_scf']:.3E}
      MAX_SCF {scf['max_scf']}
      ADDED_MOS {scf['added_mos']}
      &SMEAR ON
        METHOD FERMI_DIRAC
        ELECTRONIC_TEMPERATURE [K] {scf['electronic_temperature_K']}
      &END SMEAR
      &MIXING
        METHOD BROYDEN_MIXING
        ALPHA {scf['mixing_alpha']}
        NBROYDEN {scf['nbroyden']}
      &END MIXING
    &END SCF
    &PRINT
{populations}    &END PRINT
  &END DFT
  &SUBSYS
    &CELL
{cell}
      PERIODIC XYZ
    &END CELL
    &COORD
{coords}
    &END COORD
{hamiltonian.kinds}  &END SUBSYS
  &PRINT
{forces}{stress[1]}  &END PRINT
&END FORCE_EVAL
"""


_ENERGY = re.compile(r"ENERGY\| Total FORCE_EVAL \( QS \) energy \[a\.u\.\]:\s+(\S+)")
_CONVERGED = re.compile(r"SCF run converged in\s+(\d+) steps")
_NOT_CONVERGED = "SCF run NOT converged"
_SCF_STEP = re.compile(r"^\s+(\d+)\s+\S+/Diag\..*\s([-+]?\d\.\d+E[-+]\d+)$", re.MULTILINE)
#: Largest energy change of the last SCF step (meV/atom) that a converged SCF may show.
#: CP2K stops when the density residual falls below EPS_SCF; Broyden mixing can pass
#: through such a residual while the energy still moves by Hartrees. Measured here: a
#: model-relaxed 2x2 RP n = 1 slab at +2 % strain "converged" in 5 cycles with a last
#: change of 1.45 Ha (1.4 eV/atom) at -67.08 eV/atom, iodine charges -3.1 to +1.1 e; the
#: safer mixing converged in ~30 cycles to -71.62 eV/atom with changes of 1e-5 Ha.
MAX_LAST_ENERGY_CHANGE_MEV_PER_ATOM = 1.0
#: CP2K's xTB aborts when a Mulliken charge leaves its "chemical range" (CHECK_ATOMIC_CHARGES,
#: on by default). Left off, a Broyden SCF on a 0.4 % strained cubic cell wandered into
#: Pb -5.6 e, Cs +1.9 e at -535 eV instead of -384 eV (here): a diverged SCF, retried as one.
_CHARGE_RANGE = "Atomic charges outside chemical"


def parse_output(text: str, n_atoms: int, hamiltonian: Hamiltonian) -> dict:
    """Energy (eV), Mulliken charges (e, ``charges``), ``scf_cycles`` and ``scf_converged``
    from a CP2K output, with forces (eV/Angstrom), stress (Voigt, eV/Angstrom^3, ASE sign)
    and Hirshfeld charges (``hirshfeld_charges``, e) where ``hamiltonian`` asked for them.

    Raises :class:`SCFNotConverged` when the SCF missed EPS_SCF (naming the cycle count)
    or reached it while the energy still moved (:func:`_check_last_energy_change`), and
    :class:`LabellingFailed` when a block is missing.
    """
    converged = _CONVERGED.search(text)
    steps = _SCF_STEP.findall(text)  # (cycle, energy change in Hartree) per SCF step
    if converged is None:
        if _NOT_CONVERGED in text:
            raise SCFNotConverged(f"CP2K SCF did not converge in {steps[-1][0] if steps else '?'} cycles")
        if _CHARGE_RANGE in text:
            raise SCFNotConverged(f"CP2K SCF diverged: Mulliken charges left xTB's chemical range after "
                                  f"{steps[-1][0] if steps else 0} cycles")
        raise LabellingFailed("CP2K output has no SCF result (the run stopped before or during the SCF)")
    _check_last_energy_change(steps, n_atoms)
    energy = _ENERGY.search(text)
    if energy is None:
        raise LabellingFailed("CP2K output has no 'ENERGY| Total FORCE_EVAL' line")
    result = {"energy": float(energy.group(1)) * HARTREE_EV, "charges": _mulliken(text, n_atoms),
              "scf_cycles": int(converged.group(1)), "scf_converged": True}
    if hamiltonian.forces:
        result["forces"] = _block_rows(text, "ATOMIC FORCES in [a.u.]", n_atoms, slice(3, 6), skip=3,
                                       indexed=True) * HARTREE_EV / BOHR_A
    if hamiltonian.stress:
        result["stress"] = _stress(text)
    if "HIRSHFELD" in hamiltonian.populations:
        result["hirshfeld_charges"] = _hirshfeld(text, n_atoms)
    return result


def _check_last_energy_change(steps: list[tuple[str, str]], n_atoms: int) -> None:
    """Raise :class:`SCFNotConverged` when CP2K called an SCF converged whose last step
    (``steps``: cycle and energy change in Hartree per step) still changed the energy by
    more than :data:`MAX_LAST_ENERGY_CHANGE_MEV_PER_ATOM`."""
    if not steps:
        return
    step, change = steps[-1]
    change_meV_per_atom = abs(float(change)) * HARTREE_EV * 1000 / n_atoms
    if change_meV_per_atom > MAX_LAST_ENERGY_CHANGE_MEV_PER_ATOM:
        raise SCFNotConverged(
            f"CP2K SCF converged spuriously after {step} cycles: the density residual fell below EPS_SCF "
            f"while the last step changed the energy by {change_meV_per_atom:.3g} meV/atom "
            f"(> {MAX_LAST_ENERGY_CHANGE_MEV_PER_ATOM:g})")


def _block_rows(text: str, header: str, n_rows: int, columns: slice, skip: int,
                indexed: bool = False) -> np.ndarray:
    """``n_rows`` numeric rows that start ``skip`` lines after the last ``header``.

    ``indexed``: the first column is the 1-based atom index and rows are returned in atom
    order (CP2K prints the Mulliken block grouped by kind, not in input order).
    """
    start = text.lower().rfind(header.lower())  # xTB prints MULLIKEN POPULATION ANALYSIS, DFT Mulliken Population Analysis
    if start < 0:
        raise LabellingFailed(f"CP2K output has no '{header}' block")
    lines = text[start:].splitlines()[skip:skip + n_rows]
    try:
        rows = np.array([[float(x) for x in line.split()[columns]] for line in lines])
        if not indexed:
            return rows
        order = np.array([int(line.split()[0]) - 1 for line in lines])
        if sorted(order) != list(range(n_rows)):
            raise ValueError(f"atom indices {sorted(order + 1)} are not 1..{n_rows}")
    except (ValueError, IndexError) as exc:
        raise LabellingFailed(f"CP2K output: cannot read the '{header}' block: {exc}") from exc
    placed = np.empty_like(rows)
    placed[order] = rows
    return placed


def _mulliken(text: str, n_atoms: int) -> np.ndarray:
    # restricted rows: atom element kind population charge; unrestricted rows: atom element
    # kind alpha beta charge spin (the column titles say "Spin moment")
    start = text.lower().rfind("mulliken population analysis")
    titles = text[start:].splitlines()[2] if start >= 0 else ""
    column = 5 if "Spin moment" in titles else 4
    return _block_rows(text, "MULLIKEN POPULATION ANALYSIS", n_atoms, slice(column, column + 1), skip=3,
                       indexed=True)[:, 0]


def _hirshfeld(text: str, n_atoms: int) -> np.ndarray:
    # rows: atom element kind reference-charge population net-charge (restricted) or
    # atom element kind reference-charge alpha beta spin net-charge (unrestricted): the net charge is last
    return _block_rows(text, "Hirshfeld Charges", n_atoms, slice(-1, None), skip=3, indexed=True)[:, 0]


def _stress(text: str) -> np.ndarray:
    rows = _block_rows(text, "STRESS| Analytical stress tensor [GPa]", 3, slice(2, 5), skip=2)
    # CP2K prints the stress as a pressure (positive = compressed); ASE's sign is the opposite
    tensor = -rows * EV_PER_A3_PER_GPA
    return np.array([tensor[0, 0], tensor[1, 1], tensor[2, 2], tensor[1, 2], tensor[0, 2], tensor[0, 1]])


class CP2KLabeller:
    """GFN1-xTB labels (energy, forces, stress, Mulliken charges) from CP2K with a k-mesh.

    ``settings`` is a validated ``xtb`` section with ``engine: cp2k``; its ``cp2k``
    subsection holds the executable, ``kpoint_density_A`` and the SCF settings. The k-mesh
    of each structure comes from :func:`kmesh_from_density`. The safer retry lowers the
    Broyden mixing (``cp2k.retry_mixing_alpha``) and takes ``retry.max_iterations`` and
    ``retry.electronic_temperature_K``.
    """

    def __init__(self, settings: dict):
        if settings["method"] != "GFN1-xTB":
            raise ConfigError(f"xtb/method: CP2K 2023 implements GFN1-xTB only, got {settings['method']}")
        self.settings = settings
        self.method = settings["method"]
        self.executable = settings["cp2k"]["executable"]
        self.parameters = {k: v for k, v in settings.items() if k not in _NOT_PARAMETERS}
        self.software = {"cp2k": cp2k_version(self.executable)}
        self.hamiltonian = gfn1_xtb(settings["cp2k"])

    def kmesh(self, atoms: Atoms) -> tuple[int, int, int]:
        """The k-mesh of ``atoms`` (see :func:`kmesh_from_density`)."""
        return kmesh_from_density(atoms, self.settings["cp2k"]["kpoint_density_A"])

    def supports(self, number: int) -> bool:
        return 1 <= number <= MAX_CP2K_XTB_NUMBER

    def check(self, atoms: Atoms) -> None:
        """CP2K takes any cell (non-periodic directions become vacuum-separated images)."""

    def label(self, atoms: Atoms, safer: bool = False) -> Labels:
        """Run CP2K once; raise :class:`SCFNotConverged` or :class:`LabellingFailed`."""
        total_charge = float(atoms.info.get("total_charge", 0.0))
        spin_multiplicity = multiplicity(atoms, total_charge)
        kmesh = self.kmesh(atoms)
        uks = spin_multiplicity > 1 and kmesh == (1, 1, 1)
        scf = scf_settings(self.settings, safer)
        result = self._run_input(write_input(atoms, kmesh, scf, int(round(total_charge)), spin_multiplicity, uks,
                                             self.hamiltonian), len(atoms), self.hamiltonian)
        spin = spin_treatment(spin_multiplicity > 1, uks, "CP2K 2023 xTB cannot do UKS with k-points")
        details = {"kmesh": list(kmesh), "scf": scf, "scf_cycles": result["scf_cycles"], "multiplicity": spin_multiplicity,
                   "spin": spin, "boundary": "3D-periodic (Ewald; slabs as vacuum-separated images)"}
        return Labels(energy=result["energy"], forces=result["forces"], stress=result["stress"],
                      charges=result["charges"], charge_scheme="Mulliken", details=details,
                      boundary="periodic")

    def _run_input(self, text: str, n_atoms: int, hamiltonian: Hamiltonian) -> dict:
        """Run the input ``text`` in a fresh directory, deleted after a parsed run and kept
        (named in the error) after a failure; :func:`parse_output`'s result."""
        workdir = Path(tempfile.mkdtemp(prefix="hipqeq-cp2k-"))
        (workdir / _INPUT_NAME).write_text(text)
        try:
            result = self._run(workdir, n_atoms, hamiltonian)
        except LabellingFailed as exc:
            raise type(exc)(f"{exc}; input and output kept in {workdir}") from exc
        shutil.rmtree(workdir, ignore_errors=True)
        return result

    def _run(self, workdir: Path, n_atoms: int, hamiltonian: Hamiltonian) -> dict:
        # Snakemake sets OMP_NUM_THREADS to a rule's threads; elsewhere one thread, not all cores
        threads = os.environ.get("OMP_NUM_THREADS", "1")
        try:
            process = subprocess.run([self.executable, "-i", _INPUT_NAME, "-o", _OUTPUT_NAME], cwd=workdir,
                                     env={**os.environ, "OMP_NUM_THREADS": threads},
                                     capture_output=True, text=True, check=False)
        except FileNotFoundError as exc:
            raise LabellingFailed(f"CP2K executable '{self.executable}' not found "
                                  "(apt-get install cp2k, or conda install -c conda-forge cp2k)") from exc
        output = workdir / _OUTPUT_NAME
        text = output.read_text() if output.exists() else ""
        try:
            return parse_output(text, n_atoms, hamiltonian)
        except SCFNotConverged:
            raise
        except LabellingFailed as exc:
            if process.returncode:
                tail = (process.stderr or process.stdout).strip().splitlines()[-3:]
                raise LabellingFailed(f"CP2K exited with status {process.returncode} ({' / '.join(tail)}); "
                                      f"{_abort_reason(text) or exc}") from exc
            raise


def _abort_reason(text: str) -> str:
    """The message of a CP2K ``[ABORT]`` box or last ``*** WARNING`` (empty if none)."""
    warnings = re.findall(r"\*\*\* WARNING in (.*?)\*\*\*\n((?: \*\*\* .*\*\*\*\n)*)", text)
    if not warnings:
        return ""
    where, rest = warnings[-1]
    lines = [where] + [line.strip(" *") for line in rest.splitlines()]
    return " ".join(" ".join(lines).split())


def cp2k_version(executable: str = "cp2k.psmp") -> str:
    """``CP2K version 2023.1``-style version of ``executable``, or ``"not installed"``."""
    path = shutil.which(executable)
    if path is None:
        return "not installed"
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    match = re.search(r"CP2K version (\S+)", out)
    return match.group(1) if match else "unknown"


#: ``dft`` settings that do not change a CP2K label, or belong to the PySCF engine.
_NOT_DFT_PARAMETERS = ("chunk_size", "external", "max_memory_mb", "kmesh", "conv_tol_eV")

#: Charge schemes a CP2K DFT run computes (``dft.charge_scheme``).
DFT_CHARGE_SCHEMES = ("Mulliken", "Hirshfeld")


def cp2k_name(pyscf_name: str) -> str:
    """CP2K's name of a GTH basis or pseudopotential given by its PySCF name
    (``gth-dzvp-molopt-sr`` -> ``DZVP-MOLOPT-SR-GTH``, ``gth-pbe`` -> ``GTH-PBE``): both
    programs read the same data files."""
    name = pyscf_name.upper().replace("_", "-")
    if not name.startswith("GTH-"):
        raise ConfigError(f"dft: '{pyscf_name}' is not a GTH basis or pseudopotential name (gth-...), "
                          "which CP2K needs")
    rest = name[len("GTH-"):]
    return name if rest in {"PBE", "BLYP", "BP", "PADE", "HCTH120", "HCTH407", "OLYP", "PBESOL"} else f"{rest}-GTH"


def dft_hamiltonian(settings: dict, symbols) -> Hamiltonian:
    """The Kohn-Sham GPW input of a validated ``dft`` section for the elements ``symbols``."""
    cp2k = settings["cp2k"]
    basis, pseudo = cp2k_name(settings["basis"]), cp2k_name(settings["pseudo"])
    kinds = "".join(f"    &KIND {symbol}\n      BASIS_SET {basis}\n      POTENTIAL {pseudo}\n    &END KIND\n"
                    for symbol in sorted(set(symbols)))
    dft = (f"    BASIS_SET_FILE_NAME {cp2k['basis_file']}\n    POTENTIAL_FILE_NAME {cp2k['potential_file']}\n"
           f"    &MGRID\n      CUTOFF {cp2k['cutoff_Ry']}\n      REL_CUTOFF {cp2k['rel_cutoff_Ry']}\n    &END MGRID\n"
           f"    &XC\n      &XC_FUNCTIONAL {settings['xc'].upper()}\n      &END XC_FUNCTIONAL\n    &END XC\n")
    return Hamiltonian(dft=dft, kinds=kinds, populations=("MULLIKEN", "HIRSHFELD"), stress=False,
                       forces=settings["energy_forces"])


def dft_scf_settings(settings: dict, safer: bool = False) -> dict:
    """The SCF settings of a DFT run (the ``dft`` section; ``safer``: ``retry.max_cycles``
    and ``cp2k.retry_mixing_alpha``), keys as :func:`scf_settings`."""
    cp2k = settings["cp2k"]
    return {"max_scf": settings["retry"]["max_cycles"] if safer else settings["max_cycles"],
            "eps_scf": cp2k["eps_scf"],
            "mixing_alpha": cp2k["retry_mixing_alpha"] if safer else cp2k["mixing_alpha"],
            "nbroyden": cp2k["nbroyden"], "added_mos": cp2k["added_mos"],
            "electronic_temperature_K": cp2k["electronic_temperature_K"]}


class CP2KDFTLabeller(CP2KLabeller):
    """DFT partial charges (and energy and forces with ``dft.energy_forces``) from CP2K's
    Kohn-Sham GPW with a k-mesh (``dft.source: cp2k``).

    ``settings`` is a validated ``dft`` section: functional ``xc``, ``basis`` and
    ``pseudo`` by their PySCF names (the same GTH files), the ``cp2k`` subsection for the
    executable, grids, k-point density and SCF. Mulliken and Hirshfeld (atomic-density
    pro-atoms) charges come from every run; ``charge_scheme`` picks the ``charges``
    column, the other goes to ``calc_params['other_charges']``. Odd electron counts (or a
    row's ``unpaired_electrons``) run unrestricted, with k-points too; their safer retry
    runs spin-restricted with Fermi smearing (``cp2k.retry_restricted``). Under the Fermi
    smearing every run has, CP2K's UKS does not hold the multiplicity: on the neutral
    rp1 V_I frame (PBE, 3x3x1) the spin moment relaxed to 0.05 (not 1), the density
    residual oscillated at 1e-5..2e-3 for 400 cycles, and the restricted run converged in
    40 cycles to Mulliken charges 6e-5 e and an energy 0.1 meV from the last UKS cycle's.
    Where UKS does hold a moment the two differ (the 4-atom CsPbI2 cell, 2x2x2: 0.018 e,
    UKS 0.28 eV lower), so ``calc_params['spin']`` says which ran.
    """

    def __init__(self, settings: dict):
        if settings["charge_scheme"] not in DFT_CHARGE_SCHEMES:
            raise ConfigError(f"dft.charge_scheme '{settings['charge_scheme']}' is not computed by CP2K; "
                              f"choose one of {', '.join(DFT_CHARGE_SCHEMES)}")
        self.settings = settings
        self.method = f"{settings['xc']}/{settings['basis']}"
        self.executable = settings["cp2k"]["executable"]
        self.parameters = {k: v for k, v in settings.items() if k not in _NOT_DFT_PARAMETERS}
        self.software = {"cp2k": cp2k_version(self.executable)}
        self._basis = cp2k_name(settings["basis"])

    def supports(self, number: int) -> bool:
        """Whether CP2K's basis file has ``basis`` for ``number`` (true when the data
        directory cannot be found: CP2K then names a missing element itself)."""
        from ase.data import chemical_symbols

        known = _basis_elements(self.executable, self.settings["cp2k"]["basis_file"], self._basis)
        return 0 < number < len(chemical_symbols) and (known is None or chemical_symbols[number] in known)

    def check(self, atoms: Atoms) -> None:
        from hipqeq.labels.dft import require_periodic

        require_periodic(atoms, "CP2K")

    def label(self, atoms: Atoms, safer: bool = False) -> Labels:
        """Run CP2K once; raise :class:`SCFNotConverged` or :class:`LabellingFailed`."""
        total_charge = float(atoms.info.get("total_charge", 0.0))
        try:
            unpaired = unpaired_electrons(atoms.numbers, total_charge, atoms.info.get("unpaired_electrons"))
        except DatasetError as exc:
            raise LabellingFailed(str(exc)) from exc
        kmesh = self.kmesh(atoms)
        hamiltonian = dft_hamiltonian(self.settings, atoms.get_chemical_symbols())
        scf = dft_scf_settings(self.settings, safer)
        uks = unpaired > 0 and not (safer and self.settings["cp2k"]["retry_restricted"])
        result = self._run_input(write_input(atoms, kmesh, scf, int(round(total_charge)), unpaired + 1, uks,
                                             hamiltonian), len(atoms), hamiltonian)
        charges = {"Mulliken": result["charges"], "Hirshfeld": result["hirshfeld_charges"]}
        chosen = self.settings["charge_scheme"]
        spin = spin_treatment(unpaired > 0, uks, "the safer retry of an open shell")
        details = {"kmesh": list(kmesh), "scf": scf, "scf_cycles": result["scf_cycles"],
                   "multiplicity": unpaired + 1, "spin": spin,
                   "other_charges": {k: v.tolist() for k, v in charges.items() if k != chosen},
                   "scf_energy_eV": result["energy"],
                   "boundary": "3D-periodic (GPW; slabs as vacuum-separated images)"}
        labels = Labels(charges=charges[chosen], charge_scheme=chosen, details=details, boundary="periodic")
        if self.settings["energy_forces"]:
            labels.energy, labels.forces = result["energy"], result["forces"]
        return labels


@functools.lru_cache(maxsize=None)
def _basis_elements(executable: str, basis_file: str, basis: str) -> frozenset[str] | None:
    """Elements with ``basis`` in CP2K's ``basis_file`` (None when the file is not found
    in ``$CP2K_DATA_DIR`` or the executable's ``share/cp2k[/data]``)."""
    path = shutil.which(executable)
    roots = [os.environ.get("CP2K_DATA_DIR")]
    if path is not None:
        share = Path(path).resolve().parent.parent / "share" / "cp2k"
        roots += [str(share / "data"), str(share)]
    for root in filter(None, roots):
        candidate = Path(root) / basis_file
        if candidate.is_file():
            return frozenset(line.split()[0] for line in candidate.read_text().splitlines()
                             if len(line.split()) > 1 and not line.startswith("#") and basis in line.split()[1:])
    return None
