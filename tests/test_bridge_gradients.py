"""Gradients through the bridge: Taylor tests (rate 2) and gradcheck, serial and parallel."""

from __future__ import annotations

from mpi4py import MPI

import numpy as np
import pytest
import torch
import ufl
from bridge_problems import PoissonCoefficient, boundary_bc, mlp, unit_mesh
from dolfinx import fem

import dolfinx_nn as dnn


def assert_rate_two(rates):
    assert all(1.9 <= r <= 2.1 for r in rates), rates


@pytest.mark.parametrize("space", ["P1", "quadrature", "DG0"])
def test_taylor_linear_poisson_network_coefficient(space):
    p = PoissonCoefficient(MPI.COMM_WORLD, space=space, prefix=f"lin_{space}_")
    rates = dnn.taylor_test(p.loss, p.params(), p.directions(), comm=p.msh.comm)
    assert_rate_two(rates)
    assert p.solve.linear and p.solve.symmetric


def test_taylor_nonlinear_snes():
    p = PoissonCoefficient(MPI.COMM_WORLD, nonlinear=True, prefix="nonlin_")
    rates = dnn.taylor_test(p.loss, p.params(), p.directions(), comm=p.msh.comm)
    assert_rate_two(rates)
    assert not p.solve.linear
    assert 2 <= p.solve.iterations <= 10


@pytest.mark.parametrize("nonlinear", [False, True])
def test_taylor_source_control(nonlinear):
    p = PoissonCoefficient(MPI.COMM_WORLD, nonlinear=nonlinear, prefix=f"src{nonlinear}_")
    f0 = p.f_t.clone()
    df = torch.from_numpy(np.random.default_rng(MPI.COMM_WORLD.rank).standard_normal(f0.shape))
    rates = dnn.taylor_test(lambda f_t: p.loss(f_t=f_t), f0, df, comm=p.msh.comm)
    assert_rate_two(rates)


def test_taylor_functional_with_boundary_terms_and_dirichlet():
    p = PoissonCoefficient(MPI.COMM_WORLD, boundary_term=True, prefix="bnd_")
    rates = dnn.taylor_test(p.loss, p.params(), p.directions(), comm=p.msh.comm)
    assert_rate_two(rates)
    # Dirichlet dofs of u stay at their value whatever the coefficient.
    u_t = p.solve(p.qn(), p.f_t)
    dofs = p.bc.dof_indices()[0][: p.bc.dof_indices()[1]]
    assert np.allclose(u_t.detach().numpy()[dofs], 0.0)


def test_taylor_3d():
    p = PoissonCoefficient(MPI.COMM_WORLD, dim=3, n=4, prefix="threed_")
    rates = dnn.taylor_test(p.loss, p.params(), p.directions(), comm=p.msh.comm)
    assert_rate_two(rates)


def test_taylor_nonsymmetric_linear_uses_adjoint_ksp():
    """An advection term makes dF/du non-symmetric: the adjoint needs the transposed matrix."""
    comm = MPI.COMM_WORLD
    msh = unit_mesh(comm, 2, 8)
    V = fem.functionspace(msh, ("Lagrange", 1))
    qn = dnn.NeuralFunction(mlp(2), fem.functionspace(msh, ("Lagrange", 1)))
    q = qn.function
    u, v = fem.Function(V), ufl.TestFunction(V)
    b = ufl.as_vector((3.0, 1.0))
    F = (1 + q**2) * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
    F += ufl.dot(b, ufl.grad(u)) * v * ufl.dx - v * ufl.dx
    solve = dnn.fem_operator(F, u, controls=[q], bcs=[boundary_bc(V)], petsc_options_prefix="adv_")
    J = dnn.fem_functional(u**2 * ufl.dx, controls=[u])
    params = {k: p.detach().clone() for k, p in qn.net.named_parameters()}
    dp = {k: torch.randn_like(p) for k, p in params.items()}
    rates = dnn.taylor_test(lambda m: J(solve(qn(m))), params, dp, comm=comm)
    assert_rate_two(rates)
    assert solve.symmetric is False


def test_vector_valued_network_output():
    """A network with two outputs on a blocked P1 space (an anisotropic coefficient)."""
    comm = MPI.COMM_WORLD
    msh = unit_mesh(comm, 2, 6)
    V = fem.functionspace(msh, ("Lagrange", 1))
    Q = fem.functionspace(msh, ("Lagrange", 1, (2,)))
    qn = dnn.NeuralFunction(mlp(2, dout=2), Q)
    q = qn.function
    u, v = fem.Function(V), ufl.TestFunction(V)
    K = ufl.as_matrix(((1 + q[0] ** 2, 0), (0, 1 + q[1] ** 2)))
    F = ufl.inner(K * ufl.grad(u), ufl.grad(v)) * ufl.dx - v * ufl.dx
    solve = dnn.fem_operator(F, u, controls=[q], bcs=[boundary_bc(V)], petsc_options_prefix="vec_")
    J = dnn.fem_functional(u**2 * ufl.dx, controls=[u])
    params = {k: p.detach().clone() for k, p in qn.net.named_parameters()}
    dp = {k: torch.randn_like(p) for k, p in params.items()}
    assert qn().shape == (2 * Q.dofmap.index_map.size_local,)
    assert_rate_two(dnn.taylor_test(lambda m: J(solve(qn(m))), params, dp, comm=comm))


