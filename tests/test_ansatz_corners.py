"""Re-entrant corners: found on the mesh, singular functions that fit them, a positive ``D``."""

from __future__ import annotations

import math
import pathlib

from mpi4py import MPI

import numpy as np
import pytest
import torch

from dolfinx_nn.ansatz.corners import RADIUS_FRACTION, CornerFunctions, cutoff, reentrant_corners
from dolfinx_nn.ansatz.errors import distance_range
from dolfinx_nn.ansatz.fitted_fields import fit_distance
from dolfinx_nn.ansatz.gallery import write_geometry
from dolfinx_nn.ansatz.pdes import Problem
from dolfinx_nn.ansatz.units import canonical
from dolfinx_nn.meshes import create_mesh
from dolfinx_nn.networks.pointwise import laplacian
from dolfinx_nn.sampling import rank_rng, sample_interior

#: Corners of the gallery's square hole: (+-0.3, +-0.3) rotated by 30 degrees.
ROTATION = np.array([[math.cos(math.pi / 6), -math.sin(math.pi / 6)],
                     [math.sin(math.pi / 6), math.cos(math.pi / 6)]])
SQUARE_CORNERS = np.array([ROTATION @ [x, y] for x in (-0.3, 0.3) for y in (-0.3, 0.3)])


@pytest.fixture(scope="module")
def gallery_meshes(tmp_path_factory):
    """The gallery's L-shape and disk minus a rotated square, meshed by gmsh and read back."""
    comm = MPI.COMM_WORLD
    folder = pathlib.Path(comm.bcast(str(tmp_path_factory.mktemp("corners"))
                                     if comm.rank == 0 else None))
    meshes = {}
    for name in ("l-shape", "disk-square-hole"):
        path = folder / f"{name}.msh"
        if comm.rank == 0:
            write_geometry(name, path)
        comm.Barrier()
        meshes[name] = create_mesh(comm, str(path))
    return meshes


def _same_on_all_ranks(corners) -> None:
    records = [c.as_dict() for c in corners]
    assert records == MPI.COMM_WORLD.bcast(records, root=0)


def test_l_shape_has_one_corner(gallery_meshes):
    """[0, 1]^2 minus [0.5, 1]^2: one corner at (0.5, 0.5), 270 degrees, R = 0.5."""
    (corner,) = reentrant_corners(gallery_meshes["l-shape"])
    np.testing.assert_allclose(corner.vertex, [0.5, 0.5], atol=1e-12)
    assert corner.angle == pytest.approx(1.5 * math.pi, rel=1e-12)
    assert corner.exponent == pytest.approx(2.0 / 3.0, rel=1e-12)
    np.testing.assert_allclose(corner.bisector, [-math.sqrt(0.5), -math.sqrt(0.5)], atol=1e-12)
    # the rest of the boundary is 0.5 away: the convex corners' edges and the outer sides
    assert corner.radius == pytest.approx(RADIUS_FRACTION * 0.5, rel=1e-12)
    _same_on_all_ranks([corner])


@pytest.mark.parametrize("cell", ["triangle", "quadrilateral"])
def test_l_shape_cut_from_a_structured_mesh(comm, cell):
    """The same corner on a unit square of 8 x 8 cells without its upper right quarter (a
    DOLFINx submesh, so the cells around the corner are split over the ranks differently)."""
    import dolfinx

    square = dolfinx.mesh.create_unit_square(comm, 8, 8, dolfinx.mesh.CellType[cell])
    cells = np.arange(square.topology.index_map(2).size_local, dtype=np.int32)
    mid = dolfinx.mesh.compute_midpoints(square, 2, cells)
    keep = cells[~((mid[:, 0] > 0.5) & (mid[:, 1] > 0.5))]
    (corner,) = reentrant_corners(dolfinx.mesh.create_submesh(square, 2, keep)[0])
    np.testing.assert_allclose(corner.vertex, [0.5, 0.5], atol=1e-12)
    assert corner.angle == pytest.approx(1.5 * math.pi, rel=1e-12)
    assert corner.radius == pytest.approx(RADIUS_FRACTION * 0.5, rel=1e-12)
    _same_on_all_ranks([corner])


