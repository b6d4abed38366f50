"""Automatic kernel bandwidth, kernel-sum dimension and the edges that keep the graph connected.

**Bandwidth** (Berry, Giannakis & Harlim, Phys. Rev. E 91, 032915, 2015; the ``bgh`` rule of
pydiffmap): ``epsilon`` is where ``d log S / d log eps`` of the Gaussian kernel sum ``S(eps) =
sum_ij exp(-|x_i - x_j|^2 / eps)`` is largest.  BGH define ``S`` over all pairs; on all pairs,
though, a noisy swiss roll's steepest point is the scale of the whole roll (the slope has no
maximum in the regime of the sheets, only a shoulder).  pydiffmap sums over each point's
``k = 64`` nearest neighbours (itself included) instead, which keeps the rule local, but then
the maximum is shaped by the truncation: for a d-dimensional sample it sits near a fixed
fraction of the squared k-th neighbour distance (about ``r_64^2 / 6`` in 2D), whatever the
geometry.  Where the 64-neighbourhoods reach across the gap between two sheets (a swiss roll
of 1000 points), that is a bandwidth at which the kernel already bridges the sheets (clean
roll, seed 1: ``eps = 6.2``, rank correlation 0.965 of ``psi_1`` with the roll parameter).
So the k-neighbour sum is used only where it *is* the kernel sum: ``epsilon`` maximises the
slope of the k-neighbour sum over the bandwidths at which the truncation changes the slope by
no more than its standard error (the slope of the sum over all pairs minus the truncated one,
both from up to :data:`TRUNCATION_CENTRES` random centres, seed 0; the standard error is that
of the slope as a ratio estimator over the centres,
:func:`~dolfinx_nn.diffusion_maps.kernel.kernel_sum_slope_error`).  Since the slope grows up
to its maximum, this is the steepest point itself where the truncation is invisible there,
and otherwise the largest bandwidth below it at which the bias equals the error.  On
pydiffmap's strips and on the trajectories of the ``diffmap`` experiments the steepest point
is kept; on swiss rolls of 1000-2000 points the rule takes 0.66-0.90 of it
(rolls of 1000 points: 4.1-4.6 instead of 5.4-6.2, smallest Spearman over seeds 0-9 0.993
instead of 0.631; docs/diffusion_maps.md has the table).  The rule runs on the distinct points
(:mod:`~dolfinx_nn.diffusion_maps.duplicates`), so repeated rows (a stalled optimizer's end
point) cannot pull it to their own tiny scale, and in standardised units
(:func:`~dolfinx_nn.diffusion_maps.kernel.standardise`), so that it does not depend on the
origin or the units of the data.

**Connectivity.**  A single global bandwidth leaves isolated points (an outlier, the few long
early steps of an optimizer trajectory) without neighbours, and their eigenvalues 1 swamp the
spectrum.  Raising ``epsilon`` until no point is isolated lets one outlier set the bandwidth
of every point.  Instead, the edges of the Euclidean minimum spanning tree (on the k-NN graph,
its components joined by their closest pairs, Boruvka-style) that are longer than twice the
kernel width ``sqrt(epsilon)`` get the weight ``exp(-4)`` of an edge of that length.  The graph
is then connected, and only those entries of the kernel change.  (Flooring at ``exp(-1)``
instead also alters well-connected but sparse regions: on pydiffmap's non-uniform 1D strip it
raises the eigenvector error from 0.005 to 0.011; a floor below ``exp(-9)`` leaves an outlier
next to a noisy swiss roll as its own component.)

**Kernel-sum dimension.**  At the steepest point of the k-neighbour sum (where BGH read the
dimension), not at the chosen ``epsilon``.  On a d-dimensional manifold,
``sum_{i != j} exp(-|x_i - x_j|^2 / eps)`` grows like ``eps^(d/2)`` (the Gaussian-kernel form
of the correlation integral of Grassberger & Procaccia, Phys. Rev. Lett. 50, 346, 1983), so
twice its logarithmic slope there estimates d.  The older reading, twice the largest slope of ``S``
itself, is biased low: ``S`` contains the ``n`` diagonal terms, which at the steepest point
are still a sizable part of the sum, and it is truncated at the k-th neighbour.  The slope
has the closed form ``sum w_ij d_ij^2 / eps / sum w_ij`` with ``w_ij = exp(-d_ij^2 / eps)``;
it is computed over all pairs of up to 2000 random centres (seed 0) with every distinct point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.sparse
import scipy.sparse.csgraph

from dolfinx_nn.diffusion_maps.duplicates import DistinctPoints, merge_near_duplicates
from dolfinx_nn.diffusion_maps.kernel import (
    kernel_sum_slope_error,
    nearest_neighbours,
    squared_distances,
    squared_to_data_units,
    standardise,
    steepest_epsilon,
)

#: neighbours per point in the bandwidth rule (pydiffmap's default k)
BGH_NEIGHBOURS = 64
#: spanning-tree edges longer than sqrt(BRIDGE_EXPONENT * epsilon) get the weight
#: exp(-BRIDGE_EXPONENT) (an edge of twice the kernel width); the kernel is unchanged elsewhere
BRIDGE_EXPONENT = 4.0
#: centres of the kernel-sum dimension (random subset above this many points)
DIMENSION_CENTRES = 2000
#: centres of the truncation check of the bandwidth rule (random subset above this many; all
#: points up to the size of the dense solver, so that one added outlier changes nothing)
TRUNCATION_CENTRES = 4000
#: pairs with d^2 > TRUNCATION_REACH * eps are left out of the full kernel sums of the
#: truncation check (their weight is below exp(-TRUNCATION_REACH) at every eps tried)
TRUNCATION_REACH = 40.0


@dataclass
class Bandwidth:
    """The automatic bandwidth of a point cloud and the edges that connect its graph.

    Attributes:
        epsilon: the bandwidth (kernel ``exp(-|x - y|^2 / epsilon)``), data units (it
            underflows to 0 or overflows to inf for data smaller than about 1e-154 or larger
            than 1e154; ``scaled_epsilon`` does not).
        scaled_epsilon: the bandwidth in standardised units (``epsilon / scale**2``).
        centre: the mean of the distinct points, data units, shape (D,).
        scale: the unit length of the standardised units (RMS radius of the distinct points,
            data units).
        steepest_epsilon: ``eps*``, the steepest point of the log kernel sum, standardised
            units.
        slope: the slope ``d log S / d log eps`` at ``eps*``.
        slope_error: its standard error.
        truncation_bias: the full minus the k-neighbour slope at ``steepest_epsilon``.
        kernel_dimension: twice the slope of the off-diagonal kernel sum at ``eps*``.
        distinct: the merged duplicates.
        bridges: (rows, cols, squared lengths in standardised units) of the spanning-tree
            edges longer than ``2 sqrt(epsilon)``, as rows of the input, each pair once.
    """

    epsilon: float
    scaled_epsilon: float
    centre: np.ndarray
    scale: float
    steepest_epsilon: float
    slope: float
    slope_error: float
    truncation_bias: float
    kernel_dimension: float
    distinct: DistinctPoints
    bridges: tuple[np.ndarray, np.ndarray, np.ndarray]

    def summary(self) -> dict:
        """JSON-friendly report of the choice."""
        lengths = np.sqrt(self.bridges[2])
        return {
            "epsilon": self.epsilon,
            "rule": (
                f"steepest log kernel sum over {BGH_NEIGHBOURS} neighbours (BGH 2015) where the "
                "truncation changes its slope by at most one standard error"
            ),
            "steepest_epsilon": squared_to_data_units(self.steepest_epsilon, self.scale),
            "epsilon_over_steepest": self.scaled_epsilon / self.steepest_epsilon,
            "slope_at_steepest": self.slope,
            "slope_standard_error": self.slope_error,
            "truncation_bias_at_steepest": self.truncation_bias,
            "unit_length": self.scale,
            "epsilon_in_units": self.scaled_epsilon,
            "kernel_dimension": self.kernel_dimension,
            "bridge_edges": int(lengths.size),
            "longest_bridge_over_sqrt_epsilon": (
                float(lengths.max() / np.sqrt(self.scaled_epsilon)) if lengths.size else 0.0
            ),
            "duplicates": self.distinct.summary(),
        }


@dataclass
class BGHChoice:
    """The bandwidth rule's result (units of the points it was given).

    Attributes:
        epsilon: the chosen bandwidth.
        steepest: the steepest point of the k-neighbour log kernel sum.
        slope: the slope at ``steepest``.
        slope_error: its standard error over the centres.
        truncation_bias: the full minus the truncated slope at ``steepest``.
    """

    epsilon: float
    steepest: float
    slope: float
    slope_error: float
    truncation_bias: float


def _centre_rows(n: int, centres: int) -> np.ndarray:
    if n <= centres:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, centres, replace=False))


def _full_pairs(
    X: np.ndarray, rows: np.ndarray, reach: float, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances ``< reach`` from the points ``rows`` to all points (flat, row ids)."""
    d2_all, ids = [], []
    for start in range(0, rows.size, chunk):
        d2 = squared_distances(X[rows[start : start + chunk]], X)
        r, c = np.nonzero(d2 < reach)
        d2_all.append(d2[r, c])
        ids.append(r + start)
    return np.concatenate(d2_all), np.concatenate(ids)


