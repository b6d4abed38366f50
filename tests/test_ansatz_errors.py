"""Every reported error of the comparison is invariant to the unit of length (serial and MPI).

The 1D Poisson problem ``u = sin(3 pi x / L) + x / L`` on ``[0, L]`` for ``L = 1e-3, 1, 1e3``
is one problem in three units: the relative errors (L2, H1, H1 seminorm, max) must agree to
round-off, and the absolute ones scale with the unit (``L^(1/2)`` in 1D).  Before the
seminorm was weighted by ``L``, the relative H1 error was the seminorm's on ``[0, 1e-3]`` and
the L2 error's on ``[0, 1e3]`` (a factor of 30 apart here).
"""

from __future__ import annotations

from mpi4py import MPI

import dolfinx
import numpy as np
import pytest

from dolfinx_nn.ansatz import Problem
from dolfinx_nn.ansatz.errors import fem_errors, network_errors
from dolfinx_nn.ansatz.fem_reference import solve_fem
from dolfinx_nn.ansatz.network_solver import NetworkConfig, solve_network
from dolfinx_nn.meshes import refine
from dolfinx_nn.training import TrainingConfig

LENGTHS = (1e-3, 1.0, 1e3)
RELATIVE = ("relative_l2_error", "relative_h1_error", "relative_h1_seminorm_error",
            "relative_max_error")


def _problem(length: float) -> Problem:
    return Problem.from_text("poisson", f"sin(3*pi*x[0]/{length!r}) + x[0]/{length!r}", 1)


def _mesh(length: float) -> dolfinx.mesh.Mesh:
    return dolfinx.mesh.create_interval(MPI.COMM_WORLD, 16, [0.0, length])


def _check_invariant(errors: dict[float, dict]) -> None:
    reference = errors[1.0]
    for length, err in errors.items():
        assert err["h1_length"] == pytest.approx(length, rel=1e-14)
        for key in RELATIVE:
            assert err[key] == pytest.approx(reference[key], rel=1e-10), (key, length)
        for key in ("l2_error", "h1_error", "h1_seminorm_error"):
            assert err[key] == pytest.approx(reference[key] * np.sqrt(length), rel=1e-10)
        assert err["h1_error"] == pytest.approx(np.hypot(err["l2_error"],
                                                         err["h1_seminorm_error"]), rel=1e-14)


@pytest.mark.parametrize("degree", [1, 2])
def test_fem_errors_do_not_depend_on_the_unit_of_length(degree):
    errors = {}
    for length in LENGTHS:
        problem, mesh = _problem(length), _mesh(length)
        errors[length] = fem_errors(problem, solve_fem(problem, mesh, degree).uh)
    _check_invariant(errors)
    # the seminorm dominates the H1 error of P1 and P2 (one order lower); both parts count
    err = errors[1.0]
    assert err["l2_error"] < err["h1_seminorm_error"] < err["h1_error"]
    assert err["relative_h1_seminorm_error"] > 3 * err["relative_l2_error"]


def test_network_errors_do_not_depend_on_the_unit_of_length():
    """The network side is one run in every unit (:mod:`dolfinx_nn.ansatz.units`), so its
    errors, measured in the user's units, must agree to round-off too."""
    config = NetworkConfig(width=8, depth=2, points=100, fit_features=60, fit_boundary_points=20,
                           training=TrainingConfig(adam_steps=0, lbfgs_steps=20))
    errors = {}
    for length in LENGTHS:
        problem, mesh = _problem(length), _mesh(length)
        sol = solve_network(problem, mesh, config)
        errors[length] = network_errors(problem, sol.ansatz, refine(mesh))
    _check_invariant(errors)
    assert errors == MPI.COMM_WORLD.bcast(errors, root=0)
