"""Meshes by name or from a file, distributed over MPI ranks.

Built-in shapes (all inside the unit interval, square or cube)::

    interval, square, cube           structured simplex meshes of [0, 1]^d
    square-with-hole                 [0, 1]^2 minus the disk  |x - c| < r   (gmsh)
    cube-with-hole                   [0, 1]^3 minus the ball  |x - c| < r   (gmsh)

with ``c = HOLE_CENTER`` (0.5, 0.5[, 0.5]) and ``r = HOLE_RADIUS`` (0.25).  ``resolution`` is the
number of cells per unit length: the structured meshes have ``resolution`` cells along each edge
of the unit cube, the gmsh meshes have the characteristic length ``1 / resolution``.

Files: ``.msh`` (gmsh, through :mod:`dolfinx.io.gmsh`), ``.xdmf`` (:class:`dolfinx.io.XDMFFile`)
and the other formats meshio reads (``.vtu``, ``.vtk``, ``.med``, ``.inp``, ...).  Files are read
on rank 0 and the mesh is distributed by DOLFINx's graph partitioner.

:func:`create_mesh_data` also returns cell and facet tags: built-in shapes tag their outer
boundary 1 and the hole 2; ``.msh`` files keep their physical groups.

Example::

    from mpi4py import MPI
    from dolfinx_nn.meshes import create_mesh, create_mesh_data
    mesh = create_mesh(MPI.COMM_WORLD, "square-with-hole", resolution=32)
    data = create_mesh_data(MPI.COMM_WORLD, "square-with-hole", resolution=32)
    ds = ufl.Measure("ds", domain=data.mesh, subdomain_data=data.facet_tags)  # ds(2): hole
"""

from __future__ import annotations

import contextlib
import pathlib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import cast

from mpi4py import MPI

import basix
import basix.ufl
import dolfinx
import dolfinx.cpp
import dolfinx.io
import dolfinx.io.gmsh
import dolfinx.mesh
import numpy as np
import ufl
from dolfinx.io.gmsh import MeshData, PhysicalGroup

from dolfinx_nn.parallel import raise_on_all_ranks

__all__ = [
    "HOLE_CENTER",
    "HOLE_RADIUS",
    "MESH_KINDS",
    "boundary_dofs",
    "boundary_facets",
    "create_mesh",
    "create_mesh_data",
    "mesh_size",
]

#: Centre (first gdim entries) and radius of the hole of "square-with-hole" / "cube-with-hole".
HOLE_CENTER: tuple[float, float, float] = (0.5, 0.5, 0.5)
HOLE_RADIUS: float = 0.25

_DOMAIN_TAG = 1  # physical group of the cells of the gmsh shapes
_OUTER_TAG = 1  # facets on the boundary of the unit square/cube
_HOLE_TAG = 2  # facets on the boundary of the hole


# --------------------------------------------------------------------------- built-in shapes


def _tagged(mesh: dolfinx.mesh.Mesh) -> MeshData:
    """Tag all cells ``domain`` and all exterior facets ``outer``."""
    tdim = mesh.topology.dim
    cells = np.arange(mesh.topology.index_map(tdim).size_local, dtype=np.int32)
    facets = boundary_facets(mesh)
    return MeshData(
        mesh,
        dolfinx.mesh.meshtags(mesh, tdim, cells, np.full(cells.size, _DOMAIN_TAG, np.int32)),
        dolfinx.mesh.meshtags(mesh, tdim - 1, facets, np.full(facets.size, _OUTER_TAG, np.int32)),
        None,
        None,
        {
            "domain": PhysicalGroup(tdim, _DOMAIN_TAG),
            "outer": PhysicalGroup(tdim - 1, _OUTER_TAG),
        },
    )


def _interval(comm: MPI.Comm, resolution: int, verbose: bool) -> MeshData:
    return _tagged(dolfinx.mesh.create_unit_interval(comm, resolution))


def _square(comm: MPI.Comm, resolution: int, verbose: bool) -> MeshData:
    return _tagged(dolfinx.mesh.create_unit_square(comm, resolution, resolution))


def _cube(comm: MPI.Comm, resolution: int, verbose: bool) -> MeshData:
    return _tagged(dolfinx.mesh.create_unit_cube(comm, resolution, resolution, resolution))


def _require_gmsh(what: str) -> None:
    """Import gmsh on every rank, so that a missing install fails everywhere, not only on 0."""
    try:
        import gmsh  # noqa: F401
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"{what} needs the gmsh Python module: pip install gmsh (or dolfinx_nn[dolfinx])",
            name="gmsh",
        ) from exc


