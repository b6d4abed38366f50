"""Bad input is refused early, with a message naming the bad value and what was expected."""

from __future__ import annotations

import inspect

from mpi4py import MPI

import numpy as np
import pytest
import torch
import ufl
from bridge_problems import PoissonCoefficient, boundary_bc, mlp, unit_mesh
from dolfinx import fem

import dolfinx_nn as dnn


@pytest.fixture
def msh():
    return unit_mesh(MPI.COMM_WORLD, 2, 4)


def test_wrong_space_family(msh):
    N = fem.functionspace(msh, ("N1curl", 1))
    with pytest.raises(ValueError, match="point values.*'N1E'"):
        dnn.NeuralFunction(mlp(2, 2), N)


def test_tensor_valued_space_refused(msh):
    T = fem.functionspace(msh, ("Lagrange", 1, (2, 2)))
    with pytest.raises(ValueError, match=r"value shape \(2, 2\)"):
        dnn.NeuralFunction(mlp(2, 4), T)


def test_not_a_space():
    with pytest.raises(TypeError, match="FunctionSpace"):
        dnn.NeuralFunction(mlp(2), "P1")


def test_output_size_mismatch_block_size(msh):
    V2 = fem.functionspace(msh, ("Lagrange", 1, (2,)))
    qn = dnn.NeuralFunction(mlp(2, dout=3), V2)
    with pytest.raises(ValueError, match=r"block size 2: expected \(\d+, 2\)"):
        qn()


def test_scalar_space_accepts_column_output(msh):
    V = fem.functionspace(msh, ("Lagrange", 1))
    qn = dnn.NeuralFunction(mlp(2, dout=1), V)
    assert qn().shape == (V.dofmap.index_map.size_local,)


