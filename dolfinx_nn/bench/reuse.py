"""Time loops, batches, non-symmetric problems and algebraic multigrid: cost against the
linear algebra a problem needs (one factorization per distinct matrix, one solve per
right-hand side).

Cases (P1, homogeneous Dirichlet data on the whole boundary; all times are medians over
``--repeats`` runs, measured in the same run):

  heat       backward Euler u_t - div(grad u) = f, ``--steps`` steps (default 100) through one
             fem_operator with controls (u_prev, f); J = int u_T^2 dx. Forward with matrix reuse
             (the default) against ``constant_jacobian=False`` (assembly and factorization at
             every step, as before reuse existed); forward + gradient over forward; and,
             when dolfinx-adjoint is installed, its gradient on the same loop and LU solver.
  batch      -div(grad u) = f_b for ``--batch`` sources (default 32): one batched call against
             as many calls without reuse, and as many calls with it (forward + gradient).
  advection  -div(k grad u) + w.grad u = f, k a network at the dofs (non-symmetric; the
             adjoint solves with the transposed LU factors): forward + gradient over forward,
             the network changed a little before each pass (as in training, so each forward
             pass assembles and factorizes).
  gamg       3D -div((1 + q^2) grad u) = f, q a network at the dofs, CG + GAMG (forward, and
             the adjoint reusing the forward's multigrid hierarchy): forward + gradient over
             forward, Krylov iterations, set-up and solve times. Run it on 1 and 2 ranks for the
             speed-up.

Targets: heat forward with reuse >= 5x faster than without; (forward + gradient) / forward
<= 1.3; gradient >= 5x faster than dolfinx-adjoint's; batch >= 10x faster than calls without
reuse; advection (forward + gradient) / forward <= 1.3; gamg (forward + gradient) / forward
<= 2.2 at >= 1e6 dofs, and 2 ranks >= 1.7x faster than 1.

Examples:
  dolfinx-nn bench reuse                                   # heat, batch, advection at 1e5 dofs
  dolfinx-nn bench reuse --cases gamg --dofs 1e6 --out BENCH_gamg_np1.json
  mpiexec -n 2 dolfinx-nn bench reuse --cases gamg --dofs 1e6 --out BENCH_gamg_np2.json

Time: about 3 minutes for the default cases on one core; gamg at 1e6 dofs about 2 minutes.
"""

from __future__ import annotations

import argparse
import pathlib
import time
from typing import Any

from mpi4py import MPI
from petsc4py import PETSc

import numpy as np
import torch
import ufl
from dolfinx import fem, mesh

import dolfinx_nn as dnn
from dolfinx_nn.conversion import to_torch
from dolfinx_nn.networks.mlp import mlp
from dolfinx_nn.output import prepare_output_dir, print0, write_json
from dolfinx_nn.timing import median_wall_time

CASES = ("heat", "batch", "advection", "gamg")
LU = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}
GAMG = {"ksp_type": "cg", "pc_type": "gamg", "ksp_rtol": 1e-10}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", nargs="+", default=["heat", "batch", "advection"],
                        choices=CASES, help="cases to run (default: heat batch advection)")
    parser.add_argument("--dofs", type=float, default=1e5,
                        help="approximate number of dofs (default: 1e5)")
    parser.add_argument("--steps", type=int, default=100, help="heat: time steps (default 100)")
    parser.add_argument("--batch", type=int, default=32, help="batch: sources (default 32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (median)")
    parser.add_argument("--no-peer", action="store_true", help="skip dolfinx-adjoint")
    parser.add_argument("--out", default=None,
                        help="JSON file (default: BENCH_reuse_np<ranks>.json)")


def _unit_mesh(comm: MPI.Comm, dim: int, dofs: float) -> mesh.Mesh:
    if dim == 2:
        n = max(2, int(round(np.sqrt(dofs))) - 1)
        return mesh.create_unit_square(comm, n, n)
    n = max(2, int(round(dofs ** (1 / 3))) - 1)
    return mesh.create_unit_cube(comm, n, n, n)


def _boundary_bc(V: fem.FunctionSpace, function=None) -> fem.DirichletBC:
    msh = V.mesh
    tdim = msh.topology.dim
    msh.topology.create_connectivity(tdim - 1, tdim)
    dofs = fem.locate_dofs_topological(V, tdim - 1, mesh.exterior_facet_indices(msh.topology))
    return fem.dirichletbc(function, dofs) if function is not None \
        else fem.dirichletbc(0.0, dofs, V)