def test_square_hole_has_four_corners(gallery_meshes):
    """The four corners of the rotated square, 270 degrees each, bisectors away from its
    centre, R the distance to the polygon of the unit circle."""
    corners = reentrant_corners(gallery_meshes["disk-square-hole"])
    assert len(corners) == 4
    expected = SQUARE_CORNERS[np.lexsort((SQUARE_CORNERS[:, 1], SQUARE_CORNERS[:, 0]))]
    for corner, vertex in zip(corners, expected, strict=True):
        np.testing.assert_allclose(corner.vertex, vertex, atol=1e-12)
        assert corner.angle == pytest.approx(1.5 * math.pi, rel=1e-12)
        np.testing.assert_allclose(corner.bisector, vertex / np.linalg.norm(vertex), atol=1e-12)
        # the circle is 1 - 0.3 sqrt(2) = 0.576 away; its polygon (mesh size 0.05) a little less
        gap = 1.0 - np.linalg.norm(vertex)
        assert gap - 1e-3 < corner.radius / RADIUS_FRACTION < gap
    _same_on_all_ranks(corners)


def test_curves_and_3d_have_no_corners(comm):
    """A polygon approximating a hole turns by the same angle at every vertex: no corner."""
    hole = create_mesh(comm, "square-with-hole", 6)
    assert reentrant_corners(hole) == []
    # the rule that excludes them: each of the 10 vertices of the hole turns by 36 degrees
    turning = reentrant_corners(hole, concentration=0.0)
    assert len(turning) == 10
    assert all(np.degrees(c.angle) == pytest.approx(216.0, abs=1.0) for c in turning)
    assert reentrant_corners(create_mesh(comm, "square", 4)) == []
    assert reentrant_corners(create_mesh(comm, "cube", 2)) == []  # 3D: out of scope
    with pytest.raises(ValueError, match=r"radius_fraction must be in \(0, 1\], got 1.5"):
        reentrant_corners(hole, radius_fraction=1.5)


def _edge_directions(corner) -> list[np.ndarray]:
    """Unit vectors along the corner's two edges (the bisector turned by +-omega/2)."""
    out = []
    for sign in (1.0, -1.0):
        c, s = math.cos(sign * corner.angle / 2), math.sin(sign * corner.angle / 2)
        out.append(np.array([[c, -s], [s, c]]) @ corner.bisector)
    return out


def test_corner_functions_vanish_on_edges_and_are_positive_inside(gallery_meshes):
    mesh = gallery_meshes["disk-square-hole"]
    corners = reentrant_corners(mesh)
    functions = CornerFunctions(corners)
    for k, corner in enumerate(corners):
        for direction in _edge_directions(corner):
            t = np.linspace(1e-6, 1.2, 200)[:, None] * corner.radius
            on_edge = torch.from_numpy(corner.vertex + t * direction)
            with torch.no_grad():
                # the edges are sides of the square; the values are O(R^(2/3)) ~ 1 inside
                assert float(functions(on_edge)[:, k].abs().max()) < 1e-14
    x = sample_interior(mesh, 4000, rank_rng(3, mesh.comm))
    with torch.no_grad():
        values = functions(torch.from_numpy(x)).numpy()
    r = np.linalg.norm(x[:, None, :] - np.array([c.vertex for c in corners])[None], axis=2)
    radii = np.array([c.radius for c in corners])
    inside = r < 0.99 * radii
    assert np.all(values[inside] > 0.0)
    assert np.all(values[r >= radii] == 0.0)
    assert np.all(values >= 0.0)


