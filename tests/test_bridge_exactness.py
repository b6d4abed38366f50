"""The backward pass mirrors the forward pass, or the bridge says why (serial and MPI).

Each test is a case where a gradient used to be silently wrong, a check raised on one rank
only, or an error was misleading; the right value comes from finite differences or from
analysis.  The docs page ``docs/bridge_exactness.md`` lists what the bridge refuses.
"""

from __future__ import annotations

import warnings

from mpi4py import MPI
from petsc4py import PETSc

import basix.ufl
import dolfinx.fem.petsc  # noqa: F401
import numpy as np
import pytest
import torch
import ufl
from bridge_problems import (
    assert_matches_fd,
    directional_derivatives,
    dofs_on,
    mlp,
    quadrature_space,
)
from dolfinx import fem, mesh

import dolfinx_nn as dnn
from dolfinx_nn.conversion import to_torch

COMM = MPI.COMM_WORLD


def rank_direction(n: int, seed: int = 0) -> torch.Tensor:
    """A random direction of ``n`` owned values, different on each rank."""
    g = torch.Generator().manual_seed(1000 * seed + COMM.rank)
    return torch.randn(n, dtype=torch.float64, generator=g)


def assert_rate_two(rates):
    assert all(1.9 <= r <= 2.1 for r in rates), rates


# -- 1. Dirichlet conditions on shared dofs: the last condition wins -------------------------


def poisson_x(msh):
    V = fem.functionspace(msh, ("Lagrange", 1))
    u, v = fem.Function(V, name="u"), ufl.TestFunction(V)
    x = ufl.SpatialCoordinate(msh)
    F = ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - x[0] * v * ufl.dx
    return V, u, F


def test_overlapping_conditions_gradient_of_overridden_data_is_zero():
    """bcs=[bc(g0, D), bc(g1, D)]: the forward imposes g1, so dJ/dg0 = 0 exactly."""
    msh = mesh.create_unit_square(COMM, 12, 12)
    V, u, F = poisson_x(msh)
    D = dofs_on(V, lambda x: np.isclose(x[0], 0.0))
    g0, g1 = fem.Function(V, name="g0"), fem.Function(V, name="g1")
    g0.interpolate(lambda x: 1 + x[1])
    g1.interpolate(lambda x: 2 + x[1] ** 2)
    bcs = [fem.dirichletbc(g0, D), fem.dirichletbc(g1, D)]
    solve = dnn.fem_operator(F, u, controls=[g0, g1], bcs=bcs, petsc_options_prefix="ovl_")
    J = dnn.fem_functional(u**2 * ufl.dx, controls=[u])
    t0, t1 = to_torch(g0).requires_grad_(True), to_torch(g1).requires_grad_(True)
    J(solve(t0, t1)).backward()
    assert float(t0.grad.abs().max()) == 0.0 if t0.numel() else True
    assert COMM.allreduce(float(t1.grad.abs().sum()), op=MPI.SUM) > 0.1
    m = [to_torch(g0), to_torch(g1)]
    dm = [rank_direction(m[0].numel(), 1), rank_direction(m[1].numel(), 2)]
    ad, fd = directional_derivatives(lambda m: J(solve(*m)), m, dm, COMM)
    assert_matches_fd(ad, fd, 1.0)
    # Along g0 alone the finite difference vanishes too.
    ad0, fd0 = directional_derivatives(lambda m: J(solve(m[0], m[1])), m, [dm[0], 0 * dm[1]], COMM)
    assert ad0 == 0.0 and abs(fd0) < 1e-10


def inflow_problem(comm, n=12):
    """Inflow data g on x = 0 (a control), fixed zero walls y = 0, 1 listed after it."""
    msh = mesh.create_unit_square(comm, n, n)
    V, u, F = poisson_x(msh)
    g = fem.Function(V, name="g")
    g.interpolate(lambda x: np.sin(np.pi * x[1]) + 0.3)
    walls = fem.dirichletbc(fem.Function(V), dofs_on(V, lambda x: np.isclose(x[1], 0.0)
                                                     | np.isclose(x[1], 1.0)))
    bcs = [fem.dirichletbc(g, dofs_on(V, lambda x: np.isclose(x[0], 0.0))), walls]
    solve = dnn.fem_operator(F, u, controls=[g], bcs=bcs,
                             petsc_options_prefix=f"inflow{comm.size}_")
    J = dnn.fem_functional(u**2 * ufl.dx, controls=[u])
    return V, g, solve, J


def test_inflow_control_with_walls_after_it():
    """The corner dofs belong to the walls: their gradient is 0, as finite differences say."""
    V, g, solve, J = inflow_problem(COMM)
    g_t = to_torch(g).requires_grad_(True)
    J(solve(g_t)).backward()
    xy = V.tabulate_dof_coordinates()[: g_t.numel()]
    corners = np.isclose(xy[:, 0], 0.0) & (np.isclose(xy[:, 1], 0.0) | np.isclose(xy[:, 1], 1.0))
    assert COMM.allreduce(int(corners.sum()), op=MPI.SUM) == 2
    assert np.all(g_t.grad.numpy()[corners] == 0.0)
    inflow = np.isclose(xy[:, 0], 0.0) & ~corners
    assert COMM.allreduce(int((g_t.grad.numpy()[inflow] != 0).sum()), op=MPI.SUM) == 11
    dm = rank_direction(g_t.numel(), 3)
    ad, fd = directional_derivatives(lambda m: J(solve(m[0])), [to_torch(g)], [dm], COMM)
    assert_matches_fd(ad, fd, 1.0)


def test_inflow_gradient_same_on_one_and_all_ranks():
    """The gradient as a function (by dof coordinates) is the same on 1 and N ranks."""
    def gradient_at_points(comm):
        V, g, solve, J = inflow_problem(comm)
        g_t = to_torch(g).requires_grad_(True)
        J(solve(g_t)).backward()
        xy = np.round(V.tabulate_dof_coordinates()[: g_t.numel(), :2], 12) + 0.0
        rows = np.column_stack([xy, g_t.grad.numpy()])
        rows = np.concatenate(comm.allgather(rows))
        return rows[np.lexsort((rows[:, 1], rows[:, 0]))]

    serial, parallel = gradient_at_points(MPI.COMM_SELF), gradient_at_points(COMM)
    assert np.allclose(serial[:, :2], parallel[:, :2])
    assert np.max(np.abs(serial[:, 2] - parallel[:, 2])) < 1e-12


