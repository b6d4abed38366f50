"""Choosing the surrogate's scales from the data: spectral ridge GCV and a grid pattern search.

Every surrogate of :mod:`~dolfinx_nn.discovery.surrogate` is linear in its output weights once
its *scales* are fixed (the input scale of random features, the Legendre degree in time, the
length scales of Gaussian kernels).  For a design matrix ``H`` with singular values ``s_i`` and
projected data ``p_i = (U^T y)_i``, the ridge fit with Tikhonov parameter ``lam`` has

    hat eigenvalues      h_i = s_i^2 / (s_i^2 + lam),
    residual             ||y||^2 - sum_i (2 h_i - h_i^2) p_i^2,
    degrees of freedom   sum_i h_i,

so the generalised cross-validation error (Golub, Heath & Wahba, *Technometrics* 21, 1979)

    GCV(lam) = n^-1 ||y - H w_lam||^2 / (1 - dof / n)^2

costs one pass over the spectrum per ``lam`` (:func:`ridge_gcv`).  The scales themselves are
chosen on a grid by :func:`pattern_search`: starting from a cell, the untested neighbours along
each axis are scored (in parallel over the MPI ranks) and the search moves to the best one
until no neighbour improves: a coordinate pattern search (Hooke & Jeeves, *J. ACM* 8, 1961).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence

from mpi4py import MPI

import numpy as np

__all__ = ["RidgeChoice", "pattern_search", "ridge_gcv"]

#: Default grid of relative Tikhonov parameters (multiples of the mean squared singular value).
RIDGE_GRID: tuple[float, ...] = tuple(float(10.0**k) for k in range(-14, 0))


@dataclasses.dataclass(frozen=True)
class RidgeChoice:
    """The Tikhonov parameter with the smallest GCV error, and what it gives."""

    ridge: float  # relative to the mean squared singular value
    gcv: float  # GCV error (mean squared)
    sse: float  # residual sum of squares
    dof: float  # effective number of parameters


def ridge_gcv(
    sigma2: np.ndarray,
    proj2: np.ndarray,
    total: float,
    n: int,
    grid: Sequence[float] = RIDGE_GRID,
) -> RidgeChoice:
    """GCV over ``grid`` for a ridge problem given in spectral form.

    Args:
        sigma2: squared singular values of the design (any shape; zeros allowed).
        proj2: squared projections of the data onto the left singular vectors, same shape.
        total: ``||y||^2``.
        n: number of data values.
        grid: Tikhonov parameters relative to ``mean(sigma2)``.

    Returns:
        The :class:`RidgeChoice` with the smallest GCV error (the first one on ties).
    """
    scale = float(np.mean(sigma2)) or 1.0
    best = None
    for ridge in grid:
        denominator = sigma2 + ridge * scale
        h = np.divide(sigma2, denominator, out=np.zeros_like(sigma2), where=denominator > 0)
        sse = max(total - float(np.sum((2.0 * h - h * h) * proj2)), 0.0)
        dof = float(np.sum(h))
        gcv = sse / n / max(1.0 - dof / n, 1e-12) ** 2
        if best is None or gcv < best.gcv:
            best = RidgeChoice(float(ridge), gcv, sse, dof)
    assert best is not None
    return best


def _finite(value: float) -> float:
    value = float(value)
    return value if np.isfinite(value) else np.inf


def pattern_search(
    shape: Sequence[int],
    score: Callable[[tuple[int, ...]], float],
    start: Sequence[int],
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> tuple[tuple[int, ...], dict[tuple[int, ...], float]]:
    """Minimise ``score`` over the cells of a grid by coordinate pattern search.

    The neighbours (one step along each axis) of the current cell that have not been scored
    are scored, divided among the ranks of ``comm``; the search moves to the best cell seen
    so far and stops when the current cell is the best among its neighbours.  Every rank
    returns the same result.

    Args:
        shape: number of grid values per axis.
        score: cell index -> error (smaller is better); called on one rank per cell.
        start: the first cell.
        comm: ranks that share the scoring.

    Returns:
        The best cell and every scored cell with its error.
    """
    shape = tuple(int(s) for s in shape)
    if any(s < 1 for s in shape) or len(start) != len(shape):
        raise ValueError(f"bad grid {shape} or start {tuple(start)}")
    current = tuple(min(max(int(i), 0), s - 1) for i, s in zip(start, shape, strict=True))
    scores: dict[tuple[int, ...], float] = {}
    pending = [current]
    while pending:
        mine = {cell: _finite(score(cell)) for cell in pending[comm.rank :: comm.size]}
        for part in comm.allgather(mine):
            scores.update(part)
        best = min(scores, key=lambda c: (scores[c], c))
        if best == current and len(scores) > 1:
            break
        current = best
        neighbours = []
        for axis, step in itertools.product(range(len(shape)), (-1, 1)):
            cell = list(current)
            cell[axis] += step
            if 0 <= cell[axis] < shape[axis] and tuple(cell) not in scores:
                neighbours.append(tuple(cell))
        pending = neighbours
    return current, scores