@contextlib.contextmanager
def _gmsh_session(verbose: bool) -> Iterator[ModuleType]:
    """Initialize gmsh (unless the caller already did), quietly, and clean up afterwards."""
    import gmsh

    owner = not gmsh.isInitialized()
    if owner:
        gmsh.initialize(interruptible=False)
    terminal = gmsh.option.getNumber("General.Terminal")
    gmsh.option.setNumber("General.Terminal", 1 if verbose else 0)
    gmsh.model.add("dolfinx_nn")
    try:
        yield gmsh
    finally:
        gmsh.model.remove()
        gmsh.option.setNumber("General.Terminal", terminal)
        if owner:
            gmsh.finalize()


def _on_root(comm: MPI.Comm, build: Callable[[], None]) -> None:
    """Run ``build`` on rank 0 and raise its error on every rank (nobody hangs)."""
    error = None
    if comm.rank == 0:
        try:
            build()
        except Exception as exc:  # raised collectively below
            error = exc if isinstance(exc, ValueError) else RuntimeError(f"gmsh failed: {exc}")
    raise_on_all_ranks(error, comm)


def _box_with_hole(comm: MPI.Comm, resolution: int, verbose: bool, dim: int) -> MeshData:
    _require_gmsh("the meshes with a hole")
    h = 1.0 / resolution
    c = HOLE_CENTER

    def build(gmsh) -> None:
        occ = gmsh.model.occ
        if dim == 2:
            box = occ.addRectangle(0.0, 0.0, 0.0, 1.0, 1.0)
            hole = occ.addDisk(c[0], c[1], 0.0, HOLE_RADIUS, HOLE_RADIUS)
        else:
            box = occ.addBox(0.0, 0.0, 0.0, 1.0, 1.0, 1.0)
            hole = occ.addSphere(c[0], c[1], c[2], HOLE_RADIUS)
        domain, _ = occ.cut([(dim, box)], [(dim, hole)])
        occ.synchronize()
        gmsh.model.addPhysicalGroup(dim, [tag for _, tag in domain], _DOMAIN_TAG, "domain")
        outer: list[int] = []
        inner: list[int] = []
        for _, tag in gmsh.model.getBoundary(domain, oriented=False):
            centre = np.asarray(gmsh.model.occ.getCenterOfMass(dim - 1, tag))
            on_hole = np.linalg.norm(centre[:dim] - np.asarray(c[:dim])) < HOLE_RADIUS
            (inner if on_hole else outer).append(tag)
        gmsh.model.addPhysicalGroup(dim - 1, outer, _OUTER_TAG, "outer")
        gmsh.model.addPhysicalGroup(dim - 1, inner, _HOLE_TAG, "hole")
        gmsh.option.setNumber("Mesh.CharacteristicLengthMin", h)
        gmsh.option.setNumber("Mesh.CharacteristicLengthMax", h)
        gmsh.model.mesh.generate(dim)

    if comm.rank == 0:
        with _gmsh_session(verbose) as gmsh:
            _on_root(comm, lambda: build(gmsh))
            data = dolfinx.io.gmsh.model_to_mesh(gmsh.model, comm, 0, gdim=dim,
                                                  partitioner=_shared_facet_partitioner(comm))
    else:
        _on_root(comm, lambda: None)
        data = dolfinx.io.gmsh.model_to_mesh(None, comm, 0, gdim=dim,
                                                  partitioner=_shared_facet_partitioner(comm))
    return data


def _square_with_hole(comm: MPI.Comm, resolution: int, verbose: bool) -> MeshData:
    return _box_with_hole(comm, resolution, verbose, 2)


def _cube_with_hole(comm: MPI.Comm, resolution: int, verbose: bool) -> MeshData:
    return _box_with_hole(comm, resolution, verbose, 3)


#: name -> builder(comm, resolution, verbose) of the built-in shapes.
MESH_KINDS: dict[str, Callable[[MPI.Comm, int, bool], MeshData]] = {
    "interval": _interval,
    "square": _square,
    "cube": _cube,
    "square-with-hole": _square_with_hole,
    "cube-with-hole": _cube_with_hole,
}


# --------------------------------------------------------------------------- mesh files


