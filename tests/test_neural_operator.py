"""NeuralOperator: networks of the unknown inside SNES forms, serial and under MPI.

Hand-set modules reproduce known laws exactly, so the network problem must give the solution
and the Newton iteration count of the same law written in UFL; small MLPs check the gradients
(Taylor rates 2) through the operator's derivatives, the adjoint and the network's VJP.
"""

from __future__ import annotations

from mpi4py import MPI
from petsc4py import PETSc

import numpy as np
import pytest
import torch
import ufl
from dolfinx import fem, mesh

import dolfinx_nn as dnn
from dolfinx_nn.conversion import to_torch
from dolfinx_nn.quadrature import quadrature_space

COMM = MPI.COMM_WORLD


class Polynomial(torch.nn.Module):
    """k(u) = c0 + c1 u + c2 u^2 with trainable coefficients (a hand-set network)."""

    def __init__(self, c=(1.0, 0.0, 1.0)) -> None:
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(c, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x[:, 0]
        return self.c[0] + self.c[1] * u + self.c[2] * u**2


class NonlinearFlux(torch.nn.Module):
    """q(g) = (a + b |g|^2) g for g = grad u: a vector law of a vector operand."""

    def __init__(self, a: float = 1.0, b: float = 0.5) -> None:
        super().__init__()
        self.ab = torch.nn.Parameter(torch.tensor([a, b], dtype=torch.float64))

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return (self.ab[0] + self.ab[1] * (g**2).sum(dim=1, keepdim=True)) * g


class FluxCorrection(torch.nn.Module):
    """q(g) = g + MLP(g): a learnable flux, monotone enough for Newton."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = mlp(2, 2)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return g + self.mlp(g)


def mlp(n_in: int, n_out: int, width: int = 8) -> torch.nn.Module:
    net = torch.nn.Sequential(
        torch.nn.Linear(n_in, width), torch.nn.Tanh(), torch.nn.Linear(width, n_out)
    ).double()
    with torch.no_grad():  # a mild law: output near 1 (scalar) or near g (vector)
        net[2].weight.mul_(0.1)
        net[2].bias.fill_(1.0 if n_out == 1 else 0.0)
    return net


def unit_square(n: int = 8) -> mesh.Mesh:
    return mesh.create_unit_square(COMM, n, n)


def zero_bc(V: fem.FunctionSpace) -> fem.DirichletBC:
    msh = V.mesh
    tdim = msh.topology.dim
    msh.topology.create_connectivity(tdim - 1, tdim)
    facets = mesh.exterior_facet_indices(msh.topology)
    return fem.dirichletbc(0.0, fem.locate_dofs_topological(V, tdim - 1, facets), V)


def source(V: fem.FunctionSpace, amplitude: float = 20.0) -> fem.Function:
    f = fem.Function(V, name="f")
    f.interpolate(lambda x: amplitude * np.sin(np.pi * x[0]) * np.sin(np.pi * x[1]))
    return f


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return COMM.allreduce(float((a - b).detach().abs().max()), op=MPI.MAX)


def same_on_all_ranks(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for t in d.values():
        COMM.Bcast(t.numpy(), root=0)
    return d


def assert_rate_two(rates):
    assert all(1.9 <= r <= 2.1 for r in rates), rates


class Diffusion:
    """-div(k grad u) = f on the unit square, with k = 1 + u^2 in UFL or a network of u."""

    def __init__(self, net: torch.nn.Module | None, prefix: str, n: int = 8) -> None:
        msh = unit_square(n)
        self.V = V = fem.functionspace(msh, ("Lagrange", 1))
        self.f = source(V)
        self.u = u = fem.Function(V, name="u")
        v = ufl.TestFunction(V)
        Q = quadrature_space(msh, 2)
        if net is None:
            self.k = None
            k, dx = 1 + u**2, ufl.Measure("dx", domain=msh, metadata={"quadrature_degree": 2})
        else:
            self.k = k = dnn.NeuralOperator(net, operands=(u,), space=Q, name="k")
            dx = k.measure
        F = k * ufl.inner(ufl.grad(u), ufl.grad(v)) * dx - self.f * v * dx
        self.solve = dnn.fem_operator(
            F, u, controls=[self.f], bcs=[zero_bc(V)], petsc_options_prefix=prefix,
            operators=[] if net is None else [self.k],
        )
        self.J = dnn.fem_functional(u**2 * ufl.dx, controls=[u])


def test_same_solution_and_newton_steps_as_ufl_law():
    plain = Diffusion(None, "op_ufl_")
    network = Diffusion(Polynomial(), "op_net_")
    f_t = to_torch(plain.f)
    u_plain, u_net = plain.solve(f_t), network.solve(f_t)
    assert COMM.allreduce(float(u_plain.abs().max()), op=MPI.MAX) > 0.5
    assert max_diff(u_plain, u_net) < 1e-10
    assert abs(plain.solve.iterations - network.solve.iterations) <= 1
    assert plain.solve.iterations >= 3
    # Quadratic convergence: Newton reaches 1e-12 in few steps (the residual history).
    assert network.solve.iterations <= 8
    # The Jacobian is DOLFINx's sparse matrix with the P1 stencil, not a dense one.
    A = network.solve.solver.getJacobian()[0]
    assert "aij" in A.getType()
    nnz = A.getInfo(PETSc.Mat.InfoType.GLOBAL_SUM)["nz_used"]
    n = A.getSize()[0]
    assert nnz < 10 * n


def test_taylor_network_parameters_and_source():
    p = Diffusion(mlp(1, 1), "op_taylor_")
    f_t = to_torch(p.f)
    net = p.k.net
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    dp = same_on_all_ranks({k: torch.randn_like(v) for k, v in params.items()})
    rates = dnn.taylor_test(
        lambda m: p.J(p.solve(f_t, operator_inputs=[list(m.values())])), params, dp, comm=COMM
    )
    assert_rate_two(rates)
    df = torch.from_numpy(np.random.default_rng(COMM.rank).standard_normal(f_t.shape))
    rates = dnn.taylor_test(lambda g: p.J(p.solve(g)), f_t, df, comm=COMM)
    assert_rate_two(rates)


def test_parameter_gradient_lands_in_net_and_sums_over_ranks():
    """loss.backward() fills net.parameters() .grad; after sync_gradients it is the full one."""
    p = Diffusion(mlp(1, 1), "op_grad_")
    net = p.k.net
    f_t = to_torch(p.f)
    p.J(p.solve(f_t)).backward()
    dnn.sync_gradients(net, COMM)
    g = torch.cat([q.grad.reshape(-1) for q in net.parameters()])
    # Central finite difference of the functional along the gradient direction.
    direction = g / g.norm()
    eps = 1e-5
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            start = 0
            shifted = []
            for q in net.parameters():
                shifted.append(q + sign * eps * direction[start : start + q.numel()].view_as(q))
                start += q.numel()
            values.append(float(p.J(p.solve(f_t, operator_inputs=[shifted]))))
    fd = (values[0] - values[1]) / (2 * eps)
    assert fd == pytest.approx(float(g.norm()), rel=1e-5)


def test_vector_flux_of_gradient():
    """-div q(grad u) = f with q a vector network of the vector operand grad u."""
    msh = unit_square(8)
    V = fem.functionspace(msh, ("Lagrange", 1))
    f = source(V, 10.0)
    v = ufl.TestFunction(V)
    bc = zero_bc(V)
    f_t = to_torch(f)
    u0 = fem.Function(V)
    g0 = ufl.grad(u0)
    dx = ufl.Measure("dx", domain=msh, metadata={"quadrature_degree": 2})
    F0 = ufl.inner((1 + 0.5 * ufl.inner(g0, g0)) * g0, ufl.grad(v)) * dx - f * v * dx
    plain = dnn.fem_operator(F0, u0, controls=[f], bcs=[bc], petsc_options_prefix="flux_ufl_")
    Q = quadrature_space(msh, 2, (2,))
    results = {}
    for name, net in (("law", NonlinearFlux()), ("mlp", FluxCorrection())):
        u = fem.Function(V)
        q = dnn.NeuralOperator(net, operands=(ufl.grad(u),), space=Q, name="q")
        assert q.derivatives[0].function_space.value_shape == (2, 2)
        F = ufl.inner(q, ufl.grad(v)) * q.measure - f * v * q.measure
        solve = dnn.fem_operator(
            F, u, controls=[f], bcs=[bc], operators=[q], petsc_options_prefix=f"flux_{name}_"
        )
        results[name] = (solve, u, net)
    solve, _, _ = results["law"]
    u_plain, u_net = plain(f_t), solve(f_t)
    assert max_diff(u_plain, u_net) < 1e-10
    assert abs(plain.iterations - solve.iterations) <= 1
    solve, u, net = results["mlp"]
    J = dnn.fem_functional(u**2 * ufl.dx, controls=[u])
    params = {k: p.detach().clone() for k, p in net.named_parameters()}
    dp = same_on_all_ranks({k: torch.randn_like(p) for k, p in params.items()})
    rates = dnn.taylor_test(
        lambda m: J(solve(f_t, operator_inputs=[list(m.values())])), params, dp, comm=COMM
    )
    assert_rate_two(rates)


class TwoLaws(torch.nn.Module):
    """k(u, grad u) = 1 + u^2 + 0.5 |grad u|^2, from the concatenated operands (u, g1, g2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1 + x[:, 0] ** 2 + 0.5 * (x[:, 1] ** 2 + x[:, 2] ** 2)


class Cubic(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c * x[:, 0] ** 3


def test_several_operators_and_operands():
    """Two operators, one of two operands (u, grad u), in one form: same as the UFL law."""
    msh = unit_square(8)
    V = fem.functionspace(msh, ("Lagrange", 1))
    f = source(V, 10.0)
    f_t = to_torch(f)
    v = ufl.TestFunction(V)
    bc = zero_bc(V)
    dx = ufl.Measure("dx", domain=msh, metadata={"quadrature_degree": 2})

    def form(k, r, u, dx):
        return k * ufl.inner(ufl.grad(u), ufl.grad(v)) * dx + r * v * dx - f * v * dx

    u0 = fem.Function(V)
    g0 = ufl.grad(u0)
    plain = dnn.fem_operator(
        form(1 + u0**2 + 0.5 * ufl.inner(g0, g0), u0**3, u0, dx), u0, controls=[f], bcs=[bc],
        petsc_options_prefix="two_ufl_",
    )
    Q = quadrature_space(msh, 2)
    u = fem.Function(V)
    k = dnn.NeuralOperator(TwoLaws(), operands=(u, ufl.grad(u)), space=Q, name="k")
    r = dnn.NeuralOperator(Cubic(), operands=(u,), space=Q, name="r")
    solve = dnn.fem_operator(
        form(k, r, u, k.measure), u, controls=[f], bcs=[bc], operators=[k, r],
        petsc_options_prefix="two_net_",
    )
    assert max_diff(plain(f_t), solve(f_t)) < 1e-10
    assert abs(plain.iterations - solve.iterations) <= 1
    # Gradient through both operators at once (only r has parameters) and the source.
    J = dnn.fem_functional(u**2 * ufl.dx, controls=[u])
    c0 = {"c": torch.tensor(1.0, dtype=torch.float64)}
    rates = dnn.taylor_test(
        lambda m: J(solve(f_t, operator_inputs=[None, [m["c"]]])), c0,
        {"c": torch.tensor(0.7, dtype=torch.float64)}, comm=COMM,
    )
    assert_rate_two(rates)


@pytest.mark.parametrize("operands", ["u", "grad"])
def test_chunked_evaluation_equals_one_call(operands):
    """Feeding the points in chunks (the default) gives bit-identical values and derivatives."""
    msh = unit_square(6)
    V = fem.functionspace(msh, ("Lagrange", 1))
    u = fem.Function(V)
    u.interpolate(lambda x: np.sin(3 * x[0]) * x[1])
    Q = quadrature_space(msh, 2, (2,) if operands == "grad" else ())
    torch.manual_seed(3)
    net = mlp(3, 2) if operands == "grad" else mlp(1, 1)
    ops = (u, ufl.grad(u)) if operands == "grad" else (u,)
    whole = dnn.NeuralOperator(net, operands=ops, space=Q, chunk_size=None)
    chunked = dnn.NeuralOperator(net, operands=ops, space=Q, chunk_size=7)

    def largest_difference(a: fem.Function, b: fem.Function) -> float:
        return COMM.allreduce(float(np.abs(a.x.array - b.x.array).max(initial=0.0)), op=MPI.MAX)

    for k in (whole, chunked):
        k.update(derivatives=True)
    differences = [largest_difference(whole, chunked)] + [
        largest_difference(a, b)
        for a, b in zip(whole.derivatives, chunked.derivatives, strict=True)
    ]
    for k in (whole, chunked):
        k.set_inputs(None)
        k.update(derivatives=False)
    differences.append(largest_difference(whole, chunked))
    assert max(differences) < 1e-14, differences
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        dnn.NeuralOperator(net, operands=ops, space=Q, chunk_size=0)


def test_refresh_is_collective_when_only_some_ranks_change():
    """A rank whose operands did not change still evaluates when another rank's did."""
    msh = unit_square(4)
    V = fem.functionspace(msh, ("Lagrange", 1))
    u = fem.Function(V)
    k = dnn.NeuralOperator(mlp(1, 1), operands=(u,), space=quadrature_space(msh, 2))
    k.update()
    k.update()  # nothing changed anywhere: cached
    assert k.evaluations == 1
    if COMM.rank == 0:
        u.x.array[:] += 0.5  # local change only, no ghost update: the other ranks see none
    k.update()  # would wait forever on rank 0 if the other ranks returned from the cache
    assert COMM.allreduce(k.evaluations, op=MPI.MIN) == 2


def _one_cell_gradient(comm: MPI.Comm) -> tuple[float, np.ndarray]:
    """J = sum u^2 and dJ/d(first weight) for -div(k(u) grad u) = 1 on one quadrilateral."""
    msh = mesh.create_unit_square(comm, 1, 1, mesh.CellType.quadrilateral)
    V = fem.functionspace(msh, ("Lagrange", 1))
    u, v = fem.Function(V), ufl.TestFunction(V)
    f = fem.Function(V)
    f.x.array[:] = 1.0
    torch.manual_seed(5)
    net = mlp(1, 1)
    k = dnn.NeuralOperator(net, operands=(u,), space=quadrature_space(msh, 2))
    left = fem.locate_dofs_geometrical(V, lambda x: np.isclose(x[0], 0.0))
    F = k * ufl.inner(ufl.grad(u), ufl.grad(v)) * k.measure - f * v * k.measure
    solve = dnn.fem_operator(F, u, controls=[f], bcs=[fem.dirichletbc(0.0, left, V)],
                             operators=[k], petsc_options_prefix=f"one_cell{comm.size}_")
    J = dnn.global_sum((solve(to_torch(f)) ** 2).sum(), comm)
    J.backward()
    dnn.sync_gradients(net, comm)
    return float(J.detach()), net[0].weight.grad.numpy().copy()


def test_rank_without_cells():
    """One cell on all ranks: the ranks without points still join and get the same gradient."""
    J, grad = _one_cell_gradient(COMM)
    J_self, grad_self = _one_cell_gradient(MPI.COMM_SELF)
    assert J > 0
    assert abs(J - J_self) < 1e-12 * J_self
    assert np.allclose(grad, grad_self, rtol=1e-10, atol=1e-14)