def _global_size(V: fem.FunctionSpace) -> int:
    return V.dofmap.index_map.size_global * V.dofmap.index_map_bs


def _network(din: int) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return mlp([din, 16, 1], "tanh", init_dtype=torch.float32)


def _training_step(net: torch.nn.Sequential) -> None:
    """Change the network a little, as an optimizer step would: the coefficient, and so the
    matrix, changes, and every forward pass assembles and factorizes it (no reuse)."""
    with torch.no_grad():
        layer = net[2]
        assert isinstance(layer, torch.nn.Linear)  # Linear, tanh, Linear
        layer.bias.add_(1e-6)


# -- heat ------------------------------------------------------------------------------------


def _heat_form(V, u, u_prev, f, dt):
    v = ufl.TestFunction(V)
    return ((u - u_prev) / dt * v + ufl.inner(ufl.grad(u), ufl.grad(v)) - f * v) * ufl.dx


def heat(comm: MPI.Comm, dofs: float, steps: int, repeats: int, peer: bool) -> dict:
    msh = _unit_mesh(comm, 2, dofs)
    V = fem.functionspace(msh, ("Lagrange", 1))
    u, u_prev, f = fem.Function(V), fem.Function(V), fem.Function(V)
    f.interpolate(lambda x: np.sin(np.pi * x[0]) * np.sin(np.pi * x[1]))
    dt = 1.0 / steps
    F = _heat_form(V, u, u_prev, f, dt)
    bc = _boundary_bc(V)
    reuse = dnn.fem_operator(F, u, controls=[u_prev, f], bcs=[bc], petsc_options=LU,
                             petsc_options_prefix="bench_heat_")
    every = dnn.fem_operator(F, u, controls=[u_prev, f], bcs=[bc], petsc_options=LU,
                             petsc_options_prefix="bench_heat_every_", constant_jacobian=False)
    f0 = to_torch(f)
    J = dnn.fem_functional(u**2 * ufl.dx, controls=[u])
    state: dict = {}

    def loop(solve, f_t):
        u_t = torch.zeros_like(f_t)
        for _ in range(steps):
            u_t = solve(u_t, f_t)
        return J(u_t)

    def forward(solve):
        def run():
            with torch.no_grad():
                loop(solve, f0)
        return run

    def forward_gradient():
        f_t = f0.clone().requires_grad_(True)
        loop(reuse, f_t).backward()
        state["grad"] = f_t.grad.numpy().copy()

    forward_gradient()  # warm-up (JIT, symbolic factorization)
    forward(every)()
    row: dict[str, Any] = {
        "case": "heat", "dofs": _global_size(V), "ranks": comm.size, "steps": steps,
        "forward_reuse_s": median_wall_time(forward(reuse), comm, repeats),
        "forward_no_reuse_s": median_wall_time(forward(every), comm, max(1, repeats - 2)),
        "forward_gradient_s": median_wall_time(forward_gradient, comm, repeats),
        "assemblies": reuse.assemblies,
    }
    row["reuse_speedup"] = row["forward_no_reuse_s"] / row["forward_reuse_s"]
    row["gradient_forward_ratio"] = row["forward_gradient_s"] / row["forward_reuse_s"]
    row["gradient_s"] = row["forward_gradient_s"] - row["forward_reuse_s"]
    if peer:
        theirs = _heat_peer(msh, steps, dt, f.x.array.copy(), repeats)
        if theirs is not None:
            n = V.dofmap.index_map.size_local
            diff = comm.allreduce(float(np.sum((state["grad"] - theirs.pop("grad")[:n]) ** 2)))
            ref = comm.allreduce(float(np.sum(state["grad"] ** 2)))
            theirs["gradient_rel_difference"] = float(np.sqrt(diff / ref))
            theirs["gradient_speedup"] = theirs["gradient_s"] / row["gradient_s"]
            row["dolfinx_adjoint"] = theirs
    return row


