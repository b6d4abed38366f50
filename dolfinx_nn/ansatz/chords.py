"""How far the facets of a mesh's boundary stand off the smooth boundary they approximate.

A mesh of a curved domain (a gmsh disk, ellipse or sphere) has its boundary vertices on the
curve and straight facets between them: chords, which deviate from the curve by their sagitta
``s = kappa h^2 / 8`` (chord length ``h``, curvature ``kappa``).  A smooth function that
vanishes on the curve is ``~ s |grad D|`` at the middle of each chord, and a smooth function
that vanishes on the chords themselves does not exist: it must bend at every vertex.  A fit
of the distance ``D`` of the ansatz (:mod:`~dolfinx_nn.ansatz.fitted_fields`) asked to vanish on
the chords more closely than that traded its interior for it: on a disk of radius 1 meshed
with ``h = 0.09`` (sagitta ``1e-3``, misfit of the exact ``1 - r^2`` at the chords' middles
``2e-3``) the fit held to ``1e-3`` missed the torsion function by 66 % (rms, relative) and
reached only ``max D = 0.37``; held to ``2e-3`` it matched it to ``1.5e-4``.

:func:`chord_sagitta` estimates the largest sagitta of the boundary facets from the facets
alone.  The curvature between two facets that share a ridge (a vertex in 2D, an edge in 3D)
is the angle between their normals over the distance between their centroids (``1/R`` on a
circle of radius ``R``).  A chord of a curve turns at each of its ends, a facet of a polygon
next to a corner only at one: a facet's curvature is the lower median of those at its ridges
(in 2D the smaller of its two ends), so polygons, however obtuse their corners, have none (a
channel bent by 20 degrees had counted as curved, with a sagitta shrinking only like ``h``).
A ridge where the normals turn by more than :data:`FEATURE_ANGLE` is a corner or an edge of
the domain, not a curve (the cube's edges; a circle of fewer than 12 chords is too coarse to
be taken for one).  In 3D a triangle that touches two edges of a polyhedron, each turning
less than that, still counts as curved.  1D boundaries are points: no sagitta.
"""

from __future__ import annotations

from mpi4py import MPI

import dolfinx
import numpy as np

from dolfinx_nn.ansatz.rounding import grid, round_to_grid
from dolfinx_nn.meshes import boundary_facets

#: Normals turning by more than this (radians, 30 degrees) between two facets mark a corner or
#: an edge of the domain, not a curve: a circle meshed with 12 chords turns by 30 degrees at
#: each vertex, and its chords stand off it by 3.4 % of its radius.
FEATURE_ANGLE = np.pi / 6


def facet_vertex_count(mesh: dolfinx.mesh.Mesh) -> int:
    """Vertices (and ridges) of a facet of ``mesh``: an interval's 2, a triangle's 3, a
    quadrilateral's 4 (1 for the points of a 1D mesh)."""
    tdim = mesh.topology.dim
    if tdim < 3:
        return tdim
    return 3 if mesh.topology.cell_type.name == "tetrahedron" else 4


def _facet_geometry(mesh: dolfinx.mesh.Mesh) -> tuple[np.ndarray, ...]:
    """Outward unit normals, centroids, diameters, global ridge ids and measures (length or
    area) of this rank's boundary facets, ``(n, gdim)``, ``(n, gdim)``, ``(n,)``,
    ``(n, ridges per facet)``, ``(n,)``."""
    tdim, gdim = mesh.topology.dim, mesh.geometry.dim
    facets = boundary_facets(mesh)
    mesh.topology.create_entities(tdim - 2)
    mesh.topology.create_connectivity(tdim - 1, tdim - 2)
    mesh.topology.create_connectivity(tdim - 1, 0)
    mesh.topology.create_connectivity(0, tdim)
    f2r = mesh.topology.connectivity(tdim - 1, tdim - 2)
    f2v = mesh.topology.connectivity(tdim - 1, 0)
    per = facet_vertex_count(mesh)  # and ridges; explicit: a rank may own no boundary facet
    ridges = np.array([f2r.links(f) for f in facets], dtype=np.int32).reshape(len(facets), per)
    ridges = mesh.topology.index_map(tdim - 2).local_to_global(
        ridges.reshape(-1)).reshape(ridges.shape)
    vertices = np.array([f2v.links(f) for f in facets], dtype=np.int32).reshape(len(facets), per)
    nodes = dolfinx.mesh.entities_to_geometry(mesh, 0, vertices.reshape(-1))
    x = mesh.geometry.x[nodes.reshape(-1), :gdim].reshape(len(facets), per, gdim)
    if tdim == 2:
        edge = x[:, 1] - x[:, 0]
        normals = np.column_stack([-edge[:, 1], edge[:, 0]])
    else:  # a triangle (0, 1, 2) or a quadrilateral (0, 1, 3, 2) in DOLFINx's vertex order
        normals = np.cross(x[:, -1] - x[:, 0], x[:, -2] - x[:, 1] if x.shape[1] == 4
                           else x[:, 2] - x[:, 1])
    lengths = np.linalg.norm(normals, axis=1)
    measures = lengths if tdim == 2 else 0.5 * lengths  # |d1 x d2| / 2 for a quadrilateral
    normals = normals / lengths[:, None]
    mesh.topology.create_connectivity(tdim - 1, tdim)
    f2c = mesh.topology.connectivity(tdim - 1, tdim)
    cells = np.array([f2c.links(f)[0] for f in facets], dtype=np.int32)
    inside = mesh.geometry.x[dolfinx.mesh.entities_to_geometry(mesh, tdim, cells), :gdim]
    outward = x.mean(axis=1) - inside.reshape(len(facets), -1, gdim).mean(axis=1) if len(
        facets) else np.zeros((0, gdim))
    normals *= np.where((normals * outward).sum(axis=1) < 0.0, -1.0, 1.0)[:, None]
    diameters = np.max(np.linalg.norm(x[:, :, None] - x[:, None, :], axis=3), axis=(1, 2))
    return normals, x.mean(axis=1), diameters, ridges, measures


