"""Finite element reference solver: the C0 penalty method of Brenner, Gudi and Neilan.

Find ``u_h`` in the continuous Lagrange space (degree 2 by default) with ``u_h = I_h g`` on
the boundary and, for all test functions ``v`` vanishing on the boundary,

    sum_T int_T (f - det D^2 u_h) v dx + sum_e int_e {{cof(D^2 u_h)}} n_e . [[grad u_h]] {{v}} ds
        = 0,

where the second sum runs over interior facets (Brenner, Gudi & Neilan, Math. Comp. 80, 2011;
Brenner & Neilan, ESAIM M2AN 46, 2012 for d = 3).  The edge term makes the method consistent:
its linearization at the exact solution is a C0 interior penalty discretization of
``-div(cof(D^2 u) grad w)``.  The system is solved with Newton's method (PETSc SNES,
backtracking line search, direct LU solves), started from the convex solution of the Poisson
problem ``Delta u_0 = d f^(1/d)``, ``u_0 = g`` (exact when ``D^2 u`` is a multiple of the
identity).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mpi4py import MPI
from petsc4py import PETSc

import dolfinx
import dolfinx.fem.petsc
import numpy as np
import ufl

from dolfinx_nn.errors import SolverError
from dolfinx_nn.meshes import boundary_dofs
from dolfinx_nn.monge_ampere.cases import Case, noisy
from dolfinx_nn.monge_ampere.domains import mesh_bounds
from dolfinx_nn import petsc_problems

_REASONS = {v: k for k, v in PETSc.SNES.ConvergedReason.__dict__.items() if isinstance(v, int)}


@dataclass
class FEMResult:
    """Outcome of :func:`solve_fem` (norms are global)."""

    u: dolfinx.fem.Function
    rel_l2_error: float
    h1_error: float
    newton_iterations: int
    dofs: int
    h: float
    wall_time_s: float

    def summary(self) -> dict[str, float | int]:
        """The numbers reported in ``results.json``."""
        return {
            "rel_l2_error": self.rel_l2_error,
            "h1_error": self.h1_error,
            "newton_iterations": self.newton_iterations,
            "dofs": self.dofs,
            "h": self.h,
            "wall_time_s": self.wall_time_s,
        }


def cofactor(a: ufl.core.expr.Expr) -> ufl.core.expr.Expr:
    """Cofactor matrix of a 2x2 or 3x3 UFL matrix (no division, so valid if singular)."""
    n = a.ufl_shape[0]
    if n == 2:
        return ufl.as_matrix([[a[1, 1], -a[1, 0]], [-a[0, 1], a[0, 0]]])
    if n == 3:
        return ufl.as_matrix(
            [
                [a[(i + 1) % 3, (j + 1) % 3] * a[(i + 2) % 3, (j + 2) % 3]
                 - a[(i + 1) % 3, (j + 2) % 3] * a[(i + 2) % 3, (j + 1) % 3]
                 for j in range(3)]
                for i in range(3)
            ]
        )
    raise ValueError(f"the FEM reference supports d = 2 and 3, got d = {n}")


def monge_ampere_residual(u, v, f, penalty: float = 0.0) -> ufl.Form:
    """The Brenner-Gudi-Neilan residual form (plus an optional jump penalty ``sigma/h``)."""
    mesh = u.function_space.mesh
    n = ufl.FacetNormal(mesh)
    hess = ufl.grad(ufl.grad(u))
    jump_dn = ufl.jump(ufl.grad(u), n)
    form = (f - ufl.det(hess)) * v * ufl.dx
    form += ufl.inner(ufl.avg(cofactor(hess)) * n("+"), n("+")) * jump_dn * ufl.avg(v) * ufl.dS
    if penalty:
        h = ufl.avg(ufl.CellDiameter(mesh))
        form += penalty / h * jump_dn * ufl.jump(ufl.grad(v), n) * ufl.dS
    return form


def _source(case: Case, mesh, center, noise: float, seed: int):
    x = ufl.SpatialCoordinate(mesh)
    comps = [x[i] for i in range(mesh.geometry.dim)]
    f = case.f(comps, "ufl", center)
    if noise == 0:
        return f, comps
    # noisy data: interpolate f into P1 and perturb each owned value
    q = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    fh = dolfinx.fem.Function(q)
    fh.interpolate(dolfinx.fem.Expression(f, q.element.interpolation_points))
    n_owned = q.dofmap.index_map.size_local
    streams = np.random.SeedSequence([seed, 2]).spawn(mesh.comm.size)
    rng = np.random.default_rng(streams[mesh.comm.rank])
    fh.x.array[:n_owned] = noisy(fh.x.array[:n_owned], noise, rng)
    fh.x.scatter_forward()
    return fh, comps


def _boundary_condition(V, g_expr) -> tuple[dolfinx.fem.DirichletBC, dolfinx.fem.Function]:
    g = dolfinx.fem.Function(V)
    g.interpolate(dolfinx.fem.Expression(g_expr, V.element.interpolation_points))
    return dolfinx.fem.dirichletbc(g, boundary_dofs(V)), g


def _check_converged(snes: PETSc.SNES, prefix: str) -> None:
    reason = snes.getConvergedReason()
    if reason <= 0:
        name = _REASONS.get(reason, "UNKNOWN")
        raise SolverError("SNES", reason, name, snes.getIterationNumber(), prefix)


def solve_fem(
    case: Case,
    mesh: dolfinx.mesh.Mesh,
    *,
    degree: int = 2,
    center=None,
    noise: float = 0.0,
    seed: int = 0,
    penalty: float = 0.0,
    quadrature_degree: int = 8,
    petsc_options: dict | None = None,
    prefix: str = "monge_ampere_",
) -> FEMResult:
    """Solve ``det D^2 u = f``, ``u = g`` on a 2D/3D mesh with the C0 penalty method.

    Args:
        case: test case (source and exact solution = boundary data).
        mesh: triangle or tetrahedron mesh.
        degree: Lagrange degree (>= 2; piecewise linears have no Hessian).
        center: centre point for the ``degenerate`` case (default: bounding box centre).
        noise: relative noise in f (values of its P1 interpolant perturbed).
        seed: seed of the noise.
        penalty: optional ``sigma`` of a consistent jump penalty ``sigma/h [[du/dn]][[dv/dn]]``.
        quadrature_degree: quadrature for the (non-polynomial) source and the errors.
        petsc_options: overrides of the SNES/KSP options (Newton, backtracking, LU).
        prefix: PETSc options prefix.

    Raises:
        SolverError: Newton did not converge.
    """
    dim = mesh.topology.dim
    case.check_dim(dim)
    if dim not in (2, 3):
        raise ValueError(f"the FEM reference supports d = 2 and 3, got d = {dim}")
    if degree < 2:
        raise ValueError(f"degree must be >= 2 (the method uses D^2 u_h), got {degree}")
    comm = mesh.comm
    if center is None:
        lower, upper = mesh_bounds(mesh)
        center = 0.5 * (lower + upper)
    center = [float(c) for c in center]
    comm.Barrier()
    start = time.perf_counter()

    V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree))
    f, x = _source(case, mesh, center, noise, seed)
    u_exact = case.u(x, "ufl", center)
    bc, _ = _boundary_condition(V, u_exact)
    dx = ufl.dx(metadata={"quadrature_degree": quadrature_degree})
    v = ufl.TestFunction(V)

    # convex initial guess: Delta u0 = d f^(1/d), u0 = g
    w = ufl.TrialFunction(V)
    rhs = -float(dim) * ufl.max_value(f, 0.0) ** (1.0 / dim) * v * dx
    guess = petsc_problems.LinearProblem(
        ufl.inner(ufl.grad(w), ufl.grad(v)) * ufl.dx, rhs, bcs=[bc],
        petsc_options={"ksp_type": "preonly", "pc_type": "lu", "ksp_error_if_not_converged": True},
        petsc_options_prefix=f"{prefix}guess_",
    )
    u = guess.solve()
    if isinstance(u, tuple | list):
        u = u[0]
    uh = dolfinx.fem.Function(V, name="u")
    uh.x.array[:] = u.x.array

    form = monge_ampere_residual(uh, v, f, penalty)
    options = {
        "snes_type": "newtonls",
        "snes_linesearch_type": "bt",
        "snes_rtol": 1e-10,
        "snes_atol": 1e-10,
        "snes_stol": 0.0,
        "snes_max_it": 50,
        "ksp_type": "preonly",
        "pc_type": "lu",
    }
    options.update(petsc_options or {})
    problem = petsc_problems.NonlinearProblem(
        form, uh, bcs=[bc], petsc_options=options, petsc_options_prefix=prefix,
        form_compiler_options={"quadrature_degree": quadrature_degree},
    )
    problem.solve()
    snes = problem.solver
    _check_converged(snes, prefix)
    iterations = snes.getIterationNumber()
    wall = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)

    err = uh - u_exact
    q = ufl.dx(metadata={"quadrature_degree": quadrature_degree})

    def integral(expr) -> float:
        local = dolfinx.fem.assemble_scalar(dolfinx.fem.form(expr * q))
        return comm.allreduce(local, op=MPI.SUM)

    rel_l2 = np.sqrt(integral(err**2) / integral(u_exact**2))
    h1 = np.sqrt(integral(err**2 + ufl.inner(ufl.grad(err), ufl.grad(err))))
    cells = mesh.topology.index_map(dim).size_local
    h_local = dolfinx.cpp.mesh.h(mesh._cpp_object, dim, np.arange(cells, dtype=np.int32))
    h = comm.allreduce(float(h_local.max()) if cells else 0.0, op=MPI.MAX)
    dofs = V.dofmap.index_map.size_global * V.dofmap.index_map_bs
    return FEMResult(u=uh, rel_l2_error=float(rel_l2), h1_error=float(h1),
                     newton_iterations=int(iterations), dofs=int(dofs), h=h, wall_time_s=wall)