def _read_msh(comm: MPI.Comm, path: pathlib.Path, verbose: bool) -> MeshData:
    """Read a gmsh file; files without physical groups get one group holding all cells."""
    _require_gmsh("reading .msh files")
    gdim = None

    def load(gmsh) -> None:
        nonlocal gdim
        gmsh.merge(str(path))
        tdim = gmsh.model.getDimension()
        if tdim < 1:
            raise ValueError(f"{path} holds no cells of dimension 1, 2 or 3")
        if not any(d == tdim for d, _ in gmsh.model.getPhysicalGroups()):
            gmsh.model.addPhysicalGroup(tdim, [t for _, t in gmsh.model.getEntities(tdim)], 1)
        _, coords, _ = gmsh.model.mesh.getNodes()
        gdim = _geometric_dimension(coords.reshape(-1, 3), tdim)

    if comm.rank == 0:
        with _gmsh_session(verbose) as gmsh:
            _on_root(comm, lambda: load(gmsh))
            gdim = comm.bcast(gdim, root=0)
            data = dolfinx.io.gmsh.model_to_mesh(gmsh.model, comm, 0, gdim=gdim,
                                                  partitioner=_shared_facet_partitioner(comm))
    else:
        _on_root(comm, lambda: None)
        gdim = comm.bcast(gdim, root=0)
        data = dolfinx.io.gmsh.model_to_mesh(None, comm, 0, gdim=gdim,
                                                  partitioner=_shared_facet_partitioner(comm))
    return data


def _read_xdmf(comm: MPI.Comm, path: pathlib.Path, verbose: bool) -> MeshData:
    """Read the grid called "mesh" of an XDMF file, or else its first grid.

    XDMF stores 1D geometry as "XY" (DOLFINx pads the coordinates to two), so the geometric
    dimension is taken from the coordinates (:func:`_geometric_dimension`), not from the file.
    """
    name, error = None, None
    if comm.rank == 0:
        try:
            grids = [g.get("Name") for g in ET.parse(path).getroot().iter("Grid")]
            name = "mesh" if "mesh" in grids or not grids else grids[0]
        except ET.ParseError as exc:
            error = ValueError(f"{path} is not a valid XDMF file: {exc}")
    raise_on_all_ranks(error, comm)
    name = comm.bcast(name, root=0)
    with dolfinx.io.XDMFFile(comm, str(path), "r") as xdmf:
        cell_type, degree = xdmf.read_cell_type(name)
        cells = xdmf.read_topology_data(name)
        if _is_serendipity(cell_type, cells.shape[1]):  # keep DOLFINx's special element
            return _untagged(xdmf.read_mesh(name=name))
        x = xdmf.read_geometry_data(name)
    gdim = _distributed_geometric_dimension(comm, x, dolfinx.cpp.mesh.cell_dim(cell_type))
    element = basix.ufl.element("Lagrange", cell_type.name, degree, basix.LagrangeVariant.unset,
                                shape=(gdim,))
    mesh = _distribute(comm, cells, element, x[:, :gdim])
    mesh.name = name
    return _untagged(mesh)


def _is_serendipity(cell_type: dolfinx.mesh.CellType, nodes: int) -> bool:
    return (cell_type, nodes) in ((dolfinx.mesh.CellType.quadrilateral, 8),
                                  (dolfinx.mesh.CellType.hexahedron, 20))


def _read_vtkhdf(comm: MPI.Comm, path: pathlib.Path, verbose: bool) -> MeshData:
    """Read a VTKHDF file (:func:`dolfinx.io.vtkhdf.write_mesh`) with its true dimension.

    DOLFINx's VTKHDF reader ghosts no cells, so the file is read on rank 0 alone and the mesh
    distributed from there (:func:`_read_on_root`, ghosted across shared facets).  VTKHDF always
    stores three coordinates: the dimension is taken from the coordinates
    (:func:`_geometric_dimension`).
    """
    return _read_on_root(comm, path, _vtkhdf_topology)


def _vtkhdf_topology(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray, str, int]:
    """A VTKHDF file read on this rank alone: cells (DOLFINx node order), points, cell, degree."""
    import dolfinx.io.vtkhdf

    mesh = dolfinx.io.vtkhdf.read_mesh(MPI.COMM_SELF, str(path), gdim=3)
    cell_types = mesh.topology.entity_types[-1]
    if len(cell_types) != 1:
        raise ValueError(f"{path} mixes cell types {[c.name for c in cell_types]}; "
                         "expected one cell type")
    tdim = mesh.topology.dim
    points = mesh.geometry.x
    gdim = _geometric_dimension(points, tdim)
    cells = np.asarray(mesh.geometry.dofmaps[0], dtype=np.int64)
    return cells, points[:, :gdim].copy(), cell_types[0].name, mesh.geometry.cmaps[0].degree