def _heat_peer(msh, steps, dt, f_values, repeats) -> dict | None:
    try:
        import dolfinx_adjoint as dxa
        import pyadjoint
    except ImportError:
        print0("  dolfinx-adjoint not installed: pip install --no-deps dolfinx-adjoint "
               "fenicsx-compat && pip install pyadjoint-ad h5py")
        return None
    comm = msh.comm
    pyadjoint.set_working_tape(pyadjoint.Tape())
    V = fem.functionspace(msh, ("Lagrange", 1))
    u, u_prev, f = dxa.Function(V), dxa.Function(V), dxa.Function(V)
    f.x.array[:] = f_values
    w, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    a = (w / dt * v + ufl.inner(ufl.grad(w), ufl.grad(v))) * ufl.dx
    L = (u_prev / dt + f) * v * ufl.dx
    bc = _boundary_bc(V, dxa.Function(V))
    problem = dxa.LinearProblem(a, L, u=u, bcs=[bc], petsc_options=dict(LU),
                                petsc_options_prefix="peer_heat_",
                                adjoint_petsc_options=dict(LU))
    for _ in range(steps):
        problem.solve()
        dxa.assign(u, u_prev)
    j = dxa.assemble_scalar(u**2 * ufl.dx)
    Jhat = pyadjoint.ReducedFunctional(j, pyadjoint.Control(f))
    Jhat.derivative()  # warm-up
    t_grad = median_wall_time(lambda: Jhat.derivative(), comm, max(1, repeats - 2))
    t_fwd = median_wall_time(lambda: Jhat(f), comm, max(1, repeats - 2))
    grad = Jhat.derivative().x.array.copy()
    pyadjoint.set_working_tape(pyadjoint.Tape())
    return {"forward_s": t_fwd, "gradient_s": t_grad, "grad": grad}


# -- batch ----------------------------------------------------------------------------------


def batch(comm: MPI.Comm, dofs: float, size: int, repeats: int) -> dict:
    msh = _unit_mesh(comm, 2, dofs)
    V = fem.functionspace(msh, ("Lagrange", 1))
    u, f = fem.Function(V), fem.Function(V)
    v = ufl.TestFunction(V)
    F = (ufl.inner(ufl.grad(u), ufl.grad(v)) - f * v) * ufl.dx
    bc = _boundary_bc(V)
    reuse = dnn.fem_operator(F, u, controls=[f], bcs=[bc], petsc_options=LU,
                             petsc_options_prefix="bench_batch_")
    every = dnn.fem_operator(F, u, controls=[f], bcs=[bc], petsc_options=LU,
                             petsc_options_prefix="bench_batch_every_", constant_jacobian=False)
    n = to_torch(f).numel()
    rng = np.random.default_rng(comm.rank)
    sources = torch.from_numpy(rng.standard_normal((size, n)))
    weights = torch.from_numpy(rng.standard_normal((size, n)))

    def batched():
        S = sources.clone().requires_grad_(True)
        dnn.global_sum((weights * reuse(S)).sum(), comm).backward()

    def calls(solve):
        def run():
            for b in range(size):
                s = sources[b].clone().requires_grad_(True)
                dnn.global_sum((weights[b] * solve(s)).sum(), comm).backward()
        return run

    batched()
    calls(every)()
    row: dict[str, Any] = {
        "case": "batch", "dofs": _global_size(V), "ranks": comm.size, "batch": size,
        "batch_s": median_wall_time(batched, comm, repeats),
        "calls_no_reuse_s": median_wall_time(calls(every), comm, max(1, repeats - 2)),
        "calls_reuse_s": median_wall_time(calls(reuse), comm, repeats),
    }
    row["speedup_vs_calls_no_reuse"] = row["calls_no_reuse_s"] / row["batch_s"]
    row["speedup_vs_calls_reuse"] = row["calls_reuse_s"] / row["batch_s"]
    return row


# -- advection --------------------------------------------------------------------------------


def advection(comm: MPI.Comm, dofs: float, repeats: int) -> dict:
    msh = _unit_mesh(comm, 2, dofs)
    V = fem.functionspace(msh, ("Lagrange", 1))
    net = _network(2)
    qn = dnn.NeuralFunction(net, V)
    u, f = fem.Function(V), fem.Function(V)
    f.x.array[:] = 1.0
    v = ufl.TestFunction(V)
    w = ufl.as_vector((20.0, 5.0))
    F = ((0.5 + qn.function**2) * ufl.inner(ufl.grad(u), ufl.grad(v))
         + ufl.dot(w, ufl.grad(u)) * v - f * v) * ufl.dx
    solve = dnn.fem_operator(F, u, controls=[qn.function], bcs=[_boundary_bc(V)],
                             petsc_options=LU, petsc_options_prefix="bench_adv_")
    J = dnn.fem_functional(u**2 * ufl.dx, controls=[u])

    def forward():
        _training_step(net)
        with torch.no_grad():
            J(solve(qn()))

    def forward_gradient():
        _training_step(net)
        qn.net.zero_grad()
        J(solve(qn())).backward()

    forward_gradient()
    row: dict[str, Any] = {
        "case": "advection", "dofs": _global_size(V), "ranks": comm.size,
        "forward_s": median_wall_time(forward, comm, repeats),
        "forward_gradient_s": median_wall_time(forward_gradient, comm, repeats),
        "symmetric": solve.symmetric, "transposed_factors": solve._adjoint_A is None,
    }
    row["gradient_forward_ratio"] = row["forward_gradient_s"] / row["forward_s"]
    return row


