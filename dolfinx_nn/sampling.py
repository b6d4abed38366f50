"""Uniform random points in a distributed mesh and on its boundary.

``n`` is always the *global* number of points.  Each rank samples in the cells (facets) it owns;
its share of ``n`` is proportional to its owned volume (area) and the shares add up to exactly
``n`` (largest-remainder rounding, the same on every rank).  Inside a rank, a cell is chosen with
probability proportional to its volume and a point is placed in it uniformly with the barycentric
construction (normalised exponential variates are uniform on the simplex).

Supported cells: intervals, triangles, tetrahedra with affine (degree-1) geometry, and
quadrilaterals and hexahedra, which are split into two triangles and six tetrahedra (exact when
the faces of the hexahedra are planar, as in box meshes).  Curved (degree > 1) geometries are
refused with a ``ValueError``.

Random streams: pass a different generator on each rank, e.g. ``rank_rng(seed, comm)``, which
spawns independent streams from one seed with :meth:`numpy.random.SeedSequence.spawn`; the
results are then reproducible for a fixed seed and number of ranks.

Example::

    rng = rank_rng(1234, mesh.comm)
    x = sample_interior(mesh, 10_000, rng)           # (n_local, gdim)
    xb, normals = sample_boundary(mesh, 1_000, rng)  # points and outward unit normals
"""

from __future__ import annotations

import math

from mpi4py import MPI

import dolfinx.cpp
import dolfinx.mesh
import numpy as np

from dolfinx_nn.parallel import raise_on_all_ranks

__all__ = ["global_shares", "rank_rng", "sample_boundary", "sample_interior"]

#: How a (facet or cell) of a given type splits into simplices: local vertex indices.
_SIMPLICES: dict[str, np.ndarray] = {
    "point": np.array([[0]]),
    "interval": np.array([[0, 1]]),
    "triangle": np.array([[0, 1, 2]]),
    "tetrahedron": np.array([[0, 1, 2, 3]]),
    "quadrilateral": np.array([[0, 1, 3], [0, 3, 2]]),
    "hexahedron": np.array(
        [[0, 1, 3, 7], [0, 1, 5, 7], [0, 2, 3, 7], [0, 2, 6, 7], [0, 4, 5, 7], [0, 4, 6, 7]]
    ),
}
_FACET_TYPE = {
    "interval": "point",
    "triangle": "interval",
    "quadrilateral": "interval",
    "tetrahedron": "triangle",
    "hexahedron": "quadrilateral",
}


def rank_rng(seed: int | None, comm: MPI.Comm = MPI.COMM_WORLD) -> np.random.Generator:
    """A generator whose stream is independent of those of the other ranks of ``comm``."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(comm.size)[comm.rank])


def global_shares(n: int, weight: float, comm: MPI.Comm) -> np.ndarray:
    """Split ``n`` over the ranks of ``comm`` proportionally to their ``weight`` (collective).

    Returns:
        The shares of all ranks (identical on every rank); they sum to ``n``.
    """
    weights = np.asarray(comm.allgather(float(weight)))
    total = weights.sum()
    if total <= 0.0:
        raise ValueError("cannot sample: the selected cells or facets have zero total measure")
    exact = n * weights / total
    shares = np.floor(exact).astype(np.int64)
    remainder = n - int(shares.sum())
    order = np.lexsort((np.arange(len(weights)), -(exact - shares)))  # ties: lowest rank first
    shares[order[:remainder]] += 1
    return shares


def _check_request(
    mesh: dolfinx.mesh.Mesh, n: int, rng: np.random.Generator, *, boundary: bool
) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n (global number of points) must be a non-negative int, got {n!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (e.g. rank_rng(seed, comm)), got {type(rng)}"
        )
    geometry = mesh.geometry
    if boundary and geometry.dim != mesh.topology.dim:
        raise ValueError(
            "boundary sampling needs gdim == tdim (outward normals), got a "
            f"{mesh.topology.dim}D mesh in {geometry.dim}D"
        )
    num_vertices = dolfinx.cpp.mesh.cell_num_vertices(mesh.topology.cell_type)
    if geometry.dofmaps[0].shape[1] != num_vertices:
        raise ValueError(
            "sampling supports affine (degree-1) geometry only; this mesh has "
            f"{geometry.dofmaps[0].shape[1]} geometry nodes per {mesh.topology.cell_type.name} cell"
        )


def _entity_indices(
    given: np.ndarray | None, default: np.ndarray, index_map, what: str
) -> np.ndarray:
    """Validated owned entity indices; ghosts are dropped because their owner samples them."""
    if given is None:
        return default
    given = np.asarray(given)
    if given.ndim != 1 or (given.size and not np.issubdtype(given.dtype, np.integer)):
        raise TypeError(f"{what} must be a 1D integer array of local {what} indices")
    num_local = index_map.size_local + index_map.num_ghosts
    bad = given[(given < 0) | (given >= num_local)]
    if bad.size:
        raise ValueError(
            f"{what} index {int(bad[0])} is out of range: this rank has {num_local} {what}"
        )
    return np.unique(given[given < index_map.size_local]).astype(np.int32)


def _simplex_measure(vertices: np.ndarray) -> np.ndarray:
    """Measures of k-simplices given as (num, k + 1, gdim) vertex arrays (points count as 1)."""
    k = vertices.shape[1] - 1
    if k == 0:
        return np.ones(vertices.shape[0])
    edges = vertices[:, 1:, :] - vertices[:, :1, :]
    gram = np.einsum("nig,njg->nij", edges, edges)
    return np.sqrt(np.abs(np.linalg.det(gram))) / math.factorial(k)


def _sample_simplices(
    vertices: np.ndarray, measures: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` uniform points in the union of the simplices; returns points and simplex ids."""
    gdim = vertices.shape[2]
    if count == 0:
        return np.empty((0, gdim)), np.empty(0, dtype=np.int64)
    chosen = rng.choice(len(measures), size=count, p=measures / measures.sum())
    weights = rng.exponential(size=(count, vertices.shape[1]))
    weights /= weights.sum(axis=1, keepdims=True)
    points = np.einsum("nk,nkg->ng", weights, vertices[chosen])
    return points, chosen