def test_float32_network():
    """float32 networks are cast at the boundary; their gradients stay float32 and correct."""
    p = PoissonCoefficient(MPI.COMM_WORLD, prefix="f32_", dtype=torch.float32)
    q_t = p.qn()
    assert q_t.dtype == torch.float64
    loss = p.J(p.solve(q_t, p.f_t), q_t)
    loss.backward()
    assert all(w.grad is not None and w.grad.dtype == torch.float32 for w in p.net.parameters())
    # Same gradient as the float64 network with the same (float32-representable) weights.
    g32 = torch.cat([w.grad.reshape(-1).double() for w in p.net.parameters()])
    ref = PoissonCoefficient(MPI.COMM_WORLD, prefix="f64_")
    ref.net.load_state_dict({k: v.double() for k, v in p.net.state_dict().items()})
    ref.net.zero_grad()
    ref.loss().backward()
    g64 = torch.cat([w.grad.reshape(-1) for w in ref.net.parameters()])
    assert torch.allclose(g32, g64, rtol=1e-4, atol=1e-6)


def _tiny_problem(comm, prefix):
    msh = unit_mesh(comm, 1, 6)
    V = fem.functionspace(msh, ("Lagrange", 1))
    q, f, u = fem.Function(V), fem.Function(V), fem.Function(V)
    v = ufl.TestFunction(V)
    F = (1 + q**2) * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - f * v * ufl.dx
    F += u**3 * v * ufl.dx
    solve = dnn.fem_operator(F, u, controls=[q, f], bcs=[boundary_bc(V)],
                             petsc_options_prefix=prefix)
    J = dnn.fem_functional((u**2 + u * q) * ufl.dx + q * ufl.ds, controls=[u, q])
    return V, solve, J


def test_gradcheck_solve_and_functional():
    # gradcheck perturbs one input entry at a time, so ranks would call the (collective) solve
    # a different number of times: each rank checks its own serial problem.
    V, solve, J = _tiny_problem(MPI.COMM_SELF, "gc_")
    n = V.dofmap.index_map.size_local
    rng = np.random.default_rng(MPI.COMM_WORLD.rank)
    q_t = torch.from_numpy(0.5 * rng.standard_normal(n)).requires_grad_(True)
    f_t = torch.from_numpy(1.0 + rng.random(n)).requires_grad_(True)
    assert torch.autograd.gradcheck(solve, (q_t, f_t), eps=1e-6, atol=1e-7, rtol=1e-5)
    u_t = solve(q_t, f_t).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(J, (u_t, q_t), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_gradient_matches_finite_differences():
    """Gradient w.r.t. one network weight against a central finite difference."""
    p = PoissonCoefficient(MPI.COMM_WORLD, nonlinear=True, prefix="fd_")
    g = p.parameter_gradient()
    params = p.params()
    name, idx = "0.weight", (3, 1)
    h = 1e-6
    values = []
    for s in (h, -h):
        shifted = {k: v.clone() for k, v in params.items()}
        shifted[name][idx] += s
        with torch.no_grad():
            values.append(float(p.loss(shifted)))
    fd = (values[0] - values[1]) / (2 * h)
    flat = 3 * 2 + 1  # index of weight (3, 1) in the flattened first layer (8 x 2)
    assert abs(g[flat].item() - fd) <= 1e-6 * max(abs(fd), 1e-3)


def test_backward_after_interleaved_forward():
    """Backward restores the state of its own forward pass (here another solve came between)."""
    p = PoissonCoefficient(MPI.COMM_WORLD, nonlinear=False, prefix="inter_")
    q1 = p.qn().detach().requires_grad_(True)
    u1 = p.solve(q1, p.f_t)
    u2 = p.solve(2.0 * q1.detach() + 1.0, p.f_t)  # changes the factorization and the functions
    assert not torch.allclose(u1, u2)
    (g_interleaved,) = torch.autograd.grad(u1.square().sum(), q1)
    q_ref = q1.detach().clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(p.solve(q_ref, p.f_t).square().sum(), q_ref)
    assert torch.allclose(g_interleaved, g_ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("nonlinear", [False, True])
def test_taylor_dirichlet_data_control(nonlinear):
    """Dirichlet data as a control: dJ/dg = dJ/du_b - (dF/du)^T lambda on the boundary dofs."""
    comm = MPI.COMM_WORLD
    msh = unit_mesh(comm, 2, 8)
    V = fem.functionspace(msh, ("Lagrange", 1))
    u, g, q = fem.Function(V, name="u"), fem.Function(V, name="g"), fem.Function(V, name="q")
    q.interpolate(lambda x: 1.0 + x[0] * x[1])
    v = ufl.TestFunction(V)
    k = q * (1 + u**2) if nonlinear else q
    F = k * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - v * ufl.dx
    bc = boundary_bc(V, where=lambda x: np.isclose(x[0], 0.0) | np.isclose(x[1], 1.0))
    bc = fem.dirichletbc(g, bc.dof_indices()[0])
    solve = dnn.fem_operator(F, u, controls=[g, q], bcs=[bc],
                             petsc_options_prefix=f"dirichlet{int(nonlinear)}_")
    J = dnn.fem_functional((u**2 + u) * ufl.dx + u * ufl.ds, controls=[u])
    n = V.dofmap.index_map.size_local
    rng = np.random.default_rng(comm.rank)
    g0 = torch.from_numpy(0.3 * rng.standard_normal(n))
    dg = torch.from_numpy(rng.standard_normal(n))
    q_t = dnn.to_torch(q)
    assert_rate_two(dnn.taylor_test(lambda gt: J(solve(gt, q_t)), g0, dg, comm=comm))
    # The solution takes the data on the boundary dofs.
    dofs = bc.dof_indices()[0][: bc.dof_indices()[1]]
    assert np.allclose(solve(g0, q_t).numpy()[dofs], g0.numpy()[dofs])