class _Poison(torch.nn.Module):
    """Returns NaN (or Inf) at the points with x > 0.5 and a constant elsewhere."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.w = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))

    def forward(self, x):
        out = self.w * torch.ones(x.shape[0], dtype=torch.float64)
        return torch.where(x[:, 0] > 0.5, torch.full_like(out, self.value), out)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_network_output(msh, value):
    V = fem.functionspace(msh, ("Lagrange", 1))
    qn = dnn.NeuralFunction(_Poison(value), V)
    # Raised on every rank (collectively), also on a rank whose own points are all finite.
    with pytest.raises(ValueError, match="network output contains .* NaN/Inf"):
        qn()


def test_non_finite_control_tensor_never_reaches_petsc():
    p = PoissonCoefficient(MPI.COMM_WORLD, prefix="nanctl_")
    q_t = p.qn().detach().clone()
    if MPI.COMM_WORLD.rank == 0 and q_t.numel():
        q_t[0] = float("nan")
    with pytest.raises(ValueError, match=r"control 0 .* NaN/Inf"):
        p.solve(q_t, p.f_t)


def test_control_not_in_form(msh):
    V = fem.functionspace(msh, ("Lagrange", 1))
    u, v, q, other = (fem.Function(V, name=n) for n in ("u", "v_", "q", "other"))
    v = ufl.TestFunction(V)
    F = (1 + q) * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - v * ufl.dx
    with pytest.raises(ValueError, match=r"control 1 \('other'\) does not appear in F.*'q'"):
        dnn.fem_operator(F, u, controls=[q, other], petsc_options_prefix="bad_")
    with pytest.raises(ValueError, match=r"control 0 \('other'\) does not appear in M"):
        dnn.fem_functional(u * ufl.dx, controls=[other])


def test_wrong_control_size_and_count():
    p = PoissonCoefficient(MPI.COMM_WORLD, prefix="size_")
    q_t = p.qn()
    with pytest.raises(ValueError, match=r"control 0 \('q'\) has \d+ values .* owned dofs"):
        p.solve(torch.cat([q_t, q_t]), p.f_t)
    with pytest.raises(ValueError, match="expected 2 control tensor"):
        p.solve(q_t)


def test_bad_prefix(msh):
    V = fem.functionspace(msh, ("Lagrange", 1))
    u, q = fem.Function(V), fem.Function(V)
    F = q * ufl.inner(ufl.grad(u), ufl.grad(ufl.TestFunction(V))) * ufl.dx
    with pytest.raises(ValueError, match="starting with a letter.*'3d_'"):
        dnn.fem_operator(F, u, controls=[q], petsc_options_prefix="3d_")


def test_diverged_ksp_carries_reason(msh):
    V = fem.functionspace(msh, ("Lagrange", 1))
    u, q = fem.Function(V), fem.Function(V)
    v = ufl.TestFunction(V)
    F = (1 + q**2) * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - v * ufl.dx
    solve = dnn.fem_operator(
        F, u, controls=[q], bcs=[boundary_bc(V)], petsc_options_prefix="kspdiv_",
        petsc_options={"ksp_type": "cg", "pc_type": "none", "ksp_max_it": 2, "ksp_rtol": 1e-14},
    )
    with pytest.raises(dnn.SolverError, match="KSP .* DIVERGED_(ITS|MAX_IT)") as info:
        solve(torch.zeros(V.dofmap.index_map.size_local, dtype=torch.float64))
    assert info.value.reason < 0 and info.value.reason_name in ("DIVERGED_ITS", "DIVERGED_MAX_IT")


def test_diverged_snes_carries_reason():
    p = PoissonCoefficient(MPI.COMM_WORLD, nonlinear=True, prefix="snesdiv_")
    p.solve.solver.setTolerances(max_it=1)
    with pytest.raises(dnn.SolverError, match="SNES .* DIVERGED_MAX_IT") as info:
        p.loss()
    assert info.value.reason_name == "DIVERGED_MAX_IT"


def test_taylor_test_checks_shapes():
    with pytest.raises(ValueError, match="same structure and shapes"):
        dnn.taylor_test(lambda m: m.sum(), torch.ones(3), torch.ones(4))
    rates = dnn.taylor_test(lambda m: (m**3).sum(), torch.ones(3, dtype=torch.float64),
                            torch.full((3,), 0.5, dtype=torch.float64))
    assert all(abs(r - 2) < 0.1 for r in rates)
    np.testing.assert_equal(len(rates), 3)


def test_destroyed_operator_refuses_use():
    # the PETSc rule (dolfinx_nn.petsc_problems): destroy() frees collectively, may be
    # repeated, and leaves nothing usable that points at a destroyed PETSc object
    p = PoissonCoefficient(MPI.COMM_WORLD, n=4, prefix="destroyed_")
    q_t = p.qn().detach().requires_grad_(True)
    u_t = p.solve(q_t, p.f_t)
    assert float(u_t.detach().abs().sum()) > 0.0
    p.solve.destroy()
    p.solve.destroy()
    assert p.solve.destroyed
    with pytest.raises(RuntimeError, match=r"FEMOperator was destroyed.*create a new"):
        p.solve(q_t, p.f_t)
    with pytest.raises(RuntimeError, match="FEMOperator was destroyed"):
        p.solve.solver.getType()
    with pytest.raises(RuntimeError, match="FEMOperator was destroyed"):  # the backward pass
        p.J(u_t, q_t).backward()


def test_operator_as_context_manager():
    p = PoissonCoefficient(MPI.COMM_WORLD, n=4, prefix="with_")
    with p.solve as solve:
        u_t = solve(p.qn().detach(), p.f_t)
    assert solve.destroyed and u_t.shape == (p.V.dofmap.index_map.size_local,)


def test_fem_operator_shows_the_parameters_of_FEMOperator():
    """fem_operator forwards its keywords to FEMOperator; help() and editors see them."""
    shown = inspect.signature(dnn.fem_operator)
    assert list(shown.parameters) == list(inspect.signature(dnn.FEMOperator).parameters)
    assert shown.parameters["controls"].kind is inspect.Parameter.KEYWORD_ONLY
    assert shown.parameters["petsc_options_prefix"].default is inspect.Parameter.empty
    assert shown.return_annotation == "FEMOperator"
    assert dnn.fem_operator.__doc__.startswith("Make the solve of")
