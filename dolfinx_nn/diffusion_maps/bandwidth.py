"""Automatic kernel bandwidth, kernel-sum dimension and the edges that keep the graph connected.

**Bandwidth** (Berry, Giannakis & Harlim, Phys. Rev. E 91, 032915, 2015; the ``bgh`` rule of
pydiffmap): for the Gaussian kernel sum ``S(eps) = sum_i sum_{j in N_k(i)} exp(-|x_i -
x_j|^2 / eps)`` over each point's ``k = 64`` nearest neighbours (itself included), ``epsilon``
is where ``d log S / d log eps`` is largest.  Restricting the sum to neighbourhoods keeps the
rule local: on all pairs, a noisy swiss roll's steepest point is the scale of the whole roll.
The rule runs on the distinct points (:mod:`~dolfinx_nn.diffusion_maps.duplicates`), so
repeated rows (a stalled optimizer's end point) cannot pull it to their own tiny scale, and in
standardised units (:func:`~dolfinx_nn.diffusion_maps.kernel.standardise`), so that it does
not depend on the origin or the units of the data.

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

**Kernel-sum dimension.**  On a d-dimensional manifold, ``sum_{i != j} exp(-|x_i - x_j|^2 /
eps)`` grows like ``eps^(d/2)`` (the Gaussian-kernel form of the correlation integral of
Grassberger & Procaccia, Phys. Rev. Lett. 50, 346, 1983), so twice its logarithmic slope at
the automatic bandwidth estimates d.  The older reading, twice the largest slope of ``S``
itself, is biased low: ``S`` contains the ``n`` diagonal terms, which at the steepest point
are still a sizable part of the sum, and it is truncated at the k-th neighbour.  The slope
has the closed form ``sum w_ij d_ij^2 / eps / sum w_ij`` with ``w_ij = exp(-d_ij^2 / eps)``;
it is computed over all pairs of up to 2000 random centres (seed 0) with every distinct point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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
    kernel_dimension: float
    distinct: DistinctPoints
    bridges: tuple[np.ndarray, np.ndarray, np.ndarray]

    def summary(self) -> dict:
        """JSON-friendly report of the choice."""
        lengths = np.sqrt(self.bridges[2])
        return {
            "epsilon": self.epsilon,
            "rule": f"steepest log kernel sum over {BGH_NEIGHBOURS} neighbours (BGH 2015)",
            "steepest_epsilon": squared_to_data_units(self.steepest_epsilon, self.scale),
            "epsilon_over_steepest": self.scaled_epsilon / self.steepest_epsilon,
            "slope_at_steepest": self.slope,
            "slope_standard_error": self.slope_error,
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
        epsilon: the chosen bandwidth (the steepest point).
        steepest: the steepest point ``eps*``.
        slope: the slope at ``eps*``.
        slope_error: its standard error over the points.
    """

    epsilon: float
    steepest: float
    slope: float
    slope_error: float


def bgh_choice(
    X: np.ndarray,
    k: int = BGH_NEIGHBOURS,
    max_pairs: int = 400_000,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
) -> BGHChoice:
    """Bandwidth rule of the module docstring: the steepest point of the log kernel sum.

    Args:
        X: distinct points, shape (n, D), in standardised units
            (:func:`~dolfinx_nn.diffusion_maps.kernel.standardise`).
        k: neighbours per point, the point itself included.
        max_pairs: above this many (point, neighbour) pairs a seeded random subset of the
            points is used.

    Returns:
        The choice, with the slope at the steepest point and its standard error.
        neighbours: the result of ``nearest_neighbours(X, k)`` if already computed.
    """
    d2, _ = neighbours if neighbours is not None else nearest_neighbours(X, min(k, X.shape[0]))
    if d2.size > max_pairs:
        rows = np.random.default_rng(0).choice(d2.shape[0], max_pairs // d2.shape[1], False)
        d2 = d2[np.sort(rows)]
    steepest = steepest_epsilon(d2.ravel())
    slope, error = kernel_sum_slope_error(d2, steepest)
    return BGHChoice(steepest, steepest, slope, error)


def bgh_epsilon(
    X: np.ndarray,
    k: int = BGH_NEIGHBOURS,
    max_pairs: int = 400_000,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
) -> float:
    """The automatic bandwidth of :func:`bgh_choice` (same arguments)."""
    return bgh_choice(X, k, max_pairs, neighbours).epsilon


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
        choice.slope, choice.slope_error, dimension, distinct, bridges,
    )