# -- gamg --------------------------------------------------------------------------------------


def gamg(comm: MPI.Comm, dofs: float, repeats: int) -> dict:
    msh = _unit_mesh(comm, 3, dofs)
    V = fem.functionspace(msh, ("Lagrange", 1))
    net = _network(3)
    qn = dnn.NeuralFunction(net, V)
    u, v = fem.Function(V), ufl.TestFunction(V)
    x = ufl.SpatialCoordinate(msh)
    F = ((1 + qn.function**2) * ufl.inner(ufl.grad(u), ufl.grad(v))
         - (1 + x[0] * x[1]) * v) * ufl.dx
    solve = dnn.fem_operator(F, u, controls=[qn.function], bcs=[_boundary_bc(V)],
                             petsc_options=GAMG, petsc_options_prefix="bench_gamg_",
                             symmetric=True)
    J = dnn.fem_functional(u**2 * ufl.dx, controls=[u])
    times: dict[str, list[float]] = {"adjoint_iterations": []}

    def forward():
        _training_step(net)
        with torch.no_grad():
            J(solve(qn()))

    def forward_gradient():
        _training_step(net)
        qn.net.zero_grad()
        J(solve(qn())).backward()
        dnn.sync_gradients(qn.net, comm)
        times["adjoint_iterations"].append(solve.solver.getIterationNumber())

    forward_gradient()
    t_fwd = median_wall_time(forward, comm, repeats)
    forward_iterations = solve.iterations
    t_grad = median_wall_time(forward_gradient, comm, repeats)
    # The parts of one forward pass: network, assembly and multigrid set-up, Krylov solve.
    comm.Barrier()
    start = time.perf_counter()
    with torch.no_grad():
        q_t = qn()
    t_net = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    PETSc.Log.begin()
    setup, solve_event = PETSc.Log.Event("PCSetUp"), PETSc.Log.Event("KSPSolve")
    s0, k0 = setup.getPerfInfo()["time"], solve_event.getPerfInfo()["time"]
    with torch.no_grad():
        solve(q_t)
    t_setup = comm.allreduce(setup.getPerfInfo()["time"] - s0, op=MPI.MAX)
    t_krylov = comm.allreduce(solve_event.getPerfInfo()["time"] - k0, op=MPI.MAX) - t_setup
    return {
        "case": "gamg", "dofs": _global_size(V), "ranks": comm.size,
        "forward_s": t_fwd, "forward_gradient_s": t_grad,
        "gradient_forward_ratio": t_grad / t_fwd,
        "forward_iterations": forward_iterations,
        "adjoint_iterations": times["adjoint_iterations"][-1],
        "network_s": t_net, "pc_setup_s": t_setup, "krylov_s": t_krylov,
        "dofs_per_rank": _global_size(V) / comm.size,
    }


def run(args: argparse.Namespace) -> int:
    comm = MPI.COMM_WORLD
    torch.set_num_threads(1)
    rows = []
    for case in args.cases:
        print0(f"[{case}] ~{args.dofs:.0e} dofs on {comm.size} rank(s) ...")
        if case == "heat":
            row = heat(comm, args.dofs, args.steps, args.repeats, not args.no_peer)
        elif case == "batch":
            row = batch(comm, args.dofs, args.batch, args.repeats)
        elif case == "advection":
            row = advection(comm, args.dofs, args.repeats)
        else:
            row = gamg(comm, args.dofs, args.repeats)
        print0("  " + ", ".join(f"{k} {_fmt(v)}" for k, v in row.items() if k != "case"))
        rows.append(row)
    out = pathlib.Path(args.out or f"BENCH_reuse_np{comm.size}.json")
    prepare_output_dir(out.parent, comm)
    write_json(out, {"benchmark": "reuse", "ranks": comm.size, "results": rows}, comm)
    print0(f"wrote {out}")
    return 0


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)