# -- 6. Constant Dirichlet data and conditions on a sub-space of a mixed space ----------------


def test_constant_dirichlet_value_as_control():
    """u = c on x = 0: dJ/dc is the sum over the dofs c sets (those not overridden)."""
    msh = mesh.create_unit_square(COMM, 10, 10)
    V, u, F = poisson_x(msh)
    c = fem.Constant(msh, PETSc.ScalarType(1.5))
    bcs = [fem.dirichletbc(c, dofs_on(V, lambda x: np.isclose(x[0], 0.0)), V),
           fem.dirichletbc(PETSc.ScalarType(0.0), dofs_on(V, lambda x: np.isclose(x[1], 0.0)), V)]
    solve = dnn.fem_operator(F, u, controls=[c], bcs=bcs, petsc_options_prefix="cbc_")
    J = dnn.fem_functional(u**2 * ufl.dx, controls=[u])
    c0 = torch.tensor(1.5, dtype=torch.float64)
    ad, fd = directional_derivatives(lambda m: J(solve(m[0])), [c0],
                                     [torch.tensor(1.0, dtype=torch.float64)], COMM)
    assert_matches_fd(ad, fd, 1.0)
    assert_rate_two(dnn.taylor_test(lambda k: J(solve(k)), c0,
                                    torch.tensor(1.0, dtype=torch.float64), comm=COMM))


def test_vector_constant_dirichlet_value():
    msh = mesh.create_unit_square(COMM, 8, 8)
    V = fem.functionspace(msh, ("Lagrange", 1, (2,)))
    u, v = fem.Function(V), ufl.TestFunction(V)
    load = ufl.as_vector((1.0, 2.0))
    F = ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - ufl.inner(load, v) * ufl.dx
    c = fem.Constant(msh, np.array([0.3, -0.2]))
    bc = fem.dirichletbc(c, dofs_on(V, lambda x: np.isclose(x[0], 0.0)), V)
    solve = dnn.fem_operator(F, u, controls=[c], bcs=[bc], petsc_options_prefix="vcbc_")
    J = dnn.fem_functional(ufl.inner(u, u) * ufl.dx + u[0] * ufl.dx, controls=[u])
    c0 = torch.tensor([0.3, -0.2], dtype=torch.float64)
    dc = torch.tensor([0.7, 1.1], dtype=torch.float64)
    ad, fd = directional_derivatives(lambda m: J(solve(m[0])), [c0], [dc], COMM)
    assert_matches_fd(ad, fd, 1.0)


def test_taylor_hood_inflow_profile_on_a_subspace():
    """Stokes, P2-P1: the inflow profile on W.sub(0) (data on the collapsed space) is a control."""
    msh = mesh.create_unit_square(COMM, 6, 6)
    P2 = basix.ufl.element("Lagrange", msh.basix_cell(), 2, shape=(2,))
    P1 = basix.ufl.element("Lagrange", msh.basix_cell(), 1)
    W = fem.functionspace(msh, basix.ufl.mixed_element([P2, P1]))
    W0, _ = W.sub(0).collapse()
    w = fem.Function(W)
    u, p = ufl.split(w)
    v, q = ufl.TestFunctions(W)
    F = (ufl.inner(ufl.grad(u), ufl.grad(v)) - p * ufl.div(v) - q * ufl.div(u)) * ufl.dx
    tdim = msh.topology.dim
    inflow = mesh.locate_entities_boundary(msh, tdim - 1, lambda x: np.isclose(x[0], 0.0))
    walls = mesh.locate_entities_boundary(msh, tdim - 1, lambda x: np.isclose(x[1], 0.0)
                                          | np.isclose(x[1], 1.0))
    g = fem.Function(W0, name="inflow")
    g.interpolate(lambda x: np.stack([x[1] * (1 - x[1]), np.zeros_like(x[0])]))
    bcs = [
        fem.dirichletbc(g, fem.locate_dofs_topological((W.sub(0), W0), tdim - 1, inflow),
                        W.sub(0)),
        fem.dirichletbc(fem.Function(W0), fem.locate_dofs_topological((W.sub(0), W0), tdim - 1,
                                                                      walls), W.sub(0)),
    ]
    solve = dnn.fem_operator(F, w, controls=[g], bcs=bcs, petsc_options_prefix="th_")
    J = dnn.fem_functional((ufl.inner(u, u) + p**2) * ufl.dx, controls=[w])
    g0 = to_torch(g)
    ad, fd = directional_derivatives(lambda m: J(solve(m[0])), [g0],
                                     [rank_direction(g0.numel(), 4)], COMM)
    assert_matches_fd(ad, fd, 1.0)


# -- 2. The adjoint does not inherit an inexact forward solver -------------------------------


def nonlinear_poisson(prefix, options, n=24):
    msh = mesh.create_unit_square(COMM, n, n)
    V = fem.functionspace(msh, ("Lagrange", 1))
    u, v = fem.Function(V), ufl.TestFunction(V)
    q = fem.Function(V, name="q")
    q.interpolate(lambda x: 1 + 0.5 * x[0] * x[1])
    f = fem.Function(V)
    f.interpolate(lambda x: 10 * np.sin(np.pi * x[0]))
    F = (1 + u**2) * q * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - f * v * ufl.dx
    bc = fem.dirichletbc(0.0, dofs_on(V, lambda x: np.full(x.shape[1], True)), V)
    solve = dnn.fem_operator(F, u, controls=[q], bcs=[bc], petsc_options=options,
                             petsc_options_prefix=prefix)
    return q, solve, dnn.fem_functional(u**2 * ufl.dx, controls=[u])