def _split(node_ids: np.ndarray, entity_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Node ids of the simplices of each entity and the entity each simplex belongs to."""
    local = _SIMPLICES[entity_type]
    simplices = node_ids[:, local].reshape(-1, local.shape[1])
    owner = np.repeat(np.arange(node_ids.shape[0]), local.shape[0])
    return simplices, owner


def sample_interior(
    mesh: dolfinx.mesh.Mesh,
    n: int,
    rng: np.random.Generator,
    *,
    cells: np.ndarray | None = None,
) -> np.ndarray:
    """Uniform random points in the mesh (collective).

    Args:
        mesh: a mesh with affine geometry (surface meshes in 3D included).
        n: global number of points.
        rng: this rank's generator (see :func:`rank_rng`).
        cells: optional local cell indices (e.g. a subdomain's ``meshtags.find(tag)``); points
            are then uniform in their union.  Ghost cells are ignored (their owner samples them).

    Returns:
        Array ``(n_local, gdim)`` of points in cells this rank owns; ``n_local`` sums to ``n``.
    """
    _check_request(mesh, n, rng, boundary=False)
    tdim, gdim = mesh.topology.dim, mesh.geometry.dim
    cell_map = mesh.topology.index_map(tdim)
    owned = np.arange(cell_map.size_local, dtype=np.int32)
    try:
        cells, error = _entity_indices(cells, owned, cell_map, "cells"), None
    except (TypeError, ValueError) as exc:
        error = exc
    raise_on_all_ranks(error, mesh.comm)
    simplices, _ = _split(mesh.geometry.dofmaps[0][cells], mesh.topology.cell_type.name)
    vertices = mesh.geometry.x[simplices][:, :, :gdim]
    measures = _simplex_measure(vertices)
    share = global_shares(int(n), measures.sum(), mesh.comm)[mesh.comm.rank]
    points, _ = _sample_simplices(vertices, measures, int(share), rng)
    return points


def _outward_normals(vertices: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Unit normals of facet simplices (num, tdim, gdim) pointing away from ``inside`` points."""
    num, k, gdim = vertices.shape
    if gdim == 1:
        normals = np.ones((num, 1))
    elif gdim == 2:
        t = vertices[:, 1] - vertices[:, 0]
        normals = np.column_stack([t[:, 1], -t[:, 0]])
    else:
        normals = np.cross(vertices[:, 1] - vertices[:, 0], vertices[:, 2] - vertices[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    away = np.einsum("ng,ng->n", vertices.mean(axis=1) - inside, normals)
    return normals * np.where(away < 0.0, -1.0, 1.0)[:, None]


def sample_boundary(
    mesh: dolfinx.mesh.Mesh,
    n: int,
    rng: np.random.Generator,
    *,
    facets: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Uniform random points on the boundary, with outward unit normals (collective).

    Points are uniform with respect to surface measure: facets are chosen with probability
    proportional to their area.  In 1D the boundary is the set of end points, each equally likely.

    Args:
        mesh: an affine mesh with gdim == tdim.
        n: global number of points.
        rng: this rank's generator (see :func:`rank_rng`).
        facets: optional local facet indices (e.g. ``facet_tags.find(tag)``) instead of all
            exterior facets.  The normal of an interior facet points out of its first cell.

    Returns:
        ``(points, normals)``, both ``(n_local, gdim)``; ``n_local`` sums to ``n``.
    """
    _check_request(mesh, n, rng, boundary=True)
    tdim, gdim = mesh.topology.dim, mesh.geometry.dim
    mesh.topology.create_connectivity(tdim - 1, tdim)
    from dolfinx_nn.meshes import boundary_facets  # noqa: PLC0415 (meshes is heavier)

    exterior = boundary_facets(mesh)
    try:
        facet_map = mesh.topology.index_map(tdim - 1)
        facets, error = _entity_indices(facets, exterior, facet_map, "facets"), None
    except (TypeError, ValueError) as exc:
        facets, error = exterior, exc  # raised on every rank below
    raise_on_all_ranks(error, mesh.comm)
    facet_nodes = dolfinx.mesh.entities_to_geometry(mesh, tdim - 1, facets)
    simplices, owner = _split(facet_nodes, _FACET_TYPE[mesh.topology.cell_type.name])
    x = mesh.geometry.x[:, :gdim]
    vertices = x[simplices]
    measures = _simplex_measure(vertices)
    share = global_shares(int(n), measures.sum(), mesh.comm)[mesh.comm.rank]
    points, chosen = _sample_simplices(vertices, measures, int(share), rng)
    if points.shape[0] == 0:
        return points, np.empty((0, gdim))
    f2c = mesh.topology.connectivity(tdim - 1, tdim)
    first_cell = f2c.array[f2c.offsets[facets[owner[chosen]]]]
    centroids = x[mesh.geometry.dofmaps[0][first_cell]].mean(axis=1)
    return points, _outward_normals(vertices[chosen], centroids)
