"""Time loops, batches and iterative solvers at the cost of the linear algebra they need.

One factorization per distinct matrix, one solve per right-hand side: counted with PETSc's
own log events (``MatLUFactorNum``, ``MatCholFactorNum``) and the operator's counter, and the
gradients checked against finite differences and against one rank.
"""

from __future__ import annotations

from mpi4py import MPI
from petsc4py import PETSc

import numpy as np
import pytest
import torch
import ufl
from bridge_problems import assert_matches_fd, directional_derivatives, dofs_on, mlp
from dolfinx import fem, mesh

import dolfinx_nn as dnn
from dolfinx_nn.conversion import to_torch

COMM = MPI.COMM_WORLD
PETSc.Log.begin()


def factorizations() -> int:
    """Numeric LU/Cholesky factorizations on this rank so far (PETSc's log)."""
    return sum(int(PETSc.Log.Event(name).getPerfInfo()["count"])
               for name in ("MatLUFactorNum", "MatCholFactorNum"))


def assert_rate_two(rates):
    assert all(1.9 <= r <= 2.1 for r in rates), rates


class Heat:
    """Backward Euler for u_t - div(grad u) = f: controls u_prev and f; J = |u_T|^2."""

    def __init__(self, comm, n=16, dt=0.02, prefix="heat_"):
        self.comm = comm
        self.msh = msh = mesh.create_unit_square(comm, n, n)
        self.V = V = fem.functionspace(msh, ("Lagrange", 1))
        u, v = fem.Function(V), ufl.TestFunction(V)
        self.u_prev, self.f = fem.Function(V), fem.Function(V)
        F = (u - self.u_prev) / dt * v * ufl.dx + ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
        F -= self.f * v * ufl.dx
        bc = fem.dirichletbc(0.0, dofs_on(V, lambda x: np.full(x.shape[1], True)), V)
        self.solve = dnn.fem_operator(F, u, controls=[self.u_prev, self.f], bcs=[bc],
                                      petsc_options_prefix=f"{prefix}{comm.size}_")
        self.qn = dnn.NeuralFunction(mlp(2, seed=4), V, function=self.f)

    def loss(self, params, steps):
        f_t = self.qn(params)
        u_t = torch.zeros_like(f_t)
        for _ in range(steps):
            u_t = self.solve(u_t, f_t)
        return dnn.global_sum((u_t**2).sum(), self.comm)

    def params(self):
        return [p.detach().clone() for p in self.qn.net.parameters()]


def test_heat_loop_of_50_steps_one_factorization_exact_gradient():
    heat = Heat(COMM)
    names = [k for k, _ in heat.qn.net.named_parameters()]

    def loss(ms):
        return heat.loss(dict(zip(names, ms, strict=True)), 50)

    before = factorizations()
    m = heat.params()
    leaves = [p.clone().requires_grad_(True) for p in m]
    loss(leaves).backward()
    assert factorizations() - before == 1  # 50 forward and 50 adjoint solves, one LU
    assert heat.solve.assemblies == 1
    g = torch.Generator().manual_seed(5)
    dm = [torch.randn(p.shape, dtype=torch.float64, generator=g) for p in m]
    ad, fd = directional_derivatives(loss, m, dm, COMM)
    assert_matches_fd(ad, fd, 1.0)
    # The same gradient on one rank (each rank builds the serial problem on COMM_SELF).
    grad = torch.cat([p.grad.reshape(-1) for p in leaves])
    total = torch.from_numpy(COMM.allreduce(grad.numpy(), op=MPI.SUM))
    serial = Heat(MPI.COMM_SELF, prefix="heatself_")
    s_leaves = [p.clone().requires_grad_(True) for p in serial.params()]
    serial.loss(dict(zip(names, s_leaves, strict=True)), 50).backward()
    s_grad = torch.cat([p.grad.reshape(-1) for p in s_leaves])
    assert float((total - s_grad).abs().max()) <= 1e-10 * float(s_grad.abs().max())


