"""The mesh solver on the same problem: Lagrange FEM (P1, P2, ...), SUPG when advection dominates.

The bilinear form is the equation's :meth:`~dolfinx_nn.ansatz.equations.PDE.weak_form` and the
SUPG residual its strong operator. Stationary problems are one linear solve; time-dependent
ones (heat-advection) use Crank-Nicolson with
``ceil(T / h)`` steps (second order in time, matching P1/P2 for smooth solutions at the mesh
sizes used here).  Dirichlet data, initial value and source come from the exact solution (UFL).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from mpi4py import MPI

import dolfinx
import dolfinx.fem.petsc
import numpy as np
import ufl

from dolfinx_nn import petsc_problems
from dolfinx_nn.ansatz.pdes import Problem
from dolfinx_nn.meshes import boundary_dofs

#: Mesh Peclet number above which ``stabilization="auto"`` switches SUPG on.
SUPG_PECLET = 1.0

STABILIZATIONS = ("auto", "supg", "none")


@dataclass
class FEMSolution:
    """A FEM solution and what it cost.

    Attributes:
        uh: the solution (at the final time for heat-advection).
        degree: Lagrange degree.
        dofs: global number of unknowns.
        wall_time_s: assembly and solve time (all time steps), max over ranks.
        supg: whether SUPG was used.
        time: time of ``uh``.
    """

    uh: dolfinx.fem.Function
    degree: int
    dofs: int
    wall_time_s: float
    supg: bool
    time: float | None = None


def _cell_size(mesh: dolfinx.mesh.Mesh):
    return ufl.CellDiameter(mesh)


def _use_supg(problem: Problem, mesh: dolfinx.mesh.Mesh, stabilization: str) -> bool:
    if stabilization not in STABILIZATIONS:
        raise ValueError(f"unknown stabilization {stabilization!r}; choose one of {STABILIZATIONS}")
    if not problem.advection or stabilization == "none":
        return False
    if stabilization == "supg":
        return True
    from dolfinx_nn.meshes import mesh_size

    x = mesh.geometry.x.T
    t = problem.final_time if problem.time_dependent else None
    speed = np.sqrt(sum(b.numpy(x, t) ** 2 for b in problem.advection))
    bmax = mesh.comm.allreduce(float(speed.max(initial=0.0)), op=MPI.MAX)
    return bmax * mesh_size(mesh) / (2.0 * problem.diffusion) > SUPG_PECLET


def _supg_tau(b, h, k):
    speed = ufl.sqrt(ufl.dot(b, b)) + 1e-14
    peclet = speed * h / (2.0 * k)
    coth = (ufl.exp(2 * peclet) + 1) / (ufl.exp(2 * peclet) - 1)
    xi = ufl.conditional(ufl.gt(peclet, 1e-3), coth - 1.0 / peclet, peclet / 3.0)
    return h / (2.0 * speed) * xi


def solve_fem(
    problem: Problem,
    mesh: dolfinx.mesh.Mesh,
    degree: int = 1,
    *,
    stabilization: str = "auto",
    time_steps: int | None = None,
    petsc_options: dict | None = None,
) -> FEMSolution:
    """Solve ``problem`` with Lagrange elements of ``degree`` on ``mesh`` (collective).

    Args:
        problem: the PDE and exact solution.
        mesh: the mesh (Dirichlet data on all exterior facets).
        degree: Lagrange degree (>= 1).
        stabilization: "auto" (SUPG when the mesh Peclet number exceeds 1), "supg" or "none".
        time_steps: Crank-Nicolson steps of heat-advection (default ``ceil(T / h)``).
        petsc_options: KSP options (default: direct LU with MUMPS).
    """
    if not isinstance(degree, int) or degree < 1:
        raise ValueError(f"degree must be a positive int, got {degree!r}")
    comm = mesh.comm
    comm.Barrier()
    start = time.perf_counter()
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree))
    bdofs = boundary_dofs(V)
    x = ufl.SpatialCoordinate(mesh)
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    k = problem.diffusion
    supg = _use_supg(problem, mesh, stabilization)
    h = _cell_size(mesh)
    options = petsc_options or {"ksp_type": "preonly", "pc_type": "lu",
                                "pc_factor_mat_solver_type": "mumps"}
    t_const = dolfinx.fem.Constant(mesh, 0.0)
    u_bc = dolfinx.fem.Function(V)
    exact_expr = dolfinx.fem.Expression(
        problem.exact_ufl(x, t_const), V.element.interpolation_points
    )
    u_bc.interpolate(exact_expr)
    bc = dolfinx.fem.dirichletbc(u_bc, bdofs)

    def operator(w, t):
        return problem.equation.weak_form(problem, w, v, x, t)

    if not problem.time_dependent:
        f = problem.source_ufl(x)
        a = operator(u, None)
        L = f * v * ufl.dx
        b = problem.advection_ufl(x)
        if supg:
            tau = _supg_tau(b, h, k)
            strong = problem.equation.operator_ufl(problem, u, x, None)
            a += tau * strong * ufl.dot(b, ufl.grad(v)) * ufl.dx
            L += tau * f * ufl.dot(b, ufl.grad(v)) * ufl.dx
        problem_ = petsc_problems.LinearProblem(
            a, L, bcs=[bc], petsc_options_prefix="ansatz_fem_", petsc_options=options
        )
        solved = problem_.solve()
        assert isinstance(solved, dolfinx.fem.Function)  # one form, one solution
        uh = solved
        final_time = None
    else:
        uh = _crank_nicolson(problem, mesh, V, bc, u_bc, exact_expr, t_const, operator, supg,
                             h, options, time_steps)
        final_time = problem.final_time
    comm.Barrier()
    elapsed = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    dofs = V.dofmap.index_map.size_global * V.dofmap.index_map_bs
    uh.name = f"u_P{degree}"
    return FEMSolution(uh, degree, dofs, elapsed, supg, final_time)


def _crank_nicolson(problem, mesh, V, bc, u_bc, exact_expr, t_const, operator, supg, h,
                    options, time_steps):
    from dolfinx_nn.meshes import mesh_size

    T = problem.final_time
    steps = time_steps or max(1, math.ceil(T / mesh_size(mesh)))
    dt = T / steps
    x = ufl.SpatialCoordinate(mesh)
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    t_old = dolfinx.fem.Constant(mesh, 0.0)
    u_old = dolfinx.fem.Function(V)
    u_old.interpolate(dolfinx.fem.Expression(problem.exact_ufl(x, t_old),
                                             V.element.interpolation_points))
    f_new, f_old = problem.source_ufl(x, t_const), problem.source_ufl(x, t_old)
    test = v
    if supg:
        b = problem.advection_ufl(x, t_const)
        test = v + _supg_tau(b, h, problem.diffusion) * ufl.dot(b, ufl.grad(v))
    a = (u * test / dt) * ufl.dx + 0.5 * operator(u, t_const)
    L = (u_old * test / dt) * ufl.dx - 0.5 * operator(u_old, t_old) \
        + 0.5 * (f_new + f_old) * test * ufl.dx
    if supg:
        # the SUPG test term weights the whole strong residual (u_t + L u - f), so that the
        # exact solution satisfies the scheme: L u = -k lap u + b . grad u, Crank-Nicolson
        # averaged like the Galerkin part (weighting -k lap u alone left b . grad u out, and
        # the scheme was inconsistent: P2 errors grew under refinement)
        b = problem.advection_ufl(x, t_const)
        streamline = _supg_tau(b, h, problem.diffusion) * ufl.dot(b, ufl.grad(v))
        strong = problem.equation.operator_ufl
        a += 0.5 * strong(problem, u, x, t_const) * streamline * ufl.dx
        L -= 0.5 * strong(problem, u_old, x, t_old) * streamline * ufl.dx
    solver = petsc_problems.LinearProblem(
        a, L, bcs=[bc], petsc_options_prefix="ansatz_heat_", petsc_options=options
    )
    uh = u_old
    for n in range(steps):
        t_old.value = n * dt
        t_const.value = (n + 1) * dt
        u_bc.interpolate(exact_expr)
        uh = solver.solve()
        u_old.x.array[:] = uh.x.array
    return u_old
