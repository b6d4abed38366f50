"""Point clouds, neighbour search and Gaussian kernel sums.

The kernel is ``k(x, y) = exp(-|x - y|^2 / epsilon)``.  :func:`kernel_sum_curve` gives the
slope ``d log S / d log eps`` of a kernel sum over a range of bandwidths, from which
:mod:`~dolfinx_nn.diffusion_maps.bandwidth` picks the automatic bandwidth.

**Origin and units.**  Diffusion maps depend on the points only through their distances, and
are scale-equivariant: scaling the data by ``s`` scales ``epsilon`` by ``s^2`` and leaves
eigenvalues and eigenvectors unchanged.  In floating point neither holds by itself: a squared
distance computed as ``|x|^2 + |y|^2 - 2 x.y`` loses ``|x|^2 / |x - y|^2`` of its relative
precision to cancellation (an offset of 1e8 on a swiss roll moved its diffusion eigenvalues
by 2.6e-4), and squared distances of data of size 1e-300 underflow (of size 1e300,
overflow).  The estimators therefore work in standardised units (:func:`standardise`: the
data centred at their mean and divided by their RMS radius), and :func:`squared_distances`
centres its arguments itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize
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


@dataclass
class Standardised:
    """Points in standardised units: ``points = (X - centre) / scale``.

    Attributes:
        points: the standardised points, shape (n, D); RMS distance to the origin 1 (0 if
            all points coincide).
        centre: the mean of the input rows, shape (D,), data units.
        scale: the RMS distance of the input rows to their mean, data units (lengths in data
            units = lengths here * scale; squared lengths and bandwidths: * scale**2).
    """

    points: np.ndarray
    centre: np.ndarray
    scale: float

    def to_data_units(self, squared_length: float) -> float:
        """A squared length (e.g. a bandwidth) in the units of the data (may under/overflow)."""
        return squared_to_data_units(squared_length, self.scale)


def squared_to_data_units(squared_length: float, scale: float) -> float:
    """``squared_length * scale**2``, 0 or inf where out of floating-point range."""
    with np.errstate(over="ignore", under="ignore"):
        return float(np.float64(squared_length) * np.float64(scale) ** 2)


def standardise(X: np.ndarray) -> Standardised:
    """Centre the rows of ``X`` (shape (n, D), finite) and scale them to unit RMS radius.

    The data are first divided by the power of two ``2^e`` just above their largest
    magnitude (exact; the mean and the squares can then neither overflow nor underflow),
    centred at their mean and divided by their RMS distance to it.  Data scaled by ``s``
    (any ``s``) give the same standardised points up to rounding, and data shifted by an
    offset give the same points up to the rounding of ``X + offset`` itself and a common
    shift of the order of the rounding of the mean, which no distance sees.
    """
    peak = float(np.max(np.abs(X))) if X.size else 0.0
    if peak == 0.0:
        return Standardised(X.copy(), np.zeros(X.shape[1]), 1.0)
    e = int(np.frexp(peak)[1])
    Xs = np.ldexp(X, -e)
    centre = Xs.mean(axis=0)
    Z = Xs - centre
    rms = float(np.sqrt(np.mean(np.einsum("ij,ij->i", Z, Z))))
    if rms == 0.0:
        return Standardised(Z, np.ldexp(centre, e), float(np.ldexp(1.0, e)))
    return Standardised(Z / rms, np.ldexp(centre, e), float(np.ldexp(rms, e)))


def squared_distances(X: np.ndarray, Y: np.ndarray | None = None) -> np.ndarray:
    """Dense matrix of squared Euclidean distances between the rows of X and of Y (default X).

    Both are first centred at the mean ``c`` of the rows of X (the distances do not depend
    on the origin), then ``|x|^2 + |y|^2 - 2 x.y`` is computed with one matrix product
    (BLAS) and clipped at 0; the absolute round-off is about ``1e-16 max |x - c|^2``, far below
    any kernel bandwidth of data in standardised units (:func:`standardise`); the neighbour
    search, which must resolve near-duplicates, recomputes its distances exactly.  With
    ``Y`` omitted the diagonal is exactly 0.
    """
    same = Y is None
    centre = X.mean(axis=0)
    X = X - centre
    Y = X if Y is None else Y - centre
    d2 = (X * X).sum(axis=1)[:, None] + (Y * Y).sum(axis=1)[None, :]
    d2 -= 2.0 * (X @ Y.T)
    np.maximum(d2, 0.0, out=d2)
    if same:
        np.fill_diagonal(d2, 0.0)
    return d2


def nearest_neighbours(
    X: np.ndarray, k: int, Y: np.ndarray | None = None, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``X`` to each row of ``Y`` (default ``X``, self included).

    A k-d tree serves low ambient dimensions.  Otherwise a chunked brute-force search keeps
    memory at ``chunk * n`` entries: candidates from :func:`squared_distances` (a matrix
    product), then the distances to the ``k + 8`` best candidates recomputed exactly as sums
    of squared differences, so that near-duplicate rows get their true tiny distances.

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
    m = min(n, k + 8)
    d2_all, idx_all = [], []
    for start in range(0, Y.shape[0], chunk):
        Yc = Y[start : start + chunk]
        approx = squared_distances(Yc, X)
        cand = np.argpartition(approx, m - 1, axis=1)[:, :m] if m < n else np.tile(
            np.arange(n), (Yc.shape[0], 1))
        exact = np.empty(cand.shape)
        for j in range(m):  # one candidate column at a time: memory chunk * D
            diff = X[cand[:, j]] - Yc
            exact[:, j] = np.einsum("ij,ij->i", diff, diff)
        order = np.argsort(exact, axis=1, kind="stable")[:, :k]
        d2_all.append(np.take_along_axis(exact, order, axis=1))
        idx_all.append(np.take_along_axis(cand, order, axis=1))
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


def kernel_sum_slope(d2: np.ndarray, epsilon: float) -> float:
    """``d log S / d log eps`` at ``epsilon`` for ``S = sum exp(-d2 / eps)`` (zeros included).

    Closed form: ``sum (d2/eps) exp(-d2/eps) / sum exp(-d2/eps)``.
    """
    z = d2 / epsilon
    w = np.exp(-z)
    return float((z * w).sum() / w.sum())


def kernel_sum_slope_error(d2: np.ndarray, epsilon: float) -> tuple[float, float]:
    """Slope ``d log S / d log eps`` at ``epsilon`` and its standard error over the points.

    Args:
        d2: squared distances of each point (row) to its neighbours, shape (n, k).
        epsilon: the bandwidth.

    The slope is the ratio ``sum_i a_i / sum_i b_i`` of the per-point sums ``a_i = sum_j z_ij
    exp(-z_ij)`` and ``b_i = sum_j exp(-z_ij)``, ``z = d2 / eps``; with the points as the
    sampling units its standard error is that of a ratio estimator (delta method, Cochran,
    *Sampling Techniques*, 3rd ed. 1977, eq. 6.13): ``sqrt(sum_i (a_i - slope b_i)^2) /
    sum_i b_i``.  (Neighbourhoods overlap, so this somewhat underestimates the error.)
    """
    z = d2 / epsilon
    w = np.exp(-z)
    a, b = (z * w).sum(axis=1), w.sum(axis=1)
    slope = float(a.sum() / b.sum())
    return slope, float(np.sqrt(((a - slope * b) ** 2).sum()) / b.sum())


def steepest_epsilon(d2: np.ndarray) -> float:
    """The bandwidth where ``log S(eps)`` is steepest in ``log eps``.

    A log-spaced grid (:func:`kernel_sum_curve`) brackets the maximum, which is then located
    with a bounded scalar search on :func:`kernel_sum_slope`, so that the answer does not
    depend on where the grid points fall (the grid spans the range of the distances, and a
    single far outlier would otherwise shift the answer by a grid step).
    """
    eps, slopes = kernel_sum_curve(d2, float(d2.size))
    i = int(np.argmax(slopes))
    lo, hi = np.log(eps[max(i - 1, 0)]), np.log(eps[min(i + 1, eps.size - 1)])
    best = scipy.optimize.minimize_scalar(
        lambda le: -kernel_sum_slope(d2, np.exp(le)), bounds=(lo, hi), method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(best.x)) if -best.fun >= slopes[i] else float(eps[i])
