"""Uniform sampling in meshes and on their boundaries (serial and MPI)."""

from __future__ import annotations

import math

from mpi4py import MPI

import dolfinx
import dolfinx.fem
import dolfinx.geometry
import numpy as np
import pytest
import ufl

from dolfinx_nn.meshes import HOLE_CENTER, create_mesh
from dolfinx_nn.sampling import global_shares, rank_rng, sample_boundary, sample_interior


def integrate(mesh, integrand, measure) -> float:
    local = dolfinx.fem.assemble_scalar(dolfinx.fem.form(integrand * measure(domain=mesh)))
    return mesh.comm.allreduce(local, op=MPI.SUM)


def global_mean(points: np.ndarray, comm: MPI.Comm) -> tuple[np.ndarray, int]:
    count = comm.allreduce(points.shape[0], op=MPI.SUM)
    return comm.allreduce(points.sum(axis=0), op=MPI.SUM) / count, count


def graded(mesh: dolfinx.mesh.Mesh) -> dolfinx.mesh.Mesh:
    """Grade the vertices towards x = 0 (cells of very different sizes, same unit square)."""
    mesh.geometry.x[:, 0] = mesh.geometry.x[:, 0] ** 2
    return mesh


def check_mean(mesh, points, measure, n) -> None:
    """Empirical mean within 5 standard errors of the exact centroid (assembled)."""
    x = ufl.SpatialCoordinate(mesh)
    size = integrate(mesh, 1.0, measure)
    gdim = mesh.geometry.dim
    centroid = np.array([integrate(mesh, x[i], measure) / size for i in range(gdim)])
    variance = np.array([integrate(mesh, x[i] ** 2, measure) / size for i in range(gdim)])
    variance -= centroid**2
    mean, count = global_mean(points, mesh.comm)
    assert count == n
    assert np.all(np.abs(mean - centroid) < 5.0 * np.sqrt(variance / n))


MESHES = [("interval", 8), ("square", 6), ("cube", 3), ("square-with-hole", 8)]


@pytest.mark.parametrize("kind, resolution", MESHES)
def test_interior_mean_is_centroid(comm, kind, resolution):
    mesh = create_mesh(comm, kind, resolution)
    if kind == "square":
        graded(mesh)
    n = 20_000
    points = sample_interior(mesh, n, rank_rng(7, comm))
    assert points.shape[1] == mesh.geometry.dim
    check_mean(mesh, points, ufl.dx, n)


def test_interior_points_lie_in_owned_cells(comm):
    mesh = create_mesh(comm, "cube-with-hole", 4)
    points = sample_interior(mesh, 2_000, rank_rng(3, comm))
    tree = dolfinx.geometry.bb_tree(mesh, mesh.topology.dim)
    padded = np.zeros((points.shape[0], 3))
    padded[:, : points.shape[1]] = points
    candidates = dolfinx.geometry.compute_collisions_points(tree, padded)
    colliding = dolfinx.geometry.compute_colliding_cells(mesh, candidates, padded)
    num_owned = mesh.topology.index_map(mesh.topology.dim).size_local
    for i in range(points.shape[0]):
        cells = colliding.links(i)
        assert len(cells) > 0 and np.any(cells < num_owned)
    assert np.all(np.linalg.norm(points - np.asarray(HOLE_CENTER), axis=1) > 0.2)


def test_subdomain_cells(comm):
    mesh = graded(create_mesh(comm, "square", 8))
    cells = dolfinx.mesh.locate_entities(mesh, 2, lambda x: x[0] <= 0.25 + 1e-12)
    n = 5_000
    points = sample_interior(mesh, n, rank_rng(5, comm), cells=cells)
    assert comm.allreduce(points.shape[0]) == n
    assert points[:, 0].max(initial=0.0) <= 0.25 + 1e-14
    mean, _ = global_mean(points, comm)
    # uniform on [0, 1/4] x [0, 1]: mean x = 1/8, std error sqrt(1/(16*12) / n)
    assert abs(mean[0] - 0.125) < 5.0 * math.sqrt(1.0 / (16 * 12) / n)


def test_quadrilaterals_and_hexahedra(comm):
    for mesh in (
        dolfinx.mesh.create_unit_square(comm, 4, 3, dolfinx.mesh.CellType.quadrilateral),
        dolfinx.mesh.create_unit_cube(comm, 2, 2, 3, dolfinx.mesh.CellType.hexahedron),
    ):
        points = sample_interior(mesh, 10_000, rank_rng(11, comm))
        check_mean(mesh, points, ufl.dx, 10_000)
        boundary, normals = sample_boundary(mesh, 10_000, rank_rng(12, comm))
        check_mean(mesh, boundary, ufl.ds, 10_000)
        assert np.allclose(np.abs(normals).sum(axis=1), 1.0)


def exact_square_normals(points: np.ndarray) -> np.ndarray:
    """Outward normals of the unit square at boundary points (away from corners)."""
    normals = np.zeros_like(points)
    for axis in range(2):
        normals[np.isclose(points[:, axis], 0.0, atol=1e-13, rtol=0.0), axis] = -1.0
        normals[np.isclose(points[:, axis], 1.0, atol=1e-13, rtol=0.0), axis] = 1.0
    return normals


