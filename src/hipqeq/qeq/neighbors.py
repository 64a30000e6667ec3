r"""Pairs of atoms within a cutoff, over periodic images, and a Verlet list with a skin.

A pair is ``(first, second, shift)``: atom ``second`` displaced by the integer lattice
translation ``shift`` lies within ``cutoff`` of atom ``first``:

.. math::

    \mathbf{r}_{ij} = \mathbf{r}_j - \mathbf{r}_i + \mathbf{n} \cdot \mathbf{C},
    \qquad |\mathbf{r}_{ij}| < r_c

where :math:`\mathbf{C}` holds the lattice vectors as rows (Angstrom). The list is
*full*: both ``(i, j, n)`` and ``(j, i, -n)`` appear. Periodic images of an atom with
itself (``i == j``, ``n != 0``) are included; the atom itself (``n = 0``) is not.
Cells smaller than the cutoff (or than twice the cutoff) are handled: every image within
range is generated (the tests compare with a brute-force search over images for
periodic, slab, open, skewed and small cells).

The search is vesin's cell list (``vesin-torch``, C++ on CPU and CUDA on GPU tensors,
:math:`O(N)`); the integer shifts carry no gradient, and distances are recomputed in
torch by :func:`pair_vectors`, which is differentiable with respect to positions and
cell. :class:`VerletNeighborList` keeps a list of pairs within ``cutoff + skin`` between
calls and searches again only when some atom has moved more than ``skin / 2``, or the
cell, the periodicity or the atoms changed (MD).
"""

from __future__ import annotations

import numpy as np
import torch
import vesin_torch

from hipqeq.errors import HipqeqError


def neighbor_pairs(
    positions: torch.Tensor | np.ndarray,
    cell: torch.Tensor | np.ndarray | None,
    pbc: tuple[bool, bool, bool] | list[bool],
    cutoff: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full list of pairs within ``cutoff`` (Angstrom), periodic images included.

    :param positions: (n_atoms, 3) Cartesian positions, Angstrom; need not be wrapped.
    :param cell: (3, 3) lattice vectors as rows, Angstrom; ignored (may be ``None``)
        when ``pbc`` is all False. The periodic vectors must be linearly independent.
    :param pbc: periodicity along each lattice vector.
    :param cutoff: pair cutoff, Angstrom.
    :return: ``first`` (n_pairs,) int64, ``second`` (n_pairs,) int64 and ``shifts``
        (n_pairs, 3) int64 lattice translations applied to ``second``; torch tensors on
        the device of ``positions`` (CPU for numpy input).
    """
    if cutoff <= 0.0:
        raise HipqeqError(f"neighbour cutoff must be positive, got {cutoff}")
    points = _as_tensor(positions).reshape(-1, 3)
    periodic = torch.tensor([bool(flag) for flag in pbc], device=points.device)
    if cell is None or not bool(periodic.any()):
        box = torch.zeros((3, 3), dtype=points.dtype, device=points.device)
    else:
        box = _as_tensor(cell).to(device=points.device, dtype=points.dtype).reshape(3, 3)
    try:
        first, second, shifts = vesin_torch.NeighborList(float(cutoff), True).compute(points, box, periodic, "ijS")
    except RuntimeError as error:
        raise HipqeqError(f"neighbour search failed for cell {box.tolist()} with pbc={tuple(periodic.tolist())}: "
                          f"{error}") from error
    return first.long(), second.long(), shifts.long()


class VerletNeighborList:
    r"""A neighbour list within ``cutoff + skin`` reused while it is provably complete.

    If no atom has moved more than ``skin / 2`` (Angstrom) since the list was built, no
    pair distance has changed by more than ``skin``, so every pair now within ``cutoff``
    was within ``cutoff + skin`` then and is in the list. The list is therefore a
    superset: callers keep the pairs closer than their own cutoff (as
    :meth:`hipqeq.models.potential.Potential.forward` does). A change of the number of
    atoms, of ``pbc`` or of the cell (NPT, a user edit) triggers a new search, as does
    wrapping atoms back into the cell (a jump of a lattice vector).

    :param cutoff: the largest cutoff the callers need, Angstrom.
    :param skin: extra range kept, Angstrom (0: search at every call).

    :attr:`builds` counts the searches done so far.
    """

    def __init__(self, cutoff: float, skin: float = 1.0):
        if cutoff <= 0.0:
            raise HipqeqError(f"neighbour cutoff must be positive, got {cutoff}")
        if skin < 0.0:
            raise HipqeqError(f"neighbour skin must not be negative, got {skin}")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.builds = 0
        self._reference = None
        self._pairs = None

    def pairs(self, positions, cell, pbc) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(first, second, shifts)`` of all pairs within ``cutoff`` (and possibly some
        up to ``cutoff + skin``), in the convention of :func:`neighbor_pairs`; arguments as
        there."""
        points = _as_tensor(positions).reshape(-1, 3)
        box = None if cell is None else _as_tensor(cell).reshape(3, 3).to(points)
        flags = tuple(bool(flag) for flag in pbc)
        if self._needs_build(points, box, flags):
            self._pairs = neighbor_pairs(points, box, flags, self.cutoff + self.skin)
            self._reference = (points.clone(), None if box is None else box.clone(), flags)
            self.builds += 1
        return self._pairs

    def _needs_build(self, points, box, flags) -> bool:
        if self._reference is None:
            return True
        reference_points, reference_box, reference_flags = self._reference
        if (flags != reference_flags or points.shape != reference_points.shape
                or points.device != reference_points.device or (box is None) != (reference_box is None)):
            return True
        if box is not None and any(flags) and not torch.equal(box, reference_box):
            return True
        moved = torch.linalg.norm(points - reference_points, dim=1).max() if len(points) else 0.0
        return bool(moved > 0.5 * self.skin)


def pair_vectors(
    positions: torch.Tensor,
    cell: torch.Tensor | None,
    first: torch.Tensor,
    second: torch.Tensor,
    shifts: torch.Tensor,
) -> torch.Tensor:
    r"""Pair vectors :math:`\mathbf{r}_j - \mathbf{r}_i + \mathbf{n}\cdot\mathbf{C}`.

    :param positions: (n_atoms, 3), Angstrom.
    :param cell: (3, 3) lattice vectors as rows, Angstrom, or ``None`` (open).
    :param first, second: (n_pairs,) atom indices.
    :param shifts: (n_pairs, 3) integer lattice translations.
    :return: (n_pairs, 3) vectors, Angstrom, differentiable in positions and cell.
    """
    vectors = positions[second] - positions[first]
    if cell is None:
        return vectors
    return vectors + shifts.to(positions.dtype) @ cell


def _as_tensor(array) -> torch.Tensor:
    """A detached tensor (float64 for numpy input; tensors keep device and dtype)."""
    if isinstance(array, torch.Tensor):
        return array.detach()
    return torch.as_tensor(np.asarray(array, dtype=np.float64))
