"""The network side is invariant to the units of length and of the solution (serial and MPI).

The 1D Poisson problem ``u = sin(2 pi x / L) cos(4 pi x / L) + 1`` on ``[0, L]``: the strong
residual scales like ``L^-2`` (the loss like ``L^-4``); after nondimensionalisation
(:mod:`dolfinx_nn.ansatz.scaling`) the optimizer sees the same problem for every ``L``.
"""

from __future__ import annotations

from mpi4py import MPI

import dolfinx
import numpy as np
import pytest

from dolfinx_nn.ansatz import Problem
from dolfinx_nn.ansatz.compare import refine
from dolfinx_nn.ansatz.errors import network_errors
from dolfinx_nn.ansatz.network_solver import NetworkConfig, solve_network
from dolfinx_nn.training import TrainingConfig

LENGTHS = (1e-3, 1.0, 1e3)


def _problem(length: float, amplitude: float = 1.0) -> Problem:
    return Problem.from_text(
        "poisson", f"{amplitude!r}*(sin(2*pi*x[0]/{length!r})*cos(4*pi*x[0]/{length!r}) + 1)", 1
    )


def _config(training: TrainingConfig) -> NetworkConfig:
    return NetworkConfig(width=16, depth=3, points=200, fit_features=100, fit_boundary_points=20,
                         training=training)


def _solve(length: float, config: NetworkConfig, amplitude: float = 1.0):
    comm = MPI.COMM_WORLD
    mesh = dolfinx.mesh.create_interval(comm, 32, [0.0, length])
    problem = _problem(length, amplitude)
    sol = solve_network(problem, mesh, config)
    error = network_errors(problem, sol.ansatz, refine(mesh))["relative_l2_error"]
    g_error = network_errors(problem, sol.ansatz.extension, refine(mesh))["relative_l2_error"]
    return sol, error, g_error


#: Adam is invariant to a constant factor of the loss (up to its epsilon) and has no line
#: search, so runs that differ by round-off stay together: the errors of the three lengths
#: agree to about 1e-5 here.  Before the nondimensionalisation the loss of L = 1e3 was
#: 1e-12 times that of L = 1, below Adam's epsilon, and N did not move.
ADAM = TrainingConfig(adam_steps=300, adam_lr=3e-3, lbfgs_steps=0)


@pytest.fixture(scope="module")
def adam_runs():
    return {length: _solve(length, _config(ADAM)) for length in LENGTHS}


def test_scales_follow_the_units(adam_runs):
    """length ~ L, residual ~ L^-2, solution scale and initial loss independent of L."""
    reference = adam_runs[1.0][0]
    for length, (sol, _, _) in adam_runs.items():
        s = sol.scales
        assert s.length == pytest.approx(reference.scales.length * length, rel=1e-10)
        assert s.residual == pytest.approx(reference.scales.residual / length**2, rel=1e-10)
        assert s.solution == pytest.approx(reference.scales.solution, rel=1e-10)
        assert sol.history.losses[0] == pytest.approx(reference.history.losses[0], rel=1e-9)


def test_relative_errors_do_not_depend_on_the_unit_of_length(adam_runs):
    """The bar "L = 1e-3, 1, 1e3 within a factor 1.5", where it survives another CPU.

    The three Adam runs are one run in three unit systems: they differ by round-off only, and
    Adam (no line search, no branch on loss values) keeps that difference near 1e-5 of the
    error after 300 steps (1 and 2 ranks), five orders below the factor 1.5.  After 1000
    L-BFGS steps the error of one run is a random variable (seed to seed 5e-5 to 1.2e-3 for
    every L, docs/ansatz.md), so a factor 1.5 on single runs, or on medians of a few, would
    fail by chance; the documented table shows the same distribution for the three lengths.
    """
    errors = [adam_runs[length][1] for length in LENGTHS]
    g_error = adam_runs[1.0][2]
    assert max(errors) <= 1.5 * min(errors)
    # N learned something (G alone is 45 % off): a sanity check, not a claim of accuracy;
    # measured 1.9e-2 on one rank and 6.3e-2 on two (other random collocation points)
    assert max(errors) < 0.3 * g_error
    assert errors == MPI.COMM_WORLD.bcast(errors, root=0)


def test_relative_error_does_not_depend_on_the_unit_of_the_solution(adam_runs):
    """u in "millikelvin" (x 1e3): the same run as in "kelvin", up to round-off."""
    sol, error, _ = _solve(1.0, _config(ADAM), amplitude=1e3)
    assert sol.scales.solution == pytest.approx(1e3 * adam_runs[1.0][0].scales.solution,
                                                rel=1e-10)
    assert error == pytest.approx(adam_runs[1.0][1], rel=1e-3)


def test_default_optimizer_sees_the_same_problem_in_every_unit():
    """L-BFGS (the default): the same trajectory for every L, until round-off has grown.

    Its strong Wolfe line search branches on comparisons of loss values, so runs that differ
    by round-off drift apart, by about a factor of 10 every 10 steps once the loss falls fast
    (measured here: losses agree to 1e-10 after 20 steps, 1e-5 after 60, 1 % after 110 on one
    rank; on two ranks 10 % after 90).  The error after many steps is therefore a random
    variable, with the same distribution for every L (docs/ansatz.md: medians over seeds).
    Before the nondimensionalisation the trajectories differed from the first step on, and
    L = 1e3 ended 1e4 times less accurate than L = 1 (2.05 against 1.6e-4 after 500 steps).
    """
    config = _config(TrainingConfig(adam_steps=0, lbfgs_steps=25))
    runs = [_solve(length, config) for length in LENGTHS]
    losses = [sol.history.losses for sol, _, _ in runs]
    for other in losses[1:]:
        np.testing.assert_allclose(other, losses[0], rtol=1e-6)
    errors = [error for _, error, _ in runs]
    assert max(errors) <= 1.5 * min(errors)
