"""The network ansatz solves Poisson on a domain with a hole; the compare command end to end."""

from __future__ import annotations

import json
import warnings

from mpi4py import MPI

import dolfinx
import numpy as np
import pytest
from demo_loader import load_demo

from dolfinx_nn.ansatz import Problem
from dolfinx_nn.ansatz.errors import network_errors
from dolfinx_nn.ansatz.losses import RitzLoss
from dolfinx_nn.ansatz.network_solver import (
    NetworkConfig,
    build_ansatz,
    quadrature_mesh,
    solve_network,
)
from dolfinx_nn.ansatz.units import canonical
from dolfinx_nn.cli import main
from dolfinx_nn.meshes import create_mesh
from dolfinx_nn.training import TrainingConfig, train

EXACT = "sin(pi*x[0])*sin(pi*x[1]) + x[0]*x[1]"


def test_poisson_with_hole_below_one_percent():
    """Ritz energy, 200 L-BFGS steps: relative L2 error < 1e-2, well below G's own error.

    One seed suffices here because the Ritz runs barely spread: seeds 0..3 give 4.17e-3 to
    4.45e-3 on one rank and 4.24e-3 to 4.57e-3 on two, so the bound 1e-2 is 2.2 times the
    largest error measured, not a coin flip of the optimizer.  (The quadrature is taken on the
    mesh refined once, 2064 points for 1341 parameters: on the 516 points of the mesh itself
    the network could fool the rule, see test_ritz_quadrature_has_more_points_than_parameters.)
    """
    comm = MPI.COMM_WORLD
    mesh = create_mesh(comm, "square-with-hole", 6)
    problem = Problem.from_text("poisson", EXACT, 2)
    config = NetworkConfig(width=20, depth=4, loss="ritz", fit_features=300,
                           fit_boundary_points=2000,
                           training=TrainingConfig(adam_steps=0, lbfgs_steps=200))
    sol = solve_network(problem, mesh, config)
    net = network_errors(problem, sol.ansatz, mesh)["relative_l2_error"]
    g_only = network_errors(problem, sol.ansatz.extension, mesh)["relative_l2_error"]
    assert net < 1e-2
    assert net < 0.5 * g_only
    assert net == comm.bcast(net, root=0)


def test_compare_command_writes_results(tmp_path_factory):
    comm = MPI.COMM_WORLD
    out = comm.bcast(str(tmp_path_factory.mktemp("compare")) if comm.rank == 0 else None)
    code = main(["compare", "--mesh", "square", "--resolution", "4", "--levels", "2",
                 "--pde", "advection-diffusion", "--exact", "x[0]*x[1] + sin(x[1])",
                 "--advection", "1, 0.5", "--diffusion", "0.5", "--points", "300",
                 "--lbfgs-steps", "30", "--out", out])
    assert code == 0
    if comm.rank == 0:
        import pathlib

        data = json.loads((pathlib.Path(out) / "results.json").read_text())
        assert len(data["fem"]) == 4
        for row in data["fem"]:
            assert {"dofs", "l2_error", "h1_error", "max_error", "wall_time_s"} <= set(row)
        net = data["network"]
        assert {"parameters", "l2_error", "h1_error", "max_error", "boundary_max_error",
                "wall_time_s"} <= set(net)
        assert net["boundary_max_error"] < 1e-3
        assert net["relative_l2_error"] < 0.1
        for name in ("errors.png", "fields.png"):
            assert (pathlib.Path(out) / name).stat().st_size > 1000
        assert (pathlib.Path(out) / "fields.bp").is_dir()


def test_compare_reads_a_one_dimensional_xdmf_mesh(tmp_path_factory):
    """A 1D mesh written by DOLFINx to XDMF (stored with two coordinates) runs end to end.

    It used to fail with "empty bounding box: lower [0. 0.], upper [2. 0.]".
    """
    import pathlib

    import dolfinx
    import dolfinx.io

    from dolfinx_nn.ansatz.compare import CompareConfig, compare

    comm = MPI.COMM_WORLD
    folder = pathlib.Path(comm.bcast(str(tmp_path_factory.mktemp("xdmf1d"))
                                      if comm.rank == 0 else None))
    with dolfinx.io.XDMFFile(comm, str(folder / "line.xdmf"), "w") as xdmf:
        xdmf.write_mesh(dolfinx.mesh.create_interval(comm, 16, [0.0, 2.0]))
    network = NetworkConfig(points=200, fit_features=50, fit_boundary_points=20,
                            training=TrainingConfig(adam_steps=0, lbfgs_steps=40))
    data = compare(Problem.from_text("poisson", "sin(2*x[0]) + 1", 1),
                   CompareConfig(mesh=str(folder / "line.xdmf"), levels=2, network=network), comm)
    assert data["config"]["levels_used"] == 2
    p2 = [r for r in data["fem"] if r["degree"] == 2]
    assert p2[1]["l2_rate"] == pytest.approx(3.0, abs=0.2)
    assert data["network"]["relative_l2_error"] < 0.05
    # max of the torsion function x (2 - x) / 2 is 1/2: the length is sqrt(1/2)
    assert data["network"]["scales"]["length"] == pytest.approx(0.5**0.5, rel=1e-3)