def test_batch_of_eight_loadings_equals_eight_calls():
    heat = Heat(COMM, prefix="batch_")
    local = np.random.default_rng(COMM.rank)
    n = to_torch(heat.f).numel()
    F = torch.from_numpy(local.standard_normal((8, n))).requires_grad_(True)
    u0 = torch.from_numpy(local.standard_normal(n)).requires_grad_(True)
    W = torch.from_numpy(local.standard_normal((8, n)))
    before = factorizations()
    U = heat.solve(u0, F)
    assert U.shape == (8, n)
    dnn.global_sum((W * U).sum(), COMM).backward()
    assert factorizations() - before <= 1 and heat.solve.assemblies == 1
    separate = []
    for b in range(8):
        fb = F[b].detach().clone().requires_grad_(True)
        ub = heat.solve(u0, fb)
        separate.append((ub.detach(), torch.autograd.grad(
            dnn.global_sum((W[b] * ub).sum(), COMM), fb)[0]))
    scale = COMM.allreduce(float(U.abs().max()) if n else 0.0, op=MPI.MAX)
    for b, (ub, gb) in enumerate(separate):
        assert float((U[b].detach() - ub).abs().max() if n else 0.0) <= 1e-12 * scale
        assert float((F.grad[b] - gb).abs().max() if n else 0.0) <= 1e-12 * max(
            COMM.allreduce(float(gb.abs().max()) if n else 0.0, op=MPI.MAX), 1e-300)
    # u0 is shared by the batch: its gradient is the sum of the members'.
    total = sum(torch.autograd.grad(dnn.global_sum((W[b] * heat.solve(u0, F[b].detach())).sum(),
                                                   COMM), u0)[0] for b in range(8))
    assert torch.allclose(u0.grad, total, rtol=1e-12, atol=1e-14)


def test_vmap_over_the_sources_is_the_batch():
    heat = Heat(COMM, n=8, prefix="vmap_")
    n = to_torch(heat.f).numel()
    local = np.random.default_rng(10 + COMM.rank)
    F = torch.from_numpy(local.standard_normal((4, n)))
    u0 = torch.zeros(n, dtype=torch.float64)
    batched = heat.solve(u0, F)
    mapped = torch.func.vmap(heat.solve, in_dims=(None, 0))(u0, F)
    assert torch.equal(batched, mapped)
    moved = torch.func.vmap(heat.solve, in_dims=(None, 1))(u0, F.T.contiguous())
    assert torch.equal(batched, moved)


def test_vmap_over_network_parameters_of_an_operator_is_refused():
    from bridge_problems import quadrature_space

    msh = mesh.create_unit_square(COMM, 4, 4)
    V = fem.functionspace(msh, ("Lagrange", 1))
    u, v, f = fem.Function(V), ufl.TestFunction(V), fem.Function(V)
    net = torch.nn.Linear(1, 1).double()
    k = dnn.NeuralOperator(net, operands=(u,), space=quadrature_space(msh, 2))
    F = (1 + k**2) * ufl.inner(ufl.grad(u), ufl.grad(v)) * k.measure - f * v * k.measure
    bc = fem.dirichletbc(0.0, dofs_on(V, lambda x: np.full(x.shape[1], True)), V)
    solve = dnn.fem_operator(F, u, controls=[f], bcs=[bc], petsc_options_prefix="vmapop_")
    W = torch.stack([net.weight.detach()] * 3)
    with pytest.raises(ValueError, match="batch dimension 0"):
        torch.func.vmap(lambda w: solve(to_torch(f), operator_inputs=[[w, net.bias]]))(W)


def advection_diffusion(prefix, options=None):
    msh = mesh.create_unit_square(COMM, 16, 16)
    V = fem.functionspace(msh, ("Lagrange", 1))
    qn = dnn.NeuralFunction(mlp(2, seed=6), fem.functionspace(msh, ("Lagrange", 1)))
    u, v, f = fem.Function(V), ufl.TestFunction(V), fem.Function(V)
    f.interpolate(lambda x: 1 + x[0])
    w = ufl.as_vector((4.0, 1.0))
    F = (0.1 + qn.function**2) * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
    F += ufl.dot(w, ufl.grad(u)) * v * ufl.dx - f * v * ufl.dx
    bc = fem.dirichletbc(0.0, dofs_on(V, lambda x: np.full(x.shape[1], True)), V)
    solve = dnn.fem_operator(F, u, controls=[qn.function, f], bcs=[bc],
                             petsc_options=options, petsc_options_prefix=prefix)
    J = dnn.fem_functional(u**2 * ufl.dx, controls=[u])
    return qn, f, solve, J


def test_nonsymmetric_adjoint_solves_with_the_forward_factors():
    qn, f, solve, J = advection_diffusion("adtr_")
    f_t = to_torch(f).requires_grad_(True)
    before = factorizations()
    J(solve(qn(), f_t)).backward()
    assert solve.symmetric is False and solve._adjoint_A is None  # no transposed matrix
    assert factorizations() - before == 1
    assert solve.adjoint_residual < 1e-12
    m = [to_torch(f)]
    dm = [torch.from_numpy(np.random.default_rng(COMM.rank).standard_normal(m[0].numel()))]
    q_t = qn().detach()
    ad, fd = directional_derivatives(lambda ms: J(solve(q_t, ms[0])), m, dm, COMM)
    assert_matches_fd(ad, fd, 1.0)
    assert factorizations() - before == 1  # q did not change: the finite differences reuse it


