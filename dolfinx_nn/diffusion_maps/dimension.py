"""Intrinsic dimension of a point cloud.

Default method ``"mle"``: the maximum-likelihood estimator of Levina & Bickel (2004) with
the correction of MacKay & Ghahramani (2005).  For neighbour distances
``T_1(x) <= ... <= T_k(x)`` of a point x, the local estimate is
``m_k(x) = [ (1/(k-1)) sum_{j<k} log(T_k(x) / T_j(x)) ]^-1``; the global estimate averages
the *inverse* local estimates over the points, inverts, averages over ``k = k1..k2`` and is
rounded to the nearest integer.  The estimators work on the distinct points centred and
scaled to unit size (:func:`~dolfinx_nn.diffusion_maps.kernel.standardise`), so they do not
depend on the origin or the units of the data.  Exact and near-duplicate rows are merged first
(:func:`~dolfinx_nn.diffusion_maps.duplicates.merge_near_duplicates`): a copy at distance
``delta`` makes ``log(T_k / T_1)`` as large as ``log(1 / delta)`` and drags the estimate to 0.

Alternative ``"kernel-sum"``: twice the logarithmic slope of the off-diagonal Gaussian kernel
sum ``sum_{i != j} exp(-|x_i - x_j|^2 / eps)`` (a Gaussian-kernel correlation integral,
Grassberger & Procaccia 1983) at the steepest point of the bandwidth rule; see
:mod:`~dolfinx_nn.diffusion_maps.bandwidth`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from dolfinx_nn.diffusion_maps.bandwidth import (
    BGH_NEIGHBOURS,
    bgh_steepest,
    kernel_sum_dimension_at,
)
from dolfinx_nn.diffusion_maps.duplicates import merge_near_duplicates
from dolfinx_nn.diffusion_maps.kernel import as_points, nearest_neighbours, standardise


def _distinct(X: np.ndarray, k: int, merge: bool) -> np.ndarray:
    """The distinct rows of ``X`` in standardised units (independent of origin and units)."""
    if not merge:
        return standardise(np.unique(X, axis=0)).points
    return standardise(X[merge_near_duplicates(X, k=k).index]).points


def mle_dimension(X: np.ndarray, k1: int = 10, k2: int = 20, merge: bool = True) -> float:
    """Levina-Bickel / MacKay-Ghahramani estimate (not rounded), averaged over k1..k2.

    Args:
        X: points, shape (n, D).
        k1, k2: range of neighbour counts.
        merge: merge near-duplicate rows first (exact duplicates are always merged).

    Raises:
        ValueError: fewer than ``k2 + 1`` distinct points, or bad ``k1``, ``k2``.
    """
    n = X.shape[0]
    if not 2 <= k1 <= k2 < n:
        raise ValueError(f"need 2 <= k1 <= k2 < n_points={n}; got k1={k1}, k2={k2}")
    X = _distinct(X, k2, merge)
    if X.shape[0] <= k2:
        raise ValueError(
            f"only {X.shape[0]} distinct points (after merging duplicates); need more than "
            f"k2={k2} to estimate a dimension"
        )
    d2, _ = nearest_neighbours(X, k2 + 1)
    logT = 0.5 * np.log(d2[:, 1:])  # drop the point itself
    estimates = []
    for k in range(k1, k2 + 1):
        inv_local = (logT[:, k - 1 : k] - logT[:, : k - 1]).mean(axis=1)  # 1 / m_k(x)
        estimates.append(1.0 / inv_local.mean())
    return float(np.mean(estimates))


def kernel_sum_dimension(X: np.ndarray, k: int = BGH_NEIGHBOURS, merge: bool = True) -> float:
    """Twice the slope of the off-diagonal log kernel sum at the automatic bandwidth.

    Args:
        X: points, shape (n, D).
        k: neighbours per point of the bandwidth rule.
        merge: merge near-duplicate rows first (exact duplicates are always merged).
    """
    X = _distinct(X, 20, merge)
    if X.shape[0] < 3:
        raise ValueError(f"need at least 3 distinct points; got {X.shape[0]}")
    d2, _ = nearest_neighbours(X, min(k, X.shape[0]))
    return kernel_sum_dimension_at(X, bgh_steepest(d2))


#: method name -> function(points) returning a real-valued dimension
DIMENSION_ESTIMATORS: dict[str, Callable[[np.ndarray], float]] = {
    "mle": mle_dimension,
    "kernel-sum": kernel_sum_dimension,
}


def estimate_dimension(X: np.ndarray | torch.Tensor, method: str = "mle", **options) -> int:
    """Intrinsic dimension of the point cloud ``X`` (rows are points), rounded to an integer.

    Args:
        X: points, shape (n, D).
        method: ``"mle"`` (Levina-Bickel, default) or ``"kernel-sum"``.
        **options: passed to the estimator (``k1``, ``k2`` for ``"mle"``; ``k`` otherwise;
            ``merge`` for both).

    Returns:
        The estimated dimension, at least 1.
    """
    if method not in DIMENSION_ESTIMATORS:
        valid = ", ".join(DIMENSION_ESTIMATORS)
        raise ValueError(f"unknown dimension estimator {method!r}; choose one of: {valid}")
    value = DIMENSION_ESTIMATORS[method](as_points(X), **options)
    return max(1, int(round(value)))
