"""Cost of a network of the unknown inside a nonlinear form, against the same law in UFL.

Problem: -div(k(u) grad u) = f on the unit square, P1, quadrature degree 2, with

  ufl      k(u) = 1 + u^2 written in UFL;
  network  k(u) = NeuralOperator(MLP(u)) (1 -> width -> width -> 1, tanh, float64), refreshed
           at the quadrature points from the current u, and its derivative dk/du (torch.func)
           in the Jacobian.

At a fixed non-trivial u, it times (median over repeats, slowest rank) the residual assembly and
the Jacobian assembly as the SNES does them: for the network, the refresh of the operator (operand
evaluation, one batched network call, and for the Jacobian one batched forward-mode derivative)
plus DOLFINx's assembly of the same sparse forms.  It also times one full Newton solve of each.
It writes a JSON file with the times and the ratios network / UFL.

Target: ratio <= 3 for a small network at ~1e5 dofs, on 1 and 2 ranks.

Examples:
  dolfinx-nn bench operator                                   # 1e5 dofs
  mpiexec -n 2 dolfinx-nn bench operator --out BENCH_operator_np2.json
"""

from __future__ import annotations

import argparse

from mpi4py import MPI
from petsc4py import PETSc

import numpy as np
import torch
import ufl
from dolfinx import fem, mesh

import dolfinx_nn as dnn
from dolfinx_nn.cli_options import add_threads_argument
from dolfinx_nn.conversion import to_torch
from dolfinx_nn.meshes import boundary_dofs
from dolfinx_nn.networks.mlp import mlp
from dolfinx_nn.output import print0, write_json
from dolfinx_nn.quadrature import quadrature_space
from dolfinx_nn.timing import median_wall_time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dofs", type=float, nargs="+", default=[1e5],
                        help="approximate numbers of dofs (default: 1e5)")
    parser.add_argument("--width", type=int, default=16, help="hidden width of the MLP")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (median)")
    add_threads_argument(parser)
    parser.add_argument("--out", default=None,
                        help="JSON file (default: BENCH_operator_np<ranks>.json)")


def _mlp(width: int) -> torch.nn.Module:
    return mlp([1, width, width, 1], "tanh", output_activation="softplus",
               init_dtype=torch.float32)


def _case(msh: mesh.Mesh, width: int | None, repeats: int) -> dict[str, float]:
    """Times of residual/Jacobian assembly (and a Newton solve) for one way to write k."""
    comm = msh.comm
    V = fem.functionspace(msh, ("Lagrange", 1))
    bc = fem.dirichletbc(0.0, boundary_dofs(V), V)
    f = fem.Function(V)
    f.interpolate(lambda x: 20 * np.sin(np.pi * x[0]) * np.sin(np.pi * x[1]))
    u, v = fem.Function(V), ufl.TestFunction(V)
    if width is None:
        k, dx, operators = 1 + u**2, ufl.Measure("dx", metadata={"quadrature_degree": 2}), []
    else:
        k = dnn.NeuralOperator(_mlp(width), operands=(u,), space=quadrature_space(msh, 2))
        dx, operators = k.measure, [k]
    F = k * ufl.inner(ufl.grad(u), ufl.grad(v)) * dx - f * v * dx
    solve = dnn.fem_operator(
        F, u, controls=[f], bcs=[bc], operators=operators,
        petsc_options_prefix=f"bench_op_{'ufl' if width is None else 'net'}_",
    )
    problem = solve._problem
    snes = solve.solver
    assert isinstance(snes, PETSc.SNES)  # F is nonlinear in u: the operator holds a SNES
    x = problem.x
    u.interpolate(lambda x: 0.5 * np.sin(np.pi * x[0]) * np.sin(np.pi * x[1]))
    u.x.petsc_vec.copy(x)
    b, A = problem.b, problem.A

    def residual() -> None:
        if operators:
            operators[0].set_inputs(None)  # forget the cached evaluation: time a fresh one
        snes.computeFunction(x, b)

    def jacobian() -> None:
        if operators:
            operators[0].set_inputs(None)
        snes.computeJacobian(x, A)

    residual()
    jacobian()  # JIT, allocation and first-touch outside the timings
    times = {
        "residual_s": median_wall_time(residual, comm, repeats),
        "jacobian_s": median_wall_time(jacobian, comm, repeats),
    }
    f_t = to_torch(f)
    times["newton_solve_s"] = median_wall_time(lambda: solve(f_t), comm, max(1, repeats // 2))
    times["newton_iterations"] = solve.iterations
    times["quadrature_points"] = comm.allreduce(operators[0].layout.num_points) if operators else 0
    return times


def run(args: argparse.Namespace) -> int:
    comm = MPI.COMM_WORLD
    if args.width < 1 or args.repeats < 1 or args.threads < 1:
        raise ValueError(
            f"--width, --repeats and --threads must be positive; got {args.width}, "
            f"{args.repeats}, {args.threads}."
        )
    rows = []
    for target in args.dofs:
        n = max(2, int(round(np.sqrt(target))) - 1)
        msh = mesh.create_unit_square(comm, n, n)
        ndofs = (n + 1) ** 2
        print0(f"{ndofs:.2e} dofs on {comm.size} rank(s), MLP width {args.width} ...")
        plain = _case(msh, None, args.repeats)
        network = _case(msh, args.width, args.repeats)
        row = {"dofs": ndofs, "ranks": comm.size, "width": args.width,
               "quadrature_points": network["quadrature_points"]}
        for key in ("residual_s", "jacobian_s", "newton_solve_s", "newton_iterations"):
            row[f"ufl_{key}"] = plain[key]
            row[f"network_{key}"] = network[key]
        for key in ("residual_s", "jacobian_s", "newton_solve_s"):
            row[f"ratio_{key[:-2]}"] = network[key] / plain[key]
        rows.append(row)
        print0(f"  residual: UFL {plain['residual_s'] * 1e3:.1f} ms, network "
               f"{network['residual_s'] * 1e3:.1f} ms, ratio {row['ratio_residual']:.2f}")
        print0(f"  Jacobian: UFL {plain['jacobian_s'] * 1e3:.1f} ms, network "
               f"{network['jacobian_s'] * 1e3:.1f} ms, ratio {row['ratio_jacobian']:.2f}")
        print0(f"  Newton:   UFL {plain['newton_solve_s']:.2f} s ({plain['newton_iterations']} "
               f"its), network {network['newton_solve_s']:.2f} s "
               f"({network['newton_iterations']} its)")
    out = args.out or f"BENCH_operator_np{comm.size}.json"
    write_json(out, {"benchmark": "operator", "rows": rows})
    print0(f"wrote {out}")
    return 0
