"""``fem.Constant`` controls of fem_operator and fem_functional, serially and under MPI.

A Constant's tensor is its whole value (the same on every rank); its gradient is the rank's
share, so ``taylor_test(..., comm=COMM)`` and ``sync_gradients`` see the full derivative.
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

COMM = MPI.COMM_WORLD


def assert_rate_two(rates):
    assert all(1.9 <= r <= 2.1 for r in rates), rates


@pytest.fixture(scope="module")
def setting():
    msh = mesh.create_unit_square(COMM, 8, 8)
    V = fem.functionspace(msh, ("Lagrange", 1))
    msh.topology.create_connectivity(1, 2)
    facets = mesh.exterior_facet_indices(msh.topology)
    bc = fem.dirichletbc(0.0, fem.locate_dofs_topological(V, 1, facets), V)
    f = fem.Function(V, name="f")
    f.interpolate(lambda x: 10 * np.sin(np.pi * x[0]) * np.sin(np.pi * x[1]))
    return msh, V, bc, f


def test_scalar_constant_linear_problem(setting):
    """-div(k grad u) = f with k a Constant: Taylor rate 2 and the exact derivative."""
    msh, V, bc, f = setting
    k = fem.Constant(msh, PETSc.ScalarType(2.0))
    u, v = fem.Function(V), ufl.TestFunction(V)
    F = k * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - f * v * ufl.dx
    solve = dnn.fem_operator(F, u, controls=[k], bcs=[bc], petsc_options_prefix="const_k_")

    def J(k_t: torch.Tensor) -> torch.Tensor:
        return dnn.global_sum((solve(k_t) ** 2).sum(), COMM)

    k0 = torch.tensor(2.0, dtype=torch.float64)
    assert_rate_two(dnn.taylor_test(J, k0, torch.tensor(1.0, dtype=torch.float64), comm=COMM))
    # u is proportional to 1/k, so J = c / k^2 and dJ/dk = -2 J / k.
    k_t = k0.clone().requires_grad_(True)
    value = J(k_t)
    value.backward()
    total = COMM.allreduce(float(k_t.grad), op=MPI.SUM)
    assert abs(total - (-2 * float(value.detach()) / 2.0)) < 1e-10 * abs(total)


def test_vector_constant_nonlinear_problem(setting):
    """SNES problem with an advection velocity b (a vector Constant) and a source f."""
    msh, V, bc, f = setting
    b = fem.Constant(msh, np.array([1.0, 0.5]))
    u, v = fem.Function(V), ufl.TestFunction(V)
    F = ((1 + u**2) * ufl.inner(ufl.grad(u), ufl.grad(v)) + ufl.dot(b, ufl.grad(u)) * v
         - f * v) * ufl.dx
    solve = dnn.fem_operator(F, u, controls=[b, f], bcs=[bc], petsc_options_prefix="const_b_")
    assert not solve.linear
    f_t = to_torch(f)

    def J(m):
        return dnn.global_sum((solve(m[0], m[1]) ** 3).sum(), COMM)

    m = [torch.tensor([1.0, 0.5], dtype=torch.float64), f_t]
    dm = [torch.tensor([0.3, -0.7], dtype=torch.float64), torch.zeros_like(f_t)]
    assert_rate_two(dnn.taylor_test(J, m, dm, comm=COMM))


def test_constant_in_functional_and_sync_gradients(setting):
    """J = int c^2 u + c0 c1 ds; the summed shares equal the analytic gradient."""
    msh, V, _, f = setting
    c = fem.Constant(msh, np.array([0.5, 2.0]))
    J = dnn.fem_functional(c[0] ** 2 * f * ufl.dx + c[0] * c[1] * ufl.ds, controls=[c, f])
    c_t = torch.nn.Parameter(torch.tensor([0.5, 2.0], dtype=torch.float64))
    holder = torch.nn.Module()
    holder.c = c_t
    value = J(c_t, to_torch(f))
    value.backward()
    dnn.sync_gradients(holder, COMM)
    integral_f = COMM.allreduce(fem.assemble_scalar(fem.form(f * ufl.dx)), op=MPI.SUM)
    expected = np.array([2 * 0.5 * integral_f + 2.0 * 4.0, 0.5 * 4.0])  # |boundary| = 4
    assert np.allclose(c_t.grad.numpy(), expected, rtol=1e-12)


def test_constant_errors(setting):
    msh, V, bc, f = setting
    k = fem.Constant(msh, PETSc.ScalarType(1.0))
    other = fem.Constant(msh, PETSc.ScalarType(1.0))
    u, v = fem.Function(V), ufl.TestFunction(V)
    F = k * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - f * v * ufl.dx
    with pytest.raises(ValueError, match="does not appear in F"):
        dnn.fem_operator(F, u, controls=[other], bcs=[bc], petsc_options_prefix="const_err_")
    solve = dnn.fem_operator(F, u, controls=[k], bcs=[bc], petsc_options_prefix="const_err2_")
    with pytest.raises(ValueError, match=r"has 6 values .* but the Constant has 1"):
        solve(torch.ones(2, 3, dtype=torch.float64))  # (2,) would be a batch of two values
    if COMM.size > 1:
        with pytest.raises(ValueError, match="differs between ranks"):
            solve(torch.tensor(1.0 + COMM.rank, dtype=torch.float64))