def test_boundary_of_unit_square(comm):
    mesh = graded(create_mesh(comm, "square", 5))
    n = 4_000
    points, normals = sample_boundary(mesh, n, rank_rng(1, comm))
    check_mean(mesh, points, ufl.ds, n)
    assert np.allclose(normals, exact_square_normals(points), atol=1e-14)


@pytest.mark.parametrize("kind, resolution", [("square-with-hole", 8), ("cube-with-hole", 4)])
def test_boundary_points_normals_with_hole(comm, kind, resolution):
    mesh = create_mesh(comm, kind, resolution)
    tdim = mesh.topology.dim
    n = 3_000
    points, normals = sample_boundary(mesh, n, rank_rng(2, comm))
    check_mean(mesh, points, ufl.ds, n)
    # on a facet: distance to the nearest exterior facet
    mesh.topology.create_connectivity(tdim - 1, tdim)
    facets = dolfinx.mesh.exterior_facet_indices(mesh.topology)
    tree = dolfinx.geometry.bb_tree(mesh, tdim - 1, entities=facets)
    midpoints = dolfinx.geometry.create_midpoint_tree(mesh, tdim - 1, facets)
    padded = np.zeros((points.shape[0], 3))
    padded[:, :tdim] = points
    closest = dolfinx.geometry.compute_closest_entity(tree, midpoints, mesh, padded)
    distance = np.sqrt(dolfinx.geometry.squared_distance(mesh, tdim - 1, closest, padded))
    assert distance.max(initial=0.0) < 1e-14
    # unit and outward: into the hole on the hole, away from the box elsewhere
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-14)
    radial = points - np.asarray(HOLE_CENTER[:tdim])
    on_hole = np.linalg.norm(radial, axis=1) < 0.3
    assert np.all(np.einsum("ij,ij->i", normals[on_hole], radial[on_hole]) < 0.0)
    outer = ~on_hole
    assert np.allclose(np.abs(normals[outer]).max(axis=1), 1.0, atol=1e-12)
    assert np.all(np.einsum("ij,ij->i", normals[outer], points[outer] - 0.5) > 0.0)


def test_interval_boundary(comm):
    mesh = create_mesh(comm, "interval", 4)
    points, normals = sample_boundary(mesh, 1_000, rank_rng(4, comm))
    assert comm.allreduce(points.shape[0]) == 1_000
    assert np.all(np.isin(points[:, 0], [0.0, 1.0]))
    assert np.array_equal(normals[:, 0], np.where(points[:, 0] == 0.0, -1.0, 1.0))


def test_ghosted_mesh_samples_owned_cells_once(comm):
    mode = dolfinx.mesh.GhostMode.shared_facet
    mesh = dolfinx.mesh.create_unit_square(comm, 6, 6, ghost_mode=mode)
    n = 10_000
    points = sample_interior(mesh, n, rank_rng(9, comm))
    check_mean(mesh, points, ufl.dx, n)
    boundary, _ = sample_boundary(mesh, n, rank_rng(10, comm))
    check_mean(mesh, boundary, ufl.ds, n)


def test_shares_sum_to_n_and_follow_weights(comm):
    shares = global_shares(10, [1.0, 2.0, 1.0][comm.rank % 3], comm)
    assert shares.sum() == 10 and len(shares) == comm.size
    assert np.array_equal(global_shares(7, 1.0, comm), global_shares(7, 1.0, comm))
    mesh = create_mesh(comm, "square", 4)
    counts = comm.allgather(sample_interior(mesh, 9, rank_rng(0, comm)).shape[0])
    assert sum(counts) == 9


def test_rank_streams_differ_and_repeat(comm):
    draws = comm.allgather(rank_rng(42, comm).random(4))
    assert all(not np.allclose(draws[0], d) for d in draws[1:])
    assert np.array_equal(rank_rng(42, comm).random(4), draws[comm.rank])


def test_zero_points(comm):
    mesh = create_mesh(comm, "square", 2)
    assert sample_interior(mesh, 0, rank_rng(0, comm)).shape == (0, 2)
    points, normals = sample_boundary(mesh, 0, rank_rng(0, comm))
    assert points.shape == normals.shape == (0, 2)


def test_bad_input(comm):
    mesh = create_mesh(comm, "square", 2)
    rng = rank_rng(0, comm)
    with pytest.raises(ValueError, match="-5"):
        sample_interior(mesh, -5, rng)
    with pytest.raises(TypeError, match="Generator"):
        sample_interior(mesh, 5, 0)
    with pytest.raises(ValueError, match="out of range"):  # raised on every rank
        bad = np.array([10**6 if comm.rank == 0 else 0], dtype=np.int32)
        sample_interior(mesh, 5, rng, cells=bad)
    with pytest.raises(TypeError, match="integer"):
        sample_boundary(mesh, 5, rng, facets=np.array([0.5]) if comm.rank == 0 else None)
    with pytest.raises(ValueError, match="zero total measure"):
        sample_interior(mesh, 5, rng, cells=np.empty(0, dtype=np.int32))
