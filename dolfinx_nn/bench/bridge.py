"""Cost of the bridge: forward versus forward + gradient, and against dolfinx-adjoint.

Problems (unit square, P1, homogeneous Dirichlet data on x = 0 and x = 1):

  linear     -div(q grad u) = f                          (symmetric; KSP, LU/MUMPS)
  nonlinear  -div((1 + u^2) q grad u) + u^3 = f          (SNES Newton, LU/MUMPS)

with q = 0.5 + softplus(MLP(x)) at the dofs of a P1 space and J = int (u - d)^2 dx.

For each problem and size it reports the median over repeats of: the network evaluation, the
forward pass (network + solve + functional), the forward + gradient pass (backward through the
adjoint solve and the network), their ratio, the solve time alone, the peak resident memory,
and, if dolfinx-adjoint (pyadjoint) is installed, its forward and gradient times on the same
problem (same LU solver for its adjoint) and the relative difference of the two gradients dJ/dq.
The comparison times the FE part only (dJ/dq without the network, which dolfinx-adjoint does not
have), and since pyadjoint's replay starts Newton from the previous solution, the bridge runs
with `warm_start=True` there; the gradient/forward ratio uses cold (zero) starts.

Targets: gradient/forward <= 1.5 (linear, direct solver), <= 2.2 (nonlinear); faster than
dolfinx-adjoint.

Examples:
  dolfinx-nn bench bridge                               # 1e5 and 1e6 dofs
  mpiexec -n 2 dolfinx-nn bench bridge --dofs 1e5 --out bench_np2.json
"""

from __future__ import annotations

