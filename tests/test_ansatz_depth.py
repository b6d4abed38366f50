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
from dolfinx_nn.ansatz.depth import compare_depths, summarize
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


#: Seeds of the statistic in the test: three, so that a median exists and one unlucky run
#: cannot decide it.
SEEDS = (0, 1, 2)

#: Largest accepted ratio of the median final losses (mean squared scaled residual), deep /
#: shallow.  Measured over seeds 0..15 on one rank (``python -m dolfinx_nn.ansatz.depth
#: --seeds 16``, docs/ansatz.md): deep 0.040 to 0.136 (median 0.065), shallow 0.219 to 0.264
#: (median 0.246), a ratio of medians of 0.27.  Every deep loss measured is below 0.7 x the
#: smallest shallow loss (0.136 < 0.153), so the median of any three seeds passes; another
#: CPU, or another rank count, gives other draws of these same distributions.
LOSS_RATIO = 0.7


def test_deep_beats_shallow_at_equal_parameter_count(setting):
    """800 L-BFGS steps, seeds 0, 1, 2: medians over seeds, not one run.

    One run decides nothing: round-off (another CPU, another rank count) sends L-BFGS on
    another trajectory, and over seeds 0..15 the per-seed error ratio deep / shallow ranges
    from 0.64 to 1.23 (median 0.84, deep more accurate in 15 of 16; one rank).  The test
    asserts the medians over three seeds: deep's median error below shallow's (it fails only
    if two of three fresh draws lose: 1.1 % at the rate of 1 in 16 measured on one rank, 2.0 %
    at the 2 in 24 of all runs), and deep's
    median final loss below :data:`LOSS_RATIO` times shallow's, which no measured run
    approaches.
    """
    problem, mesh, reference = setting
    results = compare_depths(problem, mesh, reference, PARAMETERS, (4, 1), _config(800), SEEDS)
    summary = summarize(results)
    deep, shallow = summary["depths"][4], summary["depths"][1]
    assert deep["relative_l2_error"]["median"] < shallow["relative_l2_error"]["median"]
    assert deep["final_loss"]["median"] < LOSS_RATIO * shallow["final_loss"]["median"]
    assert summary["ratios"]["4/1"]["seeds"] == len(SEEDS)
    errors = [r.relative_l2_error for r in results]
    assert errors == MPI.COMM_WORLD.bcast(errors, root=0)
