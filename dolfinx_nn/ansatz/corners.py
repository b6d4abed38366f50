"""Re-entrant corners of a 2D mesh and the singular functions that fit them.

Near a corner of interior angle ``omega > pi`` the solutions of Poisson's equation that vanish
on both edges behave like ``r^(pi/omega) sin(pi theta/omega)`` (``r``, ``theta`` polar
coordinates about the corner, ``theta`` measured from one edge into the domain): a smooth
function that vanishes on both edges cannot follow them, since its leading Taylor term is the
product of the two edge lines, which changes sign inside the domain.  A least-squares fit of
the torsion function by smooth features therefore goes negative next to such a corner (the
fitted distance ``D`` of the ansatz vanishes inside the domain there).  The classical remedy
adds one singular function per corner to the basis (Fix, Gulati & Wakoff, "On the use of
singular functions with finite element approximations", J. Comput. Phys. 13 (1973) 209-228;
Strang & Fix, *An Analysis of the Finite Element Method*, 1973, ch. 8):

    s(x) = r^a sin(a theta) chi(r / R),   a = pi / omega,

with a cutoff ``chi`` (0 for ``r >= R``, a quintic in ``r`` below, 1 at the corner with
vanishing first and second derivatives there and at ``R``, so ``s`` is twice continuously
differentiable away from the corner).  ``s`` vanishes on both (straight) edges, is positive
inside, and is harmonic where ``chi = 1`` (with a plateau, :class:`CornerFunctions`
``plateau > 0``; by default ``lap s = O(r^(a + 1))`` near the corner).

The cutoff is as wide as the geometry allows (``R`` the distance from the corner to the rest of
the boundary, no plateau): its Laplacian, which the smooth features of a fit must cancel,
grows like the inverse square of the width of the transition.  On the disk minus a rotated
square (:mod:`~dolfinx_nn.ansatz.gallery`, ``R = 0.575``), one rank, seed 0, the network's
relative L2 error was 3.1e-2 with ``R`` half that distance and ``chi = 1`` up to ``R/2``,
1.6e-2 with the full ``R`` and ``chi = 1`` up to ``R/2``, 9.6e-3 with ``chi = 1`` up to
``R/4``, and 3.8e-3 without a plateau (without the corner functions: 4.5e-2); see
``docs/ansatz.md``, section *Re-entrant corners*.

:func:`reentrant_corners` finds the corners of a mesh's boundary, :class:`CornerFunctions` is
the torch module of their singular functions (values, and derivatives by autograd, finite at
every point but the corners themselves).  Only 2D: the re-entrant edges of 3D domains (whose
singular functions are those of the 2D cross-section, times a function along the edge) are not
treated, and :func:`reentrant_corners` returns no corners for 1D and 3D meshes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mpi4py import MPI

import dolfinx
import numpy as np
import torch
from dolfinx.cpp.mesh import cell_num_entities

from dolfinx_nn.meshes import boundary_facets

#: A boundary vertex is a re-entrant corner when its interior angle exceeds ``pi`` by more than
#: this (radians)...
MIN_EXCESS = 0.1

#: ... and the boundary turns there (by ``omega - pi``) more than this factor times as much as
#: at each of its two neighbouring boundary vertices.  A polygon that approximates a curve
#: turns by about the same angle at every vertex (a circle of 24 segments by 0.26 rad each):
#: that is a curve, not a corner, and the solutions there are smooth.  On the gallery meshes
#: (:mod:`~dolfinx_nn.ansatz.gallery`) and the built-in square with a hole (resolutions 3 to
#: 12) no vertex of a curve turns by more than 1.4 times as much as a neighbour (the concave
#: lobes of the flower, whose vertices gmsh spaces unevenly; the circles: 1.0); at the
#: corners of straight edges the neighbours do not turn at all.
CONCENTRATION = 3.0

#: The cutoff radius ``R`` of a corner is this fraction of the distance from the corner to the
#: nearest boundary facet that is not on one of its two straight edges: at most 1, so that
#: ``s`` vanishes on the whole boundary and the branch cut (in the exterior wedge) stays
#: outside the domain within ``R``.
RADIUS_FRACTION = 1.0

#: Default plateau of the cutoff: ``chi = 1`` for ``r <= PLATEAU * R`` (0: none, the widest
#: transition; see the module docstring for the measurements).
PLATEAU = 0.0

#: Facets along an edge count as one straight edge while their directions differ by less than
#: this (radians), plus what the precision of the coordinates allows (:data:`COORDINATE_BITS`).
STRAIGHT = 1e-6

#: Coordinates are taken to be exact to ``2^-COORDINATE_BITS`` of the largest ``|x|``: single
#: precision (mesh files that store float32), and the grid of the canonical coordinates
#: (:mod:`~dolfinx_nn.ansatz.units`).  A facet of length ``h`` then has a direction exact to
#: about ``2^-23 max |x| / h`` only (``1e-5`` for a cell of ``1e-2`` of the extent), far more
#: than :data:`STRAIGHT`: without this slack a straight edge ended after its first facet, and
#: the cutoff radius shrank to one cell (disk minus a square, canonical coordinates:
#: ``R = 0.025`` instead of ``0.3``, ``min D / max D = -4.6e-2``).
COORDINATE_BITS = 23


@dataclass(frozen=True, eq=False)
class ReentrantCorner:
    """A re-entrant corner of a 2D boundary.

    Attributes:
        vertex: position ``(2,)``.
        angle: interior angle ``omega`` in radians (``pi < omega < 2 pi``), between the two
            boundary facets at the corner.
        bisector: unit vector ``(2,)`` along the bisector of the interior angle, into the
            domain.
        radius: cutoff radius ``R`` (units of the mesh).
    """

    vertex: np.ndarray
    angle: float
    bisector: np.ndarray
    radius: float

    @property
    def exponent(self) -> float:
        """``a = pi / omega``, between 1/2 and 1."""
        return float(np.pi / self.angle)

    def as_dict(self) -> dict[str, float | list[float]]:
        """For ``results.json``: position, angle in degrees, exponent and cutoff radius."""
        return {"vertex": [float(v) for v in self.vertex],
                "angle_degrees": float(np.degrees(self.angle)),
                "exponent": self.exponent, "radius": float(self.radius)}


def _gather(comm: MPI.Comm, local: np.ndarray, shape: tuple[int, ...], dtype) -> np.ndarray:
    parts = comm.allgather(np.asarray(local, dtype=dtype).reshape(-1, *shape))
    return np.concatenate([np.zeros((0, *shape), dtype=dtype), *parts])


def _vertex_coordinates(mesh: dolfinx.mesh.Mesh, vertices: np.ndarray) -> np.ndarray:
    """Coordinates ``(n, gdim)`` of local vertices (their geometry nodes)."""
    mesh.topology.create_connectivity(0, mesh.topology.dim)
    nodes = dolfinx.mesh.entities_to_geometry(mesh, 0, np.asarray(vertices, dtype=np.int32))
    return mesh.geometry.x[nodes.reshape(-1), : mesh.geometry.dim]


def _interior_angles(mesh: dolfinx.mesh.Mesh, boundary: np.ndarray) -> dict[int, float]:
    """Sum over all cells of each global boundary vertex's angle in the cell (collective).

    Each rank adds the angles of its owned cells (triangles or quadrilaterals: the angle
    between the two cell edges at the vertex); the sums are gathered, so every rank gets the
    same values.
    """
    tdim = mesh.topology.dim
    for a, b in ((tdim, 0), (tdim, 1), (1, 0)):
        mesh.topology.create_connectivity(a, b)
    owned = mesh.topology.index_map(tdim).size_local
    cell = mesh.topology.cell_type
    c2v = _table(mesh.topology.connectivity(tdim, 0), cell_num_entities(cell, 0))[:owned]
    c2e = _table(mesh.topology.connectivity(tdim, 1), cell_num_entities(cell, 1))[:owned]
    e2v = _table(mesh.topology.connectivity(1, 0), 2)
    vmap = mesh.topology.index_map(0)
    n_vertices = vmap.size_local + vmap.num_ghosts
    x = _vertex_coordinates(mesh, np.arange(n_vertices, dtype=np.int32))
    global_ids = vmap.local_to_global(np.arange(n_vertices, dtype=np.int32))
    ids, angles = [], []
    cell_edges = e2v[c2e]  # (cells, edges, 2)
    for i in range(c2v.shape[1]):
        v = c2v[:, i]
        on_boundary = np.isin(global_ids[v], boundary)
        if not np.any(on_boundary):
            continue
        v, edges = v[on_boundary], cell_edges[on_boundary]
        touches = (edges == v[:, None, None]).any(axis=2)  # two edges of the cell per vertex
        other = np.where(edges[:, :, 0] == v[:, None], edges[:, :, 1], edges[:, :, 0])
        ends = other[touches].reshape(len(v), 2)
        t1 = x[ends[:, 0]] - x[v]
        t2 = x[ends[:, 1]] - x[v]
        cos = (t1 * t2).sum(axis=1) / (np.linalg.norm(t1, axis=1) * np.linalg.norm(t2, axis=1))
        ids.append(global_ids[v])
        angles.append(np.arccos(np.clip(cos, -1.0, 1.0)))
    all_ids = _gather(mesh.comm, np.concatenate([np.zeros(0, np.int64), *ids]), (), np.int64)
    all_angles = _gather(mesh.comm, np.concatenate([np.zeros(0), *angles]), (), np.float64)
    unique, index = np.unique(all_ids, return_inverse=True)
    sums = np.bincount(index, weights=all_angles, minlength=len(unique))
    return {int(u): float(s) for u, s in zip(unique, sums, strict=True)}


def _table(connectivity, width: int) -> np.ndarray:
    """A connectivity of one entity type as an array ``(entities, width)``; ``width`` (the
    links per entity) is given, because a rank without entities cannot infer it."""
    count = len(connectivity.offsets) - 1
    return connectivity.array.reshape(count, width)


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances ``(n,)`` from point ``p`` to the segments ``a[i] b[i]``."""
    ab = b - a
    t = np.clip(((p - a) * ab).sum(axis=1) / np.maximum((ab * ab).sum(axis=1), 1e-300), 0, 1)
    return np.linalg.norm(a + t[:, None] * ab - p, axis=1)