def _slope_of_pairs(d2: np.ndarray, ids: np.ndarray, n_rows: int, epsilon: float) -> float:
    z = d2 / epsilon
    w = np.exp(-z)
    return float(np.bincount(ids, z * w, n_rows).sum() / np.bincount(ids, w, n_rows).sum())


def bgh_steepest(d2: np.ndarray, max_pairs: int = 400_000) -> float:
    """The steepest point of the log kernel sum over given neighbour distances.

    Args:
        d2: squared distances of each point to its k nearest neighbours (itself included),
            shape (n, k), standardised units.
        max_pairs: above this many pairs a seeded random subset of them is used.
    """
    pairs = d2.ravel()
    if pairs.size > max_pairs:
        pairs = np.random.default_rng(0).choice(pairs, size=max_pairs, replace=False)
    return steepest_epsilon(pairs)


def bgh_choice(
    X: np.ndarray,
    k: int = BGH_NEIGHBOURS,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    centres: int = TRUNCATION_CENTRES,
    max_pairs: int = 400_000,
) -> BGHChoice:
    """Bandwidth rule of the module docstring: the steepest k-neighbour log kernel sum, where
    the truncation at the k-th neighbour changes the slope by at most its standard error.

    Args:
        X: distinct points, shape (n, D), in standardised units
            (:func:`~dolfinx_nn.diffusion_maps.kernel.standardise`).
        k: neighbours per point, the point itself included.
        neighbours: the result of ``nearest_neighbours(X, k)`` if already computed.
        centres: the slopes and the standard error are compared on at most this many
            random points (seed 0).
        max_pairs: above this many (point, neighbour) pairs the steepest point is found on a
            seeded random subset of them.

    Returns:
        The choice, with the steepest point, the slope there, its standard error and the
        truncation bias.
    """
    d2, _ = neighbours if neighbours is not None else nearest_neighbours(X, min(k, X.shape[0]))
    steepest = bgh_steepest(d2, max_pairs)
    rows = _centre_rows(X.shape[0], centres)
    knn = d2[rows]
    slope, error = kernel_sum_slope_error(knn, steepest)
    full, ids = _full_pairs(X, rows, TRUNCATION_REACH * steepest)

    def excess_bias(log_eps: float) -> float:
        eps = float(np.exp(log_eps))
        truncated, err = kernel_sum_slope_error(knn, eps)
        return _slope_of_pairs(full, ids, rows.size, eps) - truncated - err

    bias = _slope_of_pairs(full, ids, rows.size, steepest) - slope
    top = float(np.log(steepest))
    if bias <= error:
        return BGHChoice(steepest, steepest, slope, error, bias)
    low = top
    for _ in range(200):  # the bias vanishes faster than the error as eps -> 0
        low -= 0.25
        if excess_bias(low) <= 0.0:
            break
    else:
        return BGHChoice(steepest, steepest, slope, error, bias)
    root = scipy.optimize.brentq(excess_bias, low, top, xtol=1e-10)
    return BGHChoice(float(np.exp(root)), steepest, slope, error, bias)