INEXACT_NEWTON = {"ksp_type": "gmres", "pc_type": "jacobi", "ksp_rtol": 0.3}


def test_inexact_newton_forward_still_gives_the_exact_gradient():
    q, solve, J = nonlinear_poisson("inexact_", INEXACT_NEWTON)
    q0 = to_torch(q)
    ad, fd = directional_derivatives(lambda m: J(solve(m[0])), [q0],
                                     [rank_direction(q0.numel(), 5)], COMM)
    assert_matches_fd(ad, fd, 1.0)
    assert solve.adjoint_residual < 1e-10
    assert_rate_two(dnn.taylor_test(lambda m: J(solve(m)), q0, rank_direction(q0.numel(), 6),
                                    comm=COMM))


def test_inaccurate_adjoint_is_refused_with_its_residual():
    """preonly with a Jacobi 'solve' reports success; its true residual gives it away."""
    options = {**INEXACT_NEWTON, "adjoint_ksp_type": "preonly"}
    q, solve, J = nonlinear_poisson("badadj_", options, n=8)
    q_t = to_torch(q).requires_grad_(True)
    with pytest.raises(dnn.GradientAccuracyError, match=r"true relative residual of \d\.\d+e"):
        J(solve(q_t)).backward()


def test_adjoint_tolerance_set_by_the_user_warns_instead():
    options = {**INEXACT_NEWTON, "adjoint_ksp_rtol": 0.5}
    q, solve, J = nonlinear_poisson("looseadj_", options, n=8)
    q_t = to_torch(q).requires_grad_(True)
    with pytest.warns(RuntimeWarning, match="true relative residual"):
        J(solve(q_t)).backward()


def test_loose_linear_forward_solve_warns():
    msh = mesh.create_unit_square(COMM, 16, 16)
    V, u, F = poisson_x(msh)
    f = fem.Function(V)
    F = F - f * ufl.TestFunction(V) * ufl.dx
    bc = fem.dirichletbc(0.0, dofs_on(V, lambda x: np.full(x.shape[1], True)), V)
    solve = dnn.fem_operator(F, u, controls=[f], bcs=[bc], petsc_options_prefix="loosefwd_",
                             petsc_options={"ksp_type": "cg", "pc_type": "jacobi",
                                            "ksp_rtol": 1e-2})
    with pytest.warns(RuntimeWarning, match="ksp_rtol for exact gradients"):
        solve(to_torch(f))


# -- 3. Second derivatives are refused, not returned wrong ------------------------------------


def small_poisson(prefix):
    msh = mesh.create_unit_square(COMM, 6, 6)
    V = fem.functionspace(msh, ("Lagrange", 1))
    q = fem.Function(V, name="q")
    q.x.array[:] = 1.0
    u, v = fem.Function(V), ufl.TestFunction(V)
    F = (1 + q**2) * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - v * ufl.dx
    bc = fem.dirichletbc(0.0, dofs_on(V, lambda x: np.isclose(x[0], 0.0)), V)
    solve = dnn.fem_operator(F, u, controls=[q], bcs=[bc], petsc_options_prefix=prefix)
    return q, solve, dnn.fem_functional(u**2 * ufl.dx + q**4 * ufl.dx, controls=[u, q])


def test_third_derivative_through_the_solve_raises():
    """Second derivatives are exact (tests/test_bridge_second_order.py); a third one refuses."""
    q, solve, J = small_poisson("dbl_")
    q_t = to_torch(q).requires_grad_(True)
    (g,) = torch.autograd.grad(J(solve(q_t), q_t), q_t, create_graph=True)
    (hg,) = torch.autograd.grad((g * g).sum(), q_t, create_graph=True)
    with pytest.raises(RuntimeError, match="third derivatives through fem_(operator|functional)"):
        torch.autograd.grad(hg.sum(), q_t)


def test_double_backward_with_a_neural_operator_raises():
    """A NeuralOperator has no second derivatives in the form: refused, in both modes."""
    f, _, solve, J = operator_problem("opdbl_", Law(), listed=False)
    f_t = to_torch(f).requires_grad_(True)
    (g,) = torch.autograd.grad(J(solve(f_t)), f_t, create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives through fem_operator are not "
                                           "supported when its form contains an operator"):
        torch.autograd.grad((g * g).sum(), f_t)
    with pytest.raises(RuntimeError, match="second derivatives through fem_operator"):
        torch.func.jvp(lambda x: J(solve(x)), (to_torch(f),), (torch.ones_like(f_t),))


def test_create_graph_first_order_gradient_unchanged():
    """create_graph=True for another reason: the first-order gradient is the same."""
    q, solve, J = small_poisson("cg1_")
    q_t = to_torch(q).requires_grad_(True)
    (plain,) = torch.autograd.grad(J(solve(q_t), q_t), q_t)
    (graphed,) = torch.autograd.grad(J(solve(q_t), q_t), q_t, create_graph=True)
    assert graphed.requires_grad
    difference = float((plain - graphed.detach()).abs().max()) if plain.numel() else 0.0
    assert difference <= 1e-13 * COMM.allreduce(float(plain.abs().max()), op=MPI.MAX)


def test_diffusion_map_hessian_of_a_bridge_loss_is_exact():
    """Both exact Hessian actions of HessianOperator agree with differences of gradients."""
    from dolfinx_nn.diffusion_maps.hessian import HessianOperator

    q, solve, J = small_poisson("dmh_")
    net = mlp(2, seed=3)
    qn = dnn.NeuralFunction(net, q.function_space, function=q)

    def loss():
        q_t = qn()
        return J(solve(q_t), q_t)

    v = np.random.default_rng(0).standard_normal(sum(p.numel() for p in net.parameters()))
    products = {mode: HessianOperator(net, loss, mode=mode, comm=COMM).matvec(v)
                for mode in ("autodiff", "double-backward", "retained-graph",
                             "finite-difference")}
    reference = products["finite-difference"]
    for mode in ("autodiff", "double-backward", "retained-graph"):
        error = np.linalg.norm(products[mode] - reference) / np.linalg.norm(reference)
        assert error < 1e-6, (mode, error)


