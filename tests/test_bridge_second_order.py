"""Second derivatives through the bridge: Hessian-vector products (serial and MPI).

The Hessian of ``J(u(m), m)`` is applied by the second-order adjoint (a tangent-linear and a
second adjoint solve); these tests check it by the second-order Taylor test (rate 3), against
central differences of gradients, between 1 and N ranks, in batches, and in both modes
(``create_graph=True`` and ``torch.func.jvp`` of ``torch.func.grad``).
"""

from __future__ import annotations

import itertools

from mpi4py import MPI
from petsc4py import PETSc

import numpy as np
import pytest
import torch
import ufl
from bridge_problems import dofs_on, mlp
from dolfinx import fem, mesh

import dolfinx_nn as dnn
from dolfinx_nn.conversion import to_torch
from dolfinx_nn.point_evaluation import PointObservation

COMM = MPI.COMM_WORLD
_prefixes = itertools.count()


class Problem:
    """-div((1 + q^2) k(u) grad u) + c u = f, u = g on x = 0 and 0 on x = 1.

    ``k(u) = 1 + u^2`` (and a ``u^3`` term) when nonlinear. The functional
    ``(u - d)^2 + u^4 + 1e-2 q^4 + c^2 q`` is not quadratic in any control, so the Taylor
    remainder has a third-order term for each.
    """

    def __init__(self, comm, nonlinear: bool, n: int = 8, solver: str = "direct",
                 dirichlet: str = "function"):
        self.comm = comm
        self.msh = msh = mesh.create_unit_square(comm, n, n)
        self.V = V = fem.functionspace(msh, ("Lagrange", 1))
        self.q, self.f = fem.Function(V, name="q"), fem.Function(V, name="f")
        self.u = u = fem.Function(V, name="u")
        self.c = fem.Constant(msh, PETSc.ScalarType(1.0))
        self.g = fem.Function(V, name="g") if dirichlet == "function" \
            else fem.Constant(msh, PETSc.ScalarType(0.0))
        v = ufl.TestFunction(V)
        k = (1 + self.q**2) * ((1 + u**2) if nonlinear else 1)
        F = k * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx + self.c * u * v * ufl.dx \
            - self.f * v * ufl.dx
        if nonlinear:
            F += u**3 * v * ufl.dx
        left = dofs_on(V, lambda x: np.isclose(x[0], 0.0))
        right = dofs_on(V, lambda x: np.isclose(x[0], 1.0))
        bc_g = fem.dirichletbc(self.g, left) if dirichlet == "function" \
            else fem.dirichletbc(self.g, left, V)
        bcs = [bc_g, fem.dirichletbc(0.0, right, V)]
        options = {}
        if solver == "iterative":
            options = {"ksp_type": "gmres", "pc_type": "jacobi", "ksp_rtol": 1e-13}
        self.solve = dnn.fem_operator(F, u, controls=[self.q, self.f, self.c, self.g], bcs=bcs,
                                      petsc_options=options,
                                      petsc_options_prefix=f"so{next(_prefixes)}_")
        d = fem.Function(V)
        d.interpolate(lambda x: 0.05 * np.sin(np.pi * x[0]))
        M = (u - d) ** 2 * ufl.dx + u**4 * ufl.dx + 1e-2 * self.q**4 * ufl.dx \
            + self.c**2 * self.q * ufl.dx
        self.J = dnn.fem_functional(M, controls=[u, self.q, self.c])

    def point(self) -> list[torch.Tensor]:
        """Smooth control values (q, f, c, g), the same function on any partition."""
        values = []
        for fn, expr in ((self.q, lambda x: 0.5 + x[0] * x[1]),
                         (self.f, lambda x: 1.0 + x[0] + 0.5 * x[1])):
            fn.interpolate(expr)
            values.append(to_torch(fn))
        values.append(torch.tensor(1.3, dtype=torch.float64))
        if isinstance(self.g, fem.Function):
            self.g.interpolate(lambda x: 0.2 + 0.3 * x[1] ** 2)
            values.append(to_torch(self.g))
        else:
            values.append(torch.tensor(0.25, dtype=torch.float64))
        return values

    def smooth_direction(self) -> list[torch.Tensor]:
        """A direction given by functions of the coordinates (partition-independent)."""
        out = []
        for expr in (lambda x: np.sin(3 * x[0]) * np.cos(2 * x[1]),
                     lambda x: x[1] - x[0] ** 2):
            w = fem.Function(self.V)
            w.interpolate(expr)
            out.append(to_torch(w))
        out.append(torch.tensor(-0.6, dtype=torch.float64))
        if isinstance(self.g, fem.Function):
            w = fem.Function(self.V)
            w.interpolate(lambda x: np.cos(2 * x[1]))
            out.append(to_torch(w))
        else:
            out.append(torch.tensor(0.4, dtype=torch.float64))
        return out

    def loss(self, m) -> torch.Tensor:
        q_t, f_t, c_t, g_t = m
        return self.J(self.solve(q_t, f_t, c_t, g_t), q_t, c_t)


