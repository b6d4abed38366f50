"""Built-in meshes and mesh files: volume, geometric dimension and errors (serial and MPI)."""

from __future__ import annotations

import math

from mpi4py import MPI

import dolfinx
import dolfinx.fem
import numpy as np
import pytest
import ufl

from dolfinx_nn.meshes import (
    HOLE_RADIUS,
    MESH_KINDS,
    boundary_dofs,
    boundary_facets,
    create_mesh,
    create_mesh_data,
    mesh_size,
)


def volume_of(mesh: dolfinx.mesh.Mesh, measure: ufl.Measure) -> float:
    local = dolfinx.fem.assemble_scalar(dolfinx.fem.form(1.0 * measure))
    return mesh.comm.allreduce(local, op=MPI.SUM)


def volume(mesh: dolfinx.mesh.Mesh) -> float:
    return volume_of(mesh, ufl.dx(domain=mesh))


def shared_tmp_path(tmp_path, comm: MPI.Comm):
    """One folder seen by all ranks (rank 0's pytest tmp_path)."""
    return comm.bcast(tmp_path, root=0)


@pytest.mark.parametrize("kind, resolution", [("interval", 7), ("square", 5), ("cube", 3)])
def test_unit_shapes_have_unit_volume(comm, kind, resolution):
    mesh = create_mesh(comm, kind, resolution)
    assert mesh.topology.dim == mesh.geometry.dim == {"interval": 1, "square": 2, "cube": 3}[kind]
    assert volume(mesh) == pytest.approx(1.0, abs=1e-12)
    num_cells = comm.allreduce(mesh.topology.index_map(mesh.topology.dim).size_local)
    assert num_cells == {"interval": 7, "square": 2 * 25, "cube": 6 * 27}[kind]


@pytest.mark.parametrize("kind, resolution", [("square-with-hole", 16), ("cube-with-hole", 8)])
def test_hole_volume_within_chord_bound(comm, kind, resolution):
    # The hole is meshed by an inscribed polygon/polyhedron, so the discrete volume exceeds
    # 1 - |hole|; the excess is at most (hole surface) * (largest sagitta h^2 / (8 r)).
    dim = 2 if kind.startswith("square") else 3
    mesh = create_mesh(comm, kind, resolution)
    assert mesh.geometry.dim == dim
    r, h = HOLE_RADIUS, 1.0 / resolution
    hole = math.pi * r**2 if dim == 2 else 4.0 / 3.0 * math.pi * r**3
    surface = 2 * math.pi * r if dim == 2 else 4 * math.pi * r**2
    excess = volume(mesh) - (1.0 - hole)
    assert 0.0 < excess < surface * h**2 / (8 * r)


@pytest.mark.parametrize("kind", ["square", "square-with-hole", "cube-with-hole"])
def test_facet_tags(comm, kind):
    data = create_mesh_data(comm, kind, 4)
    mesh, tdim = data.mesh, data.mesh.topology.dim
    assert data.physical_groups["outer"] == (tdim - 1, 1)
    ds = ufl.Measure("ds", domain=mesh, subdomain_data=data.facet_tags)
    dx = ufl.Measure("dx", domain=mesh, subdomain_data=data.cell_tags)
    outer = 4.0 if tdim == 2 else 6.0
    assert volume_of(mesh, ds(1)) == pytest.approx(outer, abs=1e-12)
    assert volume_of(mesh, dx(1)) == pytest.approx(volume(mesh), abs=1e-12)
    if kind != "square":
        # the inscribed polygon/polyhedron has a smaller surface than the circle/sphere;
        # the relative deficit is O((h / r)^2), here h = r
        exact = 2 * math.pi * HOLE_RADIUS if tdim == 2 else 4 * math.pi * HOLE_RADIUS**2
        h_over_r = 0.25 / HOLE_RADIUS
        assert (1.0 - h_over_r**2 / 4) * exact < volume_of(mesh, ds(2)) < exact


def test_hole_volume_converges_at_second_order(comm):
    exact = 1.0 - math.pi * HOLE_RADIUS**2
    errors = [volume(create_mesh(comm, "square-with-hole", n)) - exact for n in (8, 16)]
    assert math.log2(errors[0] / errors[1]) == pytest.approx(2.0, abs=0.3)


def test_mesh_size_and_boundary_facets(comm):
    mesh = create_mesh(comm, "square", 4)
    assert mesh_size(mesh) == pytest.approx(math.sqrt(2) / 4, rel=1e-12)
    facets = boundary_facets(mesh)
    assert comm.allreduce(len(facets), op=MPI.SUM) == 16
    midpoints = dolfinx.mesh.compute_midpoints(mesh, 1, facets)[:, :2]
    on_edge = np.isclose(midpoints, 0.0) | np.isclose(midpoints, 1.0)
    assert on_edge.any(axis=1).all()



