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
def _gmsh_session(verbose: bool) -> Iterator[object]:
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
    error = comm.bcast(error, root=0)
    if error is not None:
        raise error


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
        outer, inner = [], []
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
            data = dolfinx.io.gmsh.model_to_mesh(gmsh.model, comm, 0, gdim=dim)
    else:
        _on_root(comm, lambda: None)
        data = dolfinx.io.gmsh.model_to_mesh(None, comm, 0, gdim=dim)
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
            data = dolfinx.io.gmsh.model_to_mesh(gmsh.model, comm, 0, gdim=gdim)
    else:
        _on_root(comm, lambda: None)
        gdim = comm.bcast(gdim, root=0)
        data = dolfinx.io.gmsh.model_to_mesh(None, comm, 0, gdim=gdim)
    return data


def _read_xdmf(comm: MPI.Comm, path: pathlib.Path, verbose: bool) -> MeshData:
    """Read the grid called "mesh" of an XDMF file, or else its first grid."""
    name = None
    if comm.rank == 0:
        try:
            grids = [g.get("Name") for g in ET.parse(path).getroot().iter("Grid")]
            name = "mesh" if "mesh" in grids or not grids else grids[0]
        except ET.ParseError as exc:
            name = ValueError(f"{path} is not a valid XDMF file: {exc}")
    name = comm.bcast(name, root=0)
    if isinstance(name, Exception):
        raise name
    with dolfinx.io.XDMFFile(comm, str(path), "r") as xdmf:
        return _untagged(xdmf.read_mesh(name=name))


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
    """Smallest gdim >= tdim such that all coordinates beyond it vanish."""
    extent = max(float(np.ptp(points, axis=0).max(initial=0.0)), 1.0)
    used = [j for j in range(points.shape[1]) if np.abs(points[:, j]).max() > 1e-12 * extent]
    return max([tdim] + [j + 1 for j in used])


def _meshio_topology(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray, str, int]:
    """Read a file with meshio; return cells (DOLFINx node order), points, cell name, degree."""
    import meshio

    try:
        data = meshio.read(path)
    except Exception as exc:
        raise ValueError(f"meshio could not read {path}: {exc}") from exc
    blocks = [b for b in data.cells if b.type in _MESHIO_CELLS]
    if not blocks:
        found = sorted({b.type for b in data.cells})
        raise ValueError(
            f"{path} has no supported cells (found {found}); supported: {sorted(_MESHIO_CELLS)}"
        )
    tdim = max(_TDIM[_MESHIO_CELLS[b.type][0]] for b in blocks)
    types = {b.type for b in blocks if _TDIM[_MESHIO_CELLS[b.type][0]] == tdim}
    if len(types) > 1:
        raise ValueError(f"{path} mixes cell types {sorted(types)}; one cell type is supported")
    (ctype,) = types
    cells = np.concatenate([b.data for b in blocks if b.type == ctype]).astype(np.int64)
    cell_name, degree = _MESHIO_CELLS[ctype]
    perm = dolfinx.io.utils.cell_perm_vtk(dolfinx.mesh.to_type(cell_name), cells.shape[1])
    cells = cells[:, perm]
    used, cells = np.unique(cells, return_inverse=True)  # drop nodes no cell refers to
    points = np.asarray(data.points, dtype=np.float64)[used]
    points = points[:, : _geometric_dimension(points, tdim)]
    return cells.reshape(-1, len(perm)), points, cell_name, degree


def _read_meshio(comm: MPI.Comm, path: pathlib.Path, verbose: bool) -> MeshData:
    result: tuple | Exception | None = None
    if comm.rank == 0:
        try:
            result = _meshio_topology(path)
        except ValueError as exc:
            result = exc
    header = None
    if comm.rank == 0 and not isinstance(result, Exception):
        cells, points, cell_name, degree = result
        header = (cells.shape[1], points.shape[1], cell_name, degree)
    header = comm.bcast(result if isinstance(result, Exception) else header, root=0)
    if isinstance(header, Exception):
        raise header
    nodes, gdim, cell_name, degree = header
    if comm.rank != 0:
        cells = np.empty((0, nodes), dtype=np.int64)
        points = np.empty((0, gdim), dtype=np.float64)
    element = basix.ufl.element(
        "Lagrange", cell_name, degree, basix.LagrangeVariant.equispaced, shape=(gdim,)
    )
    return _untagged(dolfinx.mesh.create_mesh(comm, cells, ufl.Mesh(element), points))


#: file suffix -> reader; every other suffix goes through meshio.
_READERS: dict[str, Callable[[MPI.Comm, pathlib.Path, bool], MeshData]] = {
    ".msh": _read_msh,
    ".xdmf": _read_xdmf,
}
_MESHIO_SUFFIXES = (".vtu", ".vtk", ".med", ".inp", ".mesh", ".meshb", ".obj", ".off", ".ply",
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
        The mesh, partitioned over ``comm`` without ghost cells.

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
    exists = comm.bcast(path.is_file() if comm.rank == 0 else None, root=0)
    if not exists:
        raise FileNotFoundError(f"mesh file {str(path)!r} does not exist")
    return _READERS.get(suffix, _read_meshio)(comm, path, verbose)


def boundary_facets(mesh: dolfinx.mesh.Mesh) -> np.ndarray:
    """Local indices of the exterior facets (dimension tdim - 1) this rank owns.

    Collective.
    """
    tdim = mesh.topology.dim
    mesh.topology.create_connectivity(tdim - 1, tdim)
    return dolfinx.mesh.exterior_facet_indices(mesh.topology)


def boundary_dofs(V: dolfinx.fem.FunctionSpace) -> np.ndarray:
    """Local indices of the dofs of ``V`` on the exterior boundary (for ``dirichletbc``).

    Collective.
    """
    mesh = V.mesh
    return dolfinx.fem.locate_dofs_topological(V, mesh.topology.dim - 1, boundary_facets(mesh))


def mesh_size(mesh: dolfinx.mesh.Mesh) -> float:
    """Largest cell diameter over all ranks (collective)."""
    tdim = mesh.topology.dim
    num_cells = mesh.topology.index_map(tdim).size_local
    local = mesh.h(tdim, np.arange(num_cells, dtype=np.int32))
    return float(mesh.comm.allreduce(float(local.max(initial=0.0)), op=MPI.MAX))


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