def _column(functions: CornerFunctions, k: int, singular: bool = False):
    def field(x: torch.Tensor) -> torch.Tensor:
        return (functions.singular(x) if singular else functions(x))[:, k]
    return field


def test_corner_functions_are_harmonic_and_their_laplacian_is_exact(gallery_meshes):
    """Autograd Laplacians: 0 where chi = 1 and for the uncut function; elsewhere equal to the
    analytic Laplacian of the fits' rows; finite next to the corner."""
    (corner,) = reentrant_corners(gallery_meshes["l-shape"])
    rng = np.random.default_rng(0)
    r = corner.radius * rng.uniform(0.01, 1.0, 300)
    psi = rng.uniform(-corner.angle / 2, corner.angle / 2, 300)  # inside the domain's wedge
    c, s = corner.bisector
    x = corner.vertex + r[:, None] * np.column_stack(
        [c * np.cos(psi) - s * np.sin(psi), s * np.cos(psi) + c * np.sin(psi)])
    points = torch.from_numpy(x)
    # size of the second derivatives of r^a sin(a theta): a (1 - a) r^(a - 2)
    a = corner.exponent
    size = torch.from_numpy(a * (1 - a) * r ** (a - 2))
    default = CornerFunctions([corner])
    _, _, lap = laplacian(_column(default, 0, singular=True), points, create_graph=False)
    assert float((lap.abs() / size).max()) < 1e-12
    plateau = CornerFunctions([corner], plateau=0.5)
    _, _, lap = laplacian(_column(plateau, 0), points, create_graph=False)
    flat = torch.from_numpy(r < 0.5 * corner.radius)
    assert float((lap[flat].abs() / size[flat]).max()) < 1e-12
    assert float(lap[~flat].abs().max()) > 1.0  # the cutoff's ring is not harmonic
    for functions in (default, plateau):
        _, _, lap = laplacian(_column(functions, 0), points, create_graph=False)
        exact = functions.laplacian(points)[:, 0]
        assert torch.allclose(lap, exact, rtol=1e-9, atol=1e-9 * float(exact.abs().max()))
    # next to the corner (not at it: collocation points lie inside cells) all is finite
    near = torch.from_numpy(corner.vertex + np.outer([1e-12, 1e-8, 1e-4], corner.bisector))
    value, grad, lap = laplacian(_column(default, 0), near, create_graph=False)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()
    assert torch.isfinite(lap).all()
    at = torch.from_numpy(corner.vertex[None].copy())
    value, grad, lap = laplacian(_column(default, 0), at, create_graph=False)
    assert float(value[0]) == 0.0 and torch.isfinite(grad).all() and torch.isfinite(lap).all()
    # the cutoff is C^2: 1 with vanishing derivatives at the corner, 0 with them at R
    chi, d1, d2 = cutoff(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert chi.tolist() == [1.0, 0.0] and d1.tolist() == [0.0, 0.0] and d2.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="needs at least one corner"):
        CornerFunctions([])


def _canonical_mesh(mesh):
    problem = Problem.from_text("poisson", "1 + x[0]*x[1]", 2)
    return canonical(problem, mesh)


@pytest.mark.parametrize("name", ["l-shape", "disk-square-hole"])
def test_corners_of_the_canonical_mesh(gallery_meshes, name):
    """The network side's copy of the mesh (coordinates mapped to [0, 1]^2 and rounded to a
    grid of 2^-23): the same corners, moved and scaled.  The rounding turns each facet's
    direction by up to about 1e-5, far more than STRAIGHT; without a slack for the precision
    of the coordinates the straight edges ended after one facet and R shrank to the mesh size
    (0.025 instead of 0.29 on the square hole)."""
    mesh = gallery_meshes[name]
    hat = _canonical_mesh(mesh)
    origin, length = np.asarray(hat.units.origin), hat.units.length
    user, copy = reentrant_corners(mesh), reentrant_corners(hat.mesh)
    assert len(copy) == len(user) > 0
    for a, b in zip(user, copy, strict=True):
        np.testing.assert_allclose(b.vertex, (a.vertex - origin) / length, atol=1e-6)
        assert b.radius == pytest.approx(a.radius / length, rel=1e-5)
        assert b.angle == pytest.approx(a.angle, abs=1e-5)
    _same_on_all_ranks(copy)


