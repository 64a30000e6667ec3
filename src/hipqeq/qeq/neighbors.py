r"""Pairs of atoms within a cutoff, over periodic images.

A pair is ``(first, second, shift)``: atom ``second`` displaced by the integer lattice
translation ``shift`` lies within ``cutoff`` of atom ``first``:

.. math::

    \mathbf{r}_{ij} = \mathbf{r}_j - \mathbf{r}_i + \mathbf{n} \cdot \mathbf{C},
    \qquad |\mathbf{r}_{ij}| \le r_c

where :math:`\mathbf{C}` holds the lattice vectors as rows (Angstrom). The list is
*full*: both ``(i, j, n)`` and ``(j, i, -n)`` appear. Periodic images of an atom with
itself (``i == j``, ``n != 0``) are included; the atom itself (``n = 0``) is not.
Cells smaller than the cutoff (or than twice the cutoff) are handled: every image within
range is generated.

The search runs in numpy/scipy (a k-d tree over the atoms and their nearby images),
so it costs :math:`O(N \log N)`; the integer shifts carry no gradient, and distances are
recomputed in torch by :func:`pair_vectors`, which is differentiable with respect to
positions and cell.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from scipy.spatial import cKDTree

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
        when ``pbc`` is all False. For partly periodic systems the non-periodic vectors
        must still span space (any vector along the normal will do).
    :param pbc: periodicity along each lattice vector.
    :param cutoff: pair cutoff, Angstrom.
    :return: ``first`` (n_pairs,) int64, ``second`` (n_pairs,) int64 and ``shifts``
        (n_pairs, 3) int64 lattice translations applied to ``second``; torch tensors on
        the device of ``positions`` (CPU for numpy input).
    """
    device = positions.device if isinstance(positions, torch.Tensor) else torch.device("cpu")
    pos = _as_numpy(positions).reshape(-1, 3)
    pbc_arr = np.asarray(pbc, dtype=bool)
    if cutoff <= 0.0:
        raise HipqeqError(f"neighbour cutoff must be positive, got {cutoff}")
    if pbc_arr.any():
        first, second, shifts = _periodic_pairs(pos, _as_numpy(cell).reshape(3, 3), pbc_arr, cutoff)
    else:
        first, second, shifts = _open_pairs(pos, cutoff)
    as_long = lambda array: torch.as_tensor(array, dtype=torch.int64, device=device)  # noqa: E731
    return as_long(first), as_long(second), as_long(shifts)


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


def _as_numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().to("cpu", torch.float64).numpy()
    return np.asarray(array, dtype=np.float64)


def _open_pairs(pos: np.ndarray, cutoff: float):
    half = cKDTree(pos).query_pairs(cutoff, output_type="ndarray")
    first = np.concatenate([half[:, 0], half[:, 1]])
    second = np.concatenate([half[:, 1], half[:, 0]])
    return first, second, np.zeros((len(first), 3), dtype=np.int64)


def _periodic_pairs(pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float):
    if abs(np.linalg.det(cell)) < 1e-12:
        raise HipqeqError("cell is singular; a partly periodic cell still needs three vectors")
    inverse = np.linalg.inv(cell)
    # Wrap along periodic axes so that images within `cutoff` lie in a thin shell
    # around the cell; the wrap is undone in the returned shifts.
    fractional = pos @ inverse
    wrap = np.where(pbc, np.floor(fractional), 0.0).astype(np.int64)
    wrapped = (fractional - wrap) @ cell

    # Plane spacing d_k = 1 / |b_k| (b_k: columns of the inverse cell) bounds how many
    # images along axis k can come within `cutoff`.
    spacing = 1.0 / np.linalg.norm(inverse, axis=0)
    reach = np.where(pbc, cutoff / spacing, 0.0)
    n_max = np.ceil(reach).astype(np.int64)
    images = np.array(
        list(itertools.product(*(range(-n, n + 1) for n in n_max))), dtype=np.int64
    )

    wrapped_fractional = fractional - wrap
    ghost_fractional = wrapped_fractional[None, :, :] + images[:, None, :]
    inside = np.all(
        ~pbc | ((ghost_fractional >= -reach) & (ghost_fractional <= 1.0 + reach)), axis=-1
    )
    image_index, atom_index = np.nonzero(inside)
    ghost_positions = ghost_fractional[image_index, atom_index] @ cell

    found = cKDTree(wrapped).sparse_distance_matrix(
        cKDTree(ghost_positions), cutoff, output_type="ndarray"
    )
    first = found["i"].astype(np.int64)
    ghost = found["j"].astype(np.int64)
    second = atom_index[ghost]
    shifts = images[image_index[ghost]]
    not_self = (first != second) | np.any(shifts != 0, axis=1)
    first, second, shifts = first[not_self], second[not_self], shifts[not_self]
    # wrapped_j + n.C - wrapped_i = r_j - r_i + (n - wrap_j + wrap_i).C
    shifts = shifts - wrap[second] + wrap[first]
    return first, second, shifts