# -- 4. A term replicated on every rank counts once ------------------------------------------


def test_replicated_weight_decay_same_gradient_on_one_and_all_ranks():
    from bridge_problems import PoissonCoefficient

    def gradient(comm):
        p = PoissonCoefficient(comm, prefix=f"wd{comm.size}_")
        p.net.zero_grad()
        decay = sum((w**2).sum() for w in p.net.parameters())
        (p.loss() + dnn.replicated(1e-2 * decay, comm)).backward()
        dnn.sync_gradients(p.net, comm)
        return torch.cat([w.grad.reshape(-1) for w in p.net.parameters()])

    serial, parallel = gradient(MPI.COMM_SELF), gradient(COMM)
    assert float((serial - parallel).abs().max()) < 1e-10 * float(serial.abs().max())


def test_training_loop_adds_a_replicated_regularizer_once():
    """train(regularizer=...) counts the term once: the serial minimiser on every rank count."""
    from dolfinx_nn.training import TrainingConfig, train

    x_all = np.linspace(0.0, 1.0, 12)
    y_all = 2.0 * x_all + 1.0 + 0.1 * np.sin(7 * x_all)
    mine = slice(COMM.rank, None, COMM.size)  # each rank holds part of the data
    x, y = torch.from_numpy(x_all[mine]), torch.from_numpy(y_all[mine])
    w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    lam = 0.3

    def loss():
        return dnn.global_sum(((w[0] * x + w[1] - y) ** 2).sum(), COMM) / 12

    train(loss, [w], TrainingConfig(adam_steps=0, lbfgs_steps=30, seed=0), comm=COMM,
          regularizer=lambda: lam * (w**2).sum())
    # (X^T X / 6 + 2 lam I) w = X^T y / 6 for the mean-square misfit over the 12 points.
    X = np.column_stack([x_all, np.ones_like(x_all)])
    expected = np.linalg.solve(X.T @ X / 6 + 2 * lam * np.eye(2), X.T @ y_all / 6)
    assert np.allclose(w.detach().numpy(), expected, atol=1e-9, rtol=0)


# -- 5. Checks agree over the ranks ------------------------------------------------------------


@pytest.mark.timeout(60)
def test_wrong_length_on_one_rank_only_raises_everywhere():
    q, solve, J = small_poisson("len1_")
    q_t = to_torch(q)
    if COMM.rank == COMM.size - 1:
        q_t = torch.cat([q_t, torch.zeros(1, dtype=torch.float64)])
    with pytest.raises(ValueError, match="values .* owned dofs|raised on rank"):
        solve(q_t)
    solve(to_torch(q))  # and the operator still works


@pytest.mark.timeout(60)
def test_wrong_type_on_one_rank_only_raises_everywhere():
    q, solve, J = small_poisson("type1_")
    q_t = to_torch(q)
    bad = q_t.numpy() if COMM.rank == 0 else q_t
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        solve(bad)


@pytest.mark.timeout(60)
def test_network_output_shape_on_one_rank_only_raises_everywhere():
    msh = mesh.create_unit_square(COMM, 4, 4)
    V = fem.functionspace(msh, ("Lagrange", 1))

    class Odd(torch.nn.Module):
        def forward(self, x):
            cols = 2 if COMM.rank == 0 else 1
            return torch.ones(x.shape[0], cols, dtype=torch.float64)

    with pytest.raises(ValueError, match="block size 1|raised on rank"):
        dnn.NeuralFunction(Odd(), V)()


# -- 7. Operators of the unknown are found in the form; errors inside them surface -----------


class Law(torch.nn.Module):
    def __init__(self, fail: Exception | None = None) -> None:
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor([1.0, 0.5], dtype=torch.float64))
        self.fail = fail

    def forward(self, x):
        if self.fail is not None and COMM.rank == COMM.size - 1:
            raise self.fail
        return self.c[0] + self.c[1] * x[:, 0] ** 2


def operator_problem(prefix, net, listed: bool):
    msh = mesh.create_unit_square(COMM, 6, 6)
    V = fem.functionspace(msh, ("Lagrange", 1))
    u, v = fem.Function(V, name="u"), ufl.TestFunction(V)
    f = fem.Function(V, name="f")
    f.interpolate(lambda x: 4 + x[0])
    k = dnn.NeuralOperator(net, operands=(u,), space=quadrature_space(msh, 2), name="k")
    F = k * ufl.inner(ufl.grad(u), ufl.grad(v)) * k.measure - f * v * k.measure
    bc = fem.dirichletbc(0.0, dofs_on(V, lambda x: np.full(x.shape[1], True)), V)
    solve = dnn.fem_operator(F, u, controls=[f], bcs=[bc], petsc_options_prefix=prefix,
                             operators=[k] if listed else ())
    return f, k, solve, dnn.fem_functional(u**2 * ufl.dx, controls=[u])


def test_operator_found_in_the_form_without_being_listed():
    f, k, found, J1 = operator_problem("opfound_", Law(), listed=False)
    _, _, listed, J2 = operator_problem("oplisted_", Law(), listed=True)
    assert found.operators == [k] and not found.linear
    f_t = to_torch(f).requires_grad_(True)
    u1 = found(f_t)
    u2 = listed(to_torch(f))
    assert float((u1 - u2).abs().max()) < 1e-12 if u1.numel() else True
    params = {n: p.detach().clone() for n, p in k.net.named_parameters()}
    m = [to_torch(f), params["c"]]
    dm = [rank_direction(m[0].numel(), 7), torch.tensor([0.3, -0.2], dtype=torch.float64)]
    ad, fd = directional_derivatives(
        lambda m: J1(found(m[0], operator_inputs=[[m[1]]])), m, dm, COMM)
    assert_matches_fd(ad, fd, 1.0)


