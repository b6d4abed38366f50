"""An operator whose forward solve failed (a zero coefficient: the LU set-up fails) recovers.

The next valid input is solved exactly as by a fresh operator, and the backward pass of an
earlier successful forward pass stays exact; serially and under MPI.
"""

from __future__ import annotations

from mpi4py import MPI

import pytest
import torch
import ufl
from dolfinx import fem, mesh

import dolfinx_nn as dnn


def _poisson(nonlinear: bool):
    msh = mesh.create_unit_square(MPI.COMM_WORLD, 6, 6)
    V = fem.functionspace(msh, ("Lagrange", 1))
    tdim = msh.topology.dim
    msh.topology.create_connectivity(tdim - 1, tdim)
    facets = mesh.exterior_facet_indices(msh.topology)
    bc = fem.dirichletbc(0.0, fem.locate_dofs_topological(V, tdim - 1, facets), V)
    q, u, v = fem.Function(V), fem.Function(V), ufl.TestFunction(V)
    k = q * (1 + u**2) if nonlinear else q
    F = k * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - v * ufl.dx
    prefix = f"recovery_{'snes' if nonlinear else 'ksp'}_"
    solve = dnn.fem_operator(F, u, controls=[q], bcs=[bc], petsc_options_prefix=prefix)
    n = V.dofmap.index_map.size_local
    x = torch.from_numpy(V.tabulate_dof_coordinates()[:n, :2].copy())
    return solve, 1.0 + 0.5 * x[:, 0] * x[:, 1]


@pytest.mark.parametrize("nonlinear", [False, True], ids=["ksp", "snes"])
def test_operator_recovers_after_a_failed_solve(nonlinear):
    reference, q_values = _poisson(nonlinear)
    q_ref = q_values.clone().requires_grad_(True)
    u_ref = reference(q_ref)
    u_ref.square().sum().backward()

    solve, _ = _poisson(nonlinear)
    q_before = q_values.clone().requires_grad_(True)
    u_before = solve(q_before)  # a successful pass whose backward comes after the failure
    with pytest.raises(dnn.SolverError, match="DIVERGED"):
        solve(torch.zeros_like(q_values))
    u_after = solve(q_values.clone())
    assert torch.equal(u_after, u_ref.detach())
    u_before.square().sum().backward()
    assert torch.allclose(q_before.grad, q_ref.grad, rtol=1e-12, atol=1e-14)
