"""Recovery of a coefficient by the network prior and the Tikhonov baseline (serial and MPI).

Synthetic data come from a twice finer mesh with one degree more (no inverse crime); the
errors are relative L2 errors of q on the inversion mesh.
"""

from __future__ import annotations

from mpi4py import MPI

import pytest
import torch

from dolfinx_nn.inverse import (
    NetworkConfig,
    ProblemSpec,
    TikhonovConfig,
    build_problem,
    fit_network_prior,
    fit_tikhonov,
)
from dolfinx_nn.training import TrainingConfig


def training(adam: int, lbfgs: int) -> TrainingConfig:
    return TrainingConfig(adam_steps=adam, adam_lr=1e-2, lbfgs_steps=lbfgs, patience=50,
                          min_delta=1e-6, log_every=50)


def test_noise_free_2d_recovery_below_two_percent():
    # P2 coefficient space: the P1 interpolant of q alone is 1.8 % off on this 8 x 8 mesh
    problem = build_problem(ProblemSpec(dim=2, resolution=8, degree=2, coefficient_degree=2))
    result = fit_network_prior(problem, NetworkConfig(width=32), training(100, 300))
    assert result.errors["coefficient_rel_l2_error"] < 0.02
    assert result.errors["state_rel_l2_error"] < 0.005


def test_one_percent_noise_network_within_ten_percent_and_close_to_best_tikhonov():
    problem = build_problem(ProblemSpec(dim=2, resolution=8, degree=2, noise=0.01, seed=3))
    network = fit_network_prior(problem, NetworkConfig(width=32), training(100, 300),
                                discrepancy_tau=1.0)
    tikhonov = fit_tikhonov(problem, TikhonovConfig(alphas=(3e-4, 1e-4, 3e-5, 1e-5)))
    error = network.errors["coefficient_rel_l2_error"]
    best_tikhonov = tikhonov.details["best_coefficient_rel_l2_error"]
    assert error < 0.10
    assert error <= 1.5 * best_tikhonov
    # the discrepancy principle picked a run of the grid whose residual matches the noise
    assert tikhonov.errors["data_residual"] <= 1.1 * problem.noise_norm
    assert tikhonov.errors["coefficient_rel_l2_error"] < 0.10


def test_1d_recovery():
    problem = build_problem(ProblemSpec(dim=1, resolution=32))
    result = fit_network_prior(problem, NetworkConfig(width=32), training(50, 100))
    assert result.errors["coefficient_rel_l2_error"] < 0.03


def test_3d_recovery():
    problem = build_problem(ProblemSpec(dim=3, resolution=3, degree=2))
    result = fit_network_prior(problem, NetworkConfig(width=32), training(50, 100))
    assert result.errors["coefficient_rel_l2_error"] < 0.08


def test_subdomain_observation_recovers_q_in_the_observed_region():
    spec = ProblemSpec(dim=2, resolution=8, degree=2, observe="subdomain",
                       subdomain="where(x[0] <= 0.5, 1, 0)")
    problem = build_problem(spec)
    result = fit_network_prior(problem, NetworkConfig(width=32), training(50, 200))
    assert result.errors["coefficient_rel_l2_error_observed"] < 0.03
    # outside the observed half the data say little: the error there is larger
    assert result.errors["coefficient_rel_l2_error"] > result.errors[
        "coefficient_rel_l2_error_observed"]


def test_scattered_point_observations():
    problem = build_problem(ProblemSpec(dim=2, resolution=8, degree=2, observe="points",
                                        num_points=100))
    assert problem.observation.operator.num_points == 100
    result = fit_network_prior(problem, NetworkConfig(width=32), training(50, 150))
    assert result.errors["coefficient_rel_l2_error"] < 0.05


def test_same_result_on_one_rank_and_on_all_ranks():
    """The problem on COMM_SELF (serial on each rank) and on COMM_WORLD give the same fit."""
    spec = ProblemSpec(dim=2, resolution=8, noise=0.01, seed=5)
    config = training(20, 10)
    results = {}
    for name, comm in (("serial", MPI.COMM_SELF), ("distributed", MPI.COMM_WORLD)):
        problem = build_problem(spec, comm)
        results[name] = fit_network_prior(problem, NetworkConfig(width=8), config)
    serial, distributed = results["serial"], results["distributed"]
    assert serial.history.steps == distributed.history.steps == 30
    assert distributed.history.losses[-1] == pytest.approx(serial.history.losses[-1], rel=1e-7)
    assert distributed.history.losses[0] == pytest.approx(serial.history.losses[0], rel=1e-12)
    assert distributed.errors["coefficient_rel_l2_error"] == pytest.approx(
        serial.errors["coefficient_rel_l2_error"], rel=1e-6)


def test_tikhonov_same_on_one_rank_and_on_all_ranks():
    spec = ProblemSpec(dim=2, resolution=6, noise=0.01, seed=2)
    config = TikhonovConfig(alphas=(1e-4,))
    steps = TrainingConfig(adam_steps=0, lbfgs_steps=15)
    errors = [
        fit_tikhonov(build_problem(spec, comm), config, steps).errors["coefficient_rel_l2_error"]
        for comm in (MPI.COMM_SELF, MPI.COMM_WORLD)
    ]
    assert errors[1] == pytest.approx(errors[0], rel=1e-6)
    assert errors[0] < 0.5


def test_resume_after_interrupt_gives_the_same_final_loss(tmp_path):
    problem = build_problem(ProblemSpec(dim=2, resolution=6, noise=0.01))
    full = training(10, 10)
    checkpoint = MPI.COMM_WORLD.bcast(str(tmp_path / "network.ckpt"), root=0)
    uninterrupted = fit_network_prior(problem, NetworkConfig(width=8), full)
    # a run stopped after 13 of the 20 steps, then resumed from its checkpoint
    stopped = TrainingConfig(**{**full.as_dict(), "lbfgs_steps": 3})
    first = fit_network_prior(problem, NetworkConfig(width=8), stopped, checkpoint=checkpoint)
    assert first.history.steps == 13
    resumed = fit_network_prior(problem, NetworkConfig(width=8), full, checkpoint=checkpoint,
                                resume=True)
    assert resumed.history.steps == 20
    assert resumed.history.losses == uninterrupted.history.losses
    assert torch.equal(resumed.coefficient, uninterrupted.coefficient)