def test_operator_in_a_functional():
    """M = k(u) u^2 dx with k a NeuralOperator of u: dM/du includes dk/du."""
    f, k, solve, _ = operator_problem("opfunc_", Law(), listed=False)
    u = solve.u
    M = dnn.fem_functional(k * u**2 * k.measure, controls=[u])
    assert M.operators == [k]
    u0 = solve(to_torch(f)).detach()
    c0 = k.net.c.detach().clone()
    m = [u0, c0]
    dm = [rank_direction(u0.numel(), 8), torch.tensor([0.2, 0.4], dtype=torch.float64)]
    ad, fd = directional_derivatives(lambda m: M(m[0], operator_inputs=[[m[1]]]), m, dm, COMM)
    assert_matches_fd(ad, fd, 1.0)


def test_derivative_includes_the_operator_term():
    """dnn.derivative(M, u) is ufl.derivative plus dM/dk dk/du, as the functional's gradient."""
    f, k, solve, _ = operator_problem("opderiv_", Law(), listed=False)
    u = solve.u
    u_t = solve(to_torch(f)).detach().requires_grad_(True)
    M = k * u**2 * k.measure
    dnn.fem_functional(M, controls=[u])(u_t).backward()
    k.update(derivatives=True)
    full = fem.petsc.assemble_vector(fem.form(dnn.derivative(M, u)))
    v = ufl.TestFunction(u.function_space)
    frozen = fem.petsc.assemble_vector(fem.form(ufl.derivative(M, u, v)))
    for vec in (full, frozen):
        vec.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
    n = u_t.numel()
    assert np.allclose(full.array_r[:n], u_t.grad.numpy(), rtol=1e-12, atol=1e-14)
    gap = COMM.allreduce(float(np.abs(full.array_r[:n] - frozen.array_r[:n]).max()) if n else 0.0,
                         op=MPI.MAX)
    assert gap > 1e-6  # ufl.derivative alone misses the operator's term


@pytest.mark.timeout(60)
def test_exception_inside_the_network_surfaces_as_itself_on_every_rank():
    f, k, solve, _ = operator_problem("opfail_", Law(fail=RuntimeError("no CUDA driver")),
                                      listed=False)
    with pytest.raises(RuntimeError, match="no CUDA driver"):
        solve(to_torch(f))


def test_neural_operator_device_checked_when_built():
    msh = mesh.create_unit_square(COMM, 2, 2)
    V = fem.functionspace(msh, ("Lagrange", 1))
    Q = quadrature_space(msh, 2)
    with pytest.raises(ValueError, match="device 'gpu0'"):
        dnn.NeuralOperator(Law(), operands=(fem.Function(V),), space=Q, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            dnn.NeuralOperator(Law(), operands=(fem.Function(V),), space=Q, device="cuda")


# -- 8. Options from PETSc's database are respected ----------------------------------------


def test_options_database_beats_defaults():
    opts = PETSc.Options()
    opts["db8_ksp_type"] = "cg"
    opts["db8_pc_type"] = "jacobi"
    opts["db8_ksp_rtol"] = 1e-13
    opts["db8_adjoint_pc_type"] = "sor"
    try:
        msh = mesh.create_unit_square(COMM, 8, 8)
        V, u, F = poisson_x(msh)
        f = fem.Function(V)
        F = F - f * ufl.TestFunction(V) * ufl.dx
        bc = fem.dirichletbc(0.0, dofs_on(V, lambda x: np.full(x.shape[1], True)), V)
        solve = dnn.fem_operator(F, u, controls=[f], bcs=[bc], petsc_options_prefix="db8_",
                                 symmetric=True)
        assert solve.solver.getType() == "cg" and solve.solver.getPC().getType() == "jacobi"
        assert solve.solver.getTolerances()[0] == pytest.approx(1e-13)
        f_t = to_torch(f).requires_grad_(True)
        (solve(f_t) ** 2).sum().backward()
        adjoint = solve._adjoint_ksp
        assert adjoint is not None and adjoint.getPC().getType() == "sor"
        assert adjoint.getType() == "cg"  # inherited from the forward database options
        assert adjoint.getTolerances()[0] == pytest.approx(1e-12)  # not the forward's
    finally:
        for key in ("db8_ksp_type", "db8_pc_type", "db8_ksp_rtol", "db8_adjoint_pc_type"):
            del opts[key]


def test_dict_options_beat_defaults_and_leave_no_trace():
    msh = mesh.create_unit_square(COMM, 4, 4)
    V, u, F = poisson_x(msh)
    f = fem.Function(V)
    F = F - f * ufl.TestFunction(V) * ufl.dx
    bc = fem.dirichletbc(0.0, dofs_on(V, lambda x: np.full(x.shape[1], True)), V)
    solve = dnn.fem_operator(F, u, controls=[f], bcs=[bc], petsc_options_prefix="dict8_",
                             petsc_options={"ksp_type": "gmres", "pc_type": "jacobi"})
    solve(to_torch(f))  # options are tidied once the solver is set up
    assert solve.solver.getType() == "gmres"
    assert solve.solver.getTolerances()[0] == pytest.approx(1e-10)  # the Krylov default
    assert not any(k.startswith("dict8_") for k in PETSc.Options().getAll())


# -- 9. Newton's defaults: converge where plain Newton does, stop at round-off -----------------


def test_stiff_neo_hookean_converges_at_roundoff_with_exact_gradient():
    msh = mesh.create_rectangle(COMM, [[0.0, 0.0], [4.0, 1.0]], [16, 4])
    V = fem.functionspace(msh, ("Lagrange", 1, (2,)))
    qn = dnn.NeuralFunction(mlp(2, seed=1), fem.functionspace(msh, ("Lagrange", 1)))
    u, v = fem.Function(V), ufl.TestFunction(V)
    mu, lmbda = 1e3 * (1 + 0.1 * ufl.tanh(qn.function)), 1e4
    Fd = ufl.Identity(2) + ufl.grad(u)
    Jd = ufl.det(Fd)
    psi = mu / 2 * (ufl.tr(Fd.T * Fd) - 2) - mu * ufl.ln(Jd) + lmbda / 2 * ufl.ln(Jd) ** 2
    body = fem.Constant(msh, np.array([0.0, -5.0]))
    F = ufl.derivative(psi * ufl.dx - ufl.inner(body, u) * ufl.dx, u, v)
    bc = fem.dirichletbc(np.zeros(2), dofs_on(V, lambda x: np.isclose(x[0], 0.0)), V)
    solve = dnn.fem_operator(F, u, controls=[qn.function], bcs=[bc], petsc_options_prefix="nh_")
    J = dnn.fem_functional(ufl.inner(u, u) * ufl.dx, controls=[u])

    def loss(p):
        return J(solve(qn(p)))

    params = {k: p.detach().clone() for k, p in qn.net.named_parameters()}
    loss(params)
    assert solve.iterations <= 8
    dp = {k: torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(2))
          for k, p in params.items()}
    rates = dnn.taylor_test(loss, params, dp, comm=COMM, h=1e-2, steps=5)
    assert 1.9 <= rates[-1] <= 2.1, rates