def chord_sagitta(mesh: dolfinx.mesh.Mesh) -> float:
    """The largest estimated sagitta ``kappa h^2 / 8`` of the boundary facets (collective;
    unit of ``x``; the same value on every rank).

    0 for 1D meshes, for meshes whose geometry dimension exceeds the topological one, and for
    boundaries made of straight edges (plane faces) only.
    """
    tdim = mesh.topology.dim
    if tdim < 2 or mesh.geometry.dim != tdim:
        return 0.0
    comm = mesh.comm
    parts = comm.allgather(_facet_geometry(mesh))
    normals, centroids, diameters, ridges = (np.concatenate([p[i] for p in parts])
                                             for i in range(4))
    if len(normals) == 0:
        return 0.0
    facet = np.repeat(np.arange(len(ridges)), ridges.shape[1])
    order = np.argsort(ridges.reshape(-1), kind="stable")
    keys, owners = ridges.reshape(-1)[order], facet[order]
    pair = np.flatnonzero(keys[1:] == keys[:-1])  # a ridge of a manifold boundary: 2 facets
    a, b = owners[pair], owners[pair + 1]
    cos = (normals[a] * normals[b]).sum(axis=1)
    sin = np.linalg.norm(normals[a, :, None] * normals[b, None, :]
                         - normals[a, None, :] * normals[b, :, None], axis=(1, 2)) / np.sqrt(2)
    gap = np.linalg.norm(centroids[a] - centroids[b], axis=1)
    turn = np.arctan2(sin, cos)  # accurate for small turns, unlike arccos(cos)
    # compared on a grid of 2^-24 rad (rounding.grid): a regular 12-gon turns by pi/6 give or
    # take round-off, which had decided between "curve" and "corners" differently on 1 and 2
    # ranks; equal to FEATURE_ANGLE after rounding counts as a curve
    spacing = grid(np.pi)
    feature = round_to_grid(turn, spacing) <= round_to_grid(FEATURE_ANGLE, spacing)
    kappa = np.where(feature, turn, 0.0) / np.maximum(gap, np.finfo(float).tiny)
    # each facet's ridges' curvatures, sorted per facet; the lower median of each facet's
    ends, values = np.concatenate([a, b]), np.concatenate([kappa, kappa])
    order = np.lexsort((values, ends))
    ends, values = ends[order], values[order]
    counts = np.bincount(ends, minlength=len(normals))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    has = counts > 0
    curvature = np.zeros(len(normals))
    curvature[has] = values[starts[has] + (counts[has] - 1) // 2]
    return float(np.max(curvature * diameters**2 / 8.0))


def boundary_measure(mesh: dolfinx.mesh.Mesh) -> float:
    """The length (2D) or area (3D) of the boundary of an affine mesh (collective).

    Summed over the facets of :func:`~dolfinx_nn.meshes.boundary_facets`, which unlike
    ``ufl.ds`` does not count the facets between two ranks of a mesh without ghost cells.
    """
    if mesh.topology.dim < 2 or mesh.geometry.dim != mesh.topology.dim:
        raise ValueError(f"boundary_measure needs a 2D or 3D mesh with gdim == tdim, got tdim "
                         f"{mesh.topology.dim}, gdim {mesh.geometry.dim}")
    return float(mesh.comm.allreduce(float(_facet_geometry(mesh)[4].sum()), op=MPI.SUM))
