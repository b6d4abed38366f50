"""Time to reach a relative L2 error of 1e-2 and 1e-3: FEM (P1, P2) versus the network ansatz.

Cases (exact solutions are smooth manufactured ones):
  poisson-2d      Poisson on the unit square with a hole (gmsh), network: Ritz energy
  poisson-3d      Poisson on the unit cube, network: strong residual at 4000 points
  heat-2d         heat-advection on the unit square, t in (0, 1], network: strong residual

FEM refines the base mesh uniformly until the error is below each target; its time is the
assembly + solve time of the first mesh that reaches it (forms compiled beforehand).  The
network time is the G/D fit plus training until the error, checked every CHECK_EVERY steps
on a fixed quadrature point set, first drops below the target (None if it never does within
the step budget; the time includes those checks).  The network is fitted and trained on its
own mesh (the mesh only supplies points), of the resolution given per case.
Writes OUT/BENCH_compare.json.

Example:
  dolfinx-nn bench compare --out results/bench
  dolfinx-nn bench compare --cases poisson-2d --lbfgs-steps 300 --out results/bench
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from mpi4py import MPI

from dolfinx_nn.ansatz.compare import refine
from dolfinx_nn.ansatz.errors import fem_errors, network_errors, relative_l2
from dolfinx_nn.ansatz.fem_reference import solve_fem
from dolfinx_nn.ansatz.network_solver import NetworkConfig, solve_network
from dolfinx_nn.ansatz.pdes import Problem
from dolfinx_nn.cli_options import (
    add_threads_argument,
    add_training_arguments,
    training_from_args,
)
from dolfinx_nn.meshes import create_mesh
from dolfinx_nn.output import prepare_output_dir, print0, write_json

TARGETS = (1e-2, 1e-3)
CHECK_EVERY = 25

#: case -> (mesh, FEM base resolution, max FEM levels, network mesh resolution, pde, exact,
#: advection, loss)
CASES: dict[str, tuple[str, int, int, int, str, str, str | None, str]] = {
    "poisson-2d": ("square-with-hole", 6, 5, 6, "poisson",
                   "sin(pi*x[0])*sin(pi*x[1]) + x[0]*x[1]", None, "ritz"),
    "poisson-3d": ("cube", 2, 5, 4, "poisson",
                   "sin(pi*x[0])*sin(pi*x[1])*sin(pi*x[2]) + x[0]*x[1]*x[2]", None, "strong"),
    "heat-2d": ("square", 4, 5, 8, "heat-advection",
                "exp(-t)*sin(pi*x[0])*sin(pi*x[1]) + x[0]*t", "1, 0.5", "strong"),
}


#: Network settings of the 3D cases (the 2D defaults fit G and D too coarsely on a surface).
FITS_3D: dict[str, Any] = {"fit_features": 1000, "fit_boundary_points": 6000, "points": 4000}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dolfinx-nn bench compare``."""
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated subset of {', '.join(CASES)}")
    add_training_arguments(parser, NetworkConfig().training)
    parser.add_argument("--width", type=int, default=20)
    parser.add_argument("--depth", type=int, default=4)
    add_threads_argument(parser)
    parser.add_argument("--out", default="results/bench", help="output folder")


def _fem_times(problem: Problem, mesh, levels: int, degree: int) -> dict:
    t = problem.final_time if problem.time_dependent else None
    solve_fem(problem, mesh, degree)  # compile the forms
    reached: dict[str, dict | None] = {f"{e:g}": None for e in TARGETS}
    rows = []
    for level in range(levels):
        sol = solve_fem(problem, mesh, degree)
        err = relative_l2(fem_errors(problem, sol.uh, t))
        rows.append({"dofs": sol.dofs, "relative_l2_error": err, "wall_time_s": sol.wall_time_s})
        for e in TARGETS:
            if reached[f"{e:g}"] is None and err <= e:
                reached[f"{e:g}"] = rows[-1]
        if err <= min(TARGETS) or level == levels - 1:
            break
        mesh = refine(mesh)
    return {"levels": rows, "reached": reached}


def _network_times(problem: Problem, mesh, loss: str, args) -> dict:
    comm = mesh.comm
    t = problem.final_time if problem.time_dependent else None
    reference = refine(mesh)
    reached: dict[str, dict | None] = {f"{e:g}": None for e in TARGETS}
    start = time.perf_counter()
    state: dict = {}

    def callback(step: int, value: float) -> bool:
        if step % CHECK_EVERY:
            return False
        err = relative_l2(network_errors(problem, state["ansatz"], reference, t, degree=6))
        elapsed = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
        for e in TARGETS:
            if reached[f"{e:g}"] is None and err <= e:
                reached[f"{e:g}"] = {"step": step, "wall_time_s": elapsed,
                                     "relative_l2_error": err}
        return err <= min(TARGETS)

    fits: dict[str, Any] = FITS_3D if mesh.geometry.dim == 3 else {}
    config = NetworkConfig(width=args.width, depth=args.depth, loss=loss, **fits,
                           training=training_from_args(args, NetworkConfig().training))
    sol = solve_network(problem, mesh, config, callback=callback, state=state)
    final = relative_l2(network_errors(problem, sol.ansatz, reference, t))
    return {"parameters": sol.parameters, "steps": sol.history.steps,
            "final_relative_l2_error": final, "wall_time_s": sol.wall_time_s,
            "fit_time_s": sol.fit_time_s, "reached": reached,
            "stopped_because": sol.history.stopped_because}


def run(args: argparse.Namespace) -> int:
    """Run the selected cases and write BENCH_compare.json."""
    comm = MPI.COMM_WORLD
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    out = prepare_output_dir(args.out, comm)
    results: dict[str, Any] = {"ranks": comm.size, "targets": list(TARGETS), "cases": {}}
    for name in names:
        spec, res, levels, net_res, pde, exact, advection, loss = CASES[name]
        mesh = create_mesh(comm, spec, res)
        problem = Problem.from_text(pde, exact, mesh.geometry.dim, advection=advection)
        case: dict[str, Any] = {"problem": problem.describe(), "mesh": spec, "resolution": res}
        for degree in (1, 2):
            case[f"fem_P{degree}"] = _fem_times(problem, mesh, levels, degree)
            print0(f"{name} P{degree}: {case[f'fem_P{degree}']['reached']}")
        net_mesh = create_mesh(comm, spec, net_res)
        case["network"] = _network_times(problem, net_mesh, loss, args)
        case["network"]["mesh_resolution"] = net_res
        print0(f"{name} network: {case['network']['reached']}")
        results["cases"][name] = case
        write_json(out / "BENCH_compare.json", results, comm)
    print0(f"wrote {out / 'BENCH_compare.json'}")
    return 0
