"""Diffusion maps on the published test cases of pydiffmap and datafold, at their tolerances.

The cases are rebuilt here from the peers' test suites (pydiffmap ``tests/test_diffusionmap.py``
and ``conftest.py``; datafold ``datafold/dynfold/tests/test_dmap.py`` and ``test_helper.py``);
neither package is needed.  Conventions: pydiffmap's kernel is ``exp(-d^2 / (4 eps))`` and it
reports eigenvalues of the generator ``(P - I) / eps``, so its ``eps`` is our ``epsilon / 4``
and its eigenvalues are ``4 (lambda - 1) / epsilon``; datafold's kernel is
``exp(-d^2 / (2 eps))`` (our ``epsilon = 2 eps``) and it reports Markov eigenvalues including
the trivial 1.  Pure numpy: replicated on every rank.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.stats
from sklearn.datasets import make_swiss_roll

from dolfinx_nn.diffusion_maps import DiffusionMap


def _generator_eigenvalues(dm: DiffusionMap) -> np.ndarray:
    """pydiffmap's eigenvalues of (P - I) / eps_pd with eps_pd = epsilon / 4."""
    return 4.0 * (dm.eigenvalues_ - 1.0) / dm.epsilon_


def _max_rel(values: np.ndarray, exact: np.ndarray) -> float:
    return float(np.max(np.abs((values - exact) / exact)))


def _min_corr(functions, vectors: np.ndarray) -> float:
    return min(abs(np.corrcoef(f, vectors[:, j])[0, 1]) for j, f in enumerate(functions))


def test_pydiffmap_strips():
    """1D strip [0, 2 pi], 81 points, with pydiffmap's eps and with the automatic one ('bgh'
    there): Neumann eigenvalues -(k/2)^2 within rel. 0.05 (k = 20 neighbours), eigenvectors
    cos(k x / 2) with 1 - |corr| < 0.003 (k = 40).  Quadratically graded samples (alpha = 1
    removes the density): eigenvalues within 0.1, eigenvectors < 0.01 (k = 40)."""
    exact = -0.25 * np.array([1.0, 4.0, 9.0, 16.0])
    x = np.linspace(0.0, 1.0, 81) * 2.0 * np.pi
    modes = [np.cos(0.5 * (k + 1) * x) for k in range(4)]
    for epsilon in (4 * 0.002, "auto"):
        dm = DiffusionMap(4, epsilon=epsilon, method="sparse", k=20).fit(x[:, None])
        assert _max_rel(_generator_eigenvalues(dm), exact) < 0.05, epsilon
        if dm.bandwidth_ is not None:  # the 20 neighbours hold the kernel: the steepest point
            assert dm.bandwidth_.scaled_epsilon == dm.bandwidth_.steepest_epsilon
        dm = DiffusionMap(4, epsilon=epsilon, method="sparse", k=40).fit(x[:, None])
        assert 1.0 - _min_corr(modes, dm.eigenvectors_) < 3e-3, epsilon
    x = np.linspace(0.0, 1.0, 81) ** 2 * 2.0 * np.pi
    modes = [np.cos(0.5 * (k + 1) * x) for k in range(4)]
    for epsilon in (4 * 0.005, "auto"):
        dm = DiffusionMap(4, epsilon=epsilon, method="sparse", k=40).fit(x[:, None])
        assert _max_rel(_generator_eigenvalues(dm), exact) < 0.1, epsilon
        assert 1.0 - _min_corr(modes, dm.eigenvectors_) < 0.01, epsilon


def test_pydiffmap_rectangle_and_sphere():
    """2D strip [0, 2 pi] x [0, pi] on a 61 x 31 grid (eigenvalues -[1, 4, 4, 5]/4 within 0.2,
    eigenvectors < 0.01; eps = 0.0025, k = 100) and a 60 x 31 latitude-longitude grid on the
    unit sphere (eigenvalues -l(l+1) = -[2, 2, 2, 6] within 0.1; eps = 0.015, k = 400)."""
    X, Y = (a.ravel() for a in np.meshgrid(np.linspace(0, 1, 61) * 2 * np.pi,
                                           np.linspace(0, 1, 31) * np.pi))
    dm = DiffusionMap(4, epsilon=4 * 0.0025, method="sparse", k=100).fit(np.c_[X, Y])
    assert _max_rel(_generator_eigenvalues(dm), -0.25 * np.array([1.0, 4.0, 4.0, 5.0])) < 0.2
    modes = [np.cos(0.5 * X), np.cos(Y), np.cos(X), np.cos(0.5 * X) * np.cos(Y)]
    assert 1.0 - _min_corr(modes, dm.eigenvectors_) < 0.01

    phi, theta = (a.ravel() for a in np.meshgrid(np.pi * np.linspace(-1, 1, 61)[1:],
                                                 np.pi * np.linspace(-1, 1, 33)[1:-1]))
    S = np.c_[np.cos(theta) * np.cos(phi), np.cos(theta) * np.sin(phi), np.sin(theta)]
    dm = DiffusionMap(4, epsilon=4 * 0.015, method="sparse", k=400).fit(S)
    assert _max_rel(_generator_eigenvalues(dm), -np.array([2.0, 2.0, 2.0, 6.0])) < 0.1