def rank_direction(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * seed + COMM.rank)
    return torch.randn(n, dtype=torch.float64, generator=g)


def hessian_vector(f, m, dm, create_graph: bool = True):
    """``H dm`` by differentiating the gradient again (each tensor: owned dofs or a share)."""
    leaves = [x.detach().clone().requires_grad_(True) for x in m]
    grads = torch.autograd.grad(f(leaves), leaves, create_graph=True)
    inner = sum((g * d).sum() for g, d in zip(grads, dm, strict=True))
    return [h.detach() for h in torch.autograd.grad(inner, leaves)]


def gradient(f, m):
    leaves = [x.detach().clone().requires_grad_(True) for x in m]
    return torch.autograd.grad(f(leaves), leaves)


def global_dot(a, b) -> float:
    return COMM.allreduce(sum(float((x * y).sum()) for x, y in zip(a, b, strict=True)),
                          op=MPI.SUM)


# -- the second-order Taylor test ------------------------------------------------------------
def taylor_rates(prob, m, index: int) -> list[float]:
    """Rates along the smooth direction of control ``index`` alone."""
    dm = [torch.zeros_like(x) for x in m]
    dm[index] = prob.smooth_direction()[index]
    return dnn.second_order_taylor_test(prob.loss, m, dm, h=0.05, comm=COMM)


@pytest.mark.parametrize("nonlinear", [False, True], ids=["linear", "nonlinear"])
def test_second_order_taylor_rate_three(nonlinear):
    """Function, Constant, Dirichlet-data and network-parameter controls, one at a time."""
    prob = Problem(COMM, nonlinear)
    m = prob.point()
    for name, index in (("function", 0), ("constant", 2), ("dirichlet data", 3)):
        rates = taylor_rates(prob, m, index)
        assert all(2.9 <= r <= 3.1 for r in rates), (name, rates)
    net = mlp(2, seed=1)
    with torch.no_grad():
        net[2].bias.fill_(0.5)
    qn = dnn.NeuralFunction(net, prob.V, function=prob.q)
    params = {k: p.detach().clone() for k, p in net.named_parameters()}
    g = torch.Generator().manual_seed(3)  # the same direction on every rank
    dparams = {k: torch.randn(p.shape, generator=g, dtype=p.dtype) for k, p in params.items()}

    def loss(p):
        q_t = qn(p)
        return prob.J(prob.solve(q_t, m[1], m[2], m[3]), q_t, m[2])

    rates = dnn.second_order_taylor_test(loss, params, dparams, h=0.05, comm=COMM)
    assert all(2.9 <= r <= 3.1 for r in rates), ("network", rates)


def test_constant_dirichlet_data_taylor_rate_three():
    prob = Problem(COMM, nonlinear=True, dirichlet="constant")
    rates = taylor_rates(prob, prob.point(), 3)
    assert all(2.9 <= r <= 3.1 for r in rates), rates


