"""Random small problems: every gradient of the bridge against finite differences.

Each case draws a problem from the kinds of set-ups users build (linear or nonlinear Poisson,
Taylor-Hood Stokes, a network of the unknown in the form), the kind of control (a Function, a
network at dof points or at quadrature points, a Constant in the form, Dirichlet data as a
Function or a Constant, on a sub-space), the layout of the Dirichlet conditions (single,
overlapping with the control first or last, corners shared with walls) and the solver (direct
or iterative), then compares the directional derivative of a functional of the solution along
a random direction in all controls at once with a fourth-order central difference; half the
cases solve twice (two loads) before one backward pass.  100 cases per run and per rank count;
the tolerance is 1e-6 relative.

The forward Krylov solves are run to 1e-13 here: that makes the *finite difference* a reference
to below 1e-6 (the gradient itself needs no such setting).
"""

from __future__ import annotations

import itertools

from mpi4py import MPI
from petsc4py import PETSc

import basix.ufl
import numpy as np
import pytest
import torch
import ufl
from bridge_problems import assert_matches_fd, directional_derivatives, mlp, quadrature_space
from dolfinx import fem, mesh

import dolfinx_nn as dnn
from dolfinx_nn.conversion import to_torch

COMM = MPI.COMM_WORLD
CASES = 100
PHYSICS = ("linear", "nonlinear", "stokes", "operator")
LAYOUTS = ("single", "control_first", "control_last", "corners", "constant")
SCALAR_SPACES = ("P1", "quadrature")
SOURCES = ("tensor", "network")
SOLVERS = ("direct", "iterative")
_prefixes = itertools.count()


def _left(x):
    return np.isclose(x[0], 0.0)


def _lower_left(x):
    return np.isclose(x[0], 0.0) & (x[1] <= 0.5 + 1e-12)


def _walls(x):
    return np.isclose(x[1], 0.0) | np.isclose(x[1], 1.0)


def _facets(msh, where):
    return mesh.locate_entities_boundary(msh, msh.topology.dim - 1, where)


def _conditions(V, layout, g, sub=None):
    """Dirichlet conditions with ``g`` (Function or Constant) as the control's value."""
    msh = V.mesh
    tdim = msh.topology.dim

    def dofs(where):
        if sub is None:
            return fem.locate_dofs_topological(V, tdim - 1, _facets(msh, where))
        return fem.locate_dofs_topological((V.sub(sub[0]), sub[1]), tdim - 1, _facets(msh, where))

    def bc(value, where):
        if sub is None:
            return fem.dirichletbc(value, dofs(where)) if isinstance(value, fem.Function) \
                else fem.dirichletbc(value, dofs(where), V)
        return fem.dirichletbc(value, dofs(where), V.sub(sub[0]))

    zero = fem.Function(V if sub is None else sub[1])
    if layout == "single":
        return [bc(g, _left)]
    if layout == "control_first":  # a later condition overrides the lower half
        return [bc(g, _left), bc(zero, _lower_left)]
    if layout == "control_last":  # the control overrides an earlier condition everywhere
        return [bc(zero, _left), bc(g, _left)]
    if layout == "corners":  # walls listed after the control take the corners
        return [bc(g, _left), bc(zero, _walls)]
    raise ValueError(layout)