def poisson_network_coefficient(prefix, options):
    msh = mesh.create_unit_square(COMM, 16, 16)
    V = fem.functionspace(msh, ("Lagrange", 1))
    qn = dnn.NeuralFunction(mlp(2, seed=7), V)
    u, v, f = fem.Function(V), ufl.TestFunction(V), fem.Function(V)
    f.interpolate(lambda x: 1 + x[0] * x[1])
    F = (1 + qn.function**2) * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - f * v * ufl.dx
    bc = fem.dirichletbc(0.0, dofs_on(V, lambda x: np.full(x.shape[1], True)), V)
    solve = dnn.fem_operator(F, u, controls=[qn.function, f], bcs=[bc], petsc_options=options,
                             petsc_options_prefix=prefix)
    J = dnn.fem_functional(u**2 * ufl.dx + qn.function**2 * ufl.dx, controls=[u, qn.function])
    return qn, f, solve, J


@pytest.mark.parametrize("ksp", ["cg", "gmres"])
def test_iterative_solver_with_algebraic_multigrid_taylor_rate_two(ksp):
    """CG (symmetric Poisson) or GMRES (advection) with GAMG, forward and adjoint."""
    options = {"ksp_type": ksp, "pc_type": "gamg"}
    if ksp == "cg":
        qn, f, solve, J = poisson_network_coefficient(f"gamg_{ksp}_", options)
        f_t = to_torch(f)

        def loss(params):
            q_t = qn(params)
            return J(solve(q_t, f_t), q_t)
    else:
        qn, f, solve, J = advection_diffusion(f"gamg_{ksp}_", options)
        f_t = to_torch(f)

        def loss(params):
            return J(solve(qn(params), f_t))

    params = {k: v.detach().clone() for k, v in qn.net.named_parameters()}
    g = torch.Generator().manual_seed(3)
    dp = {k: torch.randn(v.shape, dtype=v.dtype, generator=g) for k, v in params.items()}
    assert_rate_two(dnn.taylor_test(loss, params, dp, comm=COMM))
    assert solve.solver.getPC().getType() == "gamg"
    if ksp == "cg":  # symmetric: the adjoint reuses the forward KSP and its multigrid hierarchy
        assert solve._adjoint_ksp is None
    else:
        assert solve._adjoint_ksp.getPC().getType() == "gamg"


def test_changed_coefficient_of_the_matrix_is_seen():
    """A coefficient of the Jacobian that is not a control, changed by the user: reassembled."""
    msh = mesh.create_unit_square(COMM, 8, 8)
    V = fem.functionspace(msh, ("Lagrange", 1))
    kappa, f = fem.Function(V), fem.Function(V)
    kappa.x.array[:] = 1.0
    f.x.array[:] = 1.0
    u, v = fem.Function(V), ufl.TestFunction(V)
    F = kappa * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - f * v * ufl.dx
    bc = fem.dirichletbc(0.0, dofs_on(V, lambda x: np.full(x.shape[1], True)), V)
    auto = dnn.fem_operator(F, u, controls=[f], bcs=[bc], petsc_options_prefix="seen_")
    frozen = dnn.fem_operator(F, u, controls=[f], bcs=[bc], petsc_options_prefix="frozen_",
                              constant_jacobian=True)
    always = dnn.fem_operator(F, u, controls=[f], bcs=[bc], petsc_options_prefix="always_",
                              constant_jacobian=False)
    f_t = to_torch(f)
    u1 = auto(f_t)
    frozen(f_t)
    for _ in range(3):
        always(f_t)
    assert always.assemblies == 3 and auto.assemblies == 1
    kappa.x.array[:] = 2.0
    u2, u_frozen = auto(f_t), frozen(f_t)
    assert auto.assemblies == 2 and frozen.assemblies == 1
    assert torch.allclose(u2, u1 / 2, rtol=1e-12, atol=1e-15)  # u is proportional to 1/kappa
    assert torch.allclose(u_frozen, u1, rtol=1e-12, atol=1e-15)  # the promise was broken
    with pytest.raises(ValueError, match="constant_jacobian must be"):
        dnn.fem_operator(F, u, controls=[f], bcs=[bc], petsc_options_prefix="bad_",
                         constant_jacobian="yes")
