"""Diffusion maps and dimension estimates on inputs the shipped examples avoid: near-duplicate
rows, an outlier, hundreds of copies of one point, and the bias of the kernel-sum dimension.
Pure numpy: replicated on every rank."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from sklearn.datasets import make_swiss_roll

from dolfinx_nn.diffusion_maps import DiffusionMap
from dolfinx_nn.diffusion_maps.bandwidth import automatic_bandwidth
from dolfinx_nn.diffusion_maps.dimension import kernel_sum_dimension, mle_dimension
from dolfinx_nn.diffusion_maps.duplicates import merge_near_duplicates


def _flat_torus(n: int, rng: np.random.Generator) -> np.ndarray:
    a, b = rng.uniform(0, 2 * np.pi, (2, n))
    return np.c_[np.cos(a), np.sin(a), np.cos(b), np.sin(b)]


def _sphere(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    g = rng.standard_normal((n, dim + 1))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def _with_copies(X: np.ndarray, idx: np.ndarray, delta: float, rng) -> np.ndarray:
    v = rng.standard_normal((idx.size, X.shape[1]))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return np.r_[X, X[idx] + delta * v]


def test_near_duplicates_leave_the_mle_dimension_of_a_torus_at_two():
    """800 points of a flat 2-torus in R^4 and 400 copies moved by delta in random directions.

    Without merging the estimate is 0.57 (delta = 1e-12) ... 1.55 (delta = 1e-2); merged, it
    stays within 0.01 of the clean 1.98 (docs/diffusion_maps.md has the sweep over seeds).
    """
    rng = np.random.default_rng(0)
    X = _flat_torus(800, rng)
    clean = mle_dimension(X)
    for delta in (1e-12, 1e-8, 1e-4, 1e-2):
        Y = _with_copies(X, rng.choice(800, 400, replace=False), delta, rng)
        assert mle_dimension(Y, merge=False) < clean - 0.4  # the failure this guards against
        assert abs(mle_dimension(Y) - clean) < 0.05, delta
        merged = merge_near_duplicates(Y)
        assert 395 <= merged.merged <= 410, delta
        assert merged.multiplicity.sum() == Y.shape[0]


def test_genuine_close_pairs_of_a_random_curve_are_kept():
    """In 1D, close pairs are common (P(gap < 5 % of the mean) ~ 5 %): they must stay."""
    rng = np.random.default_rng(1)
    s = rng.uniform(0, 1, 2000)
    X = np.c_[np.cos(2 * np.pi * s), np.sin(4 * np.pi * s), s]
    merged = merge_near_duplicates(X)
    assert merged.merged <= 10 and not merged.excess_ratios
    assert abs(mle_dimension(X) - mle_dimension(X, merge=False)) < 0.01
    assert merge_near_duplicates(_flat_torus(800, rng)).merged == 0


def _noisy_swiss_roll():
    """pydiffmap's noisy swiss roll: 1500 points, noise 0.5 (scikit-learn's generator)."""
    return make_swiss_roll(1500, noise=0.5, random_state=0)


def test_automatic_bandwidth_orders_the_noisy_swiss_roll_and_ignores_outliers():
    """pydiffmap reaches a rank correlation 0.999 of psi_1 with the roll parameter here.

    One far outlier, 300 copies of the end point of the roll and 300 copies moved by 1e-10
    must neither move epsilon (previously: the outlier raised it through the nearest-neighbour
    floor, the near copies pulled it to their own scale) nor spoil the ordering.
    """
    X, t = _noisy_swiss_roll()
    end = X[np.argmax(t)]
    rng = np.random.default_rng(2)
    variants = {
        "plain": X,
        "outlier": np.r_[X, [[60.0, 10.0, 0.0]]],
        "copies": np.r_[X, np.repeat(end[None], 300, axis=0)],
        "near copies": np.r_[X, end + 1e-10 * rng.standard_normal((300, 3))],
    }
    fits = {name: DiffusionMap(2).fit(variants[name]) for name in ("plain", "outlier")}
    for name, dm in fits.items():
        rho = abs(scipy.stats.spearmanr(dm.eigenvectors_[:1500, 0], t).statistic)
        assert rho > 0.99, (name, rho)
        assert dm.eigenvalues_[0] < 1.0 - 1e-4, name  # one connected graph, no split-off part
    eps = fits["plain"].epsilon_
    assert fits["outlier"].epsilon_ == pytest.approx(eps, rel=1e-3)
    assert fits["outlier"].bandwidth_.summary()["bridge_edges"] == 1  # one tree edge attaches it
    for name in ("copies", "near copies"):  # same distinct points: the same kernel, up to rows
        bandwidth = automatic_bandwidth(variants[name])
        assert bandwidth.epsilon == pytest.approx(eps, rel=1e-12), name
        assert bandwidth.distinct.merged == 300


def test_copies_of_a_trajectory_end_point_do_not_move_epsilon():
    """An SGD-like path (steps shrinking geometrically, noise around it) in R^50."""
    rng = np.random.default_rng(3)
    steps = 0.3 * 0.995 ** np.arange(600)
    direction = np.cumsum(rng.standard_normal((600, 50)) * 0.05 + 1.0, axis=0)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    path = np.cumsum(steps[:, None] * direction, axis=0)
    path += 0.2 * steps[:, None] * rng.standard_normal(path.shape)
    base = DiffusionMap(3).fit(path)
    rho = abs(scipy.stats.spearmanr(base.eigenvectors_[:, 0], np.arange(600)).statistic)
    assert rho > 0.99
    # exact copies here; near copies (1e-10, 1e-7) in test_a_stall_of_twice_the_path_length...
    dm = DiffusionMap(3).fit(np.r_[path, np.repeat(path[-1:], 300, axis=0)])
    assert dm.epsilon_ == pytest.approx(base.epsilon_, rel=1e-6)
    assert dm.bandwidth_.distinct.merged == 300


def test_kernel_sum_dimension_is_not_biased_low():
    """Twice the steepest slope of the kernel sum with its diagonal read 1.81, 1.80 and 3.0
    here; the off-diagonal slope at the same bandwidth reads 2.01, 1.99, 3.91 (docs)."""
    rng = np.random.default_rng(4)
    for X, truth, tol in ((_flat_torus(2000, rng), 2.0, 0.05), (_sphere(2000, 2, rng), 2.0, 0.05),
                          (_sphere(2000, 4, rng), 4.0, 0.2)):
        assert abs(kernel_sum_dimension(X) - truth) < tol, truth
        assert abs(mle_dimension(X) - truth) < tol, truth


def test_far_new_points_are_rejected_by_the_nystrom_extension():
    X = _flat_torus(200, np.random.default_rng(5))
    dm = DiffusionMap(2, epsilon=0.05).fit(X)
    with pytest.raises(ValueError, match="too far from the training points"):
        dm.transform(np.array([[100.0, 0.0, 0.0, 0.0]]))


@pytest.mark.parametrize("copies", [21, 30])
def test_more_near_copies_per_point_than_neighbours_are_merged(copies):
    """300 torus points, each repeated ``copies`` times at 1e-9 (more copies than the k = 20
    neighbours that set the scale; previously nothing merged: MLE 2.58 / 3.09, eps 2e-18).

    The representatives differ from the clean points by ~1e-9, so MLE and epsilon agree with
    the clean ones to ~1e-8; the spread of the clean MLE over seeds (~0.03) is far larger.
    """
    rng = np.random.default_rng(0)
    T = _flat_torus(300, rng)
    B = np.repeat(T, copies, axis=0) + 1e-9 * rng.standard_normal((300 * copies, 4))
    merged = merge_near_duplicates(B)
    assert merged.merged == 300 * (copies - 1)
    assert np.all(merged.multiplicity == copies)
    assert mle_dimension(B) == pytest.approx(mle_dimension(T), rel=1e-6)
    assert automatic_bandwidth(B).epsilon == pytest.approx(automatic_bandwidth(T).epsilon,
                                                           rel=1e-6)


def test_a_stall_of_twice_the_path_length_is_merged():
    """A 500-step noisy path in R^50 plus 1000 copies of its end point (two thirds of the
    rows stalled; previously eps fell to 2.5e-19).  Copies at 1e-10 and at 1e-7 both merge."""
    rng = np.random.default_rng(0)
    s = np.linspace(0, 1, 500)
    P = np.c_[np.cos(3 * s), np.sin(3 * s), s**2, np.zeros((500, 47))]
    P += 2e-3 * rng.standard_normal(P.shape)
    eps = automatic_bandwidth(P).epsilon
    for delta in (1e-10, 1e-7):
        Z = np.r_[P, P[-1] + delta * rng.standard_normal((1000, 50))]
        dm = DiffusionMap(2).fit(Z)
        assert dm.bandwidth_.distinct.merged == 1000, delta
        assert dm.epsilon_ == pytest.approx(eps, rel=1e-6), delta
        rho = abs(scipy.stats.spearmanr(dm.eigenvectors_[:500, 0], s).statistic)
        assert rho >= 0.99, (delta, rho)


def test_copies_at_three_percent_of_the_spacing_of_a_line_are_merged():
    """800 points on a line in R^3 (mean spacing 3e-3) and 400 copies moved by 1e-4
    (previously 14 merged, MLE 0.88).  In 1D, genuine close pairs are common, so the merge
    stops where the copies no longer stand out: 376 of the copies join their original, 40
    genuine close pairs go too.  Over seeds 1..8 the MLE stays within 0.035 of the clean one."""
    rng = np.random.default_rng(1)
    t = rng.uniform(0, 1, 800)
    X = np.c_[t, 2 * t, -t]
    rng = np.random.default_rng(2)
    v = rng.standard_normal((400, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    chosen = rng.choice(800, 400, replace=False)
    Y = np.r_[X, X[chosen] + 1e-4 * v]
    merged = merge_near_duplicates(Y)
    assert np.count_nonzero(merged.labels[800:] == merged.labels[chosen]) >= 360
    assert 400 <= merged.merged <= 440
    assert abs(mle_dimension(Y) - mle_dimension(X)) < 0.05


def test_far_outlier_and_fine_blob():
    """An outlier at 1e6 next to a swiss roll of size 30 must not make the roll one group; a
    blob 1e-6 of its distance to the rest wide is one group (the documented choice)."""
    X, _ = _noisy_swiss_roll()
    assert merge_near_duplicates(np.r_[X, [[1e6, 0.0, 0.0]]]).merged == 0
    rng = np.random.default_rng(1)
    B = np.r_[rng.standard_normal((1000, 2)), 1e-5 * rng.standard_normal((1000, 2)) + 10]
    merged = merge_near_duplicates(B)
    assert merged.merged == 999 and merged.multiplicity.max() == 1000
