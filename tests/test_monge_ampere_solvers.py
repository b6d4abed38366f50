"""Monge-Ampere solvers: network accuracy and convexity, FEM convergence, the command line."""

from __future__ import annotations

import json
import pathlib
import re
from dataclasses import replace

import dolfinx
import numpy as np
import pytest

from dolfinx_nn.monge_ampere import (
    DEFAULT_TRAINING,
    Ball,
    Box,
    NetworkConfig,
    get_case,
    solve_fem,
    solve_network,
)


def test_icnn_solves_the_smooth_case_in_2d():
    config = NetworkConfig(training=replace(DEFAULT_TRAINING, adam_steps=150, lbfgs_steps=100),
                           n_interior=300, n_boundary=100, n_test=10_000)
    result = solve_network(get_case("smooth"), Box(2), config)
    assert result.rel_l2_error < 1e-2
    assert result.convexity_violation_fraction == 0.0
    assert result.min_hessian_eigenvalue > 0.0


@pytest.mark.parametrize("dim", [3, 4])
def test_icnn_runs_the_smooth_case_in_higher_dimensions(dim):
    """A cheap instance (130 steps, 300 points) of what the defaults do on the ball.

    Five seeds (0..4) of this instance gave 2.94e-2 .. 4.07e-2 (median 3.68e-2) for d = 3 and
    2.45e-2 .. 3.40e-2 (median 2.95e-2) for d = 4 with the present loss scaling (with the
    earlier one, boundary term over mean g^2: 1.97e-2 .. 3.60e-2 and 2.39e-2 .. 2.73e-2); the
    bound is 1.5 times the worst seed, whose distance from the median is 0.1 of it.
    (Before the ICNN's first-layer ridges were sharpened this instance was only checked
    against 0.1; the defaults' table over seeds is in docs/monge_ampere.md.)
    """
    config = NetworkConfig(training=replace(DEFAULT_TRAINING, adam_steps=100, lbfgs_steps=30),
                           n_interior=300, n_boundary=200, width=24, n_test=10_000)
    result = solve_network(get_case("smooth"), Ball(dim), config)
    assert result.rel_l2_error < 0.06
    assert result.convexity_violation_fraction == 0.0


