"""The separable surrogate, the boundary distance and the station mask of the regression."""

from __future__ import annotations

from mpi4py import MPI

import numpy as np
import pytest
import torch

from dolfinx_nn.discovery import DiscoveryConfig, SpaceTimeData, SurrogateConfig, discover
from dolfinx_nn.discovery.datasets import simulate_dataset
from dolfinx_nn.discovery.library import parse_library
from dolfinx_nn.discovery.simulation import boundary_distance
from dolfinx_nn.discovery.surrogate import fit_surrogate, legendre, term_features
from dolfinx_nn.discovery.validation import validate, window_surrogate
from dolfinx_nn.meshes import create_mesh

SEPARABLE = SurrogateConfig(kind="separable", width=400, time_degree=10)


def _smooth_data() -> SpaceTimeData:
    """``u = sin(pi x) sin(pi y / 2) exp(-t)`` at scattered stations (no noise)."""
    rng = np.random.default_rng(3)
    x = rng.random((600, 2))
    t = np.linspace(0.0, 1.0, 21)
    u = np.exp(-t)[:, None] * (np.sin(np.pi * x[:, 0]) * np.sin(0.5 * np.pi * x[:, 1]))[None]
    return SpaceTimeData(x, t, u)


def test_legendre_polynomials():
    tau = torch.linspace(-1.0, 1.0, 7, dtype=torch.float64)
    p = legendre(tau, 4).numpy()
    t = tau.numpy()
    expected = np.stack([np.ones_like(t), t, 0.5 * (3 * t**2 - 1), 0.5 * (5 * t**3 - 3 * t)], 1)
    np.testing.assert_allclose(p, expected, atol=1e-14)


def test_separable_fit_and_derivatives_of_a_smooth_field():
    data = _smooth_data()
    surrogate, report = fit_surrogate(data, SEPARABLE)
    assert report.train_rmse < 1e-4 and report.cv_rmse < 1e-4
    x = np.array([[0.3, 0.4], [0.6, 0.7], [0.5, 0.5]])
    t = np.array([0.3, 0.5, 0.7])
    terms = parse_library("u,u_xx,u_yy", 2)
    theta, v_tau = term_features(surrogate, x, t, terms)
    nrm = surrogate.normalisation
    u = np.exp(-t) * np.sin(np.pi * x[:, 0]) * np.sin(0.5 * np.pi * x[:, 1])
    # back to data units: u_t = U / T v_tau, u_xx = U / L^2 v_xixi
    np.testing.assert_allclose(v_tau * nrm.u_scale / nrm.t_scale, -u, rtol=1e-3)
    np.testing.assert_allclose(
        theta[:, 1] * nrm.u_scale / nrm.x_scale[0] ** 2, -np.pi**2 * u, rtol=1e-2
    )
    np.testing.assert_allclose(
        theta[:, 2] * nrm.u_scale / nrm.x_scale[1] ** 2, -0.25 * np.pi**2 * u, rtol=1e-2
    )


def test_separable_surrogate_recovers_1d_heat():
    mesh = create_mesh(MPI.COMM_WORLD, "interval", 64)
    data, truth = simulate_dataset("heat", mesh, num_points=400, num_times=41, noise=0.01, seed=1)
    train, _ = data.split(0.75)
    interior = boundary_distance(mesh, data.x) > 0.05
    found = discover(train, DiscoveryConfig(surrogate=SEPARABLE), stations=interior)
    assert set(found.coefficients) == set(truth)
    for name, value in truth.items():
        assert found.coefficients[name] == pytest.approx(value, rel=0.05)
    coefficients = sorted(found.coefficients.items())  # rank 0 fits, every rank agrees
    assert MPI.COMM_WORLD.allgather(coefficients) == [coefficients] * MPI.COMM_WORLD.size


def test_nonlinear_diffusion_is_recovered():
    """``u_t = (0.1 u u_x)_x = 0.1 u u_xx + 0.1 u_x**2`` from 1 % noise, checked by DOLFINx."""
    mesh = create_mesh(MPI.COMM_WORLD, "interval", 64)
    data, truth = simulate_dataset(
        "nonlinear-diffusion", mesh, num_points=400, num_times=41, noise=0.01, seed=1
    )
    train, _ = data.split(0.75)
    interior = boundary_distance(mesh, data.x) > 0.05
    found = discover(train, DiscoveryConfig(surrogate=SEPARABLE), stations=interior)
    assert set(found.coefficients) == set(truth) == {"u*u_xx", "u_x**2"}
    for name, value in truth.items():
        assert found.coefficients[name] == pytest.approx(value, rel=0.05)
    boundary = window_surrogate(data, float(train.t[-1]), found.fit)
    check = validate(found.coefficients, boundary, mesh, data, float(train.t[-1]))
    assert check.rel_l2_error < 0.05


def test_boundary_distance_on_the_unit_square():
    mesh = create_mesh(MPI.COMM_WORLD, "square", 8)
    points = np.random.default_rng(0).random((200, 2))
    exact = np.minimum(points, 1.0 - points).min(axis=1)
    distance = boundary_distance(mesh, points)
    assert np.all(distance >= exact - 1e-12)
    assert np.max(distance - exact) < 2e-3  # 20 000 boundary samples: spacing 2e-4
    with pytest.raises(ValueError, match="points must have shape"):
        boundary_distance(mesh, points[:, :1])


def test_bad_inputs_are_refused():
    data = _smooth_data()
    u = data.u.copy()
    u[3, 5] = np.nan
    with pytest.raises(ValueError, match="every station observed at every snapshot"):
        fit_surrogate(SpaceTimeData(data.x, data.t, u), SEPARABLE)
    with pytest.raises(ValueError, match="unknown surrogate kind 'cubic'"):
        fit_surrogate(data, SurrogateConfig(kind="cubic"))
    with pytest.raises(ValueError, match="time_degree must be >= 1"):
        fit_surrogate(data, SurrogateConfig(kind="separable", time_degree=0))
    with pytest.raises(ValueError, match="stations must be a boolean mask"):
        discover(data, DiscoveryConfig(surrogate=SEPARABLE), stations=np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="leave no data points"):
        discover(
            data, DiscoveryConfig(surrogate=SEPARABLE), stations=np.zeros(600, dtype=bool)
        )