def bgh_epsilon(
    X: np.ndarray, k: int = BGH_NEIGHBOURS, neighbours: tuple[np.ndarray, np.ndarray] | None = None
) -> float:
    """The automatic bandwidth of :func:`bgh_choice` (same arguments)."""
    return bgh_choice(X, k, neighbours).epsilon


def kernel_sum_dimension_at(
    X: np.ndarray, epsilon: float, centres: int = DIMENSION_CENTRES, chunk: int = 256
) -> float:
    """Twice ``d log sum_{i != j} exp(-d_ij^2/eps) / d log eps`` at ``epsilon`` (see module).

    Args:
        X: distinct points, shape (n, D), in standardised units.
        epsilon: the bandwidth.
        centres: at most this many rows ``i`` (a seeded random subset).
        chunk: rows per block of the distance computation.
    """
    n = X.shape[0]
    rows = np.arange(n)
    if n > centres:
        rows = np.sort(np.random.default_rng(0).choice(n, centres, replace=False))
    total = weighted = 0.0
    for start in range(0, rows.size, chunk):
        block = rows[start : start + chunk]
        d2 = squared_distances(X[block], X) / epsilon
        d2[np.arange(block.size), block] = np.inf  # leave out i = j
        w = np.exp(-d2)
        total += float(w.sum())
        weighted += float((w * np.where(np.isfinite(d2), d2, 0.0)).sum())
    if total == 0.0:
        raise ValueError("no two points are within the kernel's reach; epsilon is too small")
    return 2.0 * weighted / total