def test_ffnn_violates_convexity_where_the_icnn_cannot():
    """On the degenerate case (u flat on a disk) the penalized FFNN is not convex everywhere."""
    case, domain = get_case("degenerate"), Box(2)
    fractions = {}
    for ansatz in ("ffnn", "icnn"):
        config = NetworkConfig(ansatz=ansatz, n_interior=200,
                               training=replace(DEFAULT_TRAINING, adam_steps=60, lbfgs_steps=0),
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
    # the seminorm in the H1 error is weighted by the domain's extent (1 here)
    assert all(r.h1_length == 1.0 for r in results)


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
    assert set(data["fem"]) >= {"rel_l2_error", "h1_error", "rel_h1_error",
                                "newton_iterations", "dofs", "wall_time_s"}
    assert data["network"]["convexity_violation_fraction"] == 0.0
    assert data["fem"]["dofs"] == 81 and data["fem"]["rel_l2_error"] < 1e-3
    assert data["ranks"] == comm.size
    capsys.readouterr()
    assert main(["monge-ampere", "--domain", "ball", "--fem", "--out", out]) == 1
    if comm.rank == 0:  # one line, printed once
        assert "error: --fem needs d = 2 or 3" in capsys.readouterr().err
    comm.Barrier()


@pytest.mark.parametrize(
    "name, resolutions, l2_rate, h1_rate, h1_rate_max",
    [
        # smooth solution, f = 0 on the edge x = 0: optimal P2 rates
        ("brenner", (4, 8, 16), 2.0, 1.8, 2.2),
        # u in H^(5/2 - eps) (D^2 u jumps across a circle): H1 rate 3/2 expected
        ("degenerate", (4, 8, 16), 1.3, 1.2, 2.0),
        # u in H^(3/2 - eps), f not integrable at the corner (1, 1): H1 rate 1/2 expected.
        # 24 cells per edge: every strategy used to end on a non-convex solution there
        ("singular", (6, 12, 24), 1.1, 0.4, 0.6),
    ],
)
def test_fem_reference_converges_on_the_hard_cases(comm, name, resolutions, l2_rate, h1_rate,
                                                   h1_rate_max):
    """Mesh sequencing with continuation in the data (docs: 6 to 64 cells per edge, all
    rates).  Newton from the Poisson guess used to diverge here, or to converge to a
    non-convex discrete solution; every accepted solution is convex cell by cell."""
    from dolfinx_nn.monge_ampere import solve_fem_sequence

    meshes = (dolfinx.mesh.create_unit_square(comm, n, n) for n in resolutions)
    results = solve_fem_sequence(get_case(name), meshes, center=[0.5, 0.5])
    h = [r.h for r in results]
    l2 = _rates([r.rel_l2_error for r in results], h)
    h1 = _rates([r.h1_error for r in results], h)
    assert np.all(l2 > l2_rate), l2
    assert np.all((h1 > h1_rate) & (h1 < h1_rate_max)), h1
    assert all(r.min_hessian_eigenvalue > -1e-2 for r in results)


def test_fem_rejects_non_convex_solutions(comm):
    """Concave boundary data: no convex solution attains it, and Newton's non-convex answers
    are refused with the reason, not returned."""
    from dolfinx_nn.monge_ampere import FEMSolveError, formula_case

    case = formula_case("1", "-(x[0]**2 + x[1]**2)", dim=2)
    with pytest.raises(FEMSolveError, match="no convex solution") as info:
        solve_fem(case, dolfinx.mesh.create_unit_square(comm, 4, 4))
    assert info.value.reason_name == "NOT_CONVEX"
    # Newton did converge at (s, delta) = (1, 0): the refusal is the convexity check's
    assert any(p["converged"] and p["s"] == 1.0 and p["delta"] == 0.0 for p in info.value.path)


def _shared_dir(tmp_path_factory, comm) -> pathlib.Path:
    return pathlib.Path(comm.bcast(str(tmp_path_factory.mktemp("ma")) if comm.rank == 0
                                   else None, root=0))


_TINY = ["--adam-steps", "20", "--lbfgs-steps", "5", "--n-interior", "100", "--n-boundary", "40",
         "--n-test", "2000"]


def test_command_writes_results_and_exits_3_when_the_fem_fails(tmp_path_factory, comm):
    from dolfinx_nn.cli import main

    out = _shared_dir(tmp_path_factory, comm) / "fail"
    argv = ["monge-ampere", "--f", "1", "--g", "-(x[0]**2 + x[1]**2)", "--fem",
            "--resolution", "4", *_TINY, "--out", str(out)]
    assert main(argv) == 3
    data = json.loads((out / "results.json").read_text())
    assert data["fem"]["status"] == "failed"
    assert "no convex solution" in data["fem"]["reason"]
    assert data["fem"]["reason_name"] == "NOT_CONVEX"
    assert data["network"]["rel_l2_error"] is None  # no exact solution given
    assert np.isfinite(data["network"]["relative_residual"])
    comm.Barrier()


def test_command_takes_formulas_and_a_mesh_file(tmp_path_factory, comm, capfd):
    """The smooth case typed as formulas, on a mesh written to XDMF: same answer as built in."""
    from dolfinx_nn.cli import main

    folder = _shared_dir(tmp_path_factory, comm)
    mesh_file = folder / "square.xdmf"
    with dolfinx.io.XDMFFile(comm, mesh_file, "w") as xdmf:
        xdmf.write_mesh(dolfinx.mesh.create_unit_square(comm, 8, 8))
    r2 = "(x[0]**2 + x[1]**2)"
    out = folder / "formula"
    argv = ["monge-ampere", "--f", f"(1 + {r2})*exp({r2})", "--g", f"exp({r2}/2)",
            "--exact", f"exp({r2}/2)", "--domain", str(mesh_file), "--fem", *_TINY,
            "--out", str(out)]
    assert main(argv) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["case"] == "formula" and data["domain"] == str(mesh_file)
    builtin = solve_fem(get_case("smooth"), dolfinx.mesh.create_unit_square(comm, 8, 8))
    assert data["fem"]["rel_l2_error"] == pytest.approx(builtin.rel_l2_error, rel=1e-8)
    assert data["fem"]["dofs"] == 17 * 17
    assert data["network"]["rel_l2_error"] < 0.2  # 25 training steps only
    for argv, message in (
        (["--f", "1"], "needs both --f .* and --g"),
        (["--case", "smooth", "--f", "1", "--g", "1"], "not both"),
        (["--f", "__import__('os')", "--g", "1"], "--f"),
    ):
        try:
            code = main(["monge-ampere", *argv, "--out", str(out)])
        except SystemExit as exit_:  # a bad option value ends at argument parsing
            code = exit_.code
        assert code != 0
        err = capfd.readouterr().err
        assert comm.rank != 0 or re.search(message, err), argv  # printed once, by rank 0
    comm.Barrier()
