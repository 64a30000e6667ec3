r"""Coulomb interaction of Gaussian charges: dense matrices and matrix-free potentials.

Atom :math:`i` carries a Gaussian charge of width :math:`\sigma_i` (Angstrom). Two such
charges interact through

.. math::

    k_e \frac{\operatorname{erf}(r_{ij} / \sqrt{2} g_{ij})}{r_{ij}},
    \qquad g_{ij} = \sqrt{\sigma_i^2 + \sigma_j^2}

and a charge with itself through :math:`k_e / (\sigma_i \sqrt{\pi})` (the :math:`r \to 0`
limit with :math:`g_{ii} = \sqrt{2}\sigma_i`). The Coulomb matrix :math:`A` (eV/e^2,
:math:`k_e` = :data:`hipqeq.units.COULOMB_EV_A` included) collects these, so that

.. math::

    E_{\mathrm{elec}}(q) = \tfrac12 q^{\mathsf T} A q, \qquad \phi = A q

(:math:`\phi` in V = eV/e). Three boundary conditions, named after ``pbc``:

``open`` (F, F, F)
    direct sum over all pairs.
``periodic`` (T, T, T)
    every pair sum runs over all images, any cell shape. Point-charge Ewald from
    torch-pme (which subtracts the point self term and adds the neutralising background
    :math:`-2\pi s^2 Q / V`), plus the short-ranged Gaussian correction in real space
    (pairs within the cutoff, including an atom's own images in other cells), plus the
    Gaussian self term:

    .. math::

        A_{ij} = k_e \Big[ \psi^{\mathrm{Ewald}}_{ij}
               + \sum_{\mathbf n}{}' \frac{\operatorname{erf}(r_{ij\mathbf n}/\sqrt2 g_{ij})
                 - \operatorname{erf}(r_{ij\mathbf n}/\sqrt2 s)}{r_{ij\mathbf n}}
               + \frac{\delta_{ij}}{\sigma_i\sqrt\pi}
               + \frac{2\pi}{V}(\sigma_i^2 + \sigma_j^2) \Big]

    The last term is the ``background`` convention of a charged cell (it drops out of the
    energy and of the charges whenever :math:`Q = 0`). ``"point"`` (the default) leaves it
    out: the neutralising background then meets the charges as points, the convention of
    the 3D-periodic xTB engines (CP2K's GFN1-xTB Ewald: a Q = +1 slab's label minus this
    E_elec of its own Mulliken charges moves by 0.35 meV/atom from 30 to 50 A of vacuum,
    by 4.1 meV/atom with the Gaussian term; ``docs/study/gates/charged``). ``"gaussian"``
    keeps it, making the system "Gaussian charges plus a uniform neutralising background"
    (reciprocal sum without :math:`k = 0`), an energy lower by
    :math:`(2\pi k_e / V)\, Q \sum_i q_i \sigma_i^2` (models of format <= 5 were trained
    with it).
``slab`` (T, T, F)
    periodic in the plane of the first two cell vectors, vacuum along the third: the 3D
    sum above plus the Yeh-Berkowitz dipole correction with the charged-system terms of
    Ballenegger, Arnold and Cerda, J. Chem. Phys. 131, 094107 (2009), for Gaussian
    charges (second moment :math:`z_i^2 + \sigma_i^2`):

    .. math::

        E_{\mathrm{slab}} = \frac{2\pi k_e}{V}\Big[M_z^2 - Q\sum_i q_i (z_i^2 + \sigma_i^2)
                            - \frac{Q^2 L_z^2}{12}\Big]

    with :math:`z_i` the coordinate along the plane normal, :math:`M_z = \sum_i q_i z_i`
    and :math:`L_z` the cell height along the normal. Its :math:`\sigma` term cancels the
    Gaussian background term above, leaving
    :math:`A_{ij} \mathrel{+}= -\frac{2\pi k_e}{V}[(z_i - z_j)^2 + L_z^2/6]` on the point
    convention's sum, whichever ``background`` the periodic boundary uses.
    For :math:`Q = 0` this is the classic correction :math:`2\pi k_e M_z^2 / V`. The slab
    must not straddle the cell boundary along the normal (unwrapped positions).

Accuracy of the periodic sums is set by one ``tolerance`` (see :mod:`hipqeq.qeq.ewald`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torchpme

from hipqeq.errors import HipqeqError
from hipqeq.qeq.ewald import (
    DEFAULT_TOLERANCE,
    P3M_INTERPOLATION_NODES,
    PME_INTERPOLATION_NODES,
    EwaldParameters,
    dense_ewald_parameters,
    ewald_kvectors,
    mesh_parameters,
    mesh_points,
)
from hipqeq.qeq.neighbors import neighbor_pairs, pair_vectors
from hipqeq.units import COULOMB_EV_A

BOUNDARIES = ("open", "periodic", "slab")
#: How a charged periodic cell's neutralising background meets the Gaussian charges (module docstring).
BACKGROUNDS = ("point", "gaussian")
DEFAULT_BACKGROUND = "point"
#: Reciprocal-space methods of :class:`CoulombOperator`.
KSPACE_METHODS = ("ewald", "pme", "p3m")
#: The reciprocal sum MD uses by default: P3M's forces are smooth (see the README).
DEFAULT_KSPACE_METHOD = "p3m"
_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def boundary_from_pbc(pbc: Sequence[bool]) -> str:
    """Map ``pbc`` to ``"open"`` (F,F,F), ``"periodic"`` (T,T,T) or ``"slab"`` (T,T,F).

    :raises HipqeqError: for any other combination (wires, or a slab whose vacuum is
        not along the third cell vector).
    """
    flags = tuple(bool(flag) for flag in pbc)
    known = {(False,) * 3: "open", (True,) * 3: "periodic", (True, True, False): "slab"}
    if flags not in known:
        raise HipqeqError(
            f"pbc={flags} is not supported by the charge equilibration: use (F,F,F) for "
            "molecules, (T,T,T) for bulk or (T,T,F) for slabs (vacuum along the third "
            "cell vector)"
        )
    return known[flags]


def check_background(background: str) -> None:
    """Raise :class:`HipqeqError` unless ``background`` is one of :data:`BACKGROUNDS`."""
    if background not in BACKGROUNDS:
        raise HipqeqError(f"background must be one of {BACKGROUNDS}, got {background!r}")


def _check_boundary(boundary: str, cell: torch.Tensor | None, background: str = DEFAULT_BACKGROUND) -> None:
    if boundary not in BOUNDARIES:
        raise HipqeqError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    check_background(background)
    if boundary != "open" and cell is None:
        raise HipqeqError(f"boundary {boundary!r} needs a cell")


def gaussian_coulomb_kernel(distances: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    r""":math:`\operatorname{erf}(r / \sqrt2 g) / r` in 1/Angstrom, finite at :math:`r = 0`.

    :param distances: pair distances :math:`r`, Angstrom, any shape.
    :param widths: pair widths :math:`g`, Angstrom, broadcastable to ``distances``.
    :return: kernel values; at :math:`r = 0` the limit :math:`\sqrt{2/\pi}/g`.
    """
    at_origin = distances == 0
    # NaN-safe: evaluate erf(r)/r on a dummy distance where r = 0, so that neither the
    # value nor its gradient sees 0/0.
    safe = torch.where(at_origin, torch.ones_like(distances), distances)
    return torch.where(at_origin, _SQRT_2_OVER_PI / widths, torch.erf(safe / (_SQRT2 * widths)) / safe)


def _safe_norm(vectors: torch.Tensor) -> torch.Tensor:
    # sqrt has an infinite derivative at 0: feed it 1 there and return 0 (the kernel
    # takes its limit at r = 0), so gradients stay finite.
    squared = (vectors**2).sum(-1)
    is_zero = squared == 0
    return torch.where(is_zero, torch.zeros_like(squared), torch.sqrt(torch.where(is_zero, torch.ones_like(squared), squared)))


def _open_matrix(positions: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    distances = _safe_norm(positions[None, :, :] - positions[:, None, :])
    widths = torch.sqrt(sigma[:, None] ** 2 + sigma[None, :] ** 2)
    return COULOMB_EV_A * gaussian_coulomb_kernel(distances, widths)


def _slab_geometry(positions: torch.Tensor, cell: torch.Tensor):
    """Heights along the plane normal (n_atoms,) and the cell height along it, Angstrom."""
    normal = torch.linalg.cross(cell[0], cell[1])
    area = torch.linalg.norm(normal)
    heights = positions @ (normal / area)
    return heights, torch.abs(torch.linalg.det(cell)) / area


def _rank_terms_matrix(positions, cell, sigma, boundary, background):
    """Gaussian background (periodic) or slab-correction (slab) part of A / k_e, (n, n) 1/Angstrom."""
    volume = torch.abs(torch.linalg.det(cell))
    if boundary == "periodic" and background == "point":
        return torch.zeros((len(sigma), len(sigma)), dtype=sigma.dtype, device=sigma.device)
    if boundary == "periodic":
        sigma_sq = sigma**2
        return (2.0 * math.pi / volume) * (sigma_sq[:, None] + sigma_sq[None, :])
    heights, height = _slab_geometry(positions, cell)
    gaps = (heights[:, None] - heights[None, :]) ** 2
    return -(2.0 * math.pi / volume) * (gaps + height**2 / 6.0)


def _rank_terms_potential(charges, positions, cell, sigma, boundary, background):
    """The same terms applied to ``charges`` (n, c) without forming a matrix."""
    volume = torch.abs(torch.linalg.det(cell))
    total = charges.sum(0, keepdim=True)
    if boundary == "periodic" and background == "point":
        return torch.zeros_like(charges)
    if boundary == "periodic":
        sigma_sq = sigma[:, None] ** 2
        return (2.0 * math.pi / volume) * (sigma_sq * total + (sigma_sq * charges).sum(0, keepdim=True))
    heights, height = _slab_geometry(positions, cell)
    z = heights[:, None]
    # sum_j (z_i - z_j)^2 q_j = z_i^2 Q - 2 z_i M + sum_j z_j^2 q_j
    first_moment = (z * charges).sum(0, keepdim=True)
    second_moment = (z**2 * charges).sum(0, keepdim=True)
    gaps = z**2 * total - 2.0 * z * first_moment + second_moment
    return -(2.0 * math.pi / volume) * (gaps + height**2 / 6.0 * total)


def _snapshot(tensors):
    return tuple(None if t is None else t.clone() for t in tensors)


def _same_tensors(first, second) -> bool:
    """Whether two tuples of tensors (or None) hold the same values, position by position."""
    return all((a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
               for a, b in zip(first, second))


class _RealSpacePairs:
    """Real-space pairs of the Gaussian-minus-Ewald kernel for one fixed geometry.

    Images are taken along all three cell vectors, slabs included: the reciprocal sum is
    the 3D-periodic one, so its real-space complement must be too (the slab correction is
    added on top). The cutoff follows the smearing, which for a slab's vacuum-diluted
    density can exceed the cell height; images along the normal then matter.
    """

    def __init__(self, positions, cell, parameters: EwaldParameters):
        self.smearing = parameters.smearing
        self.first, self.second, self.shifts = neighbor_pairs(positions, cell, (True, True, True), parameters.cutoff)

    def kernel(self, positions, cell, sigma) -> torch.Tensor:
        r""":math:`[\operatorname{erf}(r/\sqrt2 g) - \operatorname{erf}(r/\sqrt2 s)]/r` per pair, 1/Angstrom."""
        distances = _safe_norm(pair_vectors(positions, cell, self.first, self.second, self.shifts))
        widths = torch.sqrt(sigma[self.first] ** 2 + sigma[self.second] ** 2)
        smearing = torch.full_like(widths, self.smearing)
        return gaussian_coulomb_kernel(distances, widths) - gaussian_coulomb_kernel(distances, smearing)


def _ewald_calculator(parameters: EwaldParameters, like: torch.Tensor):
    potential = torchpme.CoulombPotential(smearing=parameters.smearing)
    # lr_wavelength is unused: the k-vectors (a full sphere |k| <= k_c) are passed in.
    calculator = torchpme.EwaldCalculator(potential, lr_wavelength=1.0, full_neighbor_list=True)
    return calculator.to(device=like.device, dtype=like.dtype)


class MeshReciprocal:
    r"""Point-charge reciprocal-space potential on a mesh: PME or P3M, from torch-pme's
    public library (``torchpme.lib``).

    Charges are spread onto a mesh (:class:`torchpme.lib.MeshInterpolator`), the mesh is
    filtered in Fourier space with the kernel
    :math:`\hat v(k) = 4\pi e^{-s^2 k^2/2} / k^2` of :class:`torchpme.CoulombPotential`
    (:class:`torchpme.lib.KSpaceFilter`), and the potential is interpolated back at the
    atoms; the point self term and the neutralising background are subtracted as in
    torch-pme's own calculators:

    .. math::

        \phi_i = \frac{1}{V}\,\mathcal I\big[\mathcal F^{-1} \hat v\, \mathcal F\,
                 \mathcal S(q)\big]_i - q_i \frac{\sqrt{2/\pi}}{s} - \frac{2\pi s^2}{V} Q

    (:math:`\mathcal S` spreads, :math:`\mathcal I` interpolates, :math:`s` the smearing,
    :math:`V` the volume, :math:`Q` the total charge.)

    ``"pme"`` interpolates with Lagrange polynomials of
    :data:`~hipqeq.qeq.ewald.PME_INTERPOLATION_NODES` nodes: accurate, but only
    continuous across mesh cells, so its forces jump and MD heats up (torch-pme's own
    advice). ``"p3m"`` assigns with B-splines of
    :data:`~hipqeq.qeq.ewald.P3M_INTERPOLATION_NODES` nodes (continuous derivatives)
    and filters with the optimal influence function of Hockney and Eastwood
    (:class:`torchpme.lib.P3MKSpaceFilter`).

    torch-pme's calculators redo the mesh set-up (kernel on the mesh, interpolation
    weights) at every call; inside a solve (no autograd, same positions and cell) only
    the charges change, so this class does that set-up once per geometry (it halves the
    cost of a product: see the README's benchmark). With autograd enabled it recomputes
    the set-up, which must then be differentiated.

    :param method: ``"pme"`` or ``"p3m"``.
    :param parameters: smearing and mesh spacing (Angstrom).
    :param like: a tensor whose device and dtype the mesh takes.
    """

    def __init__(self, method: str, parameters: EwaldParameters, like: torch.Tensor):
        lib = torchpme.lib
        self.mesh_spacing = parameters.mesh_spacing
        self.potential = torchpme.CoulombPotential(smearing=parameters.smearing).to(like.device, like.dtype)
        cell = torch.eye(3, device=like.device, dtype=like.dtype)
        ns_mesh = torch.ones(3, dtype=torch.int64, device=like.device)
        if method == "pme":
            self.interpolator = lib.MeshInterpolator(cell, ns_mesh, PME_INTERPOLATION_NODES, method="Lagrange")
            self.filter = lib.KSpaceFilter(cell, ns_mesh, kernel=self.potential, fft_norm="backward",
                                           ifft_norm="forward")
        elif method == "p3m":
            self.interpolator = lib.MeshInterpolator(cell, ns_mesh, P3M_INTERPOLATION_NODES, method="P3M")
            self.filter = lib.P3MKSpaceFilter(cell, ns_mesh, P3M_INTERPOLATION_NODES, kernel=self.potential,
                                              fft_norm="backward", ifft_norm="forward", mode=0,
                                              differential_order=2)
        else:
            raise HipqeqError(f"mesh method must be 'pme' or 'p3m', got {method!r}")
        self.interpolator.to(like.device, like.dtype)
        self.filter.to(like.device, like.dtype)
        self._geometry = None

    def _set_geometry(self, positions: torch.Tensor, cell: torch.Tensor) -> None:
        key = (positions, cell, positions._version, cell._version)
        cached = self._geometry
        if (not torch.is_grad_enabled() and cached is not None and cached[0] is positions
                and cached[1] is cell and cached[2:] == key[2:]):
            return
        ns_mesh = mesh_points(cell, self.mesh_spacing)
        self.interpolator.update(cell, ns_mesh)
        self.filter.update(cell, ns_mesh)
        self.interpolator.compute_weights(positions)
        # With autograd the set-up belongs to this call's graph: never reuse it.
        self._geometry = None if torch.is_grad_enabled() else key

    def __call__(self, charges: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """Potential (n_atoms, c) in 1/Angstrom per unit charge of ``charges`` (n_atoms, c)."""
        self._set_geometry(positions, cell)
        mesh = self.filter.forward(self.interpolator.points_to_mesh(particle_weights=charges))
        inverse_volume = torch.abs(torch.linalg.det(cell)).pow(-1)
        potential = self.interpolator.mesh_to_points(mesh) * inverse_volume
        potential = potential - charges * self.potential.self_contribution()
        return potential - 2.0 * self.potential.background_correction() * charges.sum(0) * inverse_volume


def _ewald_reciprocal(calculator, charges, positions, cell, kvectors) -> torch.Tensor:
    """Point-charge Ewald reciprocal potential (n, c) in 1/Angstrom per unit charge, over
    ``kvectors`` (torch-pme's public ``EwaldCalculator.forward``).

    torch-pme returns :math:`V_i = \\tfrac12 \\sum_j q_j v(r_{ij})` (the factor 1/2 makes
    :math:`\\sum_i q_i V_i` the energy); the potential is twice that. The real-space part
    is skipped (empty neighbour list): it is done here together with the Gaussian terms.
    """
    no_pairs = torch.zeros((0, 2), dtype=torch.int64, device=positions.device)
    no_distances = torch.zeros(0, dtype=positions.dtype, device=positions.device)
    return 2.0 * calculator(
        charges=charges,
        cell=cell,
        positions=positions,
        neighbor_indices=no_pairs,
        neighbor_distances=no_distances,
        kvectors=kvectors,
    )


def _reciprocal_matrix(positions, cell, parameters: EwaldParameters) -> torch.Tensor:
    r"""Point-charge Ewald reciprocal part of :math:`A / k_e`, (n, n) in 1/Angstrom: the
    potential torch-pme's ``EwaldCalculator`` gives for unit charges, with its kernel
    :math:`G(k)`, self term and background (:class:`torchpme.CoulombPotential`), built
    as two matrix products,

    .. math::

        \frac{1}{V}\big(C^{\mathsf T} G C + S^{\mathsf T} G S\big)
        - \frac{\sqrt{2/\pi}}{s}\,\mathbb 1 - \frac{2\pi s^2}{V}\,\mathbf 1 \mathbf 1^{\mathsf T},
        \qquad C_{ki} = \cos \mathbf k \cdot \mathbf r_i,\ S_{ki} = \sin \mathbf k \cdot \mathbf r_i

    rather than torch-pme's k-space sum applied to the columns of an identity (which
    multiplies by that identity, forward and backward), over half the k-vectors.
    """
    potential = torchpme.CoulombPotential(smearing=parameters.smearing).to(positions.device, positions.dtype)
    # The sum is even in k: one of each pair +-k, counted twice.
    kvectors = ewald_kvectors(cell, parameters.kspace_cutoff, half=True)
    kernel = 2.0 * potential.lr_from_k_sq((kvectors**2).sum(1))[:, None]
    phases = kvectors @ positions.T
    cosines, sines = torch.cos(phases), torch.sin(phases)
    inverse_volume = torch.abs(torch.linalg.det(cell)).pow(-1)
    matrix = (cosines.T @ (kernel * cosines) + sines.T @ (kernel * sines)) * inverse_volume
    identity = torch.eye(positions.shape[0], dtype=positions.dtype, device=positions.device)
    return matrix - potential.self_contribution() * identity - 2.0 * potential.background_correction() * inverse_volume


def coulomb_matrix(
    positions: torch.Tensor,
    sigma: torch.Tensor,
    cell: torch.Tensor | None = None,
    boundary: str = "open",
    tolerance: float = DEFAULT_TOLERANCE,
    parameters: EwaldParameters | None = None,
    background: str = DEFAULT_BACKGROUND,
) -> torch.Tensor:
    r"""Dense Gaussian-charge Coulomb matrix :math:`A` (eV/e^2) of one system.

    :param positions: (n_atoms, 3), Angstrom.
    :param sigma: (n_atoms,) Gaussian widths, Angstrom.
    :param cell: (3, 3) lattice vectors as rows, Angstrom (periodic and slab).
    :param boundary: ``"open"``, ``"periodic"`` or ``"slab"`` (see module docstring).
    :param tolerance: accuracy of the periodic sums (dimensionless).
    :param parameters: explicit Ewald parameters, overriding ``tolerance``.
    :param background: ``"point"`` or ``"gaussian"``, a charged periodic cell's
        background convention (see module docstring).
    :return: (n_atoms, n_atoms) symmetric matrix, differentiable in positions, cell
        and sigma. Cost :math:`O(N^2)` memory and about :math:`O(N^2)` time.
    """
    _check_boundary(boundary, cell, background)
    if boundary == "open":
        return _open_matrix(positions, sigma)
    n_atoms = positions.shape[0]
    if parameters is None:
        parameters = dense_ewald_parameters(cell, n_atoms, float(sigma.detach().max()), tolerance)

    pairs = _RealSpacePairs(positions, cell, parameters)
    real = torch.zeros((n_atoms, n_atoms), dtype=positions.dtype, device=positions.device)
    real = real.index_put((pairs.first, pairs.second), pairs.kernel(positions, cell, sigma), accumulate=True)

    reciprocal = _reciprocal_matrix(positions, cell, parameters)
    self_term = torch.diag(1.0 / (sigma * math.sqrt(math.pi)))
    rank_terms = _rank_terms_matrix(positions, cell, sigma, boundary, background)
    matrix = reciprocal + real + self_term + rank_terms
    # Symmetric up to rounding; symmetrise so that solvers and gradients see exact symmetry.
    return COULOMB_EV_A * 0.5 * (matrix + matrix.T)


#: A plane wave of the charges enters the two-level preconditioner of the iterative
#: solve when its Coulomb energy is at least this many times its diagonal (self and
#: hardness) energy (:func:`long_wave_modes`).
LONG_WAVE_THRESHOLD = 1.0
#: Memory cap of those modes: (atoms x modes) float64 elements, here 160 MB.
LONG_WAVE_MAX_ELEMENTS = 20_000_000


@dataclass(frozen=True)
class LongWaveModes:
    r"""The long-wavelength part of a Coulomb matrix in closed form,
    :math:`A_{\mathrm{long}} \approx Z \operatorname{diag}(\gamma) Z^{\mathsf T}`.

    :param columns: (n_atoms, m) plane waves :math:`\cos \mathbf k \cdot \mathbf r_i`
        and :math:`\sin \mathbf k \cdot \mathbf r_i`, dimensionless.
    :param couplings: (m,) :math:`\gamma_k`, eV/e^2.
    """

    columns: torch.Tensor
    couplings: torch.Tensor


def long_wave_modes(positions: torch.Tensor, sigma: torch.Tensor, cell: torch.Tensor, boundary: str,
                    inverse_diagonal: torch.Tensor) -> LongWaveModes | None:
    r"""The plane waves of the charges that make a periodic QEq ill-conditioned, and their
    Coulomb couplings, for :func:`hipqeq.qeq.solvers.solve_iterative`'s preconditioner.

    A charge wave :math:`q_i = \cos \mathbf k \cdot \mathbf r_i` of a cell of volume
    :math:`V` has the Coulomb energy of its reciprocal term,
    :math:`\gamma_k = 8\pi k_e e^{-\bar\sigma^2 k^2} / (k^2 V)` per unit amplitude of its
    structure factor (:math:`\bar\sigma^2` the mean squared width): at small :math:`k`
    it dwarfs the diagonal :math:`D_i` (self term and hardness), and since the smallest
    :math:`k` falls as :math:`1/L`, the Jacobi-preconditioned condition number grows as
    :math:`L^2` and CG's iterations as :math:`L`. The waves with
    :math:`\gamma_k \sum_i D_i^{-1}/2 \ge` :data:`LONG_WAVE_THRESHOLD` are returned (the
    half set of :math:`\pm\mathbf k`, cosine and sine columns; at most
    :data:`LONG_WAVE_MAX_ELEMENTS` entries, the strongest first).

    Periodic cells use the 3D reciprocal lattice. A slab's atoms fill only part of its
    cell along the normal, where waves differing in :math:`k_z` are nearly the same
    charge pattern: it uses the in-plane vectors, each coupling summed over its column
    :math:`\mathbf k + n\mathbf b_3` weighted by :math:`|F(n)|^2`, the squared form factor
    :math:`F(n) = \frac1N\sum_i e^{i n \mathbf b_3 \cdot \mathbf r_i}` of the atoms'
    heights (the thin-slab limit gives :math:`2\pi k_e / (A k)` per unit area :math:`A`).
    Open systems have no such modes (``None``).

    :param inverse_diagonal: (n_atoms,) :math:`1/D_i`, e^2/eV.
    """
    if boundary == "open":
        return None
    positions, sigma, cell = positions.detach(), sigma.detach(), cell.detach()
    volume = float(torch.abs(torch.linalg.det(cell)))
    width_sq = float((sigma**2).mean())
    amplitude = float(inverse_diagonal.sum()) / 2.0  # sum_i cos^2(k.r_i) / D_i for a spread of atoms
    prefactor = 8.0 * math.pi * COULOMB_EV_A / volume
    # gamma_k * amplitude >= threshold bounds k, ignoring the Gaussian damping (3D), or
    # with the thin-slab coupling 2 pi k_e / (A k) (slabs).
    kspace_cutoff = math.sqrt(prefactor * amplitude / LONG_WAVE_THRESHOLD)
    if boundary == "slab":
        area = volume / float(_slab_geometry(positions, cell)[1])
        kspace_cutoff = max(kspace_cutoff, 4.0 * math.pi * COULOMB_EV_A * amplitude / (area * LONG_WAVE_THRESHOLD))
    kvectors = ewald_kvectors(cell, kspace_cutoff, half=True)
    if boundary == "periodic":
        k_sq = (kvectors**2).sum(1)
        couplings = prefactor * torch.exp(-width_sq * k_sq) / k_sq
    else:
        kvectors = kvectors[torch.abs(kvectors @ cell[2]) < math.pi]  # n_3 = 0: in-plane
        couplings = _slab_column_couplings(kvectors, positions, cell, width_sq, prefactor)
    keep = torch.nonzero(couplings * amplitude >= LONG_WAVE_THRESHOLD).reshape(-1)
    keep = keep[torch.argsort(couplings[keep], descending=True)]
    keep = keep[: LONG_WAVE_MAX_ELEMENTS // (2 * positions.shape[0])]
    if keep.numel() == 0:
        return None
    phases = positions @ kvectors[keep].T
    return LongWaveModes(torch.cat([torch.cos(phases), torch.sin(phases)], dim=1),
                         torch.cat([couplings[keep], couplings[keep]]))


def _slab_column_couplings(kvectors, positions, cell, width_sq, prefactor):
    """Couplings of in-plane waves summed over k + n b_3 (n up to where the Gaussian
    damping exp(-width_sq k^2) falls below e^-40), weighted by the heights' |F(n)|^2."""
    normal = 2.0 * math.pi * torch.linalg.inv(cell).T[2]
    n_max = math.ceil(math.sqrt(40.0 / width_sq) / float(torch.linalg.norm(normal)))
    orders = torch.arange(-n_max, n_max + 1, dtype=positions.dtype, device=positions.device)
    phases = orders[:, None] * (positions @ normal)[None, :]
    form_sq = torch.cos(phases).mean(1) ** 2 + torch.sin(phases).mean(1) ** 2
    shifted = kvectors[:, None, :] + orders[None, :, None] * normal
    k_sq = (shifted**2).sum(-1)
    return prefactor * (torch.exp(-width_sq * k_sq) / k_sq * form_sq).sum(1)


class CoulombOperator:
    r"""Matrix-free :math:`\phi = A q` for one fixed geometry (eV/e per charge).

    Periodic and slab systems use a sparse real-space part (pairs found once, at
    construction) plus a mesh reciprocal part, PME (``method="pme"``) or P3M
    (``method="p3m"``, smooth forces for MD), both :math:`O(N \log N)`
    (:class:`MeshReciprocal`), or an Ewald sum (``method="ewald"``, exactly the dense
    matrix's sums, :math:`O(N^{3/2})` at best); open systems use the dense direct sum. The geometry tensors are passed to
    :meth:`matvec` explicitly, so that the implicit-differentiation backward of the
    iterative solver can differentiate :math:`u^{\mathsf T} A(\theta) q` with respect to
    them. The pair list stays that of the construction geometry: rebuild the operator
    after moving atoms by more than a small fraction of the cutoff.

    :param positions: (n_atoms, 3), Angstrom.
    :param sigma: (n_atoms,) Gaussian widths, Angstrom.
    :param cell: (3, 3) lattice vectors as rows, Angstrom, or ``None`` for ``open``.
    :param boundary: ``"open"``, ``"periodic"`` or ``"slab"``.
    :param tolerance: accuracy of the periodic sums (dimensionless).
    :param method: ``"pme"``, ``"p3m"`` or ``"ewald"`` reciprocal sum (:data:`KSPACE_METHODS`).
    :param parameters: explicit Ewald parameters, overriding ``tolerance``.
    :param background: ``"point"`` or ``"gaussian"`` (see module docstring).
    """

    def __init__(
        self,
        positions: torch.Tensor,
        sigma: torch.Tensor,
        cell: torch.Tensor | None = None,
        boundary: str = "open",
        tolerance: float = DEFAULT_TOLERANCE,
        method: str = DEFAULT_KSPACE_METHOD,
        parameters: EwaldParameters | None = None,
        background: str = DEFAULT_BACKGROUND,
    ):
        _check_boundary(boundary, cell, background)
        if method not in KSPACE_METHODS:
            raise HipqeqError(f"Coulomb method must be one of {KSPACE_METHODS}, got {method!r}")
        self.boundary = boundary
        self.background = background
        self.method = method
        self._cached_kernel = None
        if boundary == "open":
            return
        n_atoms = positions.shape[0]
        max_sigma = float(sigma.detach().max())
        if parameters is None:
            if method == "ewald":
                parameters = dense_ewald_parameters(cell, n_atoms, max_sigma, tolerance)
            else:
                parameters = mesh_parameters(cell, n_atoms, max_sigma, tolerance, method)
        if method != "ewald" and parameters.mesh_spacing is None:
            raise HipqeqError(f"{method.upper()} needs EwaldParameters with a mesh_spacing")
        self.parameters = parameters
        self.pairs = _RealSpacePairs(positions, cell, parameters)
        if method == "ewald":
            self.calculator = _ewald_calculator(parameters, positions)
        else:
            self.calculator = MeshReciprocal(method, parameters, positions)

    def matvec(
        self,
        charges: torch.Tensor,
        positions: torch.Tensor,
        sigma: torch.Tensor,
        cell: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Potentials :math:`A q` (eV/e), shape of ``charges``: (n_atoms,) or (n_atoms, c)."""
        columns = charges if charges.dim() == 2 else charges[:, None]
        if self.boundary == "open":
            potential = _open_matrix(positions, sigma) @ columns
        else:
            potential = COULOMB_EV_A * self._periodic_potential(columns, positions, sigma, cell)
        return potential if charges.dim() == 2 else potential[:, 0]

    def _real_space_kernel(self, positions, sigma, cell):
        # The pair kernel depends on the geometry alone, and most products of a call see
        # one geometry (a solve's iterations; the shadow step's response products after
        # its differentiable one): keep the last kernel and reuse it for equal geometry
        # tensors. With autograd it is evaluated anew (its graph belongs to the call) and
        # its values kept for the products without autograd that follow.
        geometry = tuple(None if t is None else t.detach() for t in (positions, sigma, cell))
        if torch.is_grad_enabled():
            kernel = self.pairs.kernel(positions, cell, sigma)
            self._cached_kernel = (_snapshot(geometry), kernel.detach())
            return kernel
        cached = self._cached_kernel
        if cached is None or not _same_tensors(cached[0], geometry):
            self._cached_kernel = cached = (_snapshot(geometry), self.pairs.kernel(positions, cell, sigma))
        return cached[1]

    def _periodic_potential(self, charges, positions, sigma, cell):
        kernel = self._real_space_kernel(positions, sigma, cell)
        real = torch.zeros_like(charges).index_add(
            0, self.pairs.first, kernel[:, None] * charges[self.pairs.second]
        )
        if self.method == "ewald":
            kvectors = ewald_kvectors(cell, self.parameters.kspace_cutoff)
            reciprocal = _ewald_reciprocal(self.calculator, charges, positions, cell, kvectors)
        else:
            reciprocal = self.calculator(charges, positions, cell)
        self_term = charges / (sigma[:, None] * math.sqrt(math.pi))
        rank_terms = _rank_terms_potential(charges, positions, cell, sigma, self.boundary, self.background)
        return reciprocal + real + self_term + rank_terms

    def long_wave_modes(self, positions: torch.Tensor, sigma: torch.Tensor, cell: torch.Tensor | None,
                        hardness: torch.Tensor) -> LongWaveModes | None:
        """:func:`long_wave_modes` of this geometry, for hardness ``hardness`` (eV/e^2)."""
        inverse_diagonal = 1.0 / (self.diagonal_estimate(sigma) + hardness.detach())
        return long_wave_modes(positions, sigma, cell, self.boundary, inverse_diagonal)

    def diagonal_estimate(self, sigma: torch.Tensor) -> torch.Tensor:
        r"""Gaussian self term :math:`k_e / (\sigma_i \sqrt\pi)`, (n_atoms,) eV/e^2.

        The dominant part of :math:`A_{ii}`; used as a Jacobi preconditioner.
        """
        return COULOMB_EV_A / (sigma.detach() * math.sqrt(math.pi))


def electrostatic_energy(charges: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    r""":math:`E_{\mathrm{elec}} = \tfrac12 q^{\mathsf T} A q` in eV.

    :param charges: (..., n_atoms), e.
    :param matrix: (..., n_atoms, n_atoms) Coulomb matrix, eV/e^2.
    :return: (...) energies, eV.
    """
    return 0.5 * torch.einsum("...i,...ij,...j->...", charges, matrix, charges)


def qeq_energy(
    charges: torch.Tensor,
    potential: torch.Tensor,
    electronegativity: torch.Tensor,
    hardness: torch.Tensor,
) -> torch.Tensor:
    r"""Charge-equilibration energy from charges and their potentials :math:`\phi = A q`:

    .. math::

        E_{\mathrm{QEq}} = \sum_i \big(\tfrac12 q_i \phi_i + \chi_i q_i + \tfrac12 J_i q_i^2\big)

    :param charges: (..., n_atoms), e.
    :param potential: (..., n_atoms), eV/e.
    :param electronegativity: (..., n_atoms), eV/e.
    :param hardness: (..., n_atoms), eV/e^2.
    :return: (...) energies, eV.
    """
    per_atom = 0.5 * charges * potential + electronegativity * charges + 0.5 * hardness * charges**2
    return per_atom.sum(-1)
