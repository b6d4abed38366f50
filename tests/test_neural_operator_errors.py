"""NeuralOperator: bad input is refused early with a message naming it (on every rank)."""

from __future__ import annotations

from mpi4py import MPI

import basix.ufl
import pytest
import torch
import ufl
from dolfinx import fem, mesh

import dolfinx_nn as dnn
from dolfinx_nn.conversion import to_torch
from dolfinx_nn.quadrature import quadrature_space

COMM = MPI.COMM_WORLD


@pytest.fixture(scope="module")
def setting():
    msh = mesh.create_unit_square(COMM, 4, 4)
    V = fem.functionspace(msh, ("Lagrange", 1))
    return msh, V, quadrature_space(msh, 2)


def linear(n_in: int, n_out: int) -> torch.nn.Module:
    return torch.nn.Linear(n_in, n_out).double()


def test_mixed_space_operand(setting):
    msh, V, Q = setting
    P1 = basix.ufl.element("Lagrange", msh.basix_cell(), 1)
    W = fem.functionspace(msh, basix.ufl.mixed_element([P1, P1]))
    w = fem.Function(W)
    with pytest.raises(ValueError, match="mixed space"):
        dnn.NeuralOperator(linear(1, 1), operands=(ufl.split(w)[0],), space=Q)


def test_operand_of_wrong_type(setting):
    _, V, Q = setting
    with pytest.raises(TypeError, match="operand 1 must be a UFL expression"):
        dnn.NeuralOperator(linear(2, 1), operands=(fem.Function(V), "grad u"), space=Q)
    with pytest.raises(ValueError, match="Test/TrialFunction"):
        dnn.NeuralOperator(linear(1, 1), operands=(ufl.TestFunction(V),), space=Q)


def test_space_must_be_quadrature(setting):
    _, V, _ = setting
    with pytest.raises(ValueError, match="quadrature space"):
        dnn.NeuralOperator(linear(1, 1), operands=(fem.Function(V),), space=V)


def test_net_must_be_module(setting):
    _, V, Q = setting
    with pytest.raises(TypeError, match="torch.nn.Module"):
        dnn.NeuralOperator(lambda x: x, operands=(fem.Function(V),), space=Q)


def test_output_shape_not_matching_space(setting):
    _, V, Q = setting
    u = fem.Function(V)
    k = dnn.NeuralOperator(linear(1, 2), operands=(u,), space=Q)  # scalar Q, 2 outputs
    with pytest.raises(ValueError, match=r"value shape \(\)"):
        k.update()
    with pytest.raises(ValueError, match=r"value shape \(\)"):
        k.update(derivatives=True)


class LogLaw(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 + torch.log(x[:, 0] - 0.05)  # NaN where u < 0.05


def test_nan_at_quadrature_point_names_the_cell(setting):
    """NaN in the network output stops the SNES and is reported with its cell, on every rank."""
    _, V, Q = setting
    u = fem.Function(V)
    v = ufl.TestFunction(V)
    f = fem.Function(V)
    f.x.array[:] = 1.0
    k = dnn.NeuralOperator(LogLaw(), operands=(u,), space=Q, name="k")
    F = k * ufl.inner(ufl.grad(u), ufl.grad(v)) * k.measure - f * v * k.measure
    solve = dnn.fem_operator(F, u, controls=[f], operators=[k], petsc_options_prefix="nan_op_")
    # u = 0 at the first iterate: every point of every rank is bad, so each rank names a cell.
    with pytest.raises(ValueError, match=r"the network output of 'k' is NaN/Inf at (\d+) quadr"
                       r"ature point\(s\); first on rank \d+ in cell \d+") as info:
        solve(to_torch(f))
    total = int(str(info.value).split(" at ")[1].split()[0])
    assert total == COMM.allreduce(k.layout.num_points)


def test_operator_not_in_form_or_also_control(setting):
    _, V, Q = setting
    u = fem.Function(V)
    v = ufl.TestFunction(V)
    f = fem.Function(V)
    k = dnn.NeuralOperator(linear(1, 1), operands=(u,), space=Q, name="k")
    F = ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - f * v * ufl.dx
    with pytest.raises(ValueError, match="does not appear in F"):
        dnn.fem_operator(F, u, controls=[f], operators=[k], petsc_options_prefix="absent_")
    F = k * ufl.inner(ufl.grad(u), ufl.grad(v)) * k.measure - f * v * k.measure
    with pytest.raises(TypeError, match="must be a dolfinx.fem.Function providing"):
        dnn.fem_operator(F, u, controls=[f], operators=[f], petsc_options_prefix="notop_")
    g = dnn.NeuralOperator(linear(2, 1), operands=(u, f), space=Q, name="g")
    F = g * ufl.inner(ufl.grad(u), ufl.grad(v)) * g.measure - f * v * g.measure
    with pytest.raises(ValueError, match="is an operand of operator 0"):
        dnn.fem_operator(F, u, controls=[f], operators=[g], petsc_options_prefix="ctlop_")


def test_wrong_number_of_operator_inputs(setting):
    _, V, Q = setting
    u = fem.Function(V)
    v = ufl.TestFunction(V)
    f = fem.Function(V)
    k = dnn.NeuralOperator(linear(1, 1), operands=(u,), space=Q, name="k")
    F = (1 + k**2) * ufl.inner(ufl.grad(u), ufl.grad(v)) * k.measure - f * v * k.measure
    solve = dnn.fem_operator(F, u, controls=[f], operators=[k], petsc_options_prefix="nin_")
    with pytest.raises(ValueError, match="one entry per operator"):
        solve(to_torch(f), operator_inputs=[None, None])
    with pytest.raises(ValueError, match=r"expected 2 parameter tensors for 'k'"):
        solve(to_torch(f), operator_inputs=[[torch.zeros(1, 1)]])


def test_wrong_output_shape_raises_on_ranks_without_cells():
    """One cell: under mpiexec the rank without points raises too instead of waiting."""
    msh = mesh.create_unit_square(COMM, 1, 1, mesh.CellType.quadrilateral)
    V = fem.functionspace(msh, ("Lagrange", 1))
    k = dnn.NeuralOperator(linear(1, 2), operands=(fem.Function(V),),
                           space=quadrature_space(msh, 2))
    for derivatives in (False, True):
        with pytest.raises(ValueError, match=r"value shape \(\)|wrong shape on another rank"):
            k.update(derivatives=derivatives)
