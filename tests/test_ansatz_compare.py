"""The compare command on bad and unusual input (serial and MPI): constant data, data that
are not finite, refused option combinations, a stage that fails, the final loss, and the
quadrature degree of the network's loss."""

from __future__ import annotations

import json
import pathlib

from mpi4py import MPI

import dolfinx
import numpy as np
import pytest

from dolfinx_nn.ansatz import Problem
from dolfinx_nn.ansatz.ansatz import DirichletAnsatz
from dolfinx_nn.ansatz.compare import CompareConfig, compare
from dolfinx_nn.ansatz.network_solver import (
    NetworkConfig,
    final_loss,
    fit_fixed_fields,
    make_loss,
    solve_network,
)
from dolfinx_nn.cli import main
from dolfinx_nn.training import TrainingConfig

#: A small run: 32 triangles, one FEM mesh, a 2 x 8 network, a few L-BFGS steps.
SMALL = ["compare", "--mesh", "square", "--resolution", "4", "--levels", "1", "--degrees", "1",
         "--width", "8", "--depth", "2", "--lbfgs-steps", "5", "--fit-features", "50",
         "--fit-boundary-points", "100", "--points", "100"]

NETWORK = NetworkConfig(width=8, depth=2, points=100, fit_features=50, fit_boundary_points=100,
                        training=TrainingConfig(adam_steps=0, lbfgs_steps=5))


@pytest.fixture
def out_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(MPI.COMM_WORLD.bcast(str(tmp_path), root=0))


