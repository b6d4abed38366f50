"""Diffusion maps, bandwidth, duplicates and dimension do not depend on the origin or the units
of the data (translation invariance; scale equivariance: epsilon scales by s^2, eigenpairs do
not change).  Pure numpy: replicated on every rank."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from sklearn.datasets import make_swiss_roll

from dolfinx_nn.diffusion_maps import DiffusionMap
from dolfinx_nn.diffusion_maps.dimension import kernel_sum_dimension, mle_dimension
from dolfinx_nn.diffusion_maps.duplicates import merge_near_duplicates
from dolfinx_nn.diffusion_maps.kernel import nearest_neighbours, squared_distances


def _dyadic_roll(n: int = 600, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A noisy swiss roll rounded to multiples of 2^-24, so that X + 1e8 is exact."""
    X, t = make_swiss_roll(n, noise=0.5, random_state=seed)
    return np.round(X * 2.0**24) / 2.0**24, t


def test_distances_and_neighbours_do_not_depend_on_the_origin():
    """|x|^2 + |y|^2 - 2 x.y on these points at an offset 1e8 was off by up to 268 (the
    largest squared distance is 127), and the brute-force neighbour search (dimension > 16),
    which picks its candidates from those distances, got 99 % of the neighbours wrong; with
    the points centred first the error is round-off."""
    rng = np.random.default_rng(0)
    X = np.round(rng.standard_normal((300, 20)) * 2.0**20) / 2.0**20
    exact = ((X[:, None, :] - X[None, :, :]) ** 2).sum(axis=-1)
    for offset in (1e8, -3e7):
        assert np.abs(squared_distances(X + offset) - exact).max() < 1e-12 * exact.max()
        d2, idx = nearest_neighbours(X + offset, 10)
        d2_ref, idx_ref = nearest_neighbours(X, 10)
        np.testing.assert_array_equal(idx, idx_ref)
        np.testing.assert_allclose(d2, d2_ref, rtol=1e-12)
    T = rng.standard_normal((400, 2))
    Y = np.r_[T, T[:200] + 1e-9 * rng.standard_normal((200, 2))]
    for shifted in (Y + 1e6, Y * 1e-300, Y * 1e300):
        assert merge_near_duplicates(shifted).merged == merge_near_duplicates(Y).merged == 200


@pytest.mark.parametrize("offset", [1e8, -3e7])
def test_diffusion_map_does_not_depend_on_the_origin(offset):
    """An offset of 1e8 moved the eigenvalues by 2.6e-4 (cancellation in the distances);
    now by round-off.  The data are dyadic so that ``X + offset`` is exact."""
    X, _ = _dyadic_roll()
    base = DiffusionMap(4).fit(X)
    dm = DiffusionMap(4).fit(X + offset)
    assert np.abs(dm.eigenvalues_ - base.eigenvalues_).max() < 1e-10
    assert dm.epsilon_ == pytest.approx(base.epsilon_, rel=1e-9)
    assert np.abs(np.abs(dm.eigenvectors_) - np.abs(base.eigenvectors_)).max() < 1e-6
    new = X[:5] + 0.25
    assert np.abs(dm.transform(new + offset) - base.transform(new)).max() < 1e-6
    assert mle_dimension(X + offset) == pytest.approx(mle_dimension(X), rel=1e-10)


def test_scale_equivariance_down_to_1e_minus_300_and_up_to_1e300():
    """Data scaled by 1e-300 underflowed (squared distances 1e-600) and by 1e300 overflowed.
    Now the eigenvalues agree to 1e-10 relative, the rank correlation with the roll parameter
    is identical, epsilon scales by s^2 (reported in the standardised units where s^2 is out
    of range), and so do a given epsilon, the duplicate tolerance and the dimensions."""
    X, t = _dyadic_roll()
    base = DiffusionMap(2).fit(X)
    rho = scipy.stats.spearmanr(base.eigenvectors_[:, 0], t).statistic
    for s in (1e-300, 1e300):
        dm = DiffusionMap(2).fit(s * X)
        np.testing.assert_allclose(dm.eigenvalues_, base.eigenvalues_, rtol=1e-10)
        assert scipy.stats.spearmanr(dm.eigenvectors_[:, 0], t).statistic == rho
        assert dm.epsilon_ == (0.0 if s < 1 else np.inf)  # s^2 epsilon is not a float64
        unit = dm.unit_length_ / s  # the standardised unit in the units of X
        assert dm.scaled_epsilon_ * unit**2 == pytest.approx(base.epsilon_, rel=1e-10)
        assert dm.bandwidth_.summary()["epsilon_in_units"] == dm.scaled_epsilon_
        assert kernel_sum_dimension(s * X) == pytest.approx(kernel_sum_dimension(X), rel=1e-10)
        assert mle_dimension(s * X) == pytest.approx(mle_dimension(X), rel=1e-10)
    for s in (1e-100, 1e100):  # a given epsilon in the user's units: s^2 epsilon
        fixed = DiffusionMap(2, epsilon=base.epsilon_ * s**2).fit(s * X)
        np.testing.assert_allclose(fixed.eigenvalues_, base.eigenvalues_, rtol=1e-10)
        assert fixed.epsilon_ == base.epsilon_ * s**2
    tol = merge_near_duplicates(X).resolution_tol
    assert merge_near_duplicates(1e-300 * X).resolution_tol == pytest.approx(1e-300 * tol, 1e-10)
    with pytest.raises(ValueError, match="out of floating-point range"):
        DiffusionMap(2, epsilon=1.0).fit(1e-300 * X)
