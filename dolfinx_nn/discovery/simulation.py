"""Time integration of ``u_t = sum_k c_k T_k(u)`` with DOLFINx, observed at scattered points.

Used twice: to generate the built-in data sets and to re-simulate a discovered equation.  The
scheme is Crank-Nicolson in time with Lagrange elements in space; each step is a SNES solve
(Newton with a direct solver) and a diverged step raises :class:`~dolfinx_nn.SolverError`.
Dirichlet values are prescribed on the whole boundary.  Terms of order 3 and 4 (KdV,
Kuramoto-Sivashinsky) use a mixed formulation with the second derivatives as extra fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from mpi4py import MPI
from petsc4py import PETSc

import basix.ufl
import dolfinx
import dolfinx.fem.petsc
import dolfinx.geometry
import numpy as np
import scipy.spatial
import ufl

from dolfinx_nn import petsc_problems
from dolfinx_nn.discovery.equation import hessian_pairs, weak_rhs, weak_rhs_mixed
from dolfinx_nn.discovery.library import max_order, parse_term
from dolfinx_nn.errors import SolverError
from dolfinx_nn.meshes import boundary_dofs, boundary_facets, bounding_box
from dolfinx_nn.sampling import rank_rng, sample_boundary

__all__ = [
    "PointEvaluator",
    "boundary_distance",
    "integrate",
    "needs_mixed",
    "random_points_in_mesh",
]

_SNES_OPTIONS = {
    "snes_type": "newtonls",
    "snes_linesearch_type": "none",
    "snes_rtol": 1e-10,
    "snes_atol": 1e-12,
    "snes_max_it": 25,
    "ksp_type": "preonly",
    "pc_type": "lu",
    "pc_factor_mat_solver_type": "mumps",
}


class PointEvaluator:
    """Values of functions on a mesh at points given (identically) on every rank.

    Each point is evaluated by the lowest rank whose cells contain it; the values are summed
    over the ranks, so every rank receives all of them.

    Args:
        mesh: the mesh.
        points: shape (n, gdim), the same on every rank.
    """

    def __init__(self, mesh: dolfinx.mesh.Mesh, points: np.ndarray):
        self.comm = mesh.comm
        self.n = points.shape[0]
        padded = np.zeros((self.n, 3))
        padded[:, : points.shape[1]] = points
        tdim = mesh.topology.dim
        num_cells = mesh.topology.index_map(tdim).size_local
        tree = dolfinx.geometry.bb_tree(mesh, tdim, entities=np.arange(num_cells, dtype=np.int32))
        candidates = dolfinx.geometry.compute_collisions_points(tree, padded)
        colliding = dolfinx.geometry.compute_colliding_cells(mesh, candidates, padded)
        found = np.array([len(colliding.links(i)) > 0 for i in range(self.n)], dtype=bool)
        claim = np.where(found, self.comm.rank, self.comm.size).astype(np.int32)
        owner = np.empty_like(claim)
        self.comm.Allreduce(claim, owner, op=MPI.MIN)
        self.inside = owner < self.comm.size
        mine = np.flatnonzero(owner == self.comm.rank)
        self._index = mine
        self._points = padded[mine]
        self._cells = np.array([colliding.links(int(i))[0] for i in mine], dtype=np.int32)

    def __call__(self, u: dolfinx.fem.Function) -> np.ndarray:
        """``u`` at the points (NaN at points outside the mesh), on every rank."""
        local = np.zeros(self.n)
        if self._index.size:
            local[self._index] = u.eval(self._points, self._cells).reshape(-1)
        values = np.empty_like(local)
        self.comm.Allreduce(local, values, op=MPI.SUM)
        values[~self.inside] = np.nan
        return values


def random_points_in_mesh(
    mesh: dolfinx.mesh.Mesh, n: int, rng: np.random.Generator, max_rounds: int = 50
) -> np.ndarray:
    """``n`` uniformly distributed points inside the mesh (same on every rank for the same rng).

    Points are drawn in the global bounding box and kept when some cell contains them, which
    works for any geometry (holes, curved boundaries).
    """
    gdim = mesh.geometry.dim
    lo, hi = bounding_box(mesh)
    kept: list[np.ndarray] = []
    count = 0
    for _ in range(max_rounds):
        trial = lo + (hi - lo) * rng.random((max(2 * (n - count), 64), gdim))
        inside = PointEvaluator(mesh, trial).inside
        kept.append(trial[inside])
        count += int(inside.sum())
        if count >= n:
            return np.concatenate(kept)[:n]
    raise RuntimeError(f"found only {count} of {n} points inside the mesh")


def boundary_distance(
    mesh: dolfinx.mesh.Mesh, points: np.ndarray, samples: int = 20_000, seed: int = 0
) -> np.ndarray:
    """Distance of each point to the mesh boundary (collective; the same on every rank).

    The boundary is represented by ``samples`` uniform random points on it (gathered on every
    rank), so the distance is exact up to about their spacing.

    Args:
        mesh: an affine mesh.
        points: shape (n, gdim), the same on every rank.
        samples: number of boundary points.
        seed: seed of the boundary points.
    """
    gdim = mesh.geometry.dim
    if points.ndim != 2 or points.shape[1] != gdim:
        raise ValueError(f"points must have shape (n, {gdim}), got {points.shape}")
    local, _ = sample_boundary(mesh, samples, rank_rng(seed, mesh.comm))
    boundary = np.concatenate(mesh.comm.allgather(local))
    distance, _ = scipy.spatial.cKDTree(boundary).query(points)
    return distance


def needs_mixed(coefficients: Mapping[str, float], dim: int) -> bool:
    """Whether a term has derivatives of order 3 or 4 (simulated with Hessian fields)."""
    return max_order([parse_term(n, dim) for n in coefficients]) > 2


def integrate(
    mesh: dolfinx.mesh.Mesh,
    coefficients: Mapping[str, float],
    initial: Callable[[dolfinx.fem.Function], None],
    boundary: Callable[[dolfinx.fem.Function, float], None],
    times: Sequence[float] | np.ndarray,
    observe: Callable[[dolfinx.fem.Function, int], None],
    degree: int = 2,
    steps_per_interval: int = 4,
    prefix: str = "discovery_",
    hessian: Callable[[list[dolfinx.fem.Function], float], None] | None = None,
) -> None:
    """Integrate ``u_t = sum_k c_k T_k(u)`` from ``times[0]`` and observe it at ``times``.

    Terms up to second order use Lagrange elements for ``u`` alone (one second-order factor
    integrated by parts).  Terms of order 3 or 4 use a mixed formulation: the second
    derivatives ``W_ij = u_ij`` are extra Lagrange fields defined weakly by
    ``(W_ij, q) = -((u_i, q_j) + (u_j, q_i)) / 2`` with ``q = 0`` on the boundary, third
    derivatives are ``W_ij,k`` and a fourth-order factor is integrated by parts once
    (:func:`~dolfinx_nn.discovery.equation.weak_rhs_mixed`); ``u`` and ``W`` take Dirichlet
    values on the boundary.

    Args:
        mesh: the domain.
        coefficients: term name -> coefficient (see :mod:`~dolfinx_nn.discovery.library`).
        initial: fills a function with the initial state.
        boundary: ``boundary(g, t)`` fills ``g`` with the Dirichlet values at time ``t``.
        times: observation times (increasing); ``observe(u, k)`` is called at each, including
            the initial one.
        degree: Lagrange degree.
        steps_per_interval: Crank-Nicolson steps between two observation times.
        prefix: PETSc options prefix of the SNES solver.
        hessian: ``hessian(gs, t)`` fills the Dirichlet (and, at ``times[0]``, initial)
            values of the second derivatives, one function per pair of
            :func:`~dolfinx_nn.discovery.equation.hessian_pairs`; needed for terms of order 3
            or 4.
    """
    if steps_per_interval < 1:
        raise ValueError(f"steps_per_interval must be >= 1, got {steps_per_interval}")
    gdim = mesh.geometry.dim
    # constants: the compiled form depends on the terms only, not on the values
    constants = {
        name: dolfinx.fem.Constant(mesh, dolfinx.default_scalar_type(c))
        for name, c in coefficients.items()
    }
    if needs_mixed(coefficients, gdim):
        if hessian is None:
            raise ValueError(
                "terms of order 3 or 4 need boundary values of the second derivatives "
                "(hessian=...)"
            )
        _integrate_mixed(
            mesh, constants, initial, boundary, hessian, times, observe, degree,
            steps_per_interval, prefix,
        )
        return
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree))
    u, u_old, g = (dolfinx.fem.Function(V, name=n) for n in ("u", "u_old", "g"))
    v = ufl.TestFunction(V)
    dt = dolfinx.fem.Constant(mesh, dolfinx.default_scalar_type(1.0))
    rhs = weak_rhs(constants, u, v, gdim, degree)
    rhs_old = weak_rhs(constants, u_old, v, gdim, degree)
    F = (u - u_old) / dt * v * ufl.dx - 0.5 * (rhs + rhs_old) * ufl.dx
    dofs = boundary_dofs(V)
    bc = dolfinx.fem.dirichletbc(g, dofs)
    problem = petsc_problems.NonlinearProblem(
        F, u, bcs=[bc], petsc_options=_SNES_OPTIONS, petsc_options_prefix=prefix
    )
    initial(u)
    u.x.scatter_forward()
    _check_initial(mesh, u)
    observe(u, 0)

    def step(t_new: float) -> None:
        u_old.x.array[:] = u.x.array
        boundary(g, t_new)
        g.x.scatter_forward()
        problem.solve()

    _march(times, steps_per_interval, dt, step, problem, prefix, lambda k: observe(u, k))


def _check_initial(mesh: dolfinx.mesh.Mesh, u: dolfinx.fem.Function) -> None:
    if not mesh.comm.allreduce(bool(np.all(np.isfinite(u.x.array))), op=MPI.LAND):
        raise ValueError("the initial state holds NaN or inf values")


def _march(times, steps_per_interval, dt, step, problem, prefix, observe) -> None:
    """Crank-Nicolson steps between the observation times; a diverged step raises."""
    for k in range(1, len(times)):
        size = (times[k] - times[k - 1]) / steps_per_interval
        dt.value = size
        for s in range(steps_per_interval):
            step(times[k - 1] + (s + 1) * size)
            snes = problem.solver
            reason = snes.getConvergedReason()
            if reason <= 0:
                raise SolverError(
                    "SNES", reason, _reason_name(reason), snes.getIterationNumber(), prefix
                )
        observe(k)


def _integrate_mixed(
    mesh, coefficients, initial, boundary, hessian, times, observe, degree, steps_per_interval,
    prefix,
) -> None:
    gdim = mesh.geometry.dim
    pairs = hessian_pairs(gdim)
    cell = mesh.basix_cell()
    scalar = basix.ufl.element("Lagrange", cell, degree)
    Z = dolfinx.fem.functionspace(mesh, basix.ufl.mixed_element([scalar] * (1 + len(pairs))))
    z, z_old = dolfinx.fem.Function(Z), dolfinx.fem.Function(Z)
    tests = ufl.TestFunctions(Z)
    parts, parts_old = ufl.split(z), ufl.split(z_old)
    dt = dolfinx.fem.Constant(mesh, dolfinx.default_scalar_type(1.0))

    def equations(fields):
        u, ws = fields[0], dict(zip(pairs, fields[1:], strict=True))
        return u, ws

    u, ws = equations(parts)
    u_old, ws_old = equations(parts_old)
    v = tests[0]
    rhs = weak_rhs_mixed(coefficients, u, ws, v, gdim)
    rhs_old = weak_rhs_mixed(coefficients, u_old, ws_old, v, gdim)
    F = (u - u_old) / dt * v * ufl.dx - 0.5 * (rhs + rhs_old) * ufl.dx
    for (i, j), q in zip(pairs, tests[1:], strict=True):
        F += (ws[i, j] * q + 0.5 * (u.dx(i) * q.dx(j) + u.dx(j) * q.dx(i))) * ufl.dx
    spaces = [Z.sub(k).collapse() for k in range(1 + len(pairs))]
    gs = [dolfinx.fem.Function(space) for space, _ in spaces]
    facets = boundary_facets(mesh)
    bcs = []
    for k, (space, _) in enumerate(spaces):
        dofs = dolfinx.fem.locate_dofs_topological((Z.sub(k), space), gdim - 1, facets)
        bcs.append(dolfinx.fem.dirichletbc(gs[k], dofs, Z.sub(k)))
    problem = petsc_problems.NonlinearProblem(
        F, z, bcs=bcs, petsc_options=_SNES_OPTIONS, petsc_options_prefix=prefix
    )
    u_view = dolfinx.fem.Function(spaces[0][0], name="u")

    def fill(target: dolfinx.fem.Function, t: float, first: bool) -> None:
        if first:
            initial(gs[0])
        else:
            boundary(gs[0], t)
        hessian(gs[1:], t)
        for k, (_, dofmap) in enumerate(spaces):
            gs[k].x.scatter_forward()
            if first:
                target.x.array[dofmap] = gs[k].x.array
        target.x.scatter_forward()

    def show(k: int) -> None:
        u_view.x.array[:] = z.x.array[spaces[0][1]]
        u_view.x.scatter_forward()
        observe(u_view, k)

    fill(z, float(times[0]), True)
    _check_initial(mesh, z)
    show(0)

    def step(t_new: float) -> None:
        z_old.x.array[:] = z.x.array
        fill(z, t_new, False)
        problem.solve()

    _march(times, steps_per_interval, dt, step, problem, prefix, show)


def _reason_name(reason: int) -> str:
    names = {v: k for k, v in vars(PETSc.SNES.ConvergedReason).items() if isinstance(v, int)}
    return names.get(reason, str(reason))
