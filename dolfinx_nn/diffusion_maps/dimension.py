"""Intrinsic dimension of a point cloud.

Default method ``"mle"``: the maximum-likelihood estimator of Levina & Bickel (2004) with
the correction of MacKay & Ghahramani (2005).  For neighbour distances
``T_1(x) <= ... <= T_k(x)`` of a point x, the local estimate is
``m_k(x) = [ (1/(k-1)) sum_{j<k} log(T_k(x) / T_j(x)) ]^-1``; the global estimate averages
the *inverse* local estimates over the points, inverts, averages over ``k = k1..k2`` and is
rounded to the nearest integer.

Alternative ``"kernel-sum"``: twice the largest slope of ``log S(eps)`` against
``log eps`` for the Gaussian kernel sum (Coifman et al. 2008), the same curve that picks
the automatic diffusion-map bandwidth.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from dolfinx_nn.diffusion_maps.kernel import (
    as_points,
    automatic_epsilon,
    knn_squared_distances,
    nearest_neighbours,
)


def mle_dimension(X: np.ndarray, k1: int = 10, k2: int = 20) -> float:
    """Levina-Bickel / MacKay-Ghahramani estimate (not rounded), averaged over k1..k2."""
    n = X.shape[0]
    if not 2 <= k1 <= k2 < n:
        raise ValueError(f"need 2 <= k1 <= k2 < n_points={n}; got k1={k1}, k2={k2}")
    d2, _ = nearest_neighbours(X, k2 + 1)
    T = np.sqrt(d2[:, 1:])  # drop the point itself
    T = T[np.all(T > 0, axis=1)]  # duplicated points carry no scale information
    if T.shape[0] < 2:
        raise ValueError("too many duplicated points to estimate a dimension")
    logT = np.log(T)
    estimates = []
    for k in range(k1, k2 + 1):
        inv_local = (logT[:, k - 1 : k] - logT[:, : k - 1]).mean(axis=1)  # 1 / m_k(x)
        estimates.append(1.0 / inv_local.mean())
    return float(np.mean(estimates))


def kernel_sum_dimension(X: np.ndarray, k: int = 64) -> float:
    """Twice the largest slope of the log kernel sum (not rounded), on a k-NN graph."""
    A = knn_squared_distances(X, min(k, X.shape[0]))
    return automatic_epsilon(A.data)[1]


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
        **options: passed to the estimator (``k1``, ``k2`` for ``"mle"``; ``k`` otherwise).

    Returns:
        The estimated dimension, at least 1.
    """
    if method not in DIMENSION_ESTIMATORS:
        valid = ", ".join(DIMENSION_ESTIMATORS)
        raise ValueError(f"unknown dimension estimator {method!r}; choose one of: {valid}")
    value = DIMENSION_ESTIMATORS[method](as_points(X), **options)
    return max(1, int(round(value)))