@pytest.mark.parametrize("units", ["user", "canonical"])
def test_distance_stays_positive_at_square_corners(gallery_meshes, units):
    """The fitted D on the disk minus a rotated square: min D / max D at the 20000 interior
    points of ``compare`` was -5.1e-2 without the corner functions and is -5.9e-4 with them
    on one rank, -9.2e-4 on two (other boundary points); the bound leaves a factor 5.  On the
    canonical copy of the mesh (on which ``compare`` fits), before the straight edges allowed
    for the precision of the coordinates: -4.6e-2."""
    mesh = gallery_meshes["disk-square-hole"]
    if units == "canonical":
        mesh = _canonical_mesh(mesh).mesh
    D = fit_distance(mesh)
    assert len(D.fit_report["corners"]) == 4
    x = sample_interior(mesh, 20000, rank_rng(12346, mesh.comm))
    assert distance_range(D, x, mesh.comm)["distance_min_relative"] > -5e-3
    assert D.fit_report["met"]


def test_fits_without_corners_are_unchanged(comm):
    """No re-entrant corner (the square with a hole): the basis and the fit of D are those of
    a fit without corner functions, bit for bit."""
    mesh = create_mesh(comm, "square-with-hole", 6)
    args = {"features": 200, "boundary_points": 1000}
    D = fit_distance(mesh, **args)
    plain = fit_distance(mesh, corner_terms=0, **args)
    assert D.corners is None and D.fit_report["corners"] == []
    assert D.coefficients.shape == (200 + 50 + 1,)  # the features, the hole's group, constant
    assert torch.equal(D.coefficients, plain.coefficients)


def test_corners_are_reported_in_the_users_coordinates(comm):
    """The L-shape [1, 3]^2 minus [2, 3]^2: the corner at (2, 2) with R = 1 in the report of
    the trained ansatz's D (the network side fits on a copy of the mesh in [0, 1]^2, where the
    corner is at (0.5, 0.5) with R = 0.5; that copy's numbers were reported)."""
    import dolfinx

    from dolfinx_nn.ansatz.network_solver import NetworkConfig, solve_network
    from dolfinx_nn.training import TrainingConfig

    square = dolfinx.mesh.create_rectangle(comm, [[1.0, 1.0], [3.0, 3.0]], [8, 8])
    cells = np.arange(square.topology.index_map(2).size_local, dtype=np.int32)
    mid = dolfinx.mesh.compute_midpoints(square, 2, cells)
    mesh = dolfinx.mesh.create_submesh(square, 2, cells[~((mid[:, 0] > 2) & (mid[:, 1] > 2))])[0]
    config = NetworkConfig(width=4, depth=1, points=50, fit_features=50,
                           fit_boundary_points=200,
                           training=TrainingConfig(adam_steps=0, lbfgs_steps=1))
    sol = solve_network(Problem.from_text("poisson", "1 + x[0]*x[1]", 2), mesh, config)
    (corner,) = sol.ansatz.distance.fit_report["corners"]
    np.testing.assert_allclose(corner["vertex"], [2.0, 2.0], atol=1e-6)
    assert corner["radius"] == pytest.approx(RADIUS_FRACTION * 1.0, rel=1e-6)
    assert corner["angle_degrees"] == pytest.approx(270.0, abs=1e-4)