def reentrant_corners(
    mesh: dolfinx.mesh.Mesh,
    *,
    min_excess: float = MIN_EXCESS,
    concentration: float = CONCENTRATION,
    radius_fraction: float = RADIUS_FRACTION,
) -> list[ReentrantCorner]:
    """The re-entrant corners of a 2D mesh's boundary (collective; the same list on every rank).

    A boundary vertex is a re-entrant corner when its interior angle ``omega`` (the sum of its
    angles in the cells around it) exceeds ``pi`` by more than ``min_excess``, and the boundary
    turns there (``omega - pi``) by more than ``concentration`` times as much as at either
    neighbouring boundary vertex (a discretised curve turns evenly).  The small boundary data
    (facets, the angles of boundary vertices) are gathered on every rank, and the corners
    sorted by position, so 1 and 2 ranks give the same list.

    The cutoff radius ``R`` is ``radius_fraction`` times the distance from the corner to the
    nearest boundary facet that does not lie on one of the corner's two straight edges (walked
    facet by facet while the direction stays within :data:`STRAIGHT`).  Corners between curved
    edges are found too, but their straight edges are one facet long, so ``R`` is about half
    the mesh size there.

    Args:
        mesh: an affine mesh (only its vertices are used).
        min_excess: smallest ``omega - pi`` (radians) of a corner.
        concentration: smallest ratio of the turning at a corner to that at its neighbours.
        radius_fraction: ``R`` relative to the distance to the rest of the boundary (at most
            1).

    Returns:
        The corners, sorted by ``(x, y)``; empty for 1D and 3D meshes (re-entrant edges in 3D
        are out of scope) and for meshes without re-entrant corners.

    Raises:
        ValueError: ``radius_fraction`` outside ``(0, 1]`` (on every rank).
    """
    if not 0.0 < radius_fraction <= 1.0:
        raise ValueError(f"radius_fraction must be in (0, 1], got {radius_fraction!r}")
    if mesh.topology.dim != 2 or mesh.geometry.dim != 2:
        return []
    comm = mesh.comm
    facets = boundary_facets(mesh)
    mesh.topology.create_connectivity(1, 0)
    f2v = _table(mesh.topology.connectivity(1, 0), 2)
    local = f2v[facets] if len(facets) else np.zeros((0, 2), np.int32)
    ids = mesh.topology.index_map(0).local_to_global(local.reshape(-1)).reshape(-1, 2)
    coords = _vertex_coordinates(mesh, local.reshape(-1)).reshape(-1, 2, 2)
    ids = _gather(comm, ids, (2,), np.int64)
    coords = _gather(comm, coords, (2, 2), np.float64)
    ids, first = np.unique(np.sort(ids, axis=1), axis=0, return_index=True)
    coords = coords[first]
    if len(ids) == 0:
        return []
    vertex_ids, index = np.unique(ids.reshape(-1), return_inverse=True)
    edges = index.reshape(-1, 2)  # boundary facets as pairs of positions in vertex_ids
    position = np.zeros((len(vertex_ids), 2))
    position[edges.reshape(-1)] = coords.reshape(-1, 2)
    angles = _interior_angles(mesh, vertex_ids)
    omega = np.array([angles.get(int(v), 0.0) for v in vertex_ids])
    neighbours: list[list[int]] = [[] for _ in vertex_ids]
    for a, b in edges:
        neighbours[a].append(int(b))
        neighbours[b].append(int(a))
    turning = omega - np.pi
    precision = math.ldexp(float(np.abs(position).max()), -COORDINATE_BITS)
    corners = []
    for v in np.flatnonzero(turning > min_excess):
        if len(neighbours[v]) != 2:  # not a manifold boundary point
            continue
        if np.any(concentration * np.abs(turning[neighbours[v]]) >= turning[v]):
            continue
        p = position[v]
        t = [(position[n] - p) / np.linalg.norm(position[n] - p) for n in neighbours[v]]
        angle = float(2.0 * np.pi - np.arccos(np.clip(float(t[0] @ t[1]), -1.0, 1.0)))
        if angle <= np.pi + min_excess:  # the cells and the facets disagree: not a corner
            continue
        bisector = -(t[0] + t[1]) / np.linalg.norm(t[0] + t[1])
        straight = set()
        for n, direction in zip(neighbours[v], t, strict=True):
            previous, current = int(v), n
            first_length = float(np.linalg.norm(position[n] - p))
            straight.add((min(previous, current), max(previous, current)))
            while True:
                ahead = [m for m in neighbours[current] if m != previous]
                if len(ahead) != 1 or ahead[0] == v:
                    break
                step = position[ahead[0]] - position[current]
                cross = direction[0] * step[1] - direction[1] * step[0]
                length = float(np.linalg.norm(step))
                # the endpoints of each facet are exact to `precision`: the first facet's
                # direction to 2 precision / first, the step's offset across it to 2 precision
                slack = 4.0 * precision * (1.0 + length / first_length)
                if step @ direction <= 0.0 or abs(cross) > STRAIGHT * length + slack:
                    break
                previous, current = current, ahead[0]
                straight.add((min(previous, current), max(previous, current)))
        others = np.array([(min(a, b), max(a, b)) not in straight for a, b in edges])
        if not np.any(others):
            continue
        rest = _segment_distance(p, position[edges[others, 0]], position[edges[others, 1]])
        corners.append(ReentrantCorner(p.copy(), angle, bisector,
                                       float(radius_fraction * rest.min())))
    return sorted(corners, key=lambda c: (float(c.vertex[0]), float(c.vertex[1])))