def test_line_search_fallback_when_plain_newton_diverges():
    """-u'' + 20 atan(u - 3) = 0: plain Newton from 0 overshoots; the bt fallback converges."""
    msh = mesh.create_unit_interval(COMM, 16)
    V = fem.functionspace(msh, ("Lagrange", 1))
    u, v = fem.Function(V), ufl.TestFunction(V)
    s = fem.Constant(msh, PETSc.ScalarType(3.0))
    F = 0.01 * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx + 20 * ufl.atan(u - s) * v * ufl.dx
    solve = dnn.fem_operator(F, u, controls=[s], petsc_options_prefix="atan_")
    u_t = solve(torch.tensor(3.0, dtype=torch.float64))
    assert float((u_t - 3.0).abs().max() if u_t.numel() else 0.0) < 1e-10
    basic = dnn.fem_operator(F, u, controls=[s], petsc_options_prefix="atanb_",
                             petsc_options={"snes_linesearch_type": "basic"})
    with pytest.raises(dnn.SolverError):
        basic(torch.tensor(3.0, dtype=torch.float64))


# -- 10. taylor_test pairs dict entries by key ------------------------------------------------


def test_taylor_test_pairs_dict_entries_by_key():
    def f(m):
        return (m["a"] ** 2).sum() + 3 * (m["b"] ** 3).sum()

    m = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5])}
    dm = {"b": torch.tensor([1.0]), "a": torch.tensor([0.3, -0.1])}  # other order
    assert_rate_two(dnn.taylor_test(f, m, dm))
    with pytest.raises(ValueError, match="keys"):
        dnn.taylor_test(f, m, {"a": torch.tensor([1.0, 1.0]), "c": torch.tensor([1.0])})


# -- Recovery after a failed solve ---------------------------------------------------------


def test_operator_recovers_after_a_failed_factorization():
    """A zero coefficient fails the factorization; the next valid call solves (no raw error)."""
    q, _, _ = small_poisson("recover_")
    q_t = to_torch(q)
    zero = torch.zeros_like(q_t)
    V = q.function_space
    u, v = fem.Function(V), ufl.TestFunction(V)
    k = fem.Function(V, name="k")
    F = k * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - v * ufl.dx
    bc = fem.dirichletbc(0.0, dofs_on(V, lambda x: np.isclose(x[0], 0.0)), V)
    op = dnn.fem_operator(F, u, controls=[k], bcs=[bc], petsc_options_prefix="recover2_")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(dnn.SolverError, match="DIVERGED_PCSETUP_FAILED"):
            op(zero)
    u_t = op(torch.ones_like(q_t))
    assert COMM.allreduce(float(u_t.abs().max()) if u_t.numel() else 0.0, op=MPI.MAX) > 0.1


# -- What the forward pass did, beyond the controls ----------------------------------------


def test_piecewise_linear_residual_is_solved_as_nonlinear():
    """max_value(u, 0): UFL's second derivative vanishes, but the Jacobian depends on u."""
    msh = mesh.create_unit_square(COMM, 12, 12)
    V = fem.functionspace(msh, ("Lagrange", 1))
    u, v, f = fem.Function(V), ufl.TestFunction(V), fem.Function(V)
    f.x.array[:] = 1.0
    F = (ufl.inner(ufl.grad(u), ufl.grad(v)) + 100 * ufl.max_value(u, 0.0) * v - f * v) * ufl.dx
    bc = fem.dirichletbc(0.0, dofs_on(V, lambda x: np.full(x.shape[1], True)), V)
    solve = dnn.fem_operator(F, u, controls=[f], bcs=[bc], petsc_options_prefix="maxv_")
    assert not solve.linear
    u_t = solve(to_torch(f))
    top = COMM.allreduce(float(u_t.max()) if u_t.numel() else 0.0, op=MPI.MAX)
    assert 0.009 < top < 0.0105  # plain Newton's 0.00977; the linear reading gave 0.073
    J = dnn.fem_functional(u**2 * ufl.dx, controls=[u])
    f0 = to_torch(f)
    ad, fd = directional_derivatives(lambda m: J(solve(m[0])), [f0],
                                     [rank_direction(f0.numel(), 11)], COMM)
    assert_matches_fd(ad, fd, 1.0)


def test_time_constant_changed_in_place_during_the_loop():
    """The usual DOLFINx time loop, t.value = n dt, one backward at the end."""
    msh = mesh.create_unit_square(COMM, 8, 8)
    V = fem.functionspace(msh, ("Lagrange", 1))
    u, v, u_prev = fem.Function(V), ufl.TestFunction(V), fem.Function(V)
    t, amplitude = fem.Constant(msh, 0.0), fem.Constant(msh, 1.0)
    dt = 0.05
    F = ((u - u_prev) / dt * v + ufl.inner(ufl.grad(u), ufl.grad(v))
         - amplitude * ufl.cos(3 * t) * v) * ufl.dx
    bc = fem.dirichletbc(0.0, dofs_on(V, lambda x: np.full(x.shape[1], True)), V)
    solve = dnn.fem_operator(F, u, controls=[u_prev, amplitude], bcs=[bc],
                             petsc_options_prefix="tloop_")
    J = dnn.fem_functional(u**2 * ufl.dx, controls=[u])

    def loss(m):
        u_t = torch.zeros(to_torch(u).numel(), dtype=torch.float64)
        for step in range(1, 11):
            t.value = step * dt
            u_t = solve(u_t, m[0])
        return J(u_t)

    one = torch.tensor(1.0, dtype=torch.float64)
    ad, fd = directional_derivatives(loss, [one], [one], COMM)
    assert_matches_fd(ad, fd, 1.0)
    assert float(t.value) == pytest.approx(10 * dt)  # the values of the moment are put back