class Scalar:
    """-div((1 + q^2) k(u) grad u) + c u = f, with q, f, c and the Dirichlet data as controls."""

    def __init__(self, physics, space, layout, solver, n):
        self.msh = msh = mesh.create_unit_square(COMM, n, n)
        V = fem.functionspace(msh, ("Lagrange", 1))
        if space == "P1":
            Q, dx = fem.functionspace(msh, ("Lagrange", 1)), ufl.dx
        else:
            Q, dx = quadrature_space(msh, 2), ufl.dx(metadata={"quadrature_degree": 2})
        self.q, self.f = fem.Function(Q, name="q"), fem.Function(V, name="f")
        self.c = fem.Constant(msh, PETSc.ScalarType(1.0))
        self.u = u = fem.Function(V, name="u")
        v = ufl.TestFunction(V)
        controls = [self.q, self.f, self.c]
        constant_data = layout == "constant"
        self.g = fem.Constant(msh, PETSc.ScalarType(0.5)) if constant_data \
            else fem.Function(V, name="g")
        bcs = _conditions(V, "corners" if constant_data else layout, self.g)
        controls.append(self.g)
        self.operator = None
        k = 1.0
        if physics == "nonlinear":
            k = 1 + u**2
        elif physics == "operator":
            torch.manual_seed(7)
            net = torch.nn.Sequential(torch.nn.Linear(1, 6), torch.nn.Tanh(),
                                      torch.nn.Linear(6, 1)).double()
            with torch.no_grad():
                net[2].weight.mul_(0.2)
                net[2].bias.fill_(1.0)
            self.operator = dnn.NeuralOperator(net, operands=(u,), space=quadrature_space(msh, 2))
            k, dx = self.operator, self.operator.measure
        F = (1 + self.q**2) * k * ufl.inner(ufl.grad(u), ufl.grad(v)) * dx
        F += self.c * u * v * dx - self.f * v * dx
        options = {}
        if solver == "iterative":
            if physics == "linear":
                options = {"ksp_type": "cg", "pc_type": "jacobi", "ksp_rtol": 1e-13}
            else:
                options = {"ksp_type": "gmres", "pc_type": "jacobi", "ksp_rtol": 1e-6}
        self.solve = dnn.fem_operator(F, u, controls=controls, bcs=bcs, petsc_options=options,
                                      petsc_options_prefix=f"prop{next(_prefixes)}_")
        d = fem.Function(V)
        d.interpolate(lambda x: 0.1 * np.sin(3 * x[0]) * x[1])
        self.J = dnn.fem_functional((u - d) ** 2 * dx + 0.1 * self.q**2 * dx, controls=[u, self.q])

    def draw(self, rng, source):
        """Control values, a direction, and the loss as a function of the list of tensors."""
        local = np.random.default_rng(rng.integers(2**31) + COMM.rank)
        n_q, n_f = to_torch(self.q).numel(), to_torch(self.f).numel()
        q0 = torch.from_numpy(0.5 + local.random(n_q))
        f0 = torch.from_numpy(1.0 + local.standard_normal(n_f))
        c0 = torch.tensor(float(0.5 + rng.random()), dtype=torch.float64)  # the same everywhere
        if isinstance(self.g, fem.Constant):
            g0 = torch.tensor(float(rng.standard_normal()), dtype=torch.float64)
            dg = torch.tensor(float(rng.standard_normal()), dtype=torch.float64)
        else:
            g0 = torch.from_numpy(0.3 * local.standard_normal(n_f))
            dg = torch.from_numpy(local.standard_normal(n_f))
        m = [f0, c0, g0]
        dm = [torch.from_numpy(local.standard_normal(n_f)),
              torch.tensor(float(rng.standard_normal()), dtype=torch.float64), dg]
        op = self.operator
        if op is not None:
            params = [p.detach().clone() for p in op.net.parameters()]
            m += params
            dm += [torch.from_numpy(rng.standard_normal(tuple(p.shape))) for p in params]
        if source == "network":
            net = mlp(2, seed=int(rng.integers(1000)))
            qn = dnn.NeuralFunction(net, self.q.function_space, function=self.q)
            names = [k for k, _ in net.named_parameters()]
            params = [p.detach().clone() for p in net.parameters()]
            count = len(params)
            m = params + m
            dm = [torch.from_numpy(rng.standard_normal(tuple(p.shape))) for p in params] + dm

            def q_of(ms):
                return qn(dict(zip(names, ms[:count], strict=True))), ms[count:]
        else:
            m = [q0, *m]
            dm = [torch.from_numpy(local.standard_normal(n_q)), *dm]

            def q_of(ms):
                return ms[0], ms[1:]

        # Half the cases solve twice (another load) before one backward pass: each backward
        # pass must see the state of its own forward pass.
        twice = bool(rng.random() < 0.5)

        def loss(ms):
            q_t, rest = q_of(ms)
            f_t, c_t, g_t, *op_params = rest
            inputs = None if op is None else [op_params]
            u_t = self.solve(q_t, f_t, c_t, g_t, operator_inputs=inputs)
            value = self.J(u_t, q_t)
            if twice:
                u2 = self.solve(q_t, 0.5 * f_t + 1.0, c_t, 2.0 * g_t, operator_inputs=inputs)
                value = value + 0.5 * self.J(u2, q_t)
            return value

        return m, dm, loss