def _distribute(comm: MPI.Comm, cells: np.ndarray, element, x: np.ndarray) -> dolfinx.mesh.Mesh:
    """``dolfinx.mesh.create_mesh`` with the ghosting of DOLFINx's own readers (shared facet).

    Without ghost cells a 1D mesh split over ranks reports the vertex between two ranks as an
    exterior facet on one of them (``exterior_facet_indices``): the boundary gains a point
    inside the domain.  ``XDMFFile.read_mesh`` and the built-in meshes ghost one layer of
    cells across every shared facet, and so do the readers here.
    """
    return dolfinx.mesh.create_mesh(comm, cells, ufl.Mesh(element), x,
                                    partitioner=_shared_facet_partitioner(comm))


def _shared_facet_partitioner(comm: MPI.Comm) -> Callable | None:
    """The cell partitioner that ghosts one layer of cells across every shared facet.

    Used by every reader and gmsh shape here (``dolfinx.io.gmsh.model_to_mesh`` and
    ``dolfinx.mesh.create_mesh`` ghost nothing by default), so that interior-facet integrals
    (``dS``) work on any number of ranks, as on the meshes of ``XDMFFile.read_mesh`` and the
    built-in shapes.  ``None`` (DOLFINx's default) on one rank.
    """
    if comm.size == 1:
        return None
    # The (mode, max_facet_to_cell_links) variant, registered by singledispatch (unseen by
    # type checkers).
    create = cast(Callable[..., Callable], dolfinx.mesh.create_cell_partitioner)
    return create(dolfinx.mesh.GhostMode.shared_facet, 2)


def _untagged(mesh: dolfinx.mesh.Mesh) -> MeshData:
    return MeshData(mesh, None, None, None, None, {})


#: meshio cell type -> (DOLFINx cell, coordinate degree)
_MESHIO_CELLS: dict[str, tuple[str, int]] = {
    "line": ("interval", 1),
    "line3": ("interval", 2),
    "triangle": ("triangle", 1),
    "triangle6": ("triangle", 2),
    "quad": ("quadrilateral", 1),
    "quad9": ("quadrilateral", 2),
    "tetra": ("tetrahedron", 1),
    "tetra10": ("tetrahedron", 2),
    "hexahedron": ("hexahedron", 1),
    "hexahedron27": ("hexahedron", 2),
}
_TDIM = {"interval": 1, "triangle": 2, "quadrilateral": 2, "tetrahedron": 3, "hexahedron": 3}


def _geometric_dimension(points: np.ndarray, tdim: int) -> int:
    """Smallest gdim >= tdim such that all coordinates beyond it vanish.

    A coordinate vanishes when it is below 1e-12 of the mesh's extent everywhere, so the
    rule does not depend on the unit of length.
    """
    return _dimension_from_columns(np.abs(points).max(axis=0, initial=0.0),
                                   np.ptp(points, axis=0) if len(points) else
                                   np.zeros(points.shape[1]), tdim)


def _dimension_from_columns(largest: np.ndarray, extent: np.ndarray, tdim: int) -> int:
    """:func:`_geometric_dimension` from per-column ``max |x|`` and ``max x - min x``."""
    size = float(extent.max(initial=0.0))
    used = [j for j in range(len(largest)) if largest[j] > 1e-12 * size]
    return max([tdim] + [j + 1 for j in used])


def _distributed_geometric_dimension(comm: MPI.Comm, points: np.ndarray, tdim: int) -> int:
    """:func:`_geometric_dimension` of the rows of ``points`` held by all ranks (collective)."""
    cols = points.shape[1]
    local = np.concatenate([np.abs(points).max(axis=0, initial=0.0),
                            points.max(axis=0, initial=-np.inf),
                            -points.min(axis=0, initial=np.inf)])
    stats = np.empty_like(local)
    comm.Allreduce(local, stats, op=MPI.MAX)
    largest, upper, lower = stats[:cols], stats[cols:2 * cols], -stats[2 * cols:]
    return _dimension_from_columns(largest, np.where(upper >= lower, upper - lower, 0.0), tdim)


