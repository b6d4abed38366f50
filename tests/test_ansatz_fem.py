"""The FEM reference: observed rates on a manufactured solution, SUPG, error norms."""

from __future__ import annotations

from mpi4py import MPI

import basix
import numpy as np
import pytest
import torch
import ufl
from dolfinx import fem, la

from dolfinx_nn.ansatz import PDES, Problem, get_pde
from dolfinx_nn.ansatz.compare import observed_rates, refine
from dolfinx_nn.ansatz.errors import fem_errors
from dolfinx_nn.ansatz.fem_reference import solve_fem
from dolfinx_nn.ansatz.fitted_fields import quadrature_points
from dolfinx_nn.meshes import boundary_dofs, create_mesh

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


def test_heat_advection_supg_is_consistent():
    """Advection-dominated heat (k = 1e-3): SUPG on, Crank-Nicolson weights the whole strong
    residual, P2 converges.  Measured on 4/8/16 cells per edge: 2.2e-3, 6.1e-4, 1.3e-4 (rates
    1.9, 2.2); when the streamline term weighted only the diffusion, 0.64, 0.33, 0.81."""
    problem = Problem.from_text("heat-advection", "exp(-t)*sin(pi*x[0])*x[1] + t*x[0]", 2,
                                diffusion=1e-3, advection="1, 0.5", final_time=0.5)
    mesh = create_mesh(MPI.COMM_WORLD, "square", 4)
    errors = []
    for _ in range(2):
        sol = solve_fem(problem, mesh, 2)
        assert sol.supg
        errors.append(fem_errors(problem, sol.uh, sol.time)["relative_l2_error"])
        mesh = refine(mesh)
    assert errors[1] < 1.5e-3 and np.log2(errors[0] / errors[1]) > 1.5


def _registered_problem(name: str) -> Problem:
    """A manufactured problem for the registered equation ``name``."""
    equation = get_pde(name)
    exact = EXACT + (" + exp(-t)*x[0]*x[1]" if equation.time_dependent else "")
    advection = "x[1], -x[0]" if equation.needs_advection else None
    return Problem.from_text(name, exact, 2, diffusion=0.3, advection=advection, final_time=0.5)


def test_every_registered_pde_is_consistent():
    """For every registered PDE: the manufactured source (UFL) makes the weak residual of the
    exact solution vanish to quadrature accuracy (``u_t`` added for time-dependent equations),
    and f from UFL derivatives and from torch autograd agree at quadrature points.

    All PDEs share one vector-valued form and one expression (two JIT compilations in all).
    """
    mesh = create_mesh(MPI.COMM_WORLD, "square", 3)
    problems = [_registered_problem(name) for name in PDES]
    x, t = ufl.SpatialCoordinate(mesh), fem.Constant(mesh, 0.3)
    W = fem.functionspace(mesh, ("Lagrange", 2, (2 * len(problems),)))
    w = ufl.TestFunction(W)
    form, sources = 0, []
    for k, problem in enumerate(problems):  # component 2k: weak residual, 2k+1: load vector
        f, v = problem.source_ufl(x, t), w[2 * k]
        form += problem.equation.weak_form(problem, problem.exact_ufl(x, t), v, x, t)
        form += (f * (w[2 * k + 1] - v)) * ufl.dx
        if problem.time_dependent:
            tv = ufl.variable(t)
            form += ufl.diff(problem.exact.ufl(x, tv), tv) * v * ufl.dx
        sources.append(f)
    form = ufl.Form([i.reconstruct(metadata={"quadrature_degree": 12}) for i in form.integrals()])
    vec = fem.assemble_vector(fem.form(form))
    vec.scatter_reverse(la.InsertMode.add)
    values = vec.array.reshape(-1, W.dofmap.index_map_bs)[: W.dofmap.index_map.size_local].copy()
    boundary = boundary_dofs(W)
    values[boundary[boundary < len(values)]] = 0.0
    norms = np.sqrt(mesh.comm.allreduce((values**2).sum(axis=0), op=MPI.SUM))
    for k, problem in enumerate(problems):
        assert norms[2 * k] < 1e-9 * norms[2 * k + 1], problem.pde

    points, _, _ = quadrature_points(mesh, 3)
    cells = np.arange(mesh.topology.index_map(2).size_local, dtype=np.int32)
    rule, _ = basix.make_quadrature(mesh.basix_cell(), 3)
    f_ufl = fem.Expression(ufl.as_vector(sources), rule).eval(mesh, cells).reshape(-1, len(sources))
    for k, problem in enumerate(problems):
        inputs = points
        if problem.time_dependent:
            inputs = np.column_stack([points, np.full(len(points), 0.3)])
        f_torch = problem.source_torch(torch.from_numpy(inputs)).numpy()
        assert np.allclose(f_torch, f_ufl[:, k], rtol=1e-12, atol=1e-12), problem.pde


@pytest.mark.parametrize("name", sorted(n for n, p in PDES.items() if p.symmetric))
def test_ritz_energy_is_the_weak_form(name):
    """For every symmetric registered PDE the Euler-Lagrange equation of ``energy_density``
    is the weak form: d/du int e(u, grad u, f) dx [v] = a(u, v) - (f, v).  (A PDE whose energy
    missed a term would pass the weak-form test and train ``--loss ritz`` to another
    solution.)"""
    msh = create_mesh(MPI.COMM_WORLD, "square", 4)
    V = fem.functionspace(msh, ("Lagrange", 2))
    problem = Problem.from_text(name, "sin(x[0])*x[1] + 1", 2)
    x = ufl.SpatialCoordinate(msh)
    u = fem.Function(V)
    u.interpolate(lambda p: np.cos(p[0]) + p[1] ** 2 + 0.5)
    v = ufl.TestFunction(V)
    f = problem.source_ufl(x)
    energy = problem.equation.energy_density(problem, u, [u.dx(0), u.dx(1)], f) * ufl.dx
    lhs = fem.assemble_vector(fem.form(ufl.derivative(energy, u, v))).array
    weak = problem.equation.weak_form(problem, u, v, x, None) - f * v * ufl.dx
    rhs = fem.assemble_vector(fem.form(weak)).array
    assert np.abs(rhs).max() > 1e-3  # u is not the solution: the check is not vacuous
    np.testing.assert_allclose(lhs, rhs, rtol=0, atol=1e-12 * np.abs(rhs).max())