def cutoff(
    rho: torch.Tensor, plateau: float = PLATEAU
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``chi(rho)`` and its first two derivatives: 1 up to ``plateau``, 0 from 1 on.

    The quintic ``1 - (10 t^3 - 15 t^4 + 6 t^5)``, ``t = (rho - plateau) / (1 - plateau)``
    clamped to ``[0, 1]``, whose first and second derivatives vanish at both ends (``C^2``).
    """
    if not 0.0 <= plateau < 1.0:
        raise ValueError(f"plateau must be in [0, 1), got {plateau!r}")
    width = 1.0 - plateau
    t = torch.clamp((rho - plateau) / width, 0.0, 1.0)
    chi = 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t**2)
    d1 = -30.0 * t**2 * (1.0 - t) ** 2 / width
    d2 = -60.0 * t * (1.0 - t) * (1.0 - 2.0 * t) / width**2
    return chi, d1, d2


class CornerFunctions(torch.nn.Module):
    """The singular functions ``r^(j a) sin(j a theta) chi(r / R)`` of re-entrant corners.

    ``j = 1 .. terms`` per corner (``j = 1``: the leading singular function; the next ones are
    the further harmonic terms of the expansion about the corner, all vanishing on both
    edges).  In coordinates along the interior bisector (``psi`` in ``(-pi, pi]`` the angle
    from it, ``theta = psi + omega / 2``) the branch cut of ``atan2`` lies on the exterior
    bisector, outside the domain.  At the corner itself (``r = 0``) the value is 0 and the
    (infinite) derivatives are returned as 0; everywhere else autograd gives the exact
    derivatives.

    Args:
        corners: the corners (:func:`reentrant_corners`), at least one.
        terms: functions per corner (>= 1).
        plateau: ``chi = 1`` for ``r <= plateau * R`` (:func:`cutoff`).

    Raises:
        ValueError: no corners, ``terms < 1`` or ``plateau`` outside ``[0, 1)``.
    """

    vertex: torch.Tensor
    bisector: torch.Tensor
    half_angle: torch.Tensor
    exponent: torch.Tensor
    radius: torch.Tensor

    def __init__(
        self, corners: Sequence[ReentrantCorner], terms: int = 1, plateau: float = PLATEAU
    ) -> None:
        super().__init__()
        if not corners:
            raise ValueError("CornerFunctions needs at least one corner, got none")
        if terms < 1:
            raise ValueError(f"terms must be >= 1 (functions per corner), got {terms}")
        if not 0.0 <= plateau < 1.0:
            raise ValueError(f"plateau must be in [0, 1), got {plateau!r}")
        self.corners, self.terms, self.plateau = list(corners), int(terms), float(plateau)
        # one column per (corner, term), corner by corner
        columns = [(c, j) for c in corners for j in range(1, terms + 1)]
        self.register_buffer("vertex", torch.tensor(np.array([c.vertex for c, _ in columns])))
        self.register_buffer("bisector",
                             torch.tensor(np.array([c.bisector for c, _ in columns])))
        self.register_buffer("half_angle", torch.tensor([0.5 * c.angle for c, _ in columns],
                                                        dtype=torch.float64))
        self.register_buffer("exponent", torch.tensor([j * c.exponent for c, j in columns],
                                                      dtype=torch.float64))
        self.register_buffer("radius", torch.tensor([c.radius for c, _ in columns],
                                                    dtype=torch.float64))

    def __len__(self) -> int:
        """The number of functions (columns): corners times terms."""
        return len(self.corners) * self.terms

    def _polar(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(r, psi, nonzero)`` per point and column, shape ``(n, k)`` each (``r > 0`` safe)."""
        d = x[:, None, :2] - self.vertex[None]  # (n, k, 2)
        u = (d * self.bisector[None]).sum(dim=2)
        w = self.bisector[None, :, 0] * d[:, :, 1] - self.bisector[None, :, 1] * d[:, :, 0]
        r2 = u**2 + w**2
        nonzero = r2 > 0.0
        one = torch.ones_like(r2)
        r = torch.sqrt(torch.where(nonzero, r2, one))
        psi = torch.atan2(torch.where(nonzero, w, 0.0 * one), torch.where(nonzero, u, one))
        return r, psi, nonzero

    def singular(self, x: torch.Tensor) -> torch.Tensor:
        """``r^(j a) sin(j a theta)`` without the cutoff, shape ``(n, k)`` (harmonic for
        ``r > 0``)."""
        r, psi, nonzero = self._polar(x)
        s = r**self.exponent * torch.sin(self.exponent * (psi + self.half_angle))
        return torch.where(nonzero, s, torch.zeros_like(s))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The functions at points ``(n, d)``, shape ``(n, k)`` (only the first two coordinates
        enter, so time may follow)."""
        r, _, _ = self._polar(x)
        chi, _, _ = cutoff(r / self.radius, self.plateau)
        return self.singular(x) * chi

    @torch.no_grad()
    def laplacian(self, x: torch.Tensor) -> torch.Tensor:
        """Laplacians ``(n, k)`` of the functions, analytically (the rows of the fits).

        ``lap (s chi) = s (chi''/R^2 + (2 e + 1) chi' / (R r))`` for ``s = r^e sin(e theta)``,
        since ``s`` is harmonic and ``chi`` radial; 0 at the corner itself.
        """
        r, _, nonzero = self._polar(x)
        _, d1, d2 = cutoff(r / self.radius, self.plateau)
        factor = d2 / self.radius**2 + (2.0 * self.exponent + 1.0) * d1 / (self.radius * r)
        return torch.where(nonzero, self.singular(x) * factor, torch.zeros_like(r))
