"""Time integration of ``u_t = sum_k c_k T_k(u)`` with DOLFINx, observed at scattered points.

Used twice: to generate the built-in data sets and to re-simulate a discovered equation.  The
scheme is Crank-Nicolson in time with Lagrange elements in space; each step is a SNES solve
(Newton with a direct solver) and a diverged step raises :class:`~dolfinx_nn.SolverError`.
Dirichlet values are prescribed on the whole boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from mpi4py import MPI
from petsc4py import PETSc

import dolfinx
import dolfinx.fem.petsc
import dolfinx.geometry
import numpy as np
import scipy.spatial
import ufl

from dolfinx_nn.discovery.equation import weak_rhs
from dolfinx_nn.errors import SolverError
from dolfinx_nn import petsc_problems
from dolfinx_nn.meshes import boundary_dofs, bounding_box
from dolfinx_nn.sampling import rank_rng, sample_boundary

__all__ = ["PointEvaluator", "boundary_distance", "integrate", "random_points_in_mesh"]

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
        self._cells = np.array([colliding.links(i)[0] for i in mine], dtype=np.int32)

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


def integrate(
    mesh: dolfinx.mesh.Mesh,
    coefficients: Mapping[str, float],
    initial: Callable[[dolfinx.fem.Function], None],
    boundary: Callable[[dolfinx.fem.Function, float], None],
    times: Sequence[float],
    observe: Callable[[dolfinx.fem.Function, int], None],
    degree: int = 2,
    steps_per_interval: int = 4,
    prefix: str = "discovery_",
) -> None:
    """Integrate ``u_t = sum_k c_k T_k(u)`` from ``times[0]`` and observe it at ``times``.

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
    """
    if steps_per_interval < 1:
        raise ValueError(f"steps_per_interval must be >= 1, got {steps_per_interval}")
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree))
    u, u_old, g = (dolfinx.fem.Function(V, name=n) for n in ("u", "u_old", "g"))
    v = ufl.TestFunction(V)
    dt = dolfinx.fem.Constant(mesh, PETSc.ScalarType(1.0))
    gdim = mesh.geometry.dim
    rhs = weak_rhs(coefficients, u, v, gdim, degree)
    rhs_old = weak_rhs(coefficients, u_old, v, gdim, degree)
    F = (u - u_old) / dt * v * ufl.dx - 0.5 * (rhs + rhs_old) * ufl.dx
    dofs = boundary_dofs(V)
    bc = dolfinx.fem.dirichletbc(g, dofs)
    problem = petsc_problems.NonlinearProblem(
        F, u, bcs=[bc], petsc_options=_SNES_OPTIONS, petsc_options_prefix=prefix
    )
    initial(u)
    u.x.scatter_forward()
    if not mesh.comm.allreduce(bool(np.all(np.isfinite(u.x.array))), op=MPI.LAND):
        raise ValueError("the initial state holds NaN or inf values")
    observe(u, 0)
    for k in range(1, len(times)):
        step = (times[k] - times[k - 1]) / steps_per_interval
        dt.value = step
        for s in range(steps_per_interval):
            t_new = times[k - 1] + (s + 1) * step
            u_old.x.array[:] = u.x.array
            boundary(g, t_new)
            g.x.scatter_forward()
            problem.solve()
            snes = problem.solver
            reason = snes.getConvergedReason()
            if reason <= 0:
                raise SolverError(
                    "SNES", reason, _reason_name(reason), snes.getIterationNumber(), prefix
                )
        observe(u, k)


def _reason_name(reason: int) -> str:
    names = {v: k for k, v in vars(PETSc.SNES.ConvergedReason).items() if isinstance(v, int)}
    return names.get(reason, str(reason))