# -- against differences of gradients, and between modes --------------------------------------
@pytest.mark.parametrize("case", ["linear", "nonlinear", "nonlinear-iterative"])
def test_hessian_vector_product_matches_differences_of_gradients(case):
    nonlinear = case.startswith("nonlinear")
    prob = Problem(COMM, nonlinear, solver="iterative" if "iterative" in case else "direct")
    m = prob.point()
    dm = [rank_direction(m[0].numel(), 1), rank_direction(m[1].numel(), 2),
          torch.tensor(0.3, dtype=torch.float64), rank_direction(m[3].numel(), 3)]
    w = [rank_direction(m[0].numel(), 4), rank_direction(m[1].numel(), 5),
         torch.tensor(-0.8, dtype=torch.float64), rank_direction(m[3].numel(), 6)]
    hv = hessian_vector(prob.loss, m, dm)
    h = 1e-3
    at = [gradient(prob.loss, [x + s * h * d for x, d in zip(m, dm, strict=True)])
          for s in (2, 1, -1, -2)]
    fd = [(-a + 8 * b - 8 * c + d) / (12 * h) for a, b, c, d in zip(*at, strict=True)]
    ad_value, fd_value = global_dot(w, hv), global_dot(w, fd)
    assert abs(ad_value - fd_value) <= 1e-6 * abs(fd_value), (ad_value, fd_value)
    # forward over reverse gives the same product
    _, hv_func = torch.func.jvp(torch.func.grad(lambda *ms: prob.loss(list(ms)),
                                                argnums=(0, 1, 2, 3)), tuple(m), tuple(dm))
    assert abs(global_dot(w, hv_func) - ad_value) <= 1e-12 * abs(ad_value)


def test_forward_mode_of_the_solve_is_the_tangent_linear_solve():
    prob = Problem(COMM, nonlinear=True)
    m = prob.point()
    dm = prob.smooth_direction()
    _, du = torch.func.jvp(lambda *ms: prob.solve(*ms), tuple(m), tuple(dm))
    h = 1e-4
    with torch.no_grad():
        plus = prob.solve(*[x + h * d for x, d in zip(m, dm, strict=True)])
        minus = prob.solve(*[x - h * d for x, d in zip(m, dm, strict=True)])
    fd = (plus - minus) / (2 * h)
    err = COMM.allreduce(float(((du - fd) ** 2).sum()), op=MPI.SUM) ** 0.5
    ref = COMM.allreduce(float((fd**2).sum()), op=MPI.SUM) ** 0.5
    assert err <= 1e-6 * ref, (err, ref)


def test_hessian_vector_product_same_on_one_and_all_ranks():
    """``H dm`` as a function of the dof coordinates, on 1 rank and on all of them."""

    def product(comm):
        prob = Problem(comm, nonlinear=True)
        m = prob.point()
        hv = hessian_vector(prob.loss, m, prob.smooth_direction())
        xy = np.round(prob.V.tabulate_dof_coordinates()[: m[0].numel(), :2], 12) + 0.0
        rows = np.column_stack([xy, hv[0].numpy(), hv[1].numpy(), hv[3].numpy()])
        rows = np.concatenate(comm.allgather(rows))
        constant = comm.allreduce(float(hv[2]), op=MPI.SUM)
        return rows[np.lexsort((rows[:, 1], rows[:, 0]))], constant

    (serial, c1), (parallel, cn) = product(MPI.COMM_SELF), product(COMM)
    assert np.allclose(serial[:, :2], parallel[:, :2])
    scale = np.abs(serial[:, 2:]).max(axis=0)
    assert np.all(np.abs(serial[:, 2:] - parallel[:, 2:]).max(axis=0) <= 1e-10 * scale)
    assert abs(c1 - cn) <= 1e-10 * abs(c1)


def test_batched_controls_hessian_is_the_sum_over_members():
    prob = Problem(COMM, nonlinear=False)
    m = prob.point()
    q2 = torch.stack([m[0], 1.1 * m[0]])
    dq = rank_direction(m[0].numel(), 9)

    def batched(qs):
        u = prob.solve(qs[0], m[1], m[2], m[3])
        return sum(prob.J(u[b], qs[0][b], m[2]) for b in range(2))

    (hv,) = hessian_vector(batched, [q2], [torch.stack([dq, -dq])])
    for b, sign in ((0, 1.0), (1, -1.0)):
        (ref,) = hessian_vector(lambda ms, b=b: prob.loss([ms[0], m[1], m[2], m[3]]),
                                [q2[b]], [sign * dq])
        err = COMM.allreduce(float((hv[b] - ref).abs().max()) if ref.numel() else 0.0,
                             op=MPI.MAX)
        scale = COMM.allreduce(float(ref.abs().max()) if ref.numel() else 0.0, op=MPI.MAX)
        assert err <= 1e-12 * scale


