"""Cost of a Hessian-vector product through the bridge, against a gradient and dolfinx-adjoint.

Problems (those of ``dolfinx-nn bench bridge``: unit square, P1, u = 0 on x = 0 and x = 1):

  linear     -div(q grad u) = f                          (KSP, LU/MUMPS)
  nonlinear  -div((1 + u^2) q grad u) + u^3 = f          (SNES Newton, LU/MUMPS)

with J = int (u - d)^2 dx and the control the dofs of q.  For each problem and size it
reports the median over repeats of

- ``gradient_s``: one gradient, forward and adjoint solve (``J(solve(q)).backward()``);
- ``hvp_s``: one Hessian-vector product at a point where J and its gradient were evaluated
  (:class:`dolfinx_nn.hessian.ReducedHessian`: one tangent-linear and one second adjoint solve
  with the forward factorization, and the second-derivative assemblies);
- ``hvp_from_scratch_s``: forward, gradient with ``create_graph=True`` and one product;

and their ratios to the gradient; and, if dolfinx-adjoint (pyadjoint) is installed, its
Hessian action on the same problem with the same LU solver for the adjoint *and* the
tangent-linear solve (``Jhat.hessian(dq)`` after ``Jhat.derivative()`` at the same point, and
``Jhat(q); Jhat.derivative(); Jhat.hessian(dq)``), the speed-ups, and the relative difference
of the two products ``H dq``.  As in ``bench bridge``, pyadjoint's replay starts Newton from
the previous solution, so the bridge runs with ``warm_start=True`` (the same for the
gradient, so the ratios compare like with like).

Targets: one product <= 2.5 gradients; >= 3x faster than dolfinx-adjoint, the same values to
1e-10.

Examples:
  dolfinx-nn bench hessian                              # 1e5 dofs, linear and nonlinear
  mpiexec -n 2 dolfinx-nn bench hessian --out BENCH_hessian_np2.json
"""

from __future__ import annotations

import argparse
import pathlib

from mpi4py import MPI

import numpy as np
import torch
from dolfinx import fem, mesh

import dolfinx_nn as dnn
from dolfinx_nn.bench.peer import (
    INSTALL_HINT,
    NEWTON,
    SOLVER,
    peer_functional,
    relative_difference,
    setup_problem,
)
from dolfinx_nn.conversion import to_torch
from dolfinx_nn.hessian import ReducedHessian
from dolfinx_nn.output import prepare_output_dir, print0, write_json
from dolfinx_nn.timing import median_wall_time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dofs", type=float, nargs="+", default=[1e5],
                        help="approximate numbers of dofs (default: 1e5)")
    parser.add_argument("--problems", nargs="+", default=["linear", "nonlinear"],
                        choices=["linear", "nonlinear"])
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (median)")
    parser.add_argument("--no-peer", action="store_true", help="skip dolfinx-adjoint")
    parser.add_argument("--out", default=None,
                        help="JSON file (default: BENCH_hessian_np<ranks>.json)")


def _coefficient(x: np.ndarray) -> np.ndarray:
    return 1.0 + 0.5 * x[0] * x[1]


def _direction(x: np.ndarray) -> np.ndarray:
    return np.sin(3 * x[0]) * np.cos(2 * x[1])


def _ours(msh: mesh.Mesh, nonlinear: bool, repeats: int) -> dict:
    V, q, u, _, F, M, dofs = setup_problem(msh, nonlinear)
    bc = fem.dirichletbc(0.0, dofs, V)
    options = {**SOLVER, **NEWTON} if nonlinear else dict(SOLVER)
    solve = dnn.fem_operator(F, u, controls=[q], bcs=[bc], petsc_options=options,
                             petsc_options_prefix="hb_nl_" if nonlinear else "hb_lin_",
                             warm_start=nonlinear)
    J = dnn.fem_functional(M, controls=[u])
    q.interpolate(_coefficient)
    q_t = to_torch(q)
    dq = fem.Function(V)
    dq.interpolate(_direction)
    dq_t = to_torch(dq)

    def loss(ms):
        return J(solve(ms[0]))

    def gradient():
        leaf = q_t.clone().requires_grad_(True)
        loss([leaf]).backward()

    state: dict = {}

    def from_scratch():
        state["H"] = ReducedHessian(loss, [q_t], comm=msh.comm)
        state["Hv"] = state["H"].apply([dq_t])[0]

    from_scratch()  # warm-up: JIT of the second-order forms, symbolic factorization
    gradient()
    t_grad = median_wall_time(gradient, msh.comm, repeats)
    t_scratch = median_wall_time(from_scratch, msh.comm, repeats)
    H = state["H"]
    t_hvp = median_wall_time(lambda: H.apply([dq_t]), msh.comm, repeats)
    return {
        "gradient_s": t_grad, "hvp_s": t_hvp, "hvp_from_scratch_s": t_scratch,
        "hvp_gradient_ratio": t_hvp / t_grad,
        "hvp_from_scratch_gradient_ratio": t_scratch / t_grad,
        "newton_iterations": solve.iterations if nonlinear else None,
        "hvp": state["Hv"].numpy().copy(), "q": q.x.array.copy(), "dq": dq.x.array.copy(),
    }


