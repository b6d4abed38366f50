"""The FEM reference: observed rates on a manufactured solution, SUPG, error norms."""

from __future__ import annotations

from mpi4py import MPI

import numpy as np
import pytest
import torch
import ufl

from dolfinx_nn.ansatz import Problem
from dolfinx_nn.ansatz.compare import observed_rates, refine
from dolfinx_nn.ansatz.errors import fem_errors
from dolfinx_nn.ansatz.fem_reference import solve_fem
from dolfinx_nn.ansatz.fitted_fields import quadrature_points
from dolfinx_nn.meshes import create_mesh

EXACT = "sin(2*x[0] + 0.5)*cos(3*x[1]) + x[0]*x[1]"


@pytest.mark.parametrize("degree", [1, 2])
def test_fem_rates_match_theory(degree):
    """L2 rate p + 1 and H1 rate p within 0.15 on the last refinement."""
    problem = Problem.from_text("poisson", EXACT, 2)
    mesh = create_mesh(MPI.COMM_WORLD, "square", 4)
    l2, h1, h = [], [], []
    for _ in range(3):
        err = fem_errors(problem, solve_fem(problem, mesh, degree).uh)
        l2.append(err["l2_error"])
        h1.append(err["h1_error"])
        h.append(1.0 / np.sqrt(mesh.topology.index_map(2).size_global))
        mesh = refine(mesh)
    assert abs(observed_rates(l2, h)[-1] - (degree + 1)) < 0.15
    assert abs(observed_rates(h1, h)[-1] - degree) < 0.15


def test_supg_for_advection_dominated_flow():
    """With diffusion 1e-3 the mesh Peclet number is large: SUPG switches on and converges."""
    problem = Problem.from_text("advection-diffusion", "x[0]*x[1]*exp(x[0])", 2,
                                diffusion=1e-3, advection="1, 0.5")
    mesh = create_mesh(MPI.COMM_WORLD, "square", 8)
    coarse = solve_fem(problem, mesh, 1)
    fine = solve_fem(problem, refine(mesh), 1)
    assert coarse.supg and fine.supg
    e0 = fem_errors(problem, coarse.uh)["relative_l2_error"]
    e1 = fem_errors(problem, fine.uh)["relative_l2_error"]
    assert e1 < 0.35 * e0 and e1 < 1e-2


def test_heat_advection_crank_nicolson_converges():
    problem = Problem.from_text("heat-advection", "exp(-t)*sin(pi*x[0])*x[1] + t*x[0]", 2,
                                advection="1, 0.5", final_time=0.5)
    mesh = create_mesh(MPI.COMM_WORLD, "square", 4)
    errors = []
    for _ in range(2):
        sol = solve_fem(problem, mesh, 2)
        errors.append(fem_errors(problem, sol.uh, sol.time)["l2_error"])
        mesh = refine(mesh)
    assert np.log2(errors[0] / errors[1]) > 1.85


def test_sources_agree_between_ufl_and_torch():
    """f from UFL derivatives and from torch autograd agree at quadrature points."""
    problem = Problem.from_text("advection-diffusion", EXACT, 2, diffusion=0.3,
                                advection="x[1], -x[0]")
    mesh = create_mesh(MPI.COMM_WORLD, "square", 3)
    x, _, (f_ufl,) = quadrature_points(mesh, 3, [problem.source_ufl(ufl.SpatialCoordinate(mesh))])
    f_torch = problem.source_torch(torch.from_numpy(x)).numpy()
    assert np.allclose(f_torch, f_ufl, rtol=1e-12, atol=1e-12)