def test_ranks_without_cells_take_part():
    """An L-shaped mesh whose cells all live on rank 0: the other ranks hold no cells at all
    (a small mesh on many ranks) and still find the same re-entrant corner and fit ``D`` (they
    had failed to shape their empty connectivity arrays, and ``compare`` on 2 cells and 3
    ranks hung)."""
    import basix.ufl
    import dolfinx

    comm = MPI.COMM_WORLD
    if comm.rank == 0:
        n = 4  # the square [-1, 1]^2 less its quadrant x > 0, y > 0, in 2n x 2n squares
        xs = np.linspace(-1.0, 1.0, 2 * n + 1)
        X, Y = np.meshgrid(xs, xs, indexing="ij")
        x = np.column_stack([X.ravel(), Y.ravel()])
        a = (np.arange(2 * n)[:, None] * (2 * n + 1) + np.arange(2 * n)[None, :]).ravel()
        cells = np.concatenate([np.column_stack([a, a + 2 * n + 1, a + 2 * n + 2]),
                                np.column_stack([a, a + 2 * n + 2, a + 1])]).astype(np.int64)
        keep = ~(x[cells].mean(axis=1) > 0.0).all(axis=1)
        cells = cells[keep]
        used, cells = np.unique(cells, return_inverse=True)
        x, cells = x[used], cells.reshape(-1, 3).astype(np.int64)
        owner = np.zeros(len(cells), np.int32)
    else:
        x, cells, owner = np.zeros((0, 2)), np.zeros((0, 3), np.int64), np.zeros(0, np.int32)

    def partitioner(*_):  # every cell to rank 0
        return dolfinx.cpp.graph.AdjacencyList_int32(owner)

    element = basix.ufl.element("Lagrange", "triangle", 1, shape=(2,))
    mesh = dolfinx.mesh.create_mesh(comm, cells, element, x, partitioner)
    owned = mesh.topology.index_map(2).size_local
    assert comm.allreduce(owned, op=MPI.SUM) == 96
    assert comm.size == 1 or comm.allreduce(owned == 0, op=MPI.LOR)
    corners = reentrant_corners(mesh)
    assert len(corners) == 1
    found = corners[0].as_dict()
    assert found == comm.bcast(found, root=0)
    assert np.allclose(found["vertex"], [0.0, 0.0], atol=1e-14)
    assert found["angle_degrees"] == pytest.approx(270.0, rel=1e-12)
    fit = fit_distance(mesh, features=100, boundary_points=400)
    assert fit.fit_report == comm.bcast(fit.fit_report, root=0)


def test_a_single_triangle_is_fitted_on_its_refinement():
    """One triangle (on 2 ranks: one of them without cells) has no P2 node off the boundary,
    so its own torsion function is 0; the fits run on a refinement of it (``fit_mesh``: too
    few interior points for the features) and ``D`` is positive inside, on every rank alike
    (the fit used to stop, asking whether the mesh was empty)."""
    import basix.ufl
    import dolfinx

    from dolfinx_nn.ansatz.fitted_fields import fit_mesh

    comm = MPI.COMM_WORLD
    if comm.rank == 0:
        x, cells = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), np.array([[0, 1, 2]])
    else:
        x, cells = np.zeros((0, 2)), np.zeros((0, 3), np.int64)
    element = basix.ufl.element("Lagrange", "triangle", 1, shape=(2,))
    mesh = dolfinx.mesh.create_mesh(comm, cells, element, x)
    # 6 degree-4 points per triangle: 150 needed for 100 features, 64 x 6 = 384 after 3
    # refinements (96 after 2)
    fine = fit_mesh(mesh, 100)
    assert fine.topology.index_map(2).size_global == 64
    assert fit_mesh(fine, 100) is fine
    D = fit_distance(mesh, features=100, boundary_points=400)
    with torch.no_grad():
        inside = float(D(torch.tensor([[0.25, 0.25]], dtype=torch.float64)).reshape(()))
    assert inside > 0.9  # phi / max phi: 0.94 here, max D ~ 1 at the incentre (0.29, 0.29)
    assert inside == comm.bcast(inside, root=0)
