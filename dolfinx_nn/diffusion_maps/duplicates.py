"""Exact and near-duplicate rows of a point cloud, merged at a tolerance set by the data.

Optimizer trajectories that stall, and data sets with repeated measurements, contain rows that
coincide or nearly coincide.  Estimators built on neighbour distances read such rows as
structure at a tiny scale: the maximum-likelihood dimension of a flat 2-torus with 400 of its
800 points repeated at a distance of 1e-10 drops from 2 to 0.6, and the steepest point of the
kernel sum (the automatic bandwidth) can jump to the scale of the copies.  Here such rows are
merged into one representative each, in three stages:

1. **exact** duplicates (``np.unique``);
2. **resolution**: rows closer than ``tol = rtol * s`` (``rtol`` default 1e-4), where ``s``
   is the median distance of the *groups that remain after merging at tol* to their ``k``-th
   nearest other group.  The scale is thus measured between distinct groups, never inside a
   cluster of copies, whatever its size (more than ``k`` copies of a point) and whatever the
   share of the rows it holds (an optimizer that stalled for most of its run).  ``tol`` is
   the largest fixed point of ``tol -> rtol * s(tol)``: starting from ``rtol`` times the
   extent of the cloud (divided by 10 while fewer than ``k + 1`` groups remain, so that one
   far outlier cannot make the rest a single group), each step merges afresh at the new
   tolerance until the number of groups stops changing.  A group is therefore kept merged
   only if its own single-linkage extent is below 1e-4 of the spacing of the distinct
   points.  For a genuine m-dimensional sample the chance that a point has a neighbour that
   close is about ``(k - 1) rtol^m`` (<= 2e-3 for m >= 1), so this stage removes what no
   estimator could resolve at the scale of the data and nothing else.  The inherent
   ambiguity: a genuine cluster 1e-5 wide whose distance to the rest is ~10 looks exactly like
   a stall (jittered copies of a point are such a cluster); it is merged into one point with
   its multiplicity.  Such fine structure is invisible to any bandwidth that also resolves
   the rest; analyse the cluster on its own (or pass ``merge=False`` to the estimators);
3. **excess of close pairs**: under the model behind the Levina-Bickel estimator (locally a
   Poisson process of dimension m), the ratio ``r = T_1 / T_k`` of a point's nearest to its
   k-th neighbour distance has the distribution ``F(r) = 1 - (1 - r^m)^(k - 1)``.  The
   one-sided Kolmogorov-Smirnov statistic ``D = max_r (N(r)/n - F(r))`` of the observed ratios
   detects a surplus of close pairs; where it is significant (``exp(-2 n D^2) < alpha``), pairs
   with a ratio below the arg-max are merged and the test is repeated.  The merge ratio is
   capped where ``F`` reaches ``max(cap, D / 2)`` (``cap`` = 0.05), at most 0.25: genuine
   neighbours below it are at most 5 % of the points, or half the surplus found.  The share
   of the surplus matters in 1D, where close genuine pairs are common: copies at 3 % of the
   spacing of points on a line have ratios near ``F = 0.1`` and a surplus ``D`` near 0.6,
   and a fixed 5 % cap left nearly all of them; a barely significant surplus (a clean but
   unlucky sample) keeps the 5 % cap.  ``m`` comes
   from the distances to neighbours 2..k-1 (the nearest is left out, so that the copies do not
   bias it: for Poisson points ``E sum_{j=2}^{k-1} log(T_k/T_j) = (k - 1 - H_{k-1}) / m`` with
   the harmonic number ``H``).  Where the copies are moved by more than about 5 % (1D) to
   10 % (2D and up) of the neighbour spacing they cannot be told from genuine neighbours and
   stay; in 1D the stage also merges some genuine close pairs along with the copies.

Merging is greedy (in row order, each kept row absorbs the not yet absorbed rows within its
tolerance), so chains of close rows are never collapsed into one.  Stages 2 and 3 run in
standardised units (:func:`~dolfinx_nn.diffusion_maps.kernel.standardise`), so the merge does
not depend on the origin or the units of the data (squared neighbour distances of data of
size 1e-300 would underflow).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from dolfinx_nn.diffusion_maps.kernel import nearest_neighbours, standardise

#: stage 2: merge rows closer than this fraction of the median k-th neighbour distance of
#: the merged groups (a fixed point)
RESOLUTION_RTOL = 1e-4
#: stage 3: significance level of the excess-of-close-pairs test
EXCESS_ALPHA = 1e-3
#: stage 3: at most this fraction of genuine nearest neighbours may fall below the merge ratio
#: (or EXCESS_CAP_SHARE of the surplus found, if larger, up to EXCESS_CAP_MAX)
EXCESS_CAP = 0.05
#: stage 3: share of the surplus of close pairs that genuine neighbours may add to the merge
EXCESS_CAP_SHARE = 0.5
#: stage 3: never more than this fraction of genuine nearest neighbours below the merge ratio
EXCESS_CAP_MAX = 0.25


@dataclass
class DistinctPoints:
    """The result of :func:`merge_near_duplicates`.

    Attributes:
        index: rows of the input that represent a group, shape (n_distinct,), increasing.
        labels: for every input row, the position in ``index`` of its representative.
        multiplicity: number of input rows per representative, shape (n_distinct,).
        exact: rows removed as exact duplicates.
        resolution_tol: absolute tolerance of stage 2 (data units), the fixed point.
        excess_ratios: merge ratios ``T_1/T_k`` of stage 3, one per round that merged.
    """

    index: np.ndarray
    labels: np.ndarray
    multiplicity: np.ndarray
    exact: int
    resolution_tol: float
    excess_ratios: list[float]

    @property
    def merged(self) -> int:
        """Number of input rows merged into another row."""
        return int(self.labels.size - self.index.size)

    def summary(self) -> dict:
        """JSON-friendly report of what was merged and at which tolerances."""
        return {
            "input_points": int(self.labels.size),
            "distinct_points": int(self.index.size),
            "exact_duplicates": int(self.exact),
            "near_duplicates": int(self.merged - self.exact),
            "resolution_tolerance": self.resolution_tol,
            "excess_merge_ratios": [float(r) for r in self.excess_ratios],
        }


def _greedy_keep(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Parent of every point after greedy merging along the given close pairs (no chaining)."""
    parent = np.arange(n)
    if rows.size == 0:
        return parent
    A = scipy.sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    A = (A + A.T).tocsr()
    kept = np.ones(n, dtype=bool)
    for i in np.flatnonzero(np.diff(A.indptr)):
        if not kept[i]:
            continue
        nbrs = A.indices[A.indptr[i] : A.indptr[i + 1]]
        nbrs = nbrs[(nbrs > i) & kept[nbrs]]
        kept[nbrs] = False
        parent[nbrs] = i
    return parent


