"""PDE discovery from noisy scattered data simulated with DOLFINx (serial and under MPI)."""

from __future__ import annotations

from dataclasses import replace

from mpi4py import MPI

import numpy as np
import pytest
import torch

from dolfinx_nn.discovery import DiscoveryConfig, SpaceTimeData, discover
from dolfinx_nn.discovery.datasets import simulate_dataset
from dolfinx_nn.discovery.pipeline import regress
from dolfinx_nn.discovery.surrogate import (
    DEFAULT_TRAINING,
    Surrogate,
    SurrogateConfig,
    fit_surrogate,
)
from dolfinx_nn.discovery.validation import validate, window_surrogate
from dolfinx_nn.meshes import create_mesh

NOISE = 0.01


@pytest.fixture(scope="module")
def mesh():
    return create_mesh(MPI.COMM_WORLD, "interval", 64)


def _simulated(name: str, mesh) -> tuple[SpaceTimeData, SpaceTimeData, dict[str, float]]:
    data, truth = simulate_dataset(name, mesh, num_points=400, num_times=41, noise=NOISE, seed=1)
    train, _ = data.split(0.75)
    return data, train, truth


@pytest.fixture(scope="module")
def heat(mesh):
    data, train, truth = _simulated("heat", mesh)
    return data, train, truth, discover(train)


@pytest.fixture(scope="module")
def fisher(mesh):
    data, train, truth = _simulated("fisher-kpp", mesh)
    return data, train, truth, discover(train)


def _assert_recovered(found: dict[str, float], truth: dict[str, float]) -> None:
    largest = max(abs(c) for c in found.values())
    for name, value in truth.items():
        assert name in found, f"term {name} missing from {found}"
        assert abs(found[name] - value) <= 0.05 * abs(value), (name, found[name], value)
    for name, value in found.items():
        if name not in truth:
            assert abs(value) <= 0.05 * largest, f"spurious term {name} = {value}"


def test_heat_coefficients(heat):
    _, _, truth, found = heat
    _assert_recovered(found.coefficients, truth)
    assert set(found.coefficients) == set(truth)  # exactly the true support
    assert found.equation.startswith("u_t = 0.0")


def test_advection_diffusion_coefficients(mesh):
    _, train, truth = _simulated("advection-diffusion", mesh)
    found = discover(train)
    _assert_recovered(found.coefficients, truth)
    assert set(found.coefficients) == set(truth)


def test_fisher_kpp_nonlinear_term(fisher):
    _, _, truth, found = fisher
    assert "u**2" in found.coefficients
    assert found.coefficients["u**2"] < 0
    _assert_recovered(found.coefficients, truth)


def test_pareto_front_is_monotone(heat):
    front = heat[3].pareto_front()
    complexity = [row["complexity"] for row in front]
    errors = [row["cv_error"] for row in front]
    assert complexity == sorted(set(complexity)) and len(front) >= 2
    assert all(a > b for a, b in zip(errors[:-1], errors[1:], strict=True))


def test_data_units_transform_coefficients_as_theory_says(fisher):
    """x -> s x, t -> tau t, u -> k u: the PDE's coefficients change by exact factors."""
    _, train, _, found = fisher
    s, tau, k = 10.0, 2.0, 3.0
    scaled = discover(train.transformed(s, tau, k))
    # the network sees the same normalised data, so the raw regression is unchanged ...
    for name, raw in found.raw_coefficients.items():
        assert scaled.raw_coefficients[name] == pytest.approx(raw, rel=1e-6)
    # ... and the coefficients in the new units follow the coordinate transformation
    c, c2 = found.coefficients, scaled.coefficients
    assert c2["u_xx"] == pytest.approx(c["u_xx"] * s**2 / tau, rel=1e-6)
    assert c2["u"] == pytest.approx(c["u"] / tau, rel=1e-6)
    assert c2["u**2"] == pytest.approx(c["u**2"] / (tau * k), rel=1e-6)