def _component_bridges(X: np.ndarray, labels: np.ndarray) -> scipy.sparse.csr_matrix:
    """One Boruvka round: the closest pair between each component and the rest (as lengths)."""
    n = X.shape[0]
    rows, cols, lengths = [], [], []
    for c in np.unique(labels):
        inside, outside = np.flatnonzero(labels == c), np.flatnonzero(labels != c)
        d2, idx = nearest_neighbours(X[outside], 1, X[inside])
        i = int(np.argmin(d2[:, 0]))
        rows.append(inside[i])
        cols.append(outside[idx[i, 0]])
        lengths.append(np.sqrt(d2[i, 0]))
    return scipy.sparse.csr_matrix((lengths, (rows, cols)), shape=(n, n))


def spanning_tree_edges(
    X: np.ndarray, k: int, neighbours: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Euclidean minimum spanning tree on the k-NN graph of distinct points, made connected.

    Args:
        X: distinct points, shape (n, D), in standardised units.
        k: neighbours per point of the graph.
        neighbours: the result of ``nearest_neighbours(X, k)`` if already computed.

    Returns:
        (rows, cols, squared lengths) of the ``n - 1`` tree edges.
    """
    n = X.shape[0]
    d2, idx = neighbours if neighbours is not None else nearest_neighbours(X, min(k, n))
    rows = np.repeat(np.arange(n), d2.shape[1])
    keep = idx.ravel() != rows
    G = scipy.sparse.csr_matrix(
        (np.sqrt(d2.ravel()[keep]), (rows[keep], idx.ravel()[keep])), shape=(n, n)
    )
    G = G.maximum(G.T)
    n_comp, labels = scipy.sparse.csgraph.connected_components(G, directed=False)
    while n_comp > 1:
        B = _component_bridges(X, labels)
        G = G.maximum(B).maximum(B.T).tocsr()
        n_comp, labels = scipy.sparse.csgraph.connected_components(G, directed=False)
    T = scipy.sparse.csgraph.minimum_spanning_tree(G).tocoo()
    return T.row.astype(np.int64), T.col.astype(np.int64), T.data**2


def automatic_bandwidth(X: np.ndarray, k: int = BGH_NEIGHBOURS) -> Bandwidth:
    """Bandwidth, kernel-sum dimension and connecting edges of the point cloud ``X``.

    Everything is computed on the distinct points in standardised units (centred, scaled
    to unit RMS radius; :func:`~dolfinx_nn.diffusion_maps.kernel.standardise`),
    so that the result does not depend on the origin and is equivariant under scaling
    (``epsilon`` scales by ``s**2``).

    Args:
        X: points, shape (n, D), finite.
        k: neighbours per point of the bandwidth rule and of the spanning-tree graph.

    Raises:
        ValueError: all points coincide.
    """
    distinct = merge_near_duplicates(X)
    if distinct.index.size < 2:
        raise ValueError("all points coincide; the kernel bandwidth is undefined")
    units = standardise(X[distinct.index])
    Xd = units.points
    neighbours = nearest_neighbours(Xd, min(k, Xd.shape[0]))
    choice = bgh_choice(Xd, k, neighbours=neighbours)
    epsilon = choice.epsilon
    dimension = kernel_sum_dimension_at(Xd, choice.steepest)
    rows, cols, d2 = spanning_tree_edges(Xd, k, neighbours=neighbours)
    long = d2 > BRIDGE_EXPONENT * epsilon
    bridges = (distinct.index[rows[long]], distinct.index[cols[long]], d2[long])
    return Bandwidth(
        units.to_data_units(epsilon), epsilon, units.centre, units.scale, choice.steepest,
        choice.slope, choice.slope_error, choice.truncation_bias, dimension, distinct, bridges,
    )