def _merge_at(
    X: np.ndarray, rep: np.ndarray, labels: np.ndarray, tol: float, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy merging of the representatives ``rep`` closer than ``tol``, until none are.

    Each round looks at the ``k`` nearest representatives only, so a cluster of many more
    than ``k`` rows needs several rounds (each absorbs up to ``k`` rows per kept row); the
    rounds stop when no two representatives are within ``tol``, whatever the cluster sizes.
    """
    while rep.size > 1:
        kk = min(k, rep.size - 1)
        d2, idx = nearest_neighbours(X[rep], kk + 1)
        close = np.sqrt(d2[:, 1:]) <= tol
        if not close.any():
            break
        rows = np.repeat(np.arange(rep.size), kk)[close.ravel()]
        parent = _greedy_keep(rep.size, rows, idx[:, 1:].ravel()[close.ravel()])
        roots = np.flatnonzero(parent == np.arange(parent.size))
        position = np.full(parent.size, -1)
        position[roots] = np.arange(roots.size)
        labels = position[parent[labels]]
        rep = rep[roots]
    return rep, labels


def _group_scale(X: np.ndarray, rep: np.ndarray, k: int) -> float:
    """Median distance of the representatives to their ``k``-th nearest representative."""
    kk = min(k, rep.size - 1)
    d2, _ = nearest_neighbours(X[rep], kk + 1)
    return float(np.median(np.sqrt(d2[:, -1])))


def _resolution_fixed_point(
    X: np.ndarray, rep: np.ndarray, labels: np.ndarray, k: int, rtol: float, max_iter: int = 30
) -> tuple[float, np.ndarray, np.ndarray]:
    """Stage 2: the largest tolerance ``tol = rtol * scale(groups merged at tol)``.

    The scale is measured on the groups that remain after merging at ``tol`` (so copies,
    however many per point and whatever their share of the rows, do not set it).  Starting
    from ``rtol`` times the extent of the cloud, ``tol`` decreases to the largest fixed point;
    each step merges afresh from the distinct rows ``rep``.

    Returns:
        (tol, representatives, labels); tol = 0 when fewer than 4 distinct rows.
    """
    if rep.size < 4:
        return 0.0, rep, labels
    need = min(k + 1, rep.size)  # groups needed to measure a k-th neighbour distance
    tol = rtol * float(np.linalg.norm(np.ptp(X[rep], axis=0)))
    groups, group_labels = _merge_at(X, rep, labels, tol, k)
    while groups.size < need:  # too coarse (e.g. one far outlier sets the extent): go down
        tol /= 10.0
        groups, group_labels = _merge_at(X, rep, labels, tol, k)
    for _ in range(max_iter):
        new_tol = rtol * _group_scale(X, groups, k)
        if new_tol >= tol:
            break
        tol = new_tol
        previous = groups.size
        groups, group_labels = _merge_at(X, rep, labels, tol, k)
        if groups.size == previous:
            break
    return tol, groups, group_labels


def _robust_dimension(T: np.ndarray) -> float:
    """Dimension from neighbours 2..k-1 relative to the k-th (T: (n, k) sorted distances)."""
    k = T.shape[1]
    harmonic = float(np.sum(1.0 / np.arange(1, k)))
    logs = np.log(T[:, -1:] / T[:, 1:-1]).sum(axis=1)
    return (k - 1 - harmonic) / max(float(logs.mean()), 1e-300)


def merge_near_duplicates(
    X: np.ndarray,
    k: int = 20,
    rtol: float = RESOLUTION_RTOL,
    alpha: float = EXCESS_ALPHA,
    cap: float = EXCESS_CAP,
    max_rounds: int = 5,
) -> DistinctPoints:
    """Merge exact and near-duplicate rows of ``X`` (shape (n, D)); see the module docstring.

    Args:
        X: points as rows (float64, finite).
        k: neighbour rank that sets the local scale (as ``k2`` of the dimension estimator).
        rtol: stage-2 tolerance relative to the median ``k``-th neighbour distance of the
            merged groups.
        alpha: significance level of the stage-3 test (0 disables stage 3).
        cap: largest model probability ``F`` of a genuine neighbour below the merge ratio
            (raised to half the surplus found, at most ``EXCESS_CAP_MAX``).
        max_rounds: rounds of stage 3.

    Returns:
        The representatives and the map from rows to them.
    """
    n = X.shape[0]
    _, first, inverse = np.unique(X, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    order = np.argsort(first)  # representatives in row order
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    rep = first[order]  # current representatives (rows of X)
    labels = rank[inverse]  # row -> position in rep
    exact = n - rep.size
    units = standardise(X)
    X = units.points

    def merge(parent: np.ndarray) -> None:
        nonlocal rep, labels
        roots = np.flatnonzero(parent == np.arange(parent.size))
        position = np.full(parent.size, -1)
        position[roots] = np.arange(roots.size)
        labels = position[parent[labels]]
        rep = rep[roots]

    tol, rep, labels = _resolution_fixed_point(X, rep, labels, k, rtol)
    ratios: list[float] = []
    for _ in range(max_rounds if alpha > 0 else 0):
        m_pts = rep.size
        kk = min(k, m_pts - 1)
        if kk < 4:
            break
        d2, idx = nearest_neighbours(X[rep], kk + 1)
        T = np.sqrt(d2[:, 1:])
        m = _robust_dimension(T)
        ratio = T[:, 0] / T[:, -1]
        r = np.sort(ratio)
        F = 1.0 - (1.0 - r**m) ** (kk - 1)
        excess = np.arange(1, m_pts + 1) / m_pts - F
        i = int(np.argmax(excess))
        if np.exp(-2.0 * m_pts * excess[i] ** 2) >= alpha:
            break
        f_cap = min(EXCESS_CAP_MAX, max(cap, EXCESS_CAP_SHARE * float(excess[i])))
        r_cap = (1.0 - (1.0 - f_cap) ** (1.0 / (kk - 1))) ** (1.0 / m)
        r_merge = min(float(r[i]), r_cap)
        close = T <= r_merge * T[:, -1:]
        if not close.any():
            break
        rows = np.repeat(np.arange(m_pts), kk)[close.ravel()]
        merge(_greedy_keep(m_pts, rows, idx[:, 1:].ravel()[close.ravel()]))
        ratios.append(r_merge)
    multiplicity = np.bincount(labels, minlength=rep.size)
    return DistinctPoints(rep, labels, multiplicity, exact, tol * units.scale, ratios)