def test_compare_refuses_a_curve_in_the_plane(tmp_path_factory):
    """Cells that do not fill the space (a line in 2D) are refused on every rank."""
    import pathlib

    import meshio

    comm = MPI.COMM_WORLD
    path = pathlib.Path(comm.bcast(str(tmp_path_factory.mktemp("curve")) if comm.rank == 0
                                   else None)) / "curve.vtu"
    if comm.rank == 0:
        t = np.linspace(0.0, 1.0, 9)
        points = np.column_stack([t, t**2, np.zeros_like(t)])
        meshio.write(path, meshio.Mesh(points, [("line", np.column_stack([np.arange(8),
                                                                          np.arange(1, 9)]))]))
    comm.Barrier()
    from dolfinx_nn.ansatz.compare import CompareConfig, compare

    with pytest.raises(ValueError, match="1D cells in 2D space"):
        compare(Problem.from_text("poisson", "x[0]", 2), CompareConfig(mesh=str(path)), comm)


def test_compare_refuses_bad_pde():
    with pytest.raises(SystemExit):
        main(["compare", "--pde", "wave", "--exact", "x[0]", "--out", "/nonexistent"])


def test_demo_runs(tmp_path_factory):
    """The literate demo with few steps: FEM P2 beats 1e-3 and the network stays accurate."""
    comm = MPI.COMM_WORLD
    out = comm.bcast(str(tmp_path_factory.mktemp("demo")) if comm.rank == 0 else None)
    demo = load_demo("demo_ansatz_vs_fem")
    results = demo.main(out=out, lbfgs_steps=20, levels=2)
    p2 = [r for r in results["fem"] if r["degree"] == 2]
    assert p2[-1]["relative_l2_error"] < 1e-3
    assert results["network"]["relative_l2_error"] < 2e-2
    # the fits meet the boundary data to FIT_TOLERANCE (1e-3) at held-out points
    assert results["network"]["boundary_relative_max_error"] < 2e-3


def test_ritz_quadrature_has_more_points_than_parameters():
    """A network with more parameters than quadrature points lowers the Ritz energy at the
    points below the minimum ("fools" the rule); the loss refines the mesh that carries them.

    Unit square 4 x 4, degree 2: 96 points for 151 parameters.  After 150 L-BFGS steps the
    energy by the training rule and by a finer one (refined mesh, degree 6) parted by 0.44 on
    one rank, and the held-out check warned (on rank 0 only); on the mesh refined by
    :func:`~dolfinx_nn.ansatz.network_solver.quadrature_mesh` (384 points) they agreed to 2e-6.
    """
    comm = MPI.COMM_WORLD
    mesh = dolfinx.mesh.create_unit_square(comm, 4, 4)
    problem = Problem.from_text("poisson", EXACT, 2)
    config = NetworkConfig(width=10, depth=2, loss="ritz", quadrature_degree=2,
                           fit_features=100, fit_boundary_points=200,
                           training=TrainingConfig(adam_steps=0, lbfgs_steps=150))
    hat = canonical(problem, mesh)
    gaps = {}
    for refined in (False, True):
        ansatz, scales = build_ansatz(hat.problem, hat.mesh, config)
        parameters = sum(p.numel() for p in ansatz.network.parameters())
        qmesh, refinements = quadrature_mesh(hat.mesh, 2, parameters)
        assert parameters == 151 and refinements == 1
        loss = RitzLoss(hat.problem, ansatz, qmesh if refined else hat.mesh, degree=2,
                        scale=scales.energy)
        assert loss.points == (384 if refined else 96)
        train(loss, ansatz.network, config.training, comm=comm)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = loss.held_out()
        gaps[refined] = report["held_out_gap"]
        exploited = [w for w in caught if "exploits the rule" in str(w.message)]
        # once per run, on rank 0 (the energies are global): not once per rank
        assert len(exploited) == int(not refined and comm.rank == 0)
    assert gaps[False] > 1e-2
    assert gaps[True] < 1e-4
    assert gaps == comm.bcast(gaps, root=0)


def test_a_fit_that_misses_its_boundary_tolerance_is_said():
    """Two boundary points cannot pin ``G`` to the data on a square's boundary: the misfit,
    agreed over ranks, is warned about on rank 0 (the ansatz meets the boundary condition
    only as closely as its fits) instead of only being recorded in ``fit_report``."""
    from dolfinx_nn.ansatz.network_solver import fit_fixed_fields

    comm = MPI.COMM_WORLD
    mesh = dolfinx.mesh.create_unit_square(comm, 6, 6)
    problem = Problem.from_text("poisson", EXACT, 2)
    few = NetworkConfig(fit_features=50, fit_boundary_points=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_fixed_fields(problem, mesh, few)
    said = [str(w.message) for w in caught if "misses its boundary tolerance" in str(w.message)]
    if comm.rank == 0:
        assert said and "fit_boundary_points=2" in said[0], said
    else:
        assert not said
    enough = NetworkConfig(fit_features=200, fit_boundary_points=2000, fit_tolerance=0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_fixed_fields(problem, mesh, enough)
    assert not [w for w in caught if "misses its boundary tolerance" in str(w.message)]