import argparse
import pathlib
import resource

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
from dolfinx_nn.networks.mlp import mlp
from dolfinx_nn.output import prepare_output_dir, print0, write_json
from dolfinx_nn.timing import median_wall_time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dofs", type=float, nargs="+", default=[1e5, 1e6],
                        help="approximate numbers of dofs (default: 1e5 1e6)")
    parser.add_argument("--problems", nargs="+", default=["linear", "nonlinear"],
                        choices=["linear", "nonlinear"])
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (median)")
    parser.add_argument("--no-peer", action="store_true", help="skip dolfinx-adjoint")
    parser.add_argument("--out", default=None,
                        help="JSON file (default: BENCH_bridge_np<ranks>.json)")


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = mlp([2, 32, 32, 1], "tanh", init_dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 + torch.nn.functional.softplus(self.mlp(x))


def _peak_rss_mib(comm: MPI.Comm) -> float:
    """Peak resident memory summed over ranks (MiB)."""
    return comm.allreduce(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, op=MPI.SUM) / 1024


def _bridge_case(msh, nonlinear: bool, repeats: int) -> dict:
    comm = msh.comm
    V, q, u, _, F, M, dofs = setup_problem(msh, nonlinear)
    bc = fem.dirichletbc(0.0, dofs, V)
    torch.manual_seed(0)
    net = _Net().double()
    qn = dnn.NeuralFunction(net, V, function=q)
    options = SOLVER if not nonlinear else {**SOLVER, **NEWTON}
    solve = dnn.fem_operator(F, u, controls=[q], bcs=[bc], petsc_options=options,
                             petsc_options_prefix="bench_nl_" if nonlinear else "bench_lin_",
                             symmetric=None)
    J = dnn.fem_functional(M, controls=[u])
    state: dict = {}

    def network():
        with torch.no_grad():
            qn()

    def forward():
        with torch.no_grad():
            state["j"] = J(solve(qn()))

    def solve_only():
        with torch.no_grad():
            solve(state["q"])

    def forward_and_gradient():
        net.zero_grad()
        q_t = qn()
        q_t.retain_grad()
        j = J(solve(q_t))
        j.backward()
        dnn.sync_gradients(net, comm)
        state["dq"] = q_t.grad.detach().numpy().copy()

    forward_and_gradient()  # warm-up: JIT, symbolic factorisation, adjoint objects
    with torch.no_grad():
        state["q"] = qn()
    t_net = median_wall_time(network, comm, repeats)
    t_solve = median_wall_time(solve_only, comm, repeats)
    t_fwd = median_wall_time(forward, comm, repeats)
    t_grad = median_wall_time(forward_and_gradient, comm, repeats)
    def fe_forward_and_gradient():
        q_t = state["q"].clone().requires_grad_(True)
        J(solve(q_t)).backward()

    # The FE part alone (gradient w.r.t. q's dofs, no network), as dolfinx-adjoint computes it;
    # Newton from the previous solution, as pyadjoint's replay does.
    solve.warm_start = True
    t_fe = median_wall_time(fe_forward_and_gradient, comm, repeats)
    return {
        "state": state, "q_values": q.x.array.copy(), "iterations": solve.iterations,
        "network_s": t_net, "solve_s": t_solve, "forward_s": t_fwd,
        "forward_gradient_s": t_grad, "gradient_forward_ratio": t_grad / t_fwd,
        "fe_forward_gradient_s": t_fe,
        "network_share_of_forward": t_net / t_fwd, "symmetric": solve.symmetric,
    }


def _peer_case(msh, nonlinear: bool, q_values: np.ndarray, repeats: int) -> dict | None:
    comm = msh.comm
    prefix = "peer_nl_" if nonlinear else "peer_lin_"
    with peer_functional(msh, nonlinear, q_values, prefix) as peer:
        if peer is None:
            return None
        Jhat, q = peer.Jhat, peer.q
        Jhat.derivative()  # warm-up (JIT of the adjoint forms)
        t_fwd = median_wall_time(lambda: Jhat(q), comm, repeats)

        def forward_and_gradient():
            Jhat(q)
            Jhat.derivative()

        t_grad = median_wall_time(forward_and_gradient, comm, repeats)
        gradient = peer.owned(Jhat.derivative())
    return {"forward_s": t_fwd, "forward_gradient_s": t_grad,
            "first_forward_s": peer.first_forward_s, "gradient": gradient}


def run(args: argparse.Namespace) -> int:
    comm = MPI.COMM_WORLD
    torch.set_num_threads(1)
    rows = []
    for problem in args.problems:
        nonlinear = problem == "nonlinear"
        for target in args.dofs:
            n = max(2, int(round(np.sqrt(target))) - 1)
            msh = mesh.create_unit_square(comm, n, n)
            ndofs = (n + 1) ** 2
            print0(f"[{problem}] {ndofs:.2e} dofs on {comm.size} rank(s) ...")
            ours = _bridge_case(msh, nonlinear, args.repeats)
            row = {"problem": problem, "dofs": ndofs, "ranks": comm.size}
            row.update({k: v for k, v in ours.items() if k not in ("state", "q_values")})
            if not args.no_peer:
                peer = _peer_case(msh, nonlinear, ours["q_values"], args.repeats)
                if peer is None:
                    print0(f"  {INSTALL_HINT}")
                else:
                    ours_g, peer_g = ours["state"]["dq"], peer.pop("gradient")
                    row["dolfinx_adjoint"] = {
                        **peer,
                        "gradient_rel_difference": relative_difference(ours_g, peer_g, comm),
                        "speedup_forward_gradient": peer["forward_gradient_s"]
                        / ours["fe_forward_gradient_s"],
                    }
            row["peak_rss_mib_all_ranks"] = _peak_rss_mib(comm)
            rows.append(row)
            _print_row(row)
    out = pathlib.Path(args.out or f"BENCH_bridge_np{comm.size}.json")
    prepare_output_dir(out.parent, comm)
    write_json(out, {"benchmark": "bridge", "ranks": comm.size, "results": rows}, comm)
    print0(f"wrote {out}")
    return 0


def _print_row(r: dict) -> None:
    peer = r.get("dolfinx_adjoint")
    line = (
        f"  {r['problem']:9s} dofs {r['dofs']:.2e} ranks {r['ranks']}: net {r['network_s']:.3f}s "
        f"solve {r['solve_s']:.3f}s fwd {r['forward_s']:.3f}s fwd+grad "
        f"{r['forward_gradient_s']:.3f}s ratio {r['gradient_forward_ratio']:.2f} "
        f"peak {r['peak_rss_mib_all_ranks']:.0f} MiB"
    )
    if peer:
        line += (
            f" | FE fwd+grad {r['fe_forward_gradient_s']:.3f}s vs dolfinx-adjoint "
            f"{peer['forward_gradient_s']:.3f}s (x{peer['speedup_forward_gradient']:.2f}), "
            "grad rel diff "
            f"{peer['gradient_rel_difference']:.1e}"
        )
    print0(line)