@pytest.mark.parametrize("degree", [1, 2])
def test_boundary_dofs(comm, degree):
    """P1 on a 4x4 square has 16 boundary dofs, P2 32; all of them lie on the edges."""
    mesh = create_mesh(comm, "square", 4)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree))
    dofs = boundary_dofs(V)
    owned = dofs[dofs < V.dofmap.index_map.size_local]
    assert comm.allreduce(len(owned), op=MPI.SUM) == 16 * degree
    x = V.tabulate_dof_coordinates()[dofs, :2]
    assert (np.isclose(x, 0.0) | np.isclose(x, 1.0)).any(axis=1).all()

def _write_box_msh(path) -> None:
    """gmsh file of the box [0,1]x[0,2]x[0,0.5] (volume 1), without physical groups."""
    import gmsh

    gmsh.initialize(interruptible=False)
    gmsh.option.setNumber("General.Terminal", 0)
    gmsh.model.add("box")
    gmsh.model.occ.addBox(0.0, 0.0, 0.0, 1.0, 2.0, 0.5)
    gmsh.model.occ.synchronize()
    gmsh.option.setNumber("Mesh.CharacteristicLengthMax", 0.5)
    gmsh.model.mesh.generate(3)
    gmsh.write(str(path))
    gmsh.finalize()


def test_msh_file(comm, tmp_path):
    path = shared_tmp_path(tmp_path, comm) / "box.msh"
    if comm.rank == 0:
        _write_box_msh(path)
    comm.Barrier()
    data = create_mesh_data(comm, path)
    mesh = data.mesh
    assert mesh.topology.dim == mesh.geometry.dim == 3
    assert volume(mesh) == pytest.approx(1.0, abs=1e-12)
    # a file without physical groups gets one group holding all cells
    dx = ufl.Measure("dx", domain=mesh, subdomain_data=data.cell_tags)
    assert volume_of(mesh, dx(1)) == pytest.approx(1.0, abs=1e-12)



def _interior_facet_integral(mesh: dolfinx.mesh.Mesh) -> float:
    h = ufl.CellDiameter(mesh)
    local = dolfinx.fem.assemble_scalar(dolfinx.fem.form(ufl.avg(h) * ufl.dS(domain=mesh)))
    return mesh.comm.allreduce(local, op=MPI.SUM)


def test_msh_file_is_ghosted_for_interior_facet_integrals(comm, tmp_path):
    """A gmsh file comes back ghosted across shared facets, as XDMF and built-in meshes do.

    Without ghost cells DOLFINx refuses ``dS`` integrals over facets between ranks; with them,
    the parallel integral equals the one on the whole mesh read on each rank alone.
    """
    path = shared_tmp_path(tmp_path, comm) / "square.msh"
    if comm.rank == 0:
        import gmsh

        gmsh.initialize(interruptible=False)
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.occ.addRectangle(0.0, 0.0, 0.0, 1.0, 1.0)
        gmsh.model.occ.synchronize()
        gmsh.option.setNumber("Mesh.CharacteristicLengthMax", 0.25)
        gmsh.model.mesh.generate(2)
        gmsh.write(str(path))
        gmsh.finalize()
    comm.Barrier()
    mesh = create_mesh(comm, path)
    tdim = mesh.topology.dim
    ghosts = comm.allreduce(mesh.topology.index_map(tdim).num_ghosts, op=MPI.SUM)
    assert (ghosts > 0) == (comm.size > 1)
    whole = _interior_facet_integral(create_mesh(MPI.COMM_SELF, path))
    assert whole > 1.0  # interior edges of a unit square: several units long
    assert _interior_facet_integral(mesh) == pytest.approx(whole, rel=1e-12)


def _structured(nx: int, ny: int, lx: float, ly: float):
    """Quadrilaterals (counter-clockwise, as VTK orders them) and their 3D vertices (z = 0)."""
    xs, ys = np.meshgrid(np.linspace(0, lx, nx + 1), np.linspace(0, ly, ny + 1), indexing="ij")
    points = np.column_stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)])
    idx = np.arange(points.shape[0]).reshape(nx + 1, ny + 1)
    quads = np.column_stack(
        [idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()]
    )
    return points, quads