def test_normalisation_changes_raw_but_not_physical_coefficients(fisher):
    """Rescaling the network variables changes the raw coefficients, not the reported ones."""
    _, train, _, _ = fisher
    config = DiscoveryConfig(surrogate=SurrogateConfig(kind="space-time", input_scale=2.0))
    found = discover(train, config)
    old = found.surrogate
    lx, lt, lu = 2.0, 3.0, 5.0  # xi' = xi / lx, tau' = tau / lt, v' = v / lu
    new = Surrogate(
        old.normalisation.scaled(lx, lt, lu),
        width=old.head.in_features,
        activation="tanh",
    )
    new.load_state_dict(old.state_dict())
    with torch.no_grad():  # the same function u(x, t) in the new variables
        new.features[0].weight[:, 0] *= lx
        new.features[0].weight[:, 1] *= lt
        new.head.weight /= lu
        new.head.bias /= lu
    again = regress(new, found.fit, train, DiscoveryConfig())
    raw, raw2 = found.raw_coefficients, again.raw_coefficients
    assert set(raw2) == set(raw)
    # v'_tau' = (lt / lu) v_tau; u'-terms: v'^p d^q v' / dxi'^q = lu^-p lx^q (...)
    assert raw2["u"] == pytest.approx(raw["u"] * lt, rel=1e-8)
    assert raw2["u**2"] == pytest.approx(raw["u**2"] * lt * lu, rel=1e-8)
    assert raw2["u_xx"] == pytest.approx(raw["u_xx"] * lt / lx**2, rel=1e-8)
    for name, value in found.coefficients.items():
        assert again.coefficients[name] == pytest.approx(value, rel=1e-8)


def test_resimulation_matches_held_out_data(heat, mesh):
    data, train, _, found = heat
    boundary = window_surrogate(data, float(train.t[-1]), found.fit)
    result = validate(found.coefficients, boundary, mesh, data, train_end=train.t[-1])
    assert result.held_out.sum() == 10 and result.start_time == train.t[-1]
    assert result.rel_l2_error < 0.05
    # the error is at the noise level (relative noise 1% of std(u)), not accumulated drift
    assert result.snapshot_errors.max() < 0.05
    assert np.all(np.isfinite(result.simulated[result.held_out]))


def test_adam_phase_lowers_the_fit_loss(heat):
    """Training the hidden layers (data parallel) before the exact head lowers the loss."""
    train = heat[1]
    surrogate, report = fit_surrogate(
        train,
        SurrogateConfig(kind="space-time", width=20, input_scale=2.0,
                        training=replace(DEFAULT_TRAINING, adam_steps=30)),
    )
    assert len(report.losses) == 30 and report.losses[-1] < report.losses[0]
    weights = surrogate.features[0].weight.detach().numpy().copy()
    gathered = MPI.COMM_WORLD.allgather(weights)
    assert all(np.array_equal(w, weights) for w in gathered)


def test_ranks_agree(heat):
    comm = MPI.COMM_WORLD
    coefficients = sorted(heat[3].coefficients.items())
    assert comm.allgather(coefficients) == [coefficients] * comm.size


def test_bad_library_is_refused(heat):
    with pytest.raises(ValueError, match="unknown factor 'u_q'"):
        discover(heat[1], DiscoveryConfig(library="u,u_q"))
    with pytest.raises(ValueError, match="choose a preset"):
        discover(heat[1], DiscoveryConfig(library="qubic"))


def test_unknown_dataset_is_refused(mesh):
    with pytest.raises(ValueError, match="choose one of: heat, advection-diffusion"):
        simulate_dataset("wave", mesh)


def test_network_rhs_explains_fisher_kpp(fisher):
    """A network F of (u, u_x, u_xx) explains most of u_t (no library needed)."""
    from dolfinx_nn.discovery.network_rhs import DEFAULT_TRAINING as RHS_TRAINING
    from dolfinx_nn.discovery.network_rhs import fit_network_rhs

    _, train, _, found = fisher
    x, t, _ = train.samples()
    rhs = fit_network_rhs(found.surrogate, x[::4], t[::4],
                          training=replace(RHS_TRAINING, adam_steps=300))
    assert rhs.inputs == ["u", "u_x", "u_xx"]
    assert rhs.rel_error < 0.25  # measured 0.16 (the sparse linear model: 0.08)