def test_data_changed_per_sample_in_a_functional():
    msh = mesh.create_unit_square(COMM, 6, 6)
    V = fem.functionspace(msh, ("Lagrange", 1))
    q, d = fem.Function(V), fem.Function(V)
    J = dnn.fem_functional((q - d) ** 2 * ufl.dx, controls=[q])
    samples = [lambda x: x[0], lambda x: 1 + x[1] ** 2]

    def loss(m):
        total = 0
        for sample in samples:
            d.interpolate(sample)
            total = total + J(m[0])
        return total

    q0 = torch.ones(to_torch(q).numel(), dtype=torch.float64)
    ad, fd = directional_derivatives(loss, [q0], [rank_direction(q0.numel(), 12)], COMM)
    assert_matches_fd(ad, fd, 1.0)


def advection(prefix, b, symmetric=None, options=None):
    msh = mesh.create_unit_square(COMM, 10, 10)
    V = fem.functionspace(msh, ("Lagrange", 1))
    u, v, f = fem.Function(V), ufl.TestFunction(V), fem.Function(V)
    w = fem.Constant(msh, np.array(b, dtype=float))
    F = (ufl.inner(ufl.grad(u), ufl.grad(v)) + ufl.dot(w, ufl.grad(u)) * v - f * v) * ufl.dx
    bc = fem.dirichletbc(0.0, dofs_on(V, lambda x: np.full(x.shape[1], True)), V)
    solve = dnn.fem_operator(F, u, controls=[f], bcs=[bc], symmetric=symmetric,
                             petsc_options=options, petsc_options_prefix=prefix)
    return f, w, solve, dnn.fem_functional(u**2 * ufl.dx, controls=[u])


def test_symmetry_is_that_of_each_forward_pass():
    """Non-symmetric pass, then a symmetric one (b = 0), then the backward of both."""
    f, w, solve, J = advection("symint_", (20.0, 5.0))

    def loss(m):
        w.value[:] = (20.0, 5.0)
        first = J(solve(m[0]))
        w.value[:] = (0.0, 0.0)
        return first + J(solve(m[0]))

    f0 = torch.ones(to_torch(f).numel(), dtype=torch.float64)
    ad, fd = directional_derivatives(loss, [f0], [rank_direction(f0.numel(), 13)], COMM)
    assert_matches_fd(ad, fd, 1.0)


def test_wrong_symmetric_flag_is_caught_by_the_adjoint_check():
    f, _, solve, J = advection("wrongsym_", (20.0, 5.0), symmetric=True)
    f_t = torch.ones(to_torch(f).numel(), dtype=torch.float64, requires_grad=True)
    with pytest.raises(dnn.GradientAccuracyError, match="declared symmetric"):
        J(solve(f_t)).backward()


def test_high_contrast_coefficient_passes_with_a_direct_solver():
    """Contrast 1e8: the residual is far above round-off, the backward error is not."""
    msh = mesh.create_unit_square(COMM, 16, 16)
    V = fem.functionspace(msh, ("Lagrange", 1))
    Q = fem.functionspace(msh, ("DG", 0))
    kappa = fem.Function(Q)
    kappa.interpolate(lambda x: np.where(x[0] < 0.5, 1.0, 1e8))
    u, v, f = fem.Function(V), ufl.TestFunction(V), fem.Function(V)
    f.x.array[:] = 1.0
    F = (kappa * ufl.inner(ufl.grad(u), ufl.grad(v)) - f * v) * ufl.dx
    bc = fem.dirichletbc(0.0, dofs_on(V, lambda x: np.isclose(x[0], 0.0)), V)
    solve = dnn.fem_operator(F, u, controls=[kappa, f], bcs=[bc], petsc_options_prefix="hc_")
    J = dnn.fem_functional(u**2 * ufl.dx, controls=[u])
    f_t = to_torch(f).requires_grad_(True)
    J(solve(to_torch(kappa), f_t)).backward()
    assert solve.adjoint_backward_error < 1e-14


def test_operand_checks_constants_and_nested_operators():
    msh = mesh.create_unit_square(COMM, 4, 4)
    V = fem.functionspace(msh, ("Lagrange", 1))
    Q = quadrature_space(msh, 2)
    u, v = fem.Function(V), ufl.TestFunction(V)
    c = fem.Constant(msh, 1.0)
    k = dnn.NeuralOperator(Law(), operands=(c * u,), space=Q, name="k")
    F = k * ufl.inner(ufl.grad(u), ufl.grad(v)) * k.measure - c * v * k.measure
    with pytest.raises(ValueError, match="is an operand of operator 0"):
        dnn.fem_operator(F, u, controls=[c], petsc_options_prefix="cop_")
    with pytest.raises(ValueError, match="is an operand of operator 0"):
        dnn.fem_functional(c * k * k.measure, controls=[c])
    k1 = dnn.NeuralOperator(Law(), operands=(u,), space=Q, name="k1")
    k2 = dnn.NeuralOperator(Law(), operands=(k1,), space=Q, name="k2")
    F = k2 * ufl.inner(ufl.grad(u), ufl.grad(v)) * k2.measure - v * k2.measure
    with pytest.raises(ValueError, match="another operator of the unknown .'k1'."):
        dnn.fem_operator(F, u, controls=[], petsc_options_prefix="nest_")


