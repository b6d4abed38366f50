"""Finite element reference solver: the C0 penalty method of Brenner, Gudi and Neilan.

Find ``u_h`` in the continuous Lagrange space (degree 2 by default) with ``u_h = I_h g`` on
the boundary and, for all test functions ``v`` vanishing on the boundary,

    sum_T int_T (f - det D^2 u_h) v dx + sum_e int_e {{cof(D^2 u_h)}} n_e . [[grad u_h]] {{v}} ds
        = 0,

where the second sum runs over interior facets (Brenner, Gudi & Neilan, Math. Comp. 80, 2011;
Brenner & Neilan, ESAIM M2AN 46, 2012 for d = 3).  The edge term makes the method consistent:
its linearization at the exact solution is a C0 interior penalty discretization of
``-div(cof(D^2 u) grad w)``.  The system is solved with Newton's method (PETSc SNES,
backtracking line search, direct LU solves).

**Globalization.**  The discrete system has several solutions, and Newton's method from a
poor guess diverges or lands on a non-convex one where the equation degenerates (``f = 0`` on
a disk, ``f`` vanishing on an edge) or blows up (``f`` unbounded at a corner).  Two published
devices keep it on the convex branch:

* *mesh sequencing* (:func:`solve_fem_sequence`): the solution on the previous, coarser mesh,
  interpolated, is the initial guess on the next one;
* *continuation in the data*: ``det D^2 u = f + delta`` with ``delta`` driven to 0, each
  solve started from the previous one.  ``f + delta`` is bounded away from 0, so the
  linearization ``-div(cof(D^2 u) grad w)`` is uniformly elliptic on the way; the step shrinks
  (``delta_next / delta`` from 1/10 towards 1) when Newton fails and grows back after
  successes.  Without an initial guess the path starts at ``delta`` = the mean of ``|f|`` from
  the convex solution of ``Delta u_0 = d (f + delta)^(1/d)``, ``u_0 = g`` (exact when
  ``D^2 u`` is a multiple of the identity); with one, Newton is first tried at ``delta = 0``
  and the path starts only if that fails, at the smallest ``delta`` (from 1e-3 of the mean
  ``|f|`` up, by factors of 10) that Newton reaches from the guess plus the Poisson guess's
  response to the lift (:meth:`_Homotopy.run`).

A continuation path that has reached a convex solution must stay convex: a step that lands on
a non-convex solution counts as failed and is shortened (:meth:`_Homotopy.step`).  Without
this rule a path could jump branches on the way, and on some meshes every strategy ended on
a non-convex solution (``singular`` at 24 and 40 cells per edge, ``degenerate`` at 64; docs,
"FEM convergence").

The final answer is always the solution for ``delta = 0``; the path taken is reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mpi4py import MPI
from petsc4py import PETSc

import dolfinx
import dolfinx.fem.petsc
import numpy as np
import ufl

from dolfinx_nn import petsc_problems
from dolfinx_nn.errors import SolverError
from dolfinx_nn.meshes import boundary_dofs
from dolfinx_nn.monge_ampere.cases import Case, check_data
from dolfinx_nn.monge_ampere.domains import mesh_bounds

_REASONS = {v: k for k, v in PETSc.SNES.ConvergedReason.__dict__.items() if isinstance(v, int)}


@dataclass
class FEMResult:
    """Outcome of :func:`solve_fem` (norms are global).

    ``rel_l2_error`` and ``h1_error`` are ``None`` when the case has no exact solution;
    ``h1_error = sqrt(||e||^2 + L^2 ||grad e||^2)`` with ``L`` the largest extent of the mesh's
    bounding box (``h1_length``), so that both terms have the unit of the L2 norm, and
    ``rel_h1_error`` is it over the same norm of the exact solution (the same in any unit).
    ``path`` lists the Newton solves: ``{"strategy", "s", "delta", "newton_iterations",
    "converged"}``, with ``"min_hessian_eigenvalue"`` (relative, as below) when Newton
    converged and ``"non_convex": True`` when that solution was refused because the path had
    been convex before (:meth:`_Homotopy.step`); ``strategy`` is the one that gave the answer,
    and
    ``min_hessian_eigenvalue`` the smallest cellwise eigenvalue of ``D^2 u_h`` relative to
    ``mean|f|^(1/d)``.
    """

    u: dolfinx.fem.Function
    rel_l2_error: float | None
    h1_error: float | None
    newton_iterations: int
    dofs: int
    h: float
    wall_time_s: float
    path: list[dict] = field(default_factory=list)
    strategy: str = "delta"
    min_hessian_eigenvalue: float = 0.0
    h1_length: float | None = None
    rel_h1_error: float | None = None

    def summary(self) -> dict:
        """The numbers reported in ``results.json``."""
        return {
            "status": "converged",
            "rel_l2_error": self.rel_l2_error,
            "h1_error": self.h1_error,
            "rel_h1_error": self.rel_h1_error,
            "h1_length": self.h1_length,
            "newton_iterations": self.newton_iterations,
            "strategy": self.strategy,
            "newton_solves": len(self.path),
            "min_hessian_eigenvalue_relative": self.min_hessian_eigenvalue,
            "dofs": self.dofs,
            "h": self.h,
            "wall_time_s": self.wall_time_s,
        }


class FEMSolveError(SolverError):
    """No strategy of :func:`solve_fem` reached a convex solution of the problem itself.

    Attributes:
        path: the Newton solves tried (strategy, ``s``, ``delta``, iterations, converged).
        smallest_delta: the smallest ``delta`` that converged at ``s = 1`` (``None``: none).
        reason_name: PETSc's reason of the last Newton solve, or ``"NOT_CONVEX"`` when Newton
            converged but only to non-convex solutions.
    """

    def __init__(self, reason: int, reason_name: str, iterations: int, prefix: str,
                 path: list[dict], tried: list[str], non_convex: list[str]):
        super().__init__("SNES", reason, reason_name, iterations, prefix)
        self.path = path
        self.results: list[FEMResult] = []  # set by solve_fem_sequence: the meshes before
        done = [p["delta"] for p in path if p["converged"] and p["s"] == 1.0]
        self.smallest_delta = min(done) if done else None
        if non_convex and reason > 0:
            self.reason_name = "NOT_CONVEX"
        parts = [f"no convex solution after {len(path)} Newton solves "
                 f"(strategies tried: {', '.join(tried) or 'none'})"]
        if non_convex:
            parts.append(f"converged only to non-convex solutions: {', '.join(non_convex)}")
        if reason <= 0:
            parts.append(f"last Newton solve: {reason_name} after {path[-1]['newton_iterations']}"
                         f" iterations" if path else f"last Newton solve: {reason_name}")
        parts.append(f'inspect the Newton solves with PETSC_OPTIONS="-{prefix}snes_monitor" '
                     f'in the environment of the run')
        self.args = ("; ".join(parts),)


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


def _noise_factor(mesh, noise: float, seed: int) -> dolfinx.fem.Function:
    """``1 + noise * xi_h``: the P1 function with independent ``xi ~ N(0, 1)`` at its nodes.

    The noisy source is ``f * (1 + noise * xi_h)``, ``f`` evaluated where the form evaluates it
    (quadrature points inside the cells): the relative noise of ``noisy`` at every node,
    without evaluating ``f`` at the mesh's vertices, where a source singular at a boundary
    point (the ``singular`` case at ``(1, 1)``) is infinite.
    """
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise level must be a finite number >= 0, got {noise!r}")
    q = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    factor = dolfinx.fem.Function(q)
    n_owned = q.dofmap.index_map.size_local
    streams = np.random.SeedSequence([seed, 2]).spawn(mesh.comm.size)
    rng = np.random.default_rng(streams[mesh.comm.rank])
    factor.x.array[:n_owned] = 1.0 + noise * rng.standard_normal(n_owned)
    factor.x.scatter_forward()
    return factor


def check_fem_data(case: Case, mesh: dolfinx.mesh.Mesh, center, quadrature_degree: int = 8,
                   degree: int = 2) -> None:
    """Refuse data the FEM reference cannot use, before any solve (collective).

    ``f`` must be finite and ``>= 0`` at the quadrature points of the cells (degree
    ``quadrature_degree``, where the form evaluates it), and ``g`` finite at the boundary
    nodes of the degree-``degree`` Lagrange space (where the Dirichlet values are taken).
    Points where the method never evaluates a datum do not count: the ``singular`` case's
    ``f`` is infinite at the corner ``(1, 1)``, a vertex, and finite at every quadrature point.

    Raises:
        ValueError: on every rank, naming the datum, its value and the point.
    """
    import basix

    comm, dim = mesh.comm, mesh.topology.dim
    x = ufl.SpatialCoordinate(mesh)
    xs = [x[i] for i in range(mesh.geometry.dim)]
    cell = basix.CellType[mesh.topology.cell_name()]
    points = np.asarray(basix.make_quadrature(cell, quadrature_degree)[0])
    cells = np.arange(mesh.topology.index_map(dim).size_local, dtype=np.int32)
    values = dolfinx.fem.Expression(case.f(xs, "ufl", center), points).eval(mesh, cells)
    coords = dolfinx.fem.Expression(x, points).eval(mesh, cells)
    check_data("f", coords.reshape(-1, mesh.geometry.dim), values.ravel(), comm,
               nonnegative=True, where="FEM quadrature point")
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree))
    g = dolfinx.fem.Function(V)
    g.interpolate(dolfinx.fem.Expression(case.g(xs, "ufl", center),
                                         V.element.interpolation_points))
    dofs = boundary_dofs(V)
    check_data("g", V.tabulate_dof_coordinates()[dofs, :dim], g.x.array[dofs], comm,
               where="FEM boundary node")


def _interpolate_from(target: dolfinx.fem.Function, source: dolfinx.fem.Function) -> None:
    """``target = I_h source`` for a function on another (e.g. coarser) mesh (collective)."""
    V = target.function_space
    tdim = V.mesh.topology.dim
    cells = np.arange(V.mesh.topology.index_map(tdim).size_local, dtype=np.int32)
    data = dolfinx.fem.create_interpolation_data(V, source.function_space, cells, padding=1e-10)
    target.interpolate_nonmatching(source, cells, data)
    target.x.scatter_forward()


#: smallest admissible cellwise Hessian eigenvalue, relative to mean|f|^(1/d).  The P2
#: interpolant of the exact ``singular`` solution passes with room (smallest value 0.34 to
#: 0.39 for 8 to 64 cells per edge), and the refused solutions there are far below (-1.5 and
#: -2.8 at 24 cells), so the test is not what refused them.  The ``degenerate`` interpolant
#: fails it (-0.016 to -0.28: cells cut by the circle where ``D^2 u`` jumps), but the discrete
#: solutions are smoother and pass (-2.5e-3 at worst, 6 to 64 cells; docs, "FEM convergence").
CONVEXITY_TOL = 1e-2

#: Newton's absolute tolerance relative to ``int |f| dx``, the size of the residual's source
#: term ``(f v_i)`` summed over the basis (the residual has the unit of ``f`` times a volume).
#: A fixed ``snes_atol`` ties convergence to the unit of length: the same problem converged
#: in metres and kilometres but not in millimetres, where the residual of the exact discrete
#: solution (the Poisson guess of ``f = 1``, ``g = |x|^2 / 2``) is round-off above 1e-10 and
#: the line search failed on it.  On the unit square with ``f ~ 1`` this is ``snes_atol``
#: 1e-10, as before.
SNES_ATOL_RELATIVE = 1e-10

#: Newton options of every continuation step (overridable through ``petsc_options``; the
#: absolute tolerance ``snes_atol`` is :data:`SNES_ATOL_RELATIVE` times ``int |f| dx`` unless
#: given there)
NEWTON_OPTIONS = {
    "snes_type": "newtonls",
    "snes_linesearch_type": "bt",
    "snes_rtol": 1e-10,
    "snes_stol": 0.0,
    "snes_max_it": 30,
    "ksp_type": "preonly",
    "pc_type": "lu",
}

#: initial guesses / continuation paths tried in turn (see :func:`solve_fem`)
STRATEGIES = ("interpolated", "interpolated+delta", "poisson", "delta", "dilation")


class _Homotopy(petsc_problems.PetscOwner):
    """The problems ``det D^2 u = s^(2d) f(x_s) + delta``, ``u = g(x_s)``, ``x_s = c + s(x - c)``.

    ``(s, delta) = (1, 0)`` is the problem itself.  ``delta > 0`` lifts a degenerate source;
    ``s < 1`` is the problem on the domain shrunk about ``c`` and scaled back (its solution is
    ``u(x_s)``), which keeps singularities at the boundary outside the domain.  One compiled
    form serves every ``(s, delta)``.
    """

    def __init__(self, case: Case, mesh, center, degree: int, noise: float, seed: int,
                 penalty: float, quadrature_degree: int, options: dict, prefix: str,
                 convexity_tol: float):
        self.mesh, self.comm, self.dim = mesh, mesh.comm, mesh.topology.dim
        self.prefix = prefix
        self.V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree))
        x = ufl.SpatialCoordinate(mesh)
        self.x = [x[i] for i in range(mesh.geometry.dim)]
        self.s = dolfinx.fem.Constant(mesh, 1.0)
        self.delta = dolfinx.fem.Constant(mesh, 0.0)
        xs = [c + self.s * (xi - c) for xi, c in zip(self.x, center, strict=True)]
        self.dx = ufl.dx(metadata={"quadrature_degree": quadrature_degree})
        check_fem_data(case, mesh, center, quadrature_degree, degree)
        self.f = case.f(self.x, "ufl", center)
        f_s = self.s ** (2 * self.dim) * case.f(xs, "ufl", center)
        if noise > 0:  # the noise is attached to the nodes of this mesh, not to x_s
            factor = _noise_factor(mesh, noise, seed)
            self.f, f_s = self.f * factor, f_s * factor
        self.g = dolfinx.fem.Function(self.V)
        self.g_expr = dolfinx.fem.Expression(case.g(xs, "ufl", center),
                                             self.V.element.interpolation_points)
        self.g.interpolate(self.g_expr)
        self.bc = dolfinx.fem.dirichletbc(self.g, boundary_dofs(self.V))
        volume = self._integral(dolfinx.fem.Constant(mesh, 1.0))
        #: mean |f|, the scale of delta; its d-th root is a typical Hessian eigenvalue
        self.f_scale = max(self._integral(abs(self.f)) / volume, 1e-12)
        self.source = f_s + self.delta
        self.u = dolfinx.fem.Function(self.V, name="u")
        v = ufl.TestFunction(self.V)
        options = {"snes_atol": SNES_ATOL_RELATIVE * self.f_scale * volume, **options}
        self.problem = petsc_problems.NonlinearProblem(
            monge_ampere_residual(self.u, v, self.source, penalty), self.u, bcs=[self.bc],
            petsc_options=options, petsc_options_prefix=prefix,
            form_compiler_options={"quadrature_degree": quadrature_degree},
        )
        Q = dolfinx.fem.functionspace(mesh, ("DG", 0, (self.dim, self.dim)))
        self.hessian = dolfinx.fem.Function(Q)
        self.hessian_expr = dolfinx.fem.Expression(ufl.grad(ufl.grad(self.u)),
                                                   Q.element.interpolation_points)
        self.path: list[dict] = []
        self.iterations = 0
        self.last_reason = 0
        self.convexity_tol = convexity_tol
        #: whether the current path has reached the convex branch (then it must stay on it)
        self.on_convex_branch = False

    def _owned_petsc(self) -> tuple[petsc_problems.NonlinearProblem]:
        return (self.problem,)

    def _integral(self, expr) -> float:
        local = dolfinx.fem.assemble_scalar(dolfinx.fem.form(expr * self.dx))
        return self.comm.allreduce(local, op=MPI.SUM)

    def _set(self, s: float, delta: float) -> None:
        self.s.value, self.delta.value = np.asarray(s), np.asarray(delta)
        self.g.interpolate(self.g_expr)

    def step(self, s: float, delta: float, strategy: str) -> bool:
        """Newton at ``(s, delta)`` from the current ``u``; ``u`` is restored on failure.

        Once the path has reached a convex solution (:attr:`on_convex_branch`), a step whose
        Newton solution is not convex (smallest cellwise eigenvalue below
        ``-convexity_tol``) counts as failed, so that the path shrinks its step instead of
        jumping to another branch: the discrete system has non-convex solutions close to the
        convex one (on the ``singular`` case at 24 cells per edge, from the convex solution
        on 12 cells, Newton converged to a solution with 16 cells near the corner ``(1, 1)``
        with a negative Hessian eigenvalue, relative L2 error 1.7e-3; the dilation path's step
        from ``s = 0.975`` to 1 landed on another), and a large step of a continuation path
        can land on them.  This is the usual safeguard of predictor-corrector path following
        (Allgower & Georg, Introduction to Numerical Continuation Methods, SIAM 2003, Ch. 6):
        a step whose corrector does not end on the branch being followed is shortened.
        """
        saved = self.u.x.array.copy()
        self._set(s, delta)
        self.problem.solve()
        snes = self.problem.solver
        its = snes.getIterationNumber()
        # petsc4py's stub types the reason as the ConvergedReason namespace; it is an int
        self.last_reason = int(snes.getConvergedReason())  # type: ignore[call-overload]
        ok = self.last_reason > 0 and bool(np.all(np.isfinite(self.u.x.array)))
        ok = bool(self.comm.allreduce(ok, op=MPI.LAND))
        self.iterations += its
        entry = {"strategy": strategy, "s": float(s), "delta": float(delta),
                 "newton_iterations": int(its), "converged": ok}
        self.path.append(entry)
        if ok:
            convexity = self.convexity()
            entry["min_hessian_eigenvalue"] = convexity
            if convexity >= -self.convexity_tol:
                self.on_convex_branch = True
            elif self.on_convex_branch:  # left the convex branch: a failed step
                entry["converged"] = ok = False
                entry["non_convex"] = True
        if not ok:
            self.u.x.array[:] = saved
        return ok

    def poisson_guess(self, s: float, delta: float) -> None:
        """``Delta u_0 = d (f_s + delta)^(1/d)``, ``u_0 = g_s``: exact if ``D^2 u ~ I``."""
        self._set(s, delta)
        V, d = self.V, self.dim
        w, v = ufl.TrialFunction(V), ufl.TestFunction(V)
        rhs = -float(d) * ufl.max_value(self.source, 0.0) ** (1.0 / d) * v * self.dx
        with petsc_problems.LinearProblem(
            ufl.inner(ufl.grad(w), ufl.grad(v)) * ufl.dx, rhs, bcs=[self.bc],
            petsc_options={"ksp_type": "preonly", "pc_type": "lu",
                           "ksp_error_if_not_converged": True},
            petsc_options_prefix=f"{self.prefix}guess_",
        ) as poisson:  # one solve; its factorization is freed at once, on every rank
            u0 = poisson.solve()
            self.u.x.array[:] = (u0 if isinstance(u0, dolfinx.fem.Function) else u0[0]).x.array

    def convexity(self) -> float:
        """Smallest cellwise eigenvalue of ``D^2 u_h`` (at cell midpoints) / ``f_scale^(1/d)``."""
        self.hessian.interpolate(self.hessian_expr)
        n = self.mesh.topology.index_map(self.dim).size_local
        H = self.hessian.x.array.reshape(-1, self.dim, self.dim)[:n]
        local = float(np.linalg.eigvalsh(0.5 * (H + H.transpose(0, 2, 1)))[:, 0].min()) \
            if n else np.inf
        return self.comm.allreduce(local, op=MPI.MIN) / self.f_scale ** (1.0 / self.dim)

    # -- continuation paths; each returns True once (s, delta) = (1, 0) is solved --

    def lower_delta(self, start: float, strategy: str, max_steps: int) -> bool:
        """From a solution at ``(1, start)`` down to ``delta = 0`` (adaptive ratio)."""
        current, ratio, successes = start, 0.1, 0
        while current > 0.0:
            if len(self.path) >= max_steps:
                return False
            target = current * ratio if current * ratio > 1e-10 * self.f_scale else 0.0
            if self.step(1.0, target, strategy):
                current, successes = target, successes + 1
                if successes >= 2:
                    ratio, successes = max(ratio**2, 0.1), 0
            else:
                ratio, successes = ratio**0.5, 0
                if ratio > 0.97:
                    return False
        return True

    def raise_s(self, start: float, strategy: str, max_steps: int) -> bool:
        """From a solution at ``(start, 0)`` up to ``s = 1`` (adaptive step)."""
        current, step = start, 0.1
        while current < 1.0:
            if len(self.path) >= max_steps or step < 1e-4:
                return False
            target = min(1.0, current + step)
            if self.step(target, 0.0, strategy):
                current, step = target, 1.5 * step
            else:
                step /= 4.0
        return True

    def run(self, strategy: str, guess, max_steps: int) -> bool:
        """One strategy of :data:`STRATEGIES` from scratch (or from ``guess``).

        ``interpolated+delta`` starts at ``delta`` from ``I_h guess + (P_delta - P_0)``, with
        ``P_delta`` the Poisson guess of :meth:`poisson_guess`: the difference solves
        ``Delta w = d ((f + delta)^(1/d) - f^(1/d))``, ``w = 0`` on the boundary, the response
        of the Poisson guess to the lift, and gives the guess the Hessian ``~ delta^(1/d)``
        where ``f = 0``.  From ``I_h guess`` itself Newton does not converge where the
        solution is flat: there ``D^2 u_h = 0``, so the linearization
        ``-div(cof(D^2 u_h) grad w)`` at the guess is singular whatever ``delta`` is (the
        ``degenerate`` case from 32 to 64 cells per edge: 30 iterations without convergence
        for each ``delta`` from 4e-4 to 4.2).
        """
        limit = len(self.path) + max_steps
        self.on_convex_branch = False
        if strategy == "interpolated":
            _interpolate_from(self.u, guess)
            return self.step(1.0, 0.0, strategy)
        if strategy == "interpolated+delta":
            _interpolate_from(self.u, guess)
            interpolated = self.u.x.array.copy()
            self.poisson_guess(1.0, 0.0)
            unlifted = self.u.x.array.copy()
            start = 1e-3 * self.f_scale
            while True:
                self.poisson_guess(1.0, start)
                self.u.x.array[:] = interpolated + (self.u.x.array - unlifted)
                # a convex guess (the convex solution of the coarser mesh) puts the path on
                # the branch from its first step
                self.on_convex_branch = self.convexity() >= -self.convexity_tol
                if self.step(1.0, start, strategy):
                    break
                start *= 10.0
                if start > 10.0 * self.f_scale or len(self.path) >= limit:
                    return False
            return self.lower_delta(start, strategy, limit)
        if strategy == "poisson":
            self.poisson_guess(1.0, 0.0)
            return self.step(1.0, 0.0, strategy)
        if strategy == "delta":
            self.poisson_guess(1.0, self.f_scale)
            return self.step(1.0, self.f_scale, strategy) and self.lower_delta(
                self.f_scale, strategy, limit)
        if strategy == "dilation":
            self.poisson_guess(0.5, 0.0)
            return self.step(0.5, 0.0, strategy) and self.raise_s(0.5, strategy, limit)
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")


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
    initial_guess: dolfinx.fem.Function | None = None,
    strategies: tuple[str, ...] = STRATEGIES,
    convexity_tol: float = CONVEXITY_TOL,
    max_steps: int = 40,
) -> FEMResult:
    """Solve ``det D^2 u = f``, ``u = g`` on a 2D/3D mesh with the C0 penalty method.

    The strategies of :data:`STRATEGIES` are tried in turn (those with ``interpolated`` only
    when ``initial_guess`` is given), and the first
    solution that is convex on every cell (smallest eigenvalue of ``D^2 u_h`` at least
    ``-convexity_tol`` times a typical one, ``mean|f|^(1/d)``) is returned: the discrete
    system has non-convex solutions too, and a Newton path may end on one.

    Args:
        case: the problem (source, boundary data, exact solution if known).
        mesh: triangle or tetrahedron mesh.
        degree: Lagrange degree (>= 2; piecewise linears have no Hessian).
        center: centre of the ``degenerate`` case and of the dilation (default: bounding
            box centre).
        noise: relative noise in f: ``f (1 + noise xi_h)``, ``xi_h`` the P1 function with
            independent standard normal nodal values (``f`` itself is evaluated at the
            quadrature points).
        seed: seed of the noise.
        penalty: optional ``sigma`` of a consistent jump penalty ``sigma/h [[du/dn]][[dv/dn]]``.
        quadrature_degree: quadrature for the (non-polynomial) source and the errors.
        petsc_options: overrides of the SNES/KSP options (:data:`NEWTON_OPTIONS`).
        prefix: PETSc options prefix.
        initial_guess: a solution on another mesh (e.g. a coarser one: mesh sequencing).
        strategies: the strategies to try, in order.
        convexity_tol: see above.
        max_steps: most Newton solves per strategy.

    Raises:
        ValueError: ``f`` negative or not finite at a quadrature point, or ``g`` not finite at
            a boundary node (:func:`check_fem_data`), before any solve.
        FEMSolveError: no strategy reached a convex solution (the path is attached).
    """
    dim = mesh.topology.dim
    case.check_dim(dim)
    if dim not in (2, 3):
        raise ValueError(f"the FEM reference supports d = 2 and 3, got d = {dim}")
    if degree < 2:
        raise ValueError(f"degree must be >= 2 (the method uses D^2 u_h), got {degree}")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
    comm = mesh.comm
    if center is None:
        lower, upper = mesh_bounds(mesh)
        center = 0.5 * (lower + upper)
    center = [float(c) for c in center]
    comm.Barrier()
    start = time.perf_counter()
    options = {**NEWTON_OPTIONS, **(petsc_options or {})}
    with _Homotopy(case, mesh, center, degree, noise, seed, penalty, quadrature_degree,
                   options, prefix, convexity_tol) as H:  # Newton is freed on every rank at the end
        return _solve_homotopy(H, case, mesh, center, strategies, initial_guess, max_steps,
                               prefix, start)


def _solve_homotopy(H: _Homotopy, case: Case, mesh, center, strategies, initial_guess,
                    max_steps, prefix, start) -> FEMResult:
    dim, comm = mesh.topology.dim, mesh.comm
    tried: list[str] = []
    non_convex: list[str] = []
    chosen = None
    for strategy in strategies:
        if "interpolated" in strategy and initial_guess is None:
            continue
        tried.append(strategy)
        if not H.run(strategy, initial_guess, max_steps):
            continue
        convexity = H.convexity()
        if convexity >= -H.convexity_tol:
            chosen = strategy
            break
        non_convex.append(f"{strategy} (min eigenvalue {convexity:.2e})")
    if chosen is None:
        reason = H.last_reason
        raise FEMSolveError(reason, _REASONS.get(reason, "UNKNOWN"), H.iterations, prefix,
                            H.path, tried, non_convex)
    wall = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)

    rel_l2 = h1 = rel_h1 = length = None
    if case.has_exact:
        u_exact = case.u(H.x, "ufl", center)
        err_u = H.u - u_exact
        rel_l2 = float(np.sqrt(H._integral(err_u**2) / H._integral(u_exact**2)))
        # the seminorm times a length of the domain has the unit of the L2 norm: without it
        # the sum would add quantities of different units (module docstring of
        # dolfinx_nn.ansatz.errors)
        lower, upper = mesh_bounds(mesh)
        length = float(np.max(upper - lower))
        h1 = float(np.sqrt(H._integral(err_u**2)
                           + length**2 * H._integral(ufl.inner(ufl.grad(err_u),
                                                               ufl.grad(err_u)))))
        exact_h1 = float(np.sqrt(H._integral(u_exact**2) + length**2 * H._integral(
            ufl.inner(ufl.grad(u_exact), ufl.grad(u_exact)))))
        rel_h1 = h1 / exact_h1 if exact_h1 > 0.0 else None
    cells = mesh.topology.index_map(dim).size_local
    h_local = dolfinx.cpp.mesh.h(mesh._cpp_object, dim, np.arange(cells, dtype=np.int32))
    h = comm.allreduce(float(h_local.max()) if cells else 0.0, op=MPI.MAX)
    dofs = H.V.dofmap.index_map.size_global * H.V.dofmap.index_map_bs
    return FEMResult(u=H.u, rel_l2_error=rel_l2, h1_error=h1,
                     newton_iterations=int(H.iterations), dofs=int(dofs), h=h,
                     wall_time_s=wall, path=H.path, strategy=chosen,
                     min_hessian_eigenvalue=H.convexity(), h1_length=length,
                     rel_h1_error=rel_h1)


def sequence_resolutions(resolution: int, coarsest: int = 4) -> list[int]:
    """Cells per edge of a mesh sequence ending at ``resolution``: ``ceil(N / 2^k)`` for
    ``k = 0, 1, ...`` while at least ``coarsest``, coarse to fine, e.g. 32 -> [4, 8, 16, 32],
    31 -> [4, 8, 16, 31], 17 -> [5, 9, 17], 24 -> [6, 12, 24], 6 -> [6] (3 would be coarser
    than 4).  The meshes need not be nested: each solution is interpolated onto the next mesh
    (:func:`_interpolate_from`)."""
    if resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution}")
    chain = [resolution]
    while -(-chain[-1] // 2) >= coarsest:
        chain.append(-(-chain[-1] // 2))
    return chain[::-1]


def solve_fem_sequence(
    case: Case,
    meshes,
    **options,
) -> list[FEMResult]:
    """Mesh sequencing: solve on each mesh in turn, from the previous solution.

    Args:
        case: the problem.
        meshes: meshes from coarse to fine (an iterable; e.g. a generator creating them).
        **options: passed to :func:`solve_fem` (not ``initial_guess``).

    Returns:
        One result per mesh.

    Raises:
        FEMSolveError: on the first mesh where Newton fails (earlier results are in its
            ``results`` attribute).
    """
    results: list[FEMResult] = []
    previous = None
    for mesh in meshes:
        try:
            result = solve_fem(case, mesh, initial_guess=previous, **options)
        except FEMSolveError as err:
            err.results = results
            raise
        results.append(result)
        previous = result.u
    return results
