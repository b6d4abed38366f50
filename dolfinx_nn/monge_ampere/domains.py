"""Domains to sample collocation points from: boxes and balls in any dimension, and meshes.

Every domain draws uniform points in its interior and on its boundary.  Under MPI the ``n``
requested points are split over the ranks (each rank gets its own share, from its own random
stream), so a loss summed with :func:`dolfinx_nn.global_sum` sees ``n`` points in total.
Meshes (d = 2, 3; from gmsh/meshio files or DOLFINx) use :mod:`dolfinx_nn.sampling`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mpi4py import MPI

import numpy as np
from numpy.typing import ArrayLike


def local_count(n: int, comm: MPI.Comm) -> int:
    """This rank's share of ``n`` points (shares differ by at most one)."""
    if n < comm.size:
        raise ValueError(f"need at least one point per rank: n = {n} < {comm.size} ranks")
    return n // comm.size + int(comm.rank < n % comm.size)


@dataclass(init=False)
class Box:
    """The box ``[lower, upper]`` in ``R^d`` (the unit cube by default).

    Args:
        dim: dimension ``d``.
        lower, upper: corners ``(d,)`` (default: 0 and 1 on every axis).
        name: the name reported.
    """

    dim: int
    lower: np.ndarray
    upper: np.ndarray
    name: str

    def __init__(
        self, dim: int, lower: ArrayLike | None = None, upper: ArrayLike | None = None,
        name: str = "cube",
    ) -> None:
        if dim < 1:
            raise ValueError(f"dimension must be >= 1, got {dim}")
        self.dim, self.name = dim, name
        self.lower = np.zeros(dim) if lower is None else np.asarray(lower, float)
        self.upper = np.ones(dim) if upper is None else np.asarray(upper, float)
        if np.any(self.upper <= self.lower):
            raise ValueError(f"need lower < upper, got {self.lower}, {self.upper}")

    @property
    def center(self) -> np.ndarray:
        return 0.5 * (self.lower + self.upper)

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.lower, self.upper

    @property
    def volume(self) -> float:
        """``prod(upper - lower)``."""
        return float(np.prod(self.upper - self.lower))

    def sample_interior(self, n: int, rng: np.random.Generator, comm: MPI.Comm) -> np.ndarray:
        m = local_count(n, comm)
        return self.lower + (self.upper - self.lower) * rng.random((m, self.dim))

    def sample_boundary(self, n: int, rng: np.random.Generator, comm: MPI.Comm) -> np.ndarray:
        m = local_count(n, comm)
        extent = self.upper - self.lower
        areas = np.array([np.prod(np.delete(extent, i)) for i in range(self.dim)])
        axis = rng.choice(self.dim, size=m, p=areas / areas.sum())
        side = rng.integers(0, 2, size=m)
        points = self.lower + extent * rng.random((m, self.dim))
        rows = np.arange(m)
        points[rows, axis] = np.where(side == 0, self.lower[axis], self.upper[axis])
        return points


@dataclass(init=False)
class Ball:
    """The ball of radius ``radius`` around ``center`` (the unit ball by default).

    Args:
        dim: dimension ``d``.
        center: centre ``(d,)`` (default: the origin).
        radius: radius (> 0).
        name: the name reported.
    """

    dim: int
    center: np.ndarray
    radius: float
    name: str

    def __init__(
        self, dim: int, center: ArrayLike | None = None, radius: float = 1.0, name: str = "ball"
    ) -> None:
        if dim < 1 or radius <= 0:
            raise ValueError(f"need dim >= 1 and radius > 0, got {dim}, {radius}")
        self.dim, self.radius, self.name = dim, radius, name
        self.center = np.zeros(dim) if center is None else np.asarray(center, float)

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.center - self.radius, self.center + self.radius

    @property
    def volume(self) -> float:
        """``pi^(d/2) / Gamma(d/2 + 1) radius^d``."""
        d = self.dim
        return float(math.pi ** (d / 2) / math.gamma(d / 2 + 1) * self.radius**d)

    def _directions(self, m: int, rng: np.random.Generator) -> np.ndarray:
        g = rng.standard_normal((m, self.dim))
        return g / np.linalg.norm(g, axis=1, keepdims=True)

    def sample_interior(self, n: int, rng: np.random.Generator, comm: MPI.Comm) -> np.ndarray:
        m = local_count(n, comm)
        radii = self.radius * rng.random(m) ** (1.0 / self.dim)
        return self.center + radii[:, None] * self._directions(m, rng)

    def sample_boundary(self, n: int, rng: np.random.Generator, comm: MPI.Comm) -> np.ndarray:
        m = local_count(n, comm)
        return self.center + self.radius * self._directions(m, rng)