def test_snes_types_that_do_not_solve_are_refused_and_loose_stops_warn():
    q, solve, J = nonlinear_poisson("loose_", {"snes_rtol": 1e-3}, n=8)
    with pytest.warns(RuntimeWarning, match="Newton solve .* stopped"):
        solve(to_torch(q))
    with pytest.raises(ValueError, match="snes_type 'ksponly' does one linear solve"):
        nonlinear_poisson("kspo_", {"snes_type": "ksponly"}, n=4)
    q, qn_solve, _ = nonlinear_poisson("qn_", {"snes_type": "qn"}, n=8)
    plain = nonlinear_poisson("newt_", None, n=8)[1]
    a, b = qn_solve(to_torch(q)), plain(to_torch(q))
    assert float((a - b).abs().max() if a.numel() else 0.0) < 1e-8


def test_options_dictionary_beats_the_database_like_dolfinx():
    opts = PETSc.Options()
    opts["dvd_ksp_type"] = "gmres"
    opts["dvd_pc_type"] = "jacobi"
    try:
        f, _, solve, _ = advection("dvd_", (1.0, 0.0), options={"ksp_type": "preonly",
                                                                  "pc_type": "lu"})
        solve(to_torch(f))
        assert solve.solver.getType() == "preonly" and solve.options.direct
        assert opts.getString("dvd_ksp_type") == "gmres"  # the database value is put back
    finally:
        del opts["dvd_ksp_type"]
        del opts["dvd_pc_type"]


def test_adjoint_preconditioner_alone_gets_a_krylov_method():
    opts = PETSc.Options()
    opts["asor_adjoint_pc_type"] = "sor"
    try:
        f, _, solve, J = advection("asor_", (3.0, 1.0))
        f0 = torch.ones(to_torch(f).numel(), dtype=torch.float64)
        ad, fd = directional_derivatives(lambda m: J(solve(m[0])), [f0],
                                         [rank_direction(f0.numel(), 14)], COMM)
        assert_matches_fd(ad, fd, 1.0)
        assert solve._adjoint_ksp.getType() == "gmres"
    finally:
        del opts["asor_adjoint_pc_type"]


@pytest.mark.timeout(60)
def test_exception_in_the_first_jacobian_surfaces_and_the_operator_recovers():
    class Failing(Law):
        calls = 0

        def forward(self, x):
            Failing.calls += 1
            if Failing.calls == 2:  # the first Jacobian assembly
                raise RuntimeError("no CUDA driver")
            return super().forward(x)

    f, k, solve, _ = operator_problem("jacfail_", Failing(), listed=False)
    with pytest.raises(RuntimeError, match="no CUDA driver"):
        solve(to_torch(f))
    u_t = solve(to_torch(f))
    assert solve.iterations <= 10
    assert COMM.allreduce(float(u_t.abs().max()) if u_t.numel() else 0.0, op=MPI.MAX) > 0.05


@pytest.mark.timeout(60)
def test_global_sum_refuses_a_graph_on_some_ranks_only():
    x = torch.ones(1, dtype=torch.float64, requires_grad=True)
    local = (2 * x).sum() if COMM.rank == 0 else torch.zeros((), dtype=torch.float64)
    if COMM.size == 1:
        assert float(dnn.global_sum(local, COMM)) == 2.0
        return
    with pytest.raises(ValueError, match="requires a gradient on 1 of"):
        dnn.global_sum(local, COMM)


@pytest.mark.timeout(60)
def test_inputs_detached_on_one_rank_still_backward_everywhere():
    q, solve, J = small_poisson("detached1_")
    q_t = to_torch(q).requires_grad_(True)
    detached = COMM.size > 1 and COMM.rank == COMM.size - 1
    given = q_t.detach() if detached else q_t
    J(solve(given), given).backward()  # every rank runs the collective backward pass
    assert (q_t.grad is None) == detached


def test_control_layout_and_dtype_checks():
    msh = mesh.create_unit_square(COMM, 4, 4)
    V = fem.functionspace(msh, ("Lagrange", 1, (2,)))
    u, v, f = fem.Function(V), ufl.TestFunction(V), fem.Function(V)
    F = (ufl.inner(ufl.grad(u), ufl.grad(v)) - ufl.inner(f, v)) * ufl.dx
    solve = dnn.fem_operator(F, u, controls=[f], petsc_options_prefix="layout_")
    nodes = V.dofmap.index_map.size_local
    good = torch.ones(nodes, 2, dtype=torch.float64)
    solve(good)
    solve(good.reshape(-1))
    if nodes > 2:
        with pytest.raises(ValueError, match=r"\(nodes, components\)"):
            solve(good.T.contiguous())
    with pytest.raises(TypeError, match="is complex"):
        solve(good.to(torch.complex128))


def test_crouzeix_raviart_network_coefficient():
    msh = mesh.create_unit_square(COMM, 6, 6)
    CR = fem.functionspace(msh, ("CR", 1))
    qn = dnn.NeuralFunction(mlp(2, seed=2), CR)
    q_t = qn()
    xy = torch.from_numpy(CR.tabulate_dof_coordinates()[: q_t.numel(), :2])
    with torch.no_grad():
        assert torch.allclose(q_t, qn.net(xy).reshape(-1))


def test_a_dropped_nonlinear_operator_is_freed():
    """The SNES callbacks must not keep the operator (its mesh, communicators) alive: a
    suite that builds hundreds of them ran out of MPI communicators."""
    import gc
    import weakref

    msh = mesh.create_unit_square(COMM, 4, 4)
    V = fem.functionspace(msh, ("Lagrange", 1))
    u, v, f = fem.Function(V), ufl.TestFunction(V), fem.Function(V)
    F = (1 + u**2) * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - f * v * ufl.dx
    bc = fem.dirichletbc(0.0, dofs_on(V, lambda x: np.isclose(x[0], 0.0)), V)
    solve = dnn.fem_operator(F, u, controls=[f], bcs=[bc], petsc_options_prefix="freed_")
    assert not solve.linear
    solve(to_torch(f) + 1.0)
    ref = weakref.ref(solve)
    del solve
    gc.collect()
    assert ref() is None