def test_automatic_bandwidth_orders_datafolds_swiss_roll():
    """datafold's roll, make_swiss_roll(1000, random_state=1) (clean; also noise 0.5, seeds 0
    and 1): the steepest point of the 64-neighbour kernel sum (6.19; 5.16, 5.42) lets the
    kernel bridge the sheets, Spearman(psi_1, roll parameter) 0.965 (0.63, 0.68).  There the
    sum over all pairs has a larger slope than the truncated one by far more than its
    standard error; the rule keeps to where they agree (4.49; 4.27, 4.48).  Over seeds 0..9
    the smallest Spearman is 0.999 clean and 0.993 noisy (docs/diffusion_maps.md)."""
    for noise, seed in ((0.0, 1), (0.5, 0), (0.5, 1)):
        X, t = make_swiss_roll(1000, noise=noise, random_state=seed)
        dm = DiffusionMap(2).fit(X)
        rho = abs(scipy.stats.spearmanr(dm.eigenvectors_[:, 0], t).statistic)
        assert rho > 0.99, (noise, seed, rho)
        summary = dm.bandwidth_.summary()
        assert summary["truncation_bias_at_steepest"] > 2 * summary["slope_standard_error"]
        assert 0.65 < summary["epsilon_over_steepest"] < 0.9
        previous = DiffusionMap(2, epsilon=summary["steepest_epsilon"]).fit(X)
        assert abs(scipy.stats.spearmanr(previous.eigenvectors_[:, 0], t).statistic) < 0.97


def test_datafold_dense_and_sparse_swiss_roll_agree():
    """datafold ``test_sanity_dense_sparse``: make_swiss_roll(1000, random_state=1), eps 1.25,
    11 eigenpairs, the sparse kernel keeping every pair; eigenvalues rtol 1e-13, atol 1e-14."""
    data, _ = make_swiss_roll(1000, random_state=1)
    dense = DiffusionMap(10, epsilon=2 * 1.25, method="dense").fit(data)
    sparse = DiffusionMap(10, epsilon=2 * 1.25, method="sparse", k=1000, tol=0.0).fit(data)
    np.testing.assert_allclose(sparse.eigenvalues_, dense.eigenvalues_, rtol=1e-13, atol=1e-14)


def test_datafold_swiss_roll_against_the_non_symmetric_eigenproblem():
    """datafold ``test_swiss_roll_dataset``: make_swiss_roll(1000, noise=0.01, random_state=1),
    eps 1.25, 11 eigenpairs, compared with ``cmp_eigenpairs`` (rtol 1e-10, atol 1e-15) against
    the eigenvalues of the non-symmetric Markov matrix ``P = D^-1 K^alpha``."""
    data, _ = make_swiss_roll(1000, noise=0.01, random_state=1)
    dm = DiffusionMap(10, epsilon=2 * 1.25, method="dense").fit(data)
    d2 = ((data[:, None, :] - data[None, :, :]) ** 2).sum(axis=-1)
    K = np.exp(-d2 / 2.5)
    q = K.sum(axis=1)
    Ka = K / np.outer(q, q)
    P = Ka / Ka.sum(axis=1, keepdims=True)
    exact = np.sort(scipy.linalg.eigvals(P).real)[::-1][1:11]
    np.testing.assert_allclose(dm.eigenvalues_, exact, rtol=1e-10, atol=1e-15)


def test_datafold_circle_has_the_circulant_spectrum():
    """datafold ``circle_data``: 99 equally spaced points on the unit circle (eps = 1e-4 there;
    also 1e-2 and 0.25, where the eigenvalues are not all 1).  The kernel is circulant, so the
    Markov eigenvalues are exactly ``sum_j k(x_0, x_j) cos(2 pi m j / 99) / sum_j k(x_0, x_j)``,
    each twice (m = 1, 2, ...); datafold's tolerance rtol 1e-10, atol 1e-15."""
    theta = np.linspace(0, 2 * np.pi, 100)[:-1]
    X = np.c_[np.cos(theta), np.sin(theta)]
    j = np.arange(99)
    for eps in (1e-4, 1e-2, 0.25):
        dm = DiffusionMap(10, epsilon=2 * eps, method="dense").fit(X)
        k = np.exp(-((X - X[0]) ** 2).sum(axis=1) / (2 * eps))
        exact = [(k * np.cos(2 * np.pi * m * j / 99)).sum() / k.sum() for m in range(1, 6)]
        np.testing.assert_allclose(dm.eigenvalues_, np.repeat(exact, 2), rtol=1e-10, atol=1e-15)