def _peer(msh: mesh.Mesh, nonlinear: bool, q_values, dq_values, repeats: int) -> dict | None:
    comm = msh.comm
    prefix = "hpeer_nl_" if nonlinear else "hpeer_lin_"
    with peer_functional(msh, nonlinear, q_values, prefix, tangent_linear=True) as peer:
        if peer is None:
            return None
        Jhat, q = peer.Jhat, peer.q
        dq = peer.dxa.Function(peer.V)
        dq.x.array[:] = dq_values
        Jhat.derivative()
        Jhat.hessian(dq)  # warm-up (JIT of the tangent-linear and second-order forms)

        def gradient():
            Jhat(q)
            Jhat.derivative()

        def from_scratch():
            Jhat(q)
            Jhat.derivative()
            return Jhat.hessian(dq)

        t_grad = median_wall_time(gradient, comm, repeats)
        t_scratch = median_wall_time(from_scratch, comm, repeats)
        t_hvp = median_wall_time(lambda: Jhat.hessian(dq), comm, repeats)
        hvp = peer.owned(Jhat.hessian(dq))
    return {"gradient_s": t_grad, "hvp_s": t_hvp, "hvp_from_scratch_s": t_scratch, "hvp": hvp}


def run(args: argparse.Namespace) -> int:
    comm = MPI.COMM_WORLD
    torch.set_num_threads(1)
    rows = []
    for problem in args.problems:
        nonlinear = problem == "nonlinear"
        for target in args.dofs:
            n = max(2, int(round(np.sqrt(target))) - 1)
            msh = mesh.create_unit_square(comm, n, n)
            row = {"problem": problem, "dofs": (n + 1) ** 2, "ranks": comm.size}
            print0(f"[{problem}] {row['dofs']:.2e} dofs on {comm.size} rank(s) ...")
            ours = _ours(msh, nonlinear, args.repeats)
            hv, q_values, dq_values = ours.pop("hvp"), ours.pop("q"), ours.pop("dq")
            row.update(ours)
            peer = None if args.no_peer else _peer(msh, nonlinear, q_values, dq_values,
                                                   args.repeats)
            if peer is not None:
                row["dolfinx_adjoint"] = {
                    **peer,
                    "hvp_rel_difference": relative_difference(hv, peer.pop("hvp"), comm),
                    "speedup_hvp": peer["hvp_s"] / ours["hvp_s"],
                    "speedup_hvp_from_scratch": peer["hvp_from_scratch_s"]
                    / ours["hvp_from_scratch_s"],
                }
            elif not args.no_peer:
                print0(f"  {INSTALL_HINT}")
            rows.append(row)
            _print_row(row)
    out = pathlib.Path(args.out or f"BENCH_hessian_np{comm.size}.json")
    prepare_output_dir(out.parent, comm)
    write_json(out, {"benchmark": "hessian", "ranks": comm.size, "results": rows}, comm)
    print0(f"wrote {out}")
    return 0


def _print_row(r: dict) -> None:
    line = (
        f"  {r['problem']:9s} dofs {r['dofs']:.2e} ranks {r['ranks']}: gradient "
        f"{r['gradient_s']:.3f}s, HVP {r['hvp_s']:.3f}s ({r['hvp_gradient_ratio']:.2f}x), "
        f"from scratch {r['hvp_from_scratch_s']:.3f}s "
        f"({r['hvp_from_scratch_gradient_ratio']:.2f}x)"
    )
    peer = r.get("dolfinx_adjoint")
    if peer:
        line += (
            f" | dolfinx-adjoint HVP {peer['hvp_s']:.3f}s (x{peer['speedup_hvp']:.1f}), from "
            f"scratch {peer['hvp_from_scratch_s']:.3f}s (x{peer['speedup_hvp_from_scratch']:.1f})"
            f", rel diff {peer['hvp_rel_difference']:.1e}"
        )
    print0(line)