def mesh_bounds(mesh) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box ``(lower, upper)`` of a distributed mesh (collective)."""
    dim = mesh.topology.dim
    x = mesh.geometry.x[:, :dim]
    lo = x.min(axis=0) if len(x) else np.full(dim, np.inf)
    hi = x.max(axis=0) if len(x) else np.full(dim, -np.inf)
    lower, upper = np.empty(dim), np.empty(dim)
    mesh.comm.Allreduce(np.ascontiguousarray(lo, dtype=float), lower, op=MPI.MIN)
    mesh.comm.Allreduce(np.ascontiguousarray(hi, dtype=float), upper, op=MPI.MAX)
    return lower, upper


class MeshDomain:
    """The domain covered by a DOLFINx mesh (points from :mod:`dolfinx_nn.sampling`).

    Args:
        mesh: a ``dolfinx.mesh.Mesh``; its bounding box centre is the domain's ``center``.
        name: label for reports (e.g. the mesh file).
    """

    def __init__(self, mesh, name: str = "mesh"):
        self.mesh = mesh
        self.name = name
        self.dim = mesh.topology.dim
        self.lower, self.upper = mesh_bounds(mesh)
        from dolfinx_nn.meshes import mesh_volume

        #: the mesh's volume (area in 2D), summed over the ranks
        self.volume = mesh_volume(mesh)

    @property
    def center(self) -> np.ndarray:
        return 0.5 * (self.lower + self.upper)

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.lower, self.upper

    def _check(self, comm: MPI.Comm) -> None:
        if comm.size != self.mesh.comm.size:
            raise ValueError("sampling communicator must be the mesh's communicator")

    def sample_interior(self, n: int, rng: np.random.Generator, comm: MPI.Comm) -> np.ndarray:
        from dolfinx_nn.sampling import sample_interior

        self._check(comm)
        return np.asarray(sample_interior(self.mesh, n, rng))[:, : self.dim]

    def sample_boundary(self, n: int, rng: np.random.Generator, comm: MPI.Comm) -> np.ndarray:
        from dolfinx_nn.sampling import sample_boundary

        self._check(comm)
        points, _ = sample_boundary(self.mesh, n, rng)
        return np.asarray(points)[:, : self.dim]


#: domain name -> constructor taking the dimension
SHAPES = {"cube": Box, "ball": Ball}


def make_domain(spec: str, dim: int, comm: MPI.Comm = MPI.COMM_WORLD, resolution: int = 16):
    """A domain from a name (``"cube"``: unit cube, ``"ball"``: unit ball) or a mesh file.

    Args:
        spec: ``"cube"``, ``"ball"`` or a mesh file readable by :mod:`dolfinx_nn.meshes`.
        dim: space dimension (must match the mesh for files).
        comm: communicator of the mesh.
        resolution: passed to :func:`dolfinx_nn.meshes.create_mesh` for mesh files.
    """
    if spec in SHAPES:
        return SHAPES[spec](dim)
    if "." not in spec:
        raise ValueError(
            f"unknown domain {spec!r}; choose one of: {', '.join(SHAPES)}, or a mesh file"
        )
    from dolfinx_nn.meshes import create_mesh

    mesh = create_mesh(comm, spec, resolution)
    if mesh.geometry.dim != dim and mesh.topology.dim != dim:
        raise ValueError(f"mesh {spec!r} is {mesh.topology.dim}-dimensional, but d = {dim}")
    return MeshDomain(mesh, name=spec)


def as_sequence(a: Sequence[float] | np.ndarray) -> list[float]:
    """Plain list of floats (for formulas and JSON)."""
    return [float(v) for v in np.asarray(a).ravel()]