@pytest.mark.parametrize("cell", ["triangle", "quad"])
def test_vtu_file_drops_zero_z(comm, tmp_path, cell):
    import meshio

    path = shared_tmp_path(tmp_path, comm) / f"rect_{cell}.vtu"
    if comm.rank == 0:
        points, quads = _structured(6, 3, 2.0, 0.5)
        points = np.vstack([points, [[9.0, 9.0, 0.0]]])  # a node no cell uses
        cells = quads if cell == "quad" else np.vstack([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
        meshio.write(path, meshio.Mesh(points, [("vertex", [[0]]), (cell, cells)]))
    comm.Barrier()
    mesh = create_mesh(comm, path)
    assert mesh.geometry.dim == 2
    # a wrongly permuted quadrilateral would be a bow-tie with a different area
    assert volume(mesh) == pytest.approx(1.0, abs=1e-12)


def test_xdmf_round_trip(comm, tmp_path):
    path = shared_tmp_path(tmp_path, comm) / "cube.xdmf"
    original = create_mesh(comm, "cube-with-hole", 4)
    original.name = "domain"
    with dolfinx.io.XDMFFile(comm, str(path), "w") as xdmf:
        xdmf.write_mesh(original)
    mesh = create_mesh(comm, path)
    assert volume(mesh) == pytest.approx(volume(original), abs=1e-12)


def _write_dolfinx_mesh(mesh: dolfinx.mesh.Mesh, path, writer: str) -> None:
    """Write ``mesh`` with one of DOLFINx's own writers (collective)."""
    import dolfinx.io.vtkhdf

    if writer == "xdmf":
        with dolfinx.io.XDMFFile(mesh.comm, str(path), "w") as xdmf:
            xdmf.write_mesh(mesh)
    elif writer == "vtkhdf":
        dolfinx.io.vtkhdf.write_mesh(str(path), mesh)
    else:
        with dolfinx.io.VTKFile(mesh.comm, str(path), "w") as vtk:
            vtk.write_mesh(mesh)


#: (dimension, mesh of [0, 2]^d - 1 written to file, its volume 2^d)
_BOXES = {
    1: lambda comm: dolfinx.mesh.create_interval(comm, 5, [-1.0, 1.0]),
    2: lambda comm: dolfinx.mesh.create_rectangle(comm, [[-1.0, -1.0], [1.0, 1.0]], [3, 2]),
    3: lambda comm: dolfinx.mesh.create_box(comm, [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]],
                                            [2, 2, 1]),
}


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("writer, suffix", [("xdmf", ".xdmf"), ("vtkhdf", ".vtkhdf"),
                                            ("vtk", ".pvd")])
def test_dolfinx_written_meshes_keep_their_dimension(comm, tmp_path, dim, writer, suffix):
    """XDMF pads 1D coordinates to two, VTKHDF and VTK to three: read back as gdim = tdim."""
    path = shared_tmp_path(tmp_path, comm) / f"box{dim}d{suffix}"
    original = _BOXES[dim](comm)
    _write_dolfinx_mesh(original, path, writer)
    comm.Barrier()
    mesh = create_mesh(comm, path)
    assert mesh.topology.dim == mesh.geometry.dim == dim
    assert volume(mesh) == pytest.approx(2.0**dim, abs=1e-12)
    cells = comm.allreduce(mesh.topology.index_map(dim).size_local)
    assert cells == comm.allreduce(original.topology.index_map(dim).size_local)
    # the boundary too: no facet between two ranks counts as exterior
    assert comm.allreduce(len(boundary_facets(mesh))) == comm.allreduce(
        len(boundary_facets(original)))


@pytest.mark.parametrize("ghost_mode", [dolfinx.mesh.GhostMode.none,
                                        dolfinx.mesh.GhostMode.shared_facet])
def test_boundary_of_an_interval_is_its_two_ends(comm, ghost_mode):
    """Without ghost cells DOLFINx calls the vertex between two ranks exterior; we do not."""
    mesh = dolfinx.mesh.create_interval(comm, 9, [0.0, 2.0], ghost_mode=ghost_mode)
    facets = boundary_facets(mesh)
    ends = np.concatenate(comm.allgather(dolfinx.mesh.compute_midpoints(mesh, 0, facets)[:, 0]))
    assert sorted(ends) == pytest.approx([0.0, 2.0], abs=1e-14)


def test_one_dimensional_xdmf_mesh_in_millimetres(comm, tmp_path):
    """The dimension rule is relative to the mesh's extent: [0, 1e-3] stays a 1D mesh."""
    path = shared_tmp_path(tmp_path, comm) / "mm.xdmf"
    _write_dolfinx_mesh(dolfinx.mesh.create_interval(comm, 8, [0.0, 1e-3]), path, "xdmf")
    comm.Barrier()
    mesh = create_mesh(comm, path)
    assert mesh.geometry.dim == 1
    assert volume(mesh) == pytest.approx(1e-3, rel=1e-12)


def test_vtx_file_is_refused_clearly(comm, tmp_path):
    with pytest.raises(ValueError, match="VTX .*XDMFFile"):
        create_mesh(comm, shared_tmp_path(tmp_path, comm) / "mesh.bp")


def test_unknown_name_lists_choices(comm):
    with pytest.raises(ValueError, match="square-with-hole"):
        create_mesh(comm, "sqare")


def test_missing_file(comm):
    with pytest.raises(FileNotFoundError, match="nowhere.msh"):
        create_mesh(comm, "nowhere.msh")


@pytest.mark.parametrize("resolution", [0, -3])
def test_bad_resolution(comm, resolution):
    with pytest.raises(ValueError, match=str(resolution)):
        create_mesh(comm, "square", resolution)


def test_file_without_cells(comm, tmp_path):
    import meshio

    path = shared_tmp_path(tmp_path, comm) / "points.vtu"
    if comm.rank == 0:
        meshio.write(path, meshio.Mesh(np.zeros((2, 3)), [("vertex", [[0], [1]])]))
    comm.Barrier()
    with pytest.raises(ValueError, match="no supported cells"):
        create_mesh(comm, path)


def test_registry_is_complete():
    assert set(MESH_KINDS) == {"interval", "square", "cube", "square-with-hole", "cube-with-hole"}