def _results(out: pathlib.Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_constant_exact_solution_and_quadrature_degree(out_dir):
    """``--exact 1`` ran into "Could not extract MPI communicator for Expression" (a formula
    without x had no mesh in UFL).  With ``--quadrature-degree 2`` the quadrature collocation
    has 3 points per triangle: 96 on 32 cells, fewer than 1.5 per parameter (105), so the mesh
    is refined once (384 points; the default degree 4 has 192 on the base mesh)."""
    argv = [*SMALL, "--exact", "1", "--collocation", "quadrature", "--quadrature-degree", "2",
            "--out", str(out_dir)]
    assert main(argv) == 0
    results = _results(out_dir)
    fem, net = results["fem"][0], results["network"]
    assert fem["relative_l2_error"] < 1e-12  # P1 holds constants
    assert fem["relative_h1_seminorm_error"] is None  # the exact gradient is 0
    assert net["relative_l2_error"] < 1e-2
    assert results["config"]["network"]["quadrature_degree"] == 2
    assert net["loss_points"] == {"points": 384, "refinements": 1, "quadrature_degree": 2,
                                  "points_per_parameter": 384 / 105}
    assert (out_dir / "fields.png").is_file()


@pytest.mark.parametrize("pde, exact, advection", [
    ("poisson", "x[0] + 2*x[1]", None),  # f is UFL's Zero, grad u constant
    ("advection-diffusion", "2", "1, 0.5"),  # constant u and b
    ("heat-advection", "exp(-t)", "1, 0.5"),  # constant in space, g and u_0 of t only
])
def test_data_without_x(pde, exact, advection):
    comm = MPI.COMM_WORLD
    mesh = dolfinx.mesh.create_unit_square(comm, 4, 4)
    problem = Problem.from_text(pde, exact, 2, advection=advection, diffusion=0.1)
    config = CompareConfig(levels=1, degrees=(1,), network=NETWORK)
    results = compare(problem, config, comm, base=mesh)
    fem, net = results["fem"][0], results["network"]
    # P1 is exact for u affine in space; Crank-Nicolson (4 steps) errs in time only
    assert fem["relative_l2_error"] < (1e-2 if pde == "heat-advection" else 1e-12)
    assert np.isfinite(net["relative_l2_error"]) and net["relative_l2_error"] < 0.5
    assert np.isfinite(net["final_loss"])


def test_data_that_are_not_finite_are_refused_before_fem(out_dir, capsys):
    """``log(x[0])`` is -inf on the side x = 0: refused before FEM, on every rank."""
    comm = MPI.COMM_WORLD
    assert main([*SMALL, "--exact", "log(x[0] + 1) + log(x[0])", "--out", str(out_dir)]) != 0
    text = capsys.readouterr()
    assert "FEM" not in text.out
    if comm.rank == 0:
        line = [s for s in text.err.splitlines() if "error" in s]
        assert len(line) == 1
        assert "'log(x[0] + 1) + log(x[0])' is -inf at (0, " in line[0]
        assert "expected finite values" in line[0]
    assert not (out_dir / "results.json").exists()
    with pytest.raises(ValueError, match="source f = L u of the exact solution 'x.0.\\*\\*1.5'"):
        compare(Problem.from_text("poisson", "x[0]**1.5", 2),  # f ~ x^-1/2: inf at x = 0
                CompareConfig(levels=1, degrees=(1,), network=NETWORK), comm,
                base=dolfinx.mesh.create_unit_square(comm, 2, 2))


@pytest.mark.parametrize("extra, expected", [
    # max |u| = 1e-300: ||u||^2 underflowed to 0 and the progress line failed on a None
    (["--exact", "1e-300*(1 + x[0])"], "max |u| = 2e-300: expected max |u| in"),
    (["--exact", "1e200*(1 + x[0]**2)"], "max |u| = 2e+200: expected max |u| in"),
    (["--exact", "1 + x[0]", "--width", "0"], "width must be a positive integer, got 0"),
    (["--exact", "1 + x[0]", "--depth", "0"], "depth must be a positive integer, got 0"),
    (["--exact", "1 + x[0]", "--seed", "-1"], "seed must be a non-negative integer, got -1"),
    (["--exact", "1 + x[0]", "--fit-tolerance", "10"], "fit_tolerance must be in (0, 1)"),
    (["--exact", "t*x[0]", "--pde", "heat-advection", "--advection", "1, 0",
      "--final-time", "inf"], "final_time must be a positive finite number, got inf"),
])
def test_bad_values_are_refused_before_fem(out_dir, capsys, extra, expected):
    """Each refused with one line naming the value, before anything is solved, on every
    rank (they were refused after FEM, or not at all, or with a message naming no option)."""
    assert main([*SMALL, *extra, "--out", str(out_dir)]) != 0
    text = capsys.readouterr()
    assert "FEM" not in text.out
    if MPI.COMM_WORLD.rank == 0:
        assert expected in text.err


def test_ritz_loss_of_a_nonsymmetric_equation_is_refused_before_fem(out_dir, capsys):
    argv = [*SMALL, "--pde", "heat-advection", "--advection", "1, 0", "--loss", "ritz",
            "--exact", "t*x[0]", "--out", str(out_dir)]
    assert main(argv) != 0
    text = capsys.readouterr()
    assert "FEM" not in text.out
    if MPI.COMM_WORLD.rank == 0:
        assert "--loss ritz needs a symmetric equation" in text.err
    with pytest.raises(SystemExit) as info:  # refused while parsing, on every rank
        main([*SMALL, "--exact", "1", "--quadrature-degree", "0", "--out", str(out_dir)])
    assert info.value.code == 2


def test_failed_network_stage_keeps_the_fem_results(out_dir, capsys):
    """An Adam step of 1e200 overflows the loss: the network stage fails after FEM ran;
    results.json holds the FEM rows and the reason, and the run ends with one line."""
    argv = [*SMALL, "--exact", "x[0]*x[1] + 1", "--adam-steps", "2", "--adam-lr", "1e200",
            "--lbfgs-steps", "0", "--out", str(out_dir)]
    assert main(argv) != 0
    results = _results(out_dir)
    assert results["fem"][0]["relative_l2_error"] < 0.1
    assert results["network"] is None
    assert results["failures"]["network"].startswith("FloatingPointError: the loss is not finite")
    if MPI.COMM_WORLD.rank == 0:
        err = [s for s in capsys.readouterr().err.splitlines() if "error" in s]
        assert len(err) == 1 and "the network stage failed" in err[0]
        assert "results.json holds the FEM results" in err[0]


@pytest.mark.parametrize("loss", ["strong", "ritz"])
def test_final_loss_is_the_loss_at_the_returned_parameters(loss):
    """The history's last entry is the loss before the last step; the reported final loss is
    the loss of the returned network, evaluated again here from scratch."""
    comm = MPI.COMM_WORLD
    mesh = dolfinx.mesh.create_unit_square(comm, 4, 4)
    problem = Problem.from_text("poisson", "sin(2*x[0])*x[1] + 1", 2)
    config = NetworkConfig(width=8, depth=2, points=100, fit_features=50,
                           fit_boundary_points=100, loss=loss,
                           training=TrainingConfig(adam_steps=0, lbfgs_steps=5))
    sol = solve_network(problem, mesh, config)
    hat = sol.canonical
    assert hat is not None
    scales = fit_fixed_fields(hat.problem, hat.mesh, config).scales  # deterministic fits
    user = sol.ansatz
    canonical_ansatz = DirichletAnsatz(user.extension.field, user.distance.field,
                                       user.network.field)
    again = final_loss(make_loss(hat.problem, hat.mesh, canonical_ansatz, config, scales))
    assert sol.final_loss == pytest.approx(again, rel=1e-12, abs=1e-14)
    last = sol.history.losses[-1]
    assert sol.final_loss != last  # the last L-BFGS step moved the parameters
    if loss == "strong":
        assert sol.final_loss < last  # L-BFGS's line search lowers the loss
    assert sol.final_loss == comm.bcast(sol.final_loss, root=0)
