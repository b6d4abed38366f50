"""Gaussian kernel matrices on point clouds: dense, k-nearest-neighbour sparse, and epsilon rule.

The kernel is ``k(x, y) = exp(-|x - y|^2 / epsilon)``.  The automatic bandwidth follows
Berry, Giannakis & Harlim (2015) and Coifman et al. (2008): for the kernel sum
``S(eps) = sum_ij k_eps(x_i, x_j)`` on a d-dimensional manifold, ``S ~ eps^(d/2)`` in the
intermediate range of bandwidths, so ``epsilon`` is chosen where the slope
``d log S / d log eps`` is largest; twice that slope estimates the intrinsic dimension.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.spatial
import torch

#: largest ambient dimension for which a k-d tree is used for neighbour search
KDTREE_MAX_DIM = 16


def as_points(
    X: np.ndarray | torch.Tensor, name: str = "X", min_points: int = 3
) -> np.ndarray:
    """Return ``X`` as a C-contiguous float64 array of shape (n, D), checked for NaN/inf."""
    if isinstance(X, torch.Tensor):
        X = X.detach().to("cpu", torch.float64).numpy()
    X = np.ascontiguousarray(np.asarray(X, dtype=np.float64))
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"{name} must have shape (n_points, dim); got shape {X.shape}")
    if X.shape[0] < min_points:
        raise ValueError(f"{name} needs at least {min_points} points; got {X.shape[0]}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or inf values")
    return X


def squared_distances(X: np.ndarray, Y: np.ndarray | None = None) -> np.ndarray:
    """Dense matrix of squared Euclidean distances between the rows of X and of Y (default X)."""
    Y = X if Y is None else Y
    d2 = scipy.spatial.distance.cdist(X, Y, metric="sqeuclidean")
    return d2


def nearest_neighbours(
    X: np.ndarray, k: int, Y: np.ndarray | None = None, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``X`` to each row of ``Y`` (default ``X``, self included).

    A k-d tree serves low ambient dimensions; otherwise a chunked brute-force search with
    torch (``cdist`` + ``topk``) keeps memory at ``chunk * n`` entries.

    Returns:
        (squared distances, indices), each of shape (len(Y), k), sorted by distance.
    """
    Y = X if Y is None else Y
    n = X.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of points {n}; got {k}")
    if X.shape[1] <= KDTREE_MAX_DIM:
        dist, idx = scipy.spatial.cKDTree(X).query(Y, k=k)
        dist, idx = dist.reshape(len(Y), k), idx.reshape(len(Y), k)
        return dist**2, idx
    Xt = torch.from_numpy(X)
    d2_all, idx_all = [], []
    for start in range(0, Y.shape[0], chunk):
        Yt = torch.from_numpy(Y[start : start + chunk])
        d2 = torch.cdist(Yt, Xt).square_()
        vals, idx = torch.topk(d2, k, dim=1, largest=False, sorted=True)
        d2_all.append(vals.numpy())
        idx_all.append(idx.numpy())
    return np.concatenate(d2_all), np.concatenate(idx_all)


def knn_squared_distances(X: np.ndarray, k: int) -> scipy.sparse.csr_matrix:
    """Symmetric sparse matrix of squared distances on the k-nearest-neighbour graph.

    An edge is kept when either point is among the other's ``k`` nearest neighbours; the
    diagonal (distance 0) is stored explicitly.
    """
    n = X.shape[0]
    d2, idx = nearest_neighbours(X, k)
    rows = np.repeat(np.arange(n), k)
    # store d2 + 1 so that explicit zeros (the diagonal) survive sparse arithmetic
    A = scipy.sparse.csr_matrix((d2.ravel() + 1.0, (rows, idx.ravel())), shape=(n, n))
    A = A.maximum(A.T).tocsr()
    A.data -= 1.0
    np.maximum(A.data, 0.0, out=A.data)
    return A


def kernel_sum_curve(
    d2: np.ndarray, n_pairs: float, n_eps: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """Slope ``d log S / d log eps`` of the kernel sum over a log-spaced range of bandwidths.

    Args:
        d2: squared distances of the pairs that enter the sum (zeros included or not).
        n_pairs: the number of pairs represented (used only to normalise S, not the slope).
        n_eps: number of bandwidths.

    Returns:
        (epsilons, slopes).
    """
    positive = d2[d2 > 0]
    if positive.size == 0:
        raise ValueError("all points coincide; the kernel bandwidth is undefined")
    lo, hi = np.log(positive.min()) - 2.0, np.log(positive.max()) + 2.0
    log_eps = np.linspace(lo, hi, n_eps)
    zeros = d2.size - positive.size
    # S(eps) / n_pairs, in log space
    log_s = np.array(
        [np.log((np.exp(-positive / np.exp(le)).sum() + zeros) / n_pairs) for le in log_eps]
    )
    slopes = np.gradient(log_s, log_eps)
    return np.exp(log_eps), slopes


def automatic_epsilon(d2: np.ndarray, max_pairs: int = 400_000) -> tuple[float, float]:
    """Bandwidth at the steepest point of ``log S(eps)`` and the dimension ``2 * slope`` there.

    Args:
        d2: squared distances (dense matrix, or the stored values of a kNN graph).
        max_pairs: above this many entries, a fixed random subset (seed 0) is used.

    Returns:
        (epsilon, dimension estimate).
    """
    d2 = np.asarray(d2, dtype=np.float64).ravel()
    if d2.size > max_pairs:
        d2 = np.random.default_rng(0).choice(d2, size=max_pairs, replace=False)
    eps, slopes = kernel_sum_curve(d2, float(d2.size))
    i = int(np.argmax(slopes))
    return float(eps[i]), float(2.0 * slopes[i])