def _matches_differences_of_gradients(loss, m, dm, w) -> None:
    hv = hessian_vector(loss, m, dm)
    h = 1e-3
    at = [gradient(loss, [x + s * h * d for x, d in zip(m, dm, strict=True)])
          for s in (2, 1, -1, -2)]
    fd = [(-a + 8 * b - 8 * c + d) / (12 * h) for a, b, c, d in zip(*at, strict=True)]
    ad_value, fd_value = global_dot(w, hv), global_dot(w, fd)
    assert abs(ad_value - fd_value) <= 1e-6 * abs(fd_value), (ad_value, fd_value)
    _, hv_func = torch.func.jvp(
        torch.func.grad(lambda *ms: loss(list(ms)), argnums=tuple(range(len(m)))),
        tuple(m), tuple(dm))
    assert abs(global_dot(w, hv_func) - ad_value) <= 1e-10 * abs(ad_value)


@pytest.mark.parametrize("outer", ["square", "log", "exp-product"])
def test_nonlinear_function_of_the_functional_value(outer):
    """J's value is global: the derivative with respect to its cotangent is summed over the
    ranks (a rank-local sum gave a Hessian 44-225 % off on 2 ranks, and exact on 1)."""
    prob = Problem(COMM, nonlinear=True)
    m = prob.point()
    dm = [rank_direction(m[0].numel(), 11), rank_direction(m[1].numel(), 12),
          torch.tensor(0.2, dtype=torch.float64), rank_direction(m[3].numel(), 13)]
    w = [rank_direction(m[0].numel(), 14), rank_direction(m[1].numel(), 15),
         torch.tensor(0.5, dtype=torch.float64), rank_direction(m[3].numel(), 16)]
    outer_fn = {"square": lambda J, ms: J**2,
                "log": lambda J, ms: torch.log(J),
                "exp-product": lambda J, ms: torch.exp(J) * (1 + J)}[outer]
    _matches_differences_of_gradients(lambda ms: outer_fn(prob.loss(ms), ms), m, dm, w)


def test_point_observations_have_exact_second_derivatives():
    """A misfit at points: the observation is linear, its backward a differentiable op."""
    prob = Problem(COMM, nonlinear=True)
    m = prob.point()
    points = np.array([[0.3, 0.4], [0.71, 0.2], [0.5, 0.93]])
    observe = PointObservation(prob.V, points)
    data = torch.tensor([0.01, -0.02, 0.03], dtype=torch.float64)[observe.local_indices]

    def loss(ms):
        u = prob.solve(ms[0], ms[1], m[2], m[3])
        misfit = dnn.global_sum(0.5 * ((observe(u) - data) ** 2).sum(), COMM)
        return misfit + 0.1 * prob.J(u, ms[0], m[2])

    dm = [rank_direction(m[0].numel(), 21), rank_direction(m[1].numel(), 22)]
    w = [rank_direction(m[0].numel(), 23), rank_direction(m[1].numel(), 24)]
    _matches_differences_of_gradients(loss, m[:2], dm, w)


def test_reverse_mode_over_a_forward_mode_tangent_is_refused():
    """grad of jvp: the tangent depends on the controls through the solve's state; it must
    refuse, not return zeros."""
    prob = Problem(COMM, nonlinear=False)
    m = prob.point()
    dm = prob.smooth_direction()

    def tangent_of_loss(q):
        return torch.func.jvp(lambda qq: prob.loss([qq, m[1], m[2], m[3]]), (q,), (dm[0],))[1]

    with pytest.raises(RuntimeError, match="reverse mode over a forward-mode tangent"):
        torch.func.grad(tangent_of_loss)(m[0])
