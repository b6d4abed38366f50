"""Monge-Ampere solvers: network accuracy and convexity, FEM convergence, the command line."""

from __future__ import annotations

import json
import pathlib


import dolfinx
import numpy as np
import pytest

from dolfinx_nn.monge_ampere import (
    Ball,
    Box,
    NetworkConfig,
    get_case,
    solve_fem,
    solve_network,
)


def test_icnn_solves_the_smooth_case_in_2d():
    config = NetworkConfig(adam_steps=150, lbfgs_steps=100, n_interior=300, n_boundary=100,
                           n_test=10_000)
    result = solve_network(get_case("smooth"), Box(2), config)
    assert result.rel_l2_error < 1e-2
    assert result.convexity_violation_fraction == 0.0
    assert result.min_hessian_eigenvalue > 0.0


@pytest.mark.parametrize("dim", [3, 4])
def test_icnn_runs_the_smooth_case_in_higher_dimensions(dim):
    config = NetworkConfig(adam_steps=100, lbfgs_steps=30, n_interior=300, n_boundary=200,
                           width=24, n_test=10_000)
    result = solve_network(get_case("smooth"), Ball(dim), config)
    assert result.rel_l2_error < 0.1  # short run; docs/monge_ampere.md has converged numbers
    assert result.convexity_violation_fraction == 0.0


def test_ffnn_violates_convexity_where_the_icnn_cannot():
    """On the degenerate case (u flat on a disk) the penalized FFNN is not convex everywhere."""
    case, domain = get_case("degenerate"), Box(2)
    fractions = {}
    for ansatz in ("ffnn", "icnn"):
        config = NetworkConfig(ansatz=ansatz, adam_steps=60, lbfgs_steps=0, n_interior=200,
                               n_boundary=100, n_test=10_000)
        fractions[ansatz] = solve_network(case, domain, config).convexity_violation_fraction
    assert fractions["ffnn"] > 0.01
    assert fractions["icnn"] == 0.0


def _rates(errors: list[float], hs: list[float]) -> np.ndarray:
    return np.log(np.array(errors[:-1]) / errors[1:]) / np.log(np.array(hs[:-1]) / hs[1:])


def test_fem_reference_converges_at_the_expected_rate_in_2d(comm):
    """P2, smooth solution: H1 error O(h^2) (Brenner-Gudi-Neilan), Newton in <= 10 steps."""
    results = [
        solve_fem(get_case("smooth"), dolfinx.mesh.create_unit_square(comm, n, n))
        for n in (4, 8, 16)
    ]
    h = [r.h for r in results]
    h1_rates = _rates([r.h1_error for r in results], h)
    l2_rates = _rates([r.rel_l2_error for r in results], h)
    assert np.all(h1_rates > 1.9), h1_rates
    assert np.all(l2_rates > 1.9), l2_rates
    assert all(r.newton_iterations <= 10 for r in results)
    assert results[-1].rel_l2_error < 5e-5
    assert results[-1].dofs == 33 * 33


def test_fem_reference_in_3d(comm):
    results = [
        solve_fem(get_case("smooth"), dolfinx.mesh.create_unit_cube(comm, n, n, n))
        for n in (2, 4)
    ]
    rate = _rates([r.h1_error for r in results], [r.h for r in results])[0]
    assert rate > 1.8
    assert all(r.newton_iterations <= 10 for r in results)


def test_fem_rejects_unsupported_input(comm):
    mesh = dolfinx.mesh.create_unit_square(comm, 2, 2)
    with pytest.raises(ValueError, match="degree must be >= 2"):
        solve_fem(get_case("smooth"), mesh, degree=1)
    cube = dolfinx.mesh.create_unit_cube(comm, 1, 1, 1)
    with pytest.raises(ValueError, match="not defined for d = 3"):
        solve_fem(get_case("brenner"), cube)


def test_command_line_writes_results(tmp_path_factory, comm, capsys):
    from dolfinx_nn.cli import main

    out = comm.bcast(str(tmp_path_factory.mktemp("ma")) if comm.rank == 0 else None, root=0)
    argv = ["monge-ampere", "--case", "smooth", "--dim", "2", "--fem", "--resolution", "4",
            "--adam-steps", "20", "--lbfgs-steps", "5", "--n-interior", "100",
            "--n-boundary", "40", "--n-test", "10000", "--out", out]
    assert main(argv) == 0
    data = json.loads((pathlib.Path(out) / "results.json").read_text())
    assert set(data["network"]) >= {"rel_l2_error", "max_error", "convexity_violation_fraction",
                                    "wall_time_s"}
    assert set(data["fem"]) >= {"rel_l2_error", "h1_error", "newton_iterations", "dofs",
                                "wall_time_s"}
    assert data["network"]["convexity_violation_fraction"] == 0.0
    assert data["fem"]["dofs"] == 81 and data["fem"]["rel_l2_error"] < 1e-3
    assert data["ranks"] == comm.size
    capsys.readouterr()
    assert main(["monge-ampere", "--domain", "ball", "--fem", "--out", out]) == 1
    if comm.rank == 0:  # one line, printed once
        assert "error: --fem needs d = 2 or 3" in capsys.readouterr().err
    comm.Barrier()