def _cell_block_topology(
    path: pathlib.Path, points: np.ndarray, blocks: list[tuple[str, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray, str, int]:
    """Keep the highest-dimensional cells; DOLFINx node order, used nodes only, true gdim.

    Args:
        path: the file (for messages).
        points: node coordinates ``(n, 3)``.
        blocks: ``(DOLFINx cell name, cells (m, nodes) in VTK node order)`` per block.

    Returns:
        ``(cells, points, cell name, coordinate degree)``.
    """
    if not blocks:
        raise ValueError(f"{path} has no supported cells; supported: {sorted(_TDIM)}")
    tdim = max(_TDIM[name] for name, _ in blocks)
    kinds = {(name, cells.shape[1]) for name, cells in blocks if _TDIM[name] == tdim}
    if len(kinds) > 1:
        raise ValueError(f"{path} mixes cell types {sorted(kinds)}; one cell type is supported")
    ((cell_name, nodes),) = kinds
    cells = np.concatenate([c for name, c in blocks if _TDIM[name] == tdim]).astype(np.int64)
    degree = _lagrange_degree(path, cell_name, nodes)
    perm = dolfinx.io.utils.cell_perm_vtk(dolfinx.mesh.to_type(cell_name), nodes)
    cells = cells[:, perm]
    used, cells = np.unique(cells, return_inverse=True)  # drop nodes no cell refers to
    points = np.asarray(points, dtype=np.float64)[used]
    points = points[:, : _geometric_dimension(points, tdim)]
    return cells.reshape(-1, nodes), points, cell_name, degree


def _lagrange_degree(path: pathlib.Path, cell_name: str, nodes: int) -> int:
    """Degree of the Lagrange cell with ``nodes`` nodes."""
    count = {"interval": lambda d: d + 1, "triangle": lambda d: (d + 1) * (d + 2) // 2,
             "quadrilateral": lambda d: (d + 1) ** 2,
             "tetrahedron": lambda d: (d + 1) * (d + 2) * (d + 3) // 6,
             "hexahedron": lambda d: (d + 1) ** 3}[cell_name]
    for degree in range(1, 11):
        if count(degree) == nodes:
            return degree
    raise ValueError(f"{path}: a {cell_name} with {nodes} nodes is no Lagrange cell")


def _meshio_topology(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray, str, int]:
    """Read a file with meshio; return cells (DOLFINx node order), points, cell name, degree."""
    import meshio

    try:
        data = meshio.read(path)
    except Exception as exc:
        raise ValueError(f"meshio could not read {path}: {exc}") from exc
    blocks = [(_MESHIO_CELLS[b.type][0], b.data) for b in data.cells if b.type in _MESHIO_CELLS]
    if not blocks:
        found = sorted({b.type for b in data.cells})
        raise ValueError(
            f"{path} has no supported cells (found {found}); supported: {sorted(_MESHIO_CELLS)}"
        )
    return _cell_block_topology(path, data.points, blocks)


#: VTK cell type -> DOLFINx cell: linear, quadratic and arbitrary-order Lagrange cells.
_VTK_CELLS: dict[int, str] = {
    3: "interval", 21: "interval", 68: "interval",
    5: "triangle", 22: "triangle", 69: "triangle",
    9: "quadrilateral", 28: "quadrilateral", 70: "quadrilateral",
    10: "tetrahedron", 24: "tetrahedron", 71: "tetrahedron",
    12: "hexahedron", 29: "hexahedron", 72: "hexahedron",
}


class _NotAscii(ValueError):
    """A VTK XML file whose arrays are binary: left to meshio."""


def _vtk_pieces(path: pathlib.Path) -> list[pathlib.Path]:
    """The ``.vtu`` pieces of a ``.pvd`` (its first data set), ``.pvtu`` or ``.vtu`` file."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{path} is not a valid VTK XML file: {exc}") from exc
    kind = root.get("type")
    if kind == "Collection":
        sets = list(root.iter("DataSet"))
        if not sets:
            raise ValueError(f"{path} lists no data set")
        return _vtk_pieces(path.parent / sets[0].get("file", ""))
    if kind == "PUnstructuredGrid":
        return [path.parent / piece.get("Source", "") for piece in root.iter("Piece")]
    if kind == "UnstructuredGrid":
        return [path]
    raise ValueError(f"{path} holds a VTK {kind!r}; an unstructured grid is needed")


def _vtk_array(parent: ET.Element | None, path: pathlib.Path, name: str | None, dtype):
    """The ascii ``DataArray`` called ``name`` (the first one if None) below ``parent``."""
    if parent is None:
        return None
    for array in parent.iter("DataArray"):
        if name is None or array.get("Name") == name:
            if array.get("format", "ascii") != "ascii":
                raise _NotAscii(f"{path}: binary arrays")
            return np.array((array.text or "").split(), dtype=dtype)
    return None


def _vtk_piece(path: pathlib.Path):
    """Points ``(n, 3)``, original point ids (or None) and cell blocks of one ``.vtu`` piece.

    Ghost cells (``vtkGhostType``, as DOLFINx's ``VTKFile`` writes under MPI) are dropped.
    """
    try:
        piece = ET.parse(path).getroot().find("UnstructuredGrid/Piece")
    except (ET.ParseError, OSError) as exc:
        raise ValueError(f"cannot read the VTK piece {path}: {exc}") from exc
    if piece is None:
        raise ValueError(f"{path} holds no unstructured grid piece")
    points = _vtk_array(piece.find("Points"), path, None, np.float64)
    cells = piece.find("Cells")
    connectivity = _vtk_array(cells, path, "connectivity", np.int64)
    offsets = _vtk_array(cells, path, "offsets", np.int64)
    types = _vtk_array(cells, path, "types", np.int64)
    if points is None or connectivity is None or offsets is None or types is None:
        raise ValueError(f"{path} lacks points, connectivity, offsets or types")
    ghost = _vtk_array(piece.find("CellData"), path, "vtkGhostType", np.int64)
    ids = _vtk_array(piece.find("PointData"), path, "vtkOriginalPointIds", np.int64)
    points = points.reshape(-1, 3)
    starts = np.concatenate([[0], offsets[:-1]])
    keep = np.ones(len(types), bool) if ghost is None else (ghost & 1) == 0
    blocks = []
    for (vtk_type, size) in sorted({(int(t), int(n)) for t, n in
                                    zip(types[keep], (offsets - starts)[keep], strict=True)}):
        if vtk_type not in _VTK_CELLS:
            continue
        rows = keep & (types == vtk_type) & (offsets - starts == size)
        index = starts[rows][:, None] + np.arange(size)[None, :]
        blocks.append((_VTK_CELLS[vtk_type], connectivity[index]))
    return points, ids, blocks


def _vtk_topology(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray, str, int]:
    """Read a VTK XML unstructured grid in ascii, in one or several pieces.

    This is what DOLFINx's ``VTKFile`` writes (``.pvd`` -> ``.pvtu`` -> one ``.vtu`` per rank,
    with ghost cells and ``vtkOriginalPointIds``; meshio does not read its version 2.2).
    Pieces are merged by original point id, or else by identical coordinates.
    """
    pieces = [_vtk_piece(piece) for piece in _vtk_pieces(path)]
    with_ids = all(ids is not None for _, ids, _ in pieces)
    all_points = np.concatenate([p for p, _, _ in pieces])
    if with_ids:
        keys = np.concatenate([ids for _, ids, _ in pieces])
        unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    else:
        _, first, inverse = np.unique(all_points, axis=0, return_index=True,
                                      return_inverse=True)
    inverse = inverse.reshape(-1)
    blocks, shift = [], 0
    for points, _, piece_blocks in pieces:
        blocks += [(name, inverse[shift + cells]) for name, cells in piece_blocks]
        shift += len(points)
    return _cell_block_topology(path, all_points[first], blocks)


def _vtu_topology(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray, str, int]:
    """A ``.vtu`` file: ascii VTK XML here (DOLFINx's own files), binary ones through meshio."""
    try:
        return _vtk_topology(path)
    except _NotAscii:
        return _meshio_topology(path)


def _read_on_root(
    comm: MPI.Comm, path: pathlib.Path, topology: Callable[[pathlib.Path], tuple]
) -> MeshData:
    """Read ``(cells, points, cell name, degree)`` on rank 0 and distribute the mesh."""
    error: Exception | None = None
    header = None
    if comm.rank == 0:
        try:
            cells, points, cell_name, degree = topology(path)
            header = (cells.shape[1], points.shape[1], cell_name, degree)
        except Exception as exc:  # raised on every rank below
            error = exc if isinstance(exc, ValueError) else ValueError(
                f"cannot read the mesh file {path}: {exc}")
    raise_on_all_ranks(error, comm)
    nodes, gdim, cell_name, degree = comm.bcast(header, root=0)
    if comm.rank != 0:
        cells = np.empty((0, nodes), dtype=np.int64)
        points = np.empty((0, gdim), dtype=np.float64)
    element = basix.ufl.element(
        "Lagrange", cell_name, degree, basix.LagrangeVariant.equispaced, shape=(gdim,)
    )
    return _untagged(_distribute(comm, cells, element, points))


def _read_meshio(comm: MPI.Comm, path: pathlib.Path, verbose: bool) -> MeshData:
    return _read_on_root(comm, path, _meshio_topology)


def _read_vtk(comm: MPI.Comm, path: pathlib.Path, verbose: bool) -> MeshData:
    return _read_on_root(comm, path, _vtu_topology)


def _read_bp(comm: MPI.Comm, path: pathlib.Path, verbose: bool) -> MeshData:
    raise ValueError(
        f"{path}: VTX (ADIOS2 .bp) files cannot be read back here (DOLFINx has no VTX "
        "reader, and no ADIOS2 Python module is used); write the mesh with "
        "dolfinx.io.XDMFFile, dolfinx.io.vtkhdf.write_mesh or dolfinx.io.VTKFile instead"
    )


#: file suffix -> reader; every other suffix goes through meshio.
_READERS: dict[str, Callable[[MPI.Comm, pathlib.Path, bool], MeshData]] = {
    ".msh": _read_msh,
    ".xdmf": _read_xdmf,
    ".vtkhdf": _read_vtkhdf,
    ".vtu": _read_vtk,
    ".pvtu": _read_vtk,
    ".pvd": _read_vtk,
    ".bp": _read_bp,
}
_MESHIO_SUFFIXES = (".vtk", ".med", ".inp", ".mesh", ".meshb", ".obj", ".off", ".ply",
                    ".stl", ".xml", ".e", ".exo", ".h5m", ".su2", ".ugrid", ".dat", ".f3grid",
                    ".bdf", ".nas", ".fem", ".avs", ".post", ".cgns", ".msh2", ".tec", ".wkt")


# --------------------------------------------------------------------------- public API


def create_mesh(
    comm: MPI.Comm,
    spec: str | pathlib.Path,
    resolution: int = 16,
    *,
    verbose: bool = False,
) -> dolfinx.mesh.Mesh:
    """Create a distributed mesh from a built-in name or a mesh file.

    Collective on ``comm``.

    Args:
        comm: communicator the mesh lives on.
        spec: one of :data:`MESH_KINDS` or the path of a mesh file (``.msh``, ``.xdmf`` or a
            format meshio reads, e.g. ``.vtu``).
        resolution: cells per unit length of the built-in shapes (structured meshes: cells per
            edge; gmsh shapes: characteristic length ``1 / resolution``).  Ignored for files.
        verbose: let gmsh print its progress.

    Returns:
        The mesh, partitioned over ``comm`` with one layer of ghost cells across the facets
        shared between ranks (``GhostMode.shared_facet``), so that ``dS`` integrals work.

    Raises:
        ValueError: unknown name or suffix, bad resolution, or a file without supported cells.
        FileNotFoundError: ``spec`` looks like a file name but no such file exists.
    """
    return create_mesh_data(comm, spec, resolution, verbose=verbose).mesh


def create_mesh_data(
    comm: MPI.Comm,
    spec: str | pathlib.Path,
    resolution: int = 16,
    *,
    verbose: bool = False,
) -> MeshData:
    """Like :func:`create_mesh`, with cell and facet tags where the source has them.

    Built-in shapes tag their cells ``domain`` (1) and their exterior facets ``outer`` (1);
    the shapes with a hole tag the facets on the hole ``hole`` (2).  ``.msh`` files keep their
    physical groups.  Other files come without tags (``None``).

    Returns:
        :class:`dolfinx.io.gmsh.MeshData`: ``mesh``, ``cell_tags``, ``facet_tags``, ...,
        ``physical_groups`` (name -> (dim, tag)).
    """
    if isinstance(spec, str) and spec in MESH_KINDS:
        if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer):
            raise TypeError(f"resolution must be an int, got {type(resolution).__name__}")
        if resolution < 1:
            raise ValueError(f"resolution must be a positive integer, got {resolution}")
        return MESH_KINDS[spec](comm, int(resolution), verbose)
    if not isinstance(spec, str | pathlib.Path):
        raise TypeError(f"spec must be a mesh name or a path, got {type(spec).__name__}")
    path = pathlib.Path(spec)
    suffix = path.suffix.lower()
    if suffix not in _READERS and suffix not in _MESHIO_SUFFIXES:
        raise ValueError(
            f"unknown mesh {str(spec)!r}: use one of {sorted(MESH_KINDS)} or a mesh file with "
            f"suffix {sorted(_READERS)} or one that meshio reads, e.g. {list(_MESHIO_SUFFIXES[:4])}"
        )
    if suffix == ".bp":
        return _read_bp(comm, path, verbose)
    exists = comm.bcast(path.is_file() if comm.rank == 0 else None, root=0)
    if not exists:
        raise FileNotFoundError(f"mesh file {str(path)!r} does not exist")
    return _READERS.get(suffix, _read_meshio)(comm, path, verbose)


#: MPI tag of the exchange that finds the ranks holding a facet (``index_to_dest_ranks``).
_FACET_RANKS_TAG = 7301


def boundary_facets(mesh: dolfinx.mesh.Mesh) -> np.ndarray:
    """Local indices of the exterior facets (dimension tdim - 1) this rank owns.

    ``dolfinx.mesh.exterior_facet_indices`` counts the cells of a facet on this rank; on a mesh
    without ghost cells a 1D facet (a vertex) between two ranks then looks exterior to the rank
    that owns it (DOLFINx 0.11, e.g. ``vtkhdf.read_mesh`` on 2 ranks: the boundary of
    ``[0, 2]`` was ``{0, 1, 2}``).  When no rank has ghost cells, a facet that another rank
    also holds lies between two cells and is dropped.

    Collective.
    """
    tdim = mesh.topology.dim
    mesh.topology.create_connectivity(tdim - 1, tdim)
    exterior = dolfinx.mesh.exterior_facet_indices(mesh.topology)
    ghost_cells = mesh.comm.allreduce(mesh.topology.index_map(tdim).num_ghosts, op=MPI.SUM)
    if mesh.comm.size > 1 and ghost_cells == 0:
        shared = mesh.topology.index_map(tdim - 1).index_to_dest_ranks(_FACET_RANKS_TAG)
        keep = np.array([len(shared.links(f)) == 0 for f in exterior], dtype=bool)
        exterior = exterior[keep] if len(exterior) else exterior
    return exterior


def boundary_dofs(V: dolfinx.fem.FunctionSpace) -> np.ndarray:
    """Local indices of the dofs of ``V`` on the exterior boundary (for ``dirichletbc``).

    Collective.
    """
    mesh = V.mesh
    return dolfinx.fem.locate_dofs_topological(V, mesh.topology.dim - 1, boundary_facets(mesh))


def refine(mesh: dolfinx.mesh.Mesh) -> dolfinx.mesh.Mesh:
    """Uniform refinement (each edge split), kept on the ranks of its parent cells (collective).
    """
    mesh.topology.create_entities(1)
    return dolfinx.mesh.refine(mesh)[0]


def mesh_size(mesh: dolfinx.mesh.Mesh) -> float:
    """Largest cell diameter over all ranks (collective)."""
    tdim = mesh.topology.dim
    num_cells = mesh.topology.index_map(tdim).size_local
    local = mesh.h(tdim, np.arange(num_cells, dtype=np.int32))
    return float(mesh.comm.allreduce(float(local.max(initial=0.0)), op=MPI.MAX))


def mesh_volume(mesh: dolfinx.mesh.Mesh) -> float:
    """The volume (area, length) of the mesh, summed over the ranks (collective)."""
    form = dolfinx.fem.form(dolfinx.fem.Constant(mesh, 1.0) * ufl.dx(domain=mesh))
    # dolfinx annotates float | complex; the package works with real PETSc
    return float(mesh.comm.allreduce(cast(float, dolfinx.fem.assemble_scalar(form)),
                                     op=MPI.SUM))


def bounding_box(mesh: dolfinx.mesh.Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Global lower and upper corners ``(gdim,)`` of the mesh (collective).

    Reduced with buffer-based ``Allreduce``: mpi4py's pickled ``allreduce`` of arrays does
    not take elementwise minima.
    """
    gdim = mesh.geometry.dim
    x = mesh.geometry.x[:, :gdim]
    lower, upper = np.empty(gdim), np.empty(gdim)
    mesh.comm.Allreduce(np.ascontiguousarray(x.min(axis=0, initial=np.inf)), lower, op=MPI.MIN)
    mesh.comm.Allreduce(np.ascontiguousarray(x.max(axis=0, initial=-np.inf)), upper, op=MPI.MAX)
    return lower, upper


def mesh_file_suffixes() -> tuple[str, ...]:
    """The file suffixes :func:`create_mesh` reads, lower case with the dot.

    First those read by DOLFINx or this module itself (sorted), then those read through
    meshio.  A command line checks a mesh file's suffix against them before it starts.
    """
    return (*sorted(_READERS), *_MESHIO_SUFFIXES)
