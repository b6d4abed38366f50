"""Diffusion maps: dense vs. an independent eigen-decomposition, sparse vs. dense, embeddings,
Nystrom extension and intrinsic dimension.  Pure numpy/torch: replicated on every rank."""

from __future__ import annotations

import numpy as np
import pytest

from dolfinx_nn.diffusion_maps import DiffusionMap, diffusion_map, estimate_dimension


def _reference(X: np.ndarray, epsilon: float, alpha: float, m: int):
    """Straightforward diffusion map: non-symmetric eigen-decomposition of P = D^-1 K^alpha."""
    d2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(axis=-1)
    K = np.exp(-d2 / epsilon)
    q = K.sum(axis=1)
    Ka = K / np.outer(q**alpha, q**alpha)
    P = Ka / Ka.sum(axis=1, keepdims=True)
    w, V = np.linalg.eig(P)
    order = np.argsort(-w.real)
    w, V = w.real[order], V.real[:, order]
    pi = Ka.sum(axis=1) / Ka.sum()
    V = V / np.sqrt((pi[:, None] * V**2).sum(axis=0))
    return w[1 : m + 1], V[:, 1 : m + 1]


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_dense_matches_straightforward_computation(alpha):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3))
    t = 3
    lam, coords = diffusion_map(X, 4, epsilon=1.5, alpha=alpha, t=t, method="dense")
    ref_lam, ref_psi = _reference(X, 1.5, alpha, 4)
    assert np.abs(lam - ref_lam).max() < 1e-8
    ref_coords = ref_psi * ref_lam**t
    for j in range(4):  # eigenvectors are defined up to sign
        err = min(np.abs(coords[:, j] - s * ref_coords[:, j]).max() for s in (1.0, -1.0))
        assert err < 1e-8


def test_sparse_matches_dense_for_large_k():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((600, 3))
    dense = DiffusionMap(5, epsilon=0.3, method="dense").fit(X)
    sparse = DiffusionMap(5, epsilon=0.3, method="sparse", k=300).fit(X)
    assert np.abs(sparse.eigenvalues_ - dense.eigenvalues_).max() < 1e-4
    # a small neighbourhood is visibly coarser: the comparison is not vacuous
    coarse = DiffusionMap(5, epsilon=0.5, method="sparse", k=30).fit(X)
    fine = DiffusionMap(5, epsilon=0.5, method="dense").fit(X)
    assert np.abs(coarse.eigenvalues_ - fine.eigenvalues_).max() > 1e-3


def test_noisy_circle_in_r50_gives_the_angle():
    rng = np.random.default_rng(2)
    n = 800
    theta = rng.uniform(0, 2 * np.pi, n)
    frame, _ = np.linalg.qr(rng.standard_normal((50, 2)))
    X = np.c_[np.cos(theta), np.sin(theta)] @ frame.T + 0.02 * rng.standard_normal((n, 50))
    dm = DiffusionMap(2).fit(X)  # automatic epsilon, alpha = 1
    A = np.c_[dm.coordinates_, np.ones(n)]
    for target in (np.cos(theta), np.sin(theta)):
        coef, *_ = np.linalg.lstsq(A, target, rcond=None)
        assert abs(np.corrcoef(A @ coef, target)[0, 1]) > 0.99
    # the angle read off the two coordinates equals the true one up to a rotation and a
    # reflection: the mean resultant length of their difference (or sum) is close to 1
    c = dm.coordinates_ / dm.coordinates_.std(axis=0)
    recovered = np.arctan2(c[:, 1], c[:, 0])
    concentration = max(np.abs(np.exp(1j * (recovered - s * theta)).mean()) for s in (1, -1))
    assert concentration > 0.99


def test_nystrom_extension_reproduces_training_points_and_interpolates():
    rng = np.random.default_rng(3)
    s = rng.uniform(0, 1, 400)
    X = np.c_[np.cos(3 * s), np.sin(3 * s), s]
    dm = DiffusionMap(3, epsilon=0.01, alpha=0.5, t=2).fit(X)
    assert np.abs(dm.transform(X) - dm.coordinates_).max() < 1e-10
    # new points on the curve land between their neighbours' coordinates
    s_new = rng.uniform(0.05, 0.95, 50)
    Y = np.c_[np.cos(3 * s_new), np.sin(3 * s_new), s_new]
    first = dm.transform(Y)[:, 0]
    nearest = np.abs(s[None, :] - s_new[:, None]).argmin(axis=1)
    assert np.abs(first - dm.coordinates_[nearest, 0]).max() < 0.05 * np.ptp(dm.coordinates_[:, 0])


def test_diffusion_time_scales_coordinates():
    X = np.random.default_rng(4).standard_normal((100, 2))
    dm = DiffusionMap(3, epsilon=1.0).fit(X)
    ratio = dm.coordinates(t=4) / dm.coordinates(t=1)
    assert np.allclose(ratio, dm.eigenvalues_[None, :] ** 3, rtol=1e-12)


def _embed(Y: np.ndarray, rng: np.random.Generator, dim: int = 20) -> np.ndarray:
    frame, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return Y @ frame[: Y.shape[1]]


def test_estimate_dimension_curve_swiss_roll_ball_in_r20():
    rng = np.random.default_rng(5)
    n = 2000
    s = rng.uniform(0, 1, n)
    curve = np.c_[np.cos(2 * np.pi * s), np.sin(4 * np.pi * s), s]
    u, h = rng.uniform(1.5 * np.pi, 4.5 * np.pi, n), rng.uniform(0, 10, n)
    roll = np.c_[u * np.cos(u), h, u * np.sin(u)]
    ball = rng.standard_normal((n, 3))
    ball *= (rng.uniform(0, 1, n) ** (1 / 3) / np.linalg.norm(ball, axis=1))[:, None]
    assert estimate_dimension(_embed(curve, rng)) == 1
    assert estimate_dimension(_embed(roll, rng)) == 2
    assert estimate_dimension(_embed(ball, rng)) == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epsilon": -1.0}, "epsilon"),
        ({"epsilon": "median"}, "auto"),
        ({"alpha": 2.0}, "alpha"),
        ({"method": "lobpcg"}, "dense, sparse"),
        ({"t": -1}, "diffusion time"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiffusionMap(2, **kwargs)


def test_bad_data_is_rejected():
    X = np.random.default_rng(6).standard_normal((20, 2))
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        diffusion_map(X, 2)
    with pytest.raises(ValueError, match="mle, kernel-sum"):
        estimate_dimension(np.ones((30, 2)), method="pca")
    with pytest.raises(ValueError, match="too large"):
        diffusion_map(np.random.default_rng(0).standard_normal((10, 2)), 9)
