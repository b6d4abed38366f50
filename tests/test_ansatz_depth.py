"""Deep (4 hidden layers) versus shallow (1 hidden layer) ``N`` at equal parameter count.

Poisson on the unit square with a hole, ``u = sin(2 pi x) sin(2 pi y) + x y``, strong-form
residual at the degree-4 quadrature points of the mesh (516 points, the same set on any number
of ranks), L-BFGS from identical settings; ``G`` and ``D`` fitted once and shared.
"""

from __future__ import annotations

from mpi4py import MPI

import pytest

from dolfinx_nn.ansatz import Problem
from dolfinx_nn.ansatz.compare import refine
from dolfinx_nn.ansatz.depth import compare_depths
from dolfinx_nn.ansatz.errors import network_errors
from dolfinx_nn.ansatz.network_solver import NetworkConfig, fit_fixed_fields
from dolfinx_nn.meshes import create_mesh
from dolfinx_nn.training import TrainingConfig

EXACT = "sin(2*pi*x[0])*sin(2*pi*x[1]) + x[0]*x[1]"
PARAMETERS = 300


def _config(steps: int) -> NetworkConfig:
    return NetworkConfig(loss="strong", collocation="quadrature", quadrature_degree=4,
                         fit_features=300, fit_boundary_points=2000,
                         training=TrainingConfig(adam_steps=0, lbfgs_steps=steps))


@pytest.fixture(scope="module")
def setting():
    comm = MPI.COMM_WORLD
    mesh = create_mesh(comm, "square-with-hole", 6)
    return Problem.from_text("poisson", EXACT, 2), mesh, refine(mesh)


def test_depths_are_compared_at_equal_parameter_count(setting):
    """Widths 9 (4 layers) and 75 (1 layer): 307 and 301 parameters; both improve on G."""
    problem, mesh, reference = setting
    deep, shallow = compare_depths(problem, mesh, reference, PARAMETERS, (4, 1), _config(30))
    assert (deep.depth, shallow.depth) == (4, 1)
    for r in (deep, shallow):
        assert abs(r.parameters - PARAMETERS) <= 0.025 * PARAMETERS
        assert r.steps == 30
    G = fit_fixed_fields(problem, mesh, _config(30)).extension
    g_only = network_errors(problem, G, reference)["relative_l2_error"]
    assert max(deep.relative_l2_error, shallow.relative_l2_error) < g_only
    assert deep.relative_l2_error == MPI.COMM_WORLD.bcast(deep.relative_l2_error, root=0)


#: Largest error ratio deep / shallow accepted.  Measured with this setting: 0.65, 0.66, 0.76
#: on one rank and 0.80, 0.77, 0.65 on two ranks (seeds 0, 1, 2; the rank count changes only
#: the round-off of the sums, which L-BFGS amplifies).
RATIO = 0.85


def test_deep_beats_shallow_at_equal_parameter_count(setting):
    """800 L-BFGS steps, seed 0: deep 4x9 9.7e-3 against shallow 1x75 1.5e-2 (one rank)."""
    problem, mesh, reference = setting
    deep, shallow = compare_depths(problem, mesh, reference, PARAMETERS, (4, 1), _config(800))
    assert deep.relative_l2_error < RATIO * shallow.relative_l2_error
    assert deep.relative_l2_error < 1.5e-2