class Stokes:
    """Taylor-Hood Stokes: the inflow profile on W.sub(0) and the viscosity are the controls."""

    def __init__(self, layout, n):
        self.msh = msh = mesh.create_unit_square(COMM, n, n)
        P2 = basix.ufl.element("Lagrange", msh.basix_cell(), 2, shape=(2,))
        P1 = basix.ufl.element("Lagrange", msh.basix_cell(), 1)
        W = fem.functionspace(msh, basix.ufl.mixed_element([P2, P1]))
        W0, _ = W.sub(0).collapse()
        self.w = w = fem.Function(W)
        u, p = ufl.split(w)
        v, q = ufl.TestFunctions(W)
        self.nu = fem.Constant(msh, PETSc.ScalarType(1.0))
        x = ufl.SpatialCoordinate(msh)
        force = ufl.as_vector((x[1], -x[0]))
        F = (self.nu * ufl.inner(ufl.grad(u), ufl.grad(v)) - p * ufl.div(v) - q * ufl.div(u)
             - ufl.inner(force, v)) * ufl.dx
        self.g = fem.Function(W0, name="inflow")
        layout = "corners" if layout in ("single", "constant") else layout
        bcs = _conditions(W, layout, self.g, sub=(0, W0))
        self.solve = dnn.fem_operator(F, w, controls=[self.g, self.nu], bcs=bcs,
                                      petsc_options_prefix=f"prop{next(_prefixes)}_")
        self.J = dnn.fem_functional((ufl.inner(u, u) + 0.1 * p**2) * ufl.dx, controls=[w])

    def draw(self, rng, source):
        local = np.random.default_rng(rng.integers(2**31) + COMM.rank)
        n = to_torch(self.g).numel()
        m = [torch.from_numpy(local.standard_normal(n)),
             torch.tensor(float(0.5 + rng.random()), dtype=torch.float64)]
        dm = [torch.from_numpy(local.standard_normal(n)),
              torch.tensor(float(rng.standard_normal()), dtype=torch.float64)]
        return m, dm, lambda ms: self.J(self.solve(*ms))


def make_problem(key: tuple) -> Scalar | Stokes:
    physics, space, layout, solver, n = key
    return Stokes(layout, n) if physics == "stokes" else Scalar(physics, space, layout, solver, n)


def draw_case(
    seed: int, kinds: tuple[str, ...] = PHYSICS, first_seed: int = 0
) -> tuple[tuple, str]:
    """The problem (same on every rank) and the kind of coefficient source of case ``seed``,
    with physics from ``kinds``; the generator is seeded with ``first_seed + seed``."""
    rng = np.random.default_rng(first_seed + seed)
    physics = kinds[rng.integers(len(kinds))]
    key = (
        physics,
        SCALAR_SPACES[rng.integers(2)] if physics != "stokes" else "-",
        LAYOUTS[rng.integers(len(LAYOUTS))],
        SOLVERS[rng.integers(2)] if physics != "stokes" else "direct",
        4 if physics == "stokes" else 5,
    )
    return key, SOURCES[rng.integers(2)] if physics != "stokes" else "tensor"


def grouped_cases(
    cases: int, kinds: tuple[str, ...] = PHYSICS, first_seed: int = 0
) -> dict[tuple, list[tuple[int, str]]]:
    """The cases ``0 .. cases-1`` by problem, so that each problem is built once."""
    groups: dict[tuple, list[tuple[int, str]]] = {}
    for seed in range(cases):
        key, source = draw_case(seed, kinds, first_seed)
        groups.setdefault(key, []).append((seed, source))
    return groups


GROUPS = grouped_cases(CASES)


@pytest.mark.parametrize("key", sorted(GROUPS), ids=lambda k: "-".join(map(str, k)))
def test_random_problems_gradient_matches_finite_differences(key):
    prob = make_problem(key)
    for seed, source in GROUPS[key]:
        rng = np.random.default_rng(10_000 + seed)
        m, dm, loss = prob.draw(rng, source)
        ad, fd = directional_derivatives(loss, m, dm, COMM, h=1e-3)
        value = float(loss(m))
        assert_matches_fd(ad, fd, abs(value) + 1.0)


def test_the_cases_cover_every_kind():
    """The 100 cases draw every physics, layout, space, source and solver."""
    drawn = [draw_case(s) for s in range(CASES)]
    keys = [k for k, _ in drawn]
    assert sum(len(cases) for cases in GROUPS.values()) == CASES
    assert {k[0] for k in keys} == set(PHYSICS)
    assert {k[2] for k in keys} == set(LAYOUTS)
    assert {k[1] for k in keys} >= set(SCALAR_SPACES)
    assert {k[3] for k in keys} == set(SOLVERS)
    assert {s for _, s in drawn} == set(SOURCES)
