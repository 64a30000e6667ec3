r"""Ewald splitting parameters chosen from one accuracy tolerance.

The point-charge Coulomb sum is split with a Gaussian of width :math:`s` (torch-pme's
``smearing``):

.. math::

    \frac{1}{r} = \underbrace{\frac{\operatorname{erfc}(r / \sqrt{2} s)}{r}}_{\text{real space}}
                + \underbrace{\frac{\operatorname{erf}(r / \sqrt{2} s)}{r}}_{\text{reciprocal space}},
    \qquad
    \hat v_{\mathrm{LR}}(k) = \frac{4\pi}{k^2} e^{-s^2 k^2 / 2}

The truncation errors fall off as Gaussians (standard Ewald estimates, Kolafa and Perram,
Mol. Simul. 9, 351 (1992)): real space :math:`\sim e^{-r_c^2 / 2w^2}`, reciprocal space
:math:`\sim e^{-s^2 k_c^2 / 2}`. With :math:`p = \sqrt{2 \ln(1/\varepsilon)}` both equal
the tolerance :math:`\varepsilon` at

.. math::

    r_c = p \, \max(s, g_{\max}), \qquad k_c = p / s

where :math:`g_{\max} = \sqrt{2}\,\sigma_{\max}` is the widest Gaussian pair width: the
real-space kernel :math:`[\operatorname{erf}(r/\sqrt2 g) - \operatorname{erf}(r/\sqrt2 s)]/r`
decays on the longer of the two lengths.

The smearing itself only sets the cost balance (results do not depend on it, see the
tests). Two rules, both closed-form and deterministic:

- dense matrices (:func:`dense_ewald_parameters`): every matrix element costs about
  :math:`n_{\mathrm{img}} \propto (p s)^3 / V` real-space images and
  :math:`n_k \propto V (p/s)^3 / (2\pi)^3` reciprocal vectors; the reciprocal part is a
  matrix product, measured ~700x cheaper per term on CPU, which balances at
  :math:`s \approx V^{1/3} / 7.4`, and never below the widest pair width.
  ``s`` is capped so that an atom has at most ``max_neighbors`` real-space neighbours
  (memory of the pair list).
- PME and P3M potentials (:func:`mesh_parameters`): a mesh fine enough for the tolerance and a
  smearing that minimises the measured cost of real-space pairs and mesh points, both
  :math:`O(N)`, plus the :math:`O(N \log N)` FFT.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from hipqeq.errors import HipqeqError

#: Default accuracy tolerance of the periodic Coulomb sums (dimensionless).
DEFAULT_TOLERANCE = 1e-8

#: Interpolation order (nodes per axis) of the PME mesh (Lagrange interpolation).
PME_INTERPOLATION_NODES = 6

#: Assignment order (nodes per axis) of the P3M mesh (B-splines; torch-pme allows 1-5).
P3M_INTERPOLATION_NODES = 5

# Mesh relative error of the potential ~ C (h / s)^m for the actual mesh spacing h, per
# method: (m, C). Calibrated against a 1e-12 Ewald sum on a rattled 3x3x3 CsPbI3 cell with
# random neutral charges, s = 1.5 and 2.5 A, h/s = 0.06..0.8: max |error| / max |phi| was
# PME (6 Lagrange nodes) 0.011..0.07 (h/s)^6 and P3M (5 B-spline nodes, optimal influence
# function) 0.0016..0.0069 (h/s)^6, 20x more accurate on the same mesh; C leaves a factor
# of about 3 of margin.
_MESH_ERROR_MODEL = {"pme": (6, 0.2), "p3m": (6, 0.02)}

#: Fewest mesh points along a cell vector (the interpolation stencil must fit).
MIN_MESH_POINTS = 8

#: CPU time of one real-space pair over that of one mesh point, per MD step (pair
#: search, kernel and its gradient against spreading, FFTs and interpolation):
#: ``benchmarks/ewald_balance.py mesh`` fits ~1.6 on a 3645-atom shadow step, and the
#: balance this value picks was the fastest of those tried (README "Ewald balance").
PAIR_COST_PER_MESH_POINT = 1.0

#: CPU time of one term of the dense reciprocal matrix product (one k-vector of the
#: full sphere for one pair of atoms) over that of one real-space pair: 0.0015 measured
#: with ``benchmarks/ewald_balance.py dense`` on a 192-atom slab (CPU, one thread;
#: weights from 0.0001 to 0.003 came within 2 % of each other in time).
KSPACE_TERM_COST_PER_PAIR = 0.0015

# Relative step of the smearing grid searched by mesh_parameters.
_SMEARING_STEP = 0.02


@dataclass(frozen=True)
class EwaldParameters:
    """Range-splitting parameters of one periodic cell.

    :param smearing: Gaussian splitting width :math:`s`, Angstrom (torch-pme ``smearing``).
    :param cutoff: real-space cutoff :math:`r_c`, Angstrom.
    :param kspace_cutoff: reciprocal cutoff :math:`k_c`, 1/Angstrom (Ewald sum).
    :param mesh_spacing: largest mesh spacing (Angstrom) for PME and P3M, else ``None``
        (:func:`mesh_points`).
    """

    smearing: float
    cutoff: float
    kspace_cutoff: float
    mesh_spacing: float | None = None


def _decay_factor(tolerance: float) -> float:
    r""":math:`p = \sqrt{2 \ln(1/\varepsilon)}`, so that :math:`e^{-p^2/2} = \varepsilon`."""
    if not 0.0 < tolerance < 1.0:
        raise HipqeqError(f"Ewald tolerance must lie in (0, 1), got {tolerance}")
    return math.sqrt(2.0 * math.log(1.0 / tolerance))


def _volume(cell: torch.Tensor) -> float:
    volume = abs(float(torch.linalg.det(cell.detach().to(torch.float64))))
    if volume < 1e-12:
        raise HipqeqError("periodic Coulomb sums need a cell of non-zero volume")
    return volume


def dense_ewald_parameters(
    cell: torch.Tensor,
    n_atoms: int,
    max_sigma: float,
    tolerance: float = DEFAULT_TOLERANCE,
    max_neighbors: int = 2000,
) -> EwaldParameters:
    r"""Ewald parameters for building a dense Coulomb matrix: the smearing that minimises

    .. math::

        N^2 \tfrac{4\pi}{3} \frac{(p \max(s, g_{\max}))^3}{V}
        + w N^2 \, \frac{V}{(2\pi)^3} \tfrac{4\pi}{3} \left(\frac{p}{s}\right)^3,

    real-space pairs against the terms of the reciprocal matrix product (atom pairs times
    k-vectors) weighted by :data:`KSPACE_TERM_COST_PER_PAIR`: above :math:`g_{\max}`,
    :math:`s = V^{1/3} (w / 8\pi^3)^{1/6}`; below it the pairs do not shrink, so
    :math:`s \ge g_{\max}`. ``s`` is capped so that an atom has at most
    ``max_neighbors`` real-space neighbours (memory of the pair list).

    :param cell: (3, 3) lattice vectors as rows, Angstrom.
    :param n_atoms: atoms in the cell.
    :param max_sigma: largest Gaussian charge width, Angstrom.
    :param tolerance: target truncation error of each Ewald term (dimensionless).
    :param max_neighbors: cap on real-space neighbours per atom (pair-list memory).
    """
    p = _decay_factor(tolerance)
    volume = _volume(cell)
    density = n_atoms / volume
    balanced = volume ** (1.0 / 3.0) * (KSPACE_TERM_COST_PER_PAIR / (8.0 * math.pi**3)) ** (1.0 / 6.0)
    capped = (3.0 * max_neighbors / (4.0 * math.pi * density)) ** (1.0 / 3.0) / p
    smearing = min(max(balanced, _widest_pair_width(max_sigma)), capped)
    return _with_cutoffs(smearing, p, max_sigma)


@functools.lru_cache(maxsize=None)
def smooth_mesh_size(minimum: int) -> int:
    """Smallest FFT-friendly mesh size (a product of 2, 3 and 5) of at least ``minimum``
    points, and at least :data:`MIN_MESH_POINTS`."""
    size = max(int(minimum), MIN_MESH_POINTS)
    while True:
        rest = size
        for factor in (2, 3, 5):
            while rest % factor == 0:
                rest //= factor
        if rest == 1:
            return size
        size += 1


def mesh_points(cell: torch.Tensor, spacing: float) -> torch.Tensor:
    """Mesh points along each cell vector (3,) int64 for a largest spacing ``spacing``
    (Angstrom): the smooth size (:func:`smooth_mesh_size`) of at least :math:`L_a / h`
    along a cell vector of length :math:`L_a`."""
    sizes = _smooth_sizes(_lengths(cell), spacing)
    return torch.tensor(sizes, dtype=torch.int64, device=cell.device)


def _lengths(cell: torch.Tensor) -> list[float]:
    return torch.linalg.norm(cell.detach().to(torch.float64), dim=1).tolist()


def _smooth_sizes(lengths: list[float], spacing: float) -> list[int]:
    # The relative slack keeps L / (L / n) from rounding up to n + 1.
    return [smooth_mesh_size(math.ceil(length / spacing * (1.0 - 1e-12))) for length in lengths]


def mesh_parameters(
    cell: torch.Tensor,
    n_atoms: int,
    max_sigma: float,
    tolerance: float = DEFAULT_TOLERANCE,
    method: str = "pme",
) -> EwaldParameters:
    r"""PME or P3M parameters: a mesh of spacing :math:`h` fine enough for the tolerance,

    .. math::

        C \left(\frac{h}{s}\right)^{n} \le \varepsilon
        \quad\Leftrightarrow\quad s \ge h \, (C / \varepsilon)^{1/n},

    with n = 6 and C calibrated per method (``"pme"``: :data:`PME_INTERPOLATION_NODES`
    Lagrange nodes; ``"p3m"``: :data:`P3M_INTERPOLATION_NODES` B-spline nodes, 10x
    smaller C), and the smearing :math:`s` that minimises the cost of one step,

    .. math::

        w \, N \rho \tfrac{4\pi}{3} \big(p \max(s, g_{\max})\big)^3 + \prod_a n_a

    real-space pairs weighted by :data:`PAIR_COST_PER_MESH_POINT` against mesh points,
    over a grid of smearings from :math:`g_{\max}/2` to the coarsest mesh. Mesh sizes
    are products of 2, 3 and 5 (:func:`mesh_points`), so the optimum, and the cost per
    atom, change smoothly with the cell (torch-pme's own meshes come in powers of two,
    and the mesh points per atom swung by 4.6x between cubic cells). For each candidate the
    smearing is lowered to what the actual, finer mesh allows. Real space and mesh are
    :math:`O(N)`, the FFT :math:`O(N \log N)`. ``mesh_spacing`` is the largest spacing
    :math:`h` (Angstrom); a changed cell keeps it (:func:`mesh_points`).
    """
    if method not in _MESH_ERROR_MODEL:
        raise HipqeqError(f"mesh method must be one of {tuple(_MESH_ERROR_MODEL)}, got {method!r}")
    order, prefactor = _MESH_ERROR_MODEL[method]
    p = _decay_factor(tolerance)
    density = n_atoms / _volume(cell)
    ratio = (tolerance / prefactor) ** (1.0 / order)
    lengths = _lengths(cell)
    coarsest = max(lengths) / (ratio * MIN_MESH_POINTS)
    best = None
    smearing = min(0.5 * _widest_pair_width(max_sigma), coarsest)
    while smearing <= coarsest * (1.0 + _SMEARING_STEP):
        spacing = max(length / n for length, n in zip(lengths, _smooth_sizes(lengths, ratio * smearing)))
        points = _smooth_sizes(lengths, spacing)
        pairs = n_atoms * density * (4.0 * math.pi / 3.0) * _real_space_cutoff(spacing / ratio, p, max_sigma) ** 3
        cost = PAIR_COST_PER_MESH_POINT * pairs + math.prod(points)
        if best is None or cost < best[0]:
            best = (cost, spacing)
        smearing *= 1.0 + _SMEARING_STEP
    _, spacing = best
    base = _with_cutoffs(spacing / ratio, p, max_sigma)
    return EwaldParameters(base.smearing, base.cutoff, base.kspace_cutoff, spacing)


def _widest_pair_width(max_sigma: float) -> float:
    r""":math:`g_{\max} = \sqrt{2}\,\sigma_{\max}`, Angstrom: the widest Gaussian pair width."""
    return math.sqrt(2.0) * max_sigma


def _real_space_cutoff(smearing: float, p: float, max_sigma: float) -> float:
    r""":math:`r_c = p \max(s, g_{\max})`, Angstrom (module docstring)."""
    return p * max(smearing, _widest_pair_width(max_sigma))


def _with_cutoffs(smearing: float, p: float, max_sigma: float) -> EwaldParameters:
    return EwaldParameters(
        smearing=smearing,
        cutoff=_real_space_cutoff(smearing, p, max_sigma),
        kspace_cutoff=p / smearing,
    )


def ewald_kvectors(cell: torch.Tensor, kspace_cutoff: float, half: bool = False) -> torch.Tensor:
    r"""All reciprocal vectors :math:`0 < |\mathbf{k}| \le k_c` of a cell (a full sphere).

    :param cell: (3, 3) lattice vectors as rows, Angstrom; the result is differentiable
        in it (needed for the stress).
    :param kspace_cutoff: :math:`k_c`, 1/Angstrom.
    :param half: keep one of each pair :math:`\pm\mathbf k` (the one whose first
        non-zero integer coordinate is positive), for sums even in :math:`\mathbf k`.
    :return: (n_k, 3) wave vectors, 1/Angstrom.
    """
    reciprocal = 2.0 * torch.pi * torch.linalg.inv(cell).T
    # |n_a| <= k_c |a_a| / 2pi covers the sphere, since n_a = k . a_a / 2pi.
    lengths = torch.linalg.norm(cell.detach(), dim=1)
    n_max = torch.ceil(kspace_cutoff * lengths / (2.0 * torch.pi)).long().tolist()
    ranges = [torch.arange(-n, n + 1, device=cell.device, dtype=cell.dtype) for n in n_max]
    integers = torch.cartesian_prod(*ranges)
    with torch.no_grad():
        norms = torch.linalg.norm(integers @ reciprocal, dim=1)
        keep = (norms <= kspace_cutoff) & (norms > 0)
        if half:
            first, second, third = integers.unbind(1)
            keep &= (first > 0) | ((first == 0) & ((second > 0) | ((second == 0) & (third > 0))))
    return integers[keep] @ reciprocal
