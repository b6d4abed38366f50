"""Point observations of finite element functions as a differentiable PyTorch operation.

``PointObservation(V, points)`` locates the points in the mesh and assigns each one to exactly
one rank with DOLFINx's ``dolfinx.geometry.determine_point_ownership`` (the lowest rank owning
a cell that contains it; with ``padding``, a point just outside goes to the rank of its nearest
cell), and builds the observation matrix ``B``
(PETSc AIJ; rows: this rank's points times the components, columns: the global dofs of ``V``)
from the element's basis functions at the points.  Applying it to a tensor of owned dofs is one
``MatMult``; its backward pass is one ``MatMultTranspose``.  PETSc moves off-rank dof values, so
the operator works for any partition.

Example::

    obs = PointObservation(V, points)          # points (m, gdim), the same on every rank
    y = obs(u)                                 # values at the points this rank owns
    loss = global_sum(((y - data[obs.local_indices]) ** 2).sum(), comm)

Supported spaces: Lagrange and DG (any degree, scalar, vector or tensor-valued) on any mesh.

The matrix and work vectors follow the package's PETSc rule (:mod:`dolfinx_nn.petsc_problems`):
``obs.destroy()`` or ``with PointObservation(...) as obs:`` frees them collectively, the
garbage collector never does, and a destroyed observation refuses use.
"""

from __future__ import annotations

from typing import cast

from mpi4py import MPI
from petsc4py import PETSc

import basix
import dolfinx.cpp
import dolfinx.fem
import dolfinx.geometry
import numpy as np
import numpy.typing as npt
import torch

from dolfinx_nn.parallel import raise_on_all_ranks
from dolfinx_nn.petsc_problems import PetscOwner

__all__ = ["PointObservation"]

_MAX_LISTED = 5  # points listed in the out-of-mesh error
#: A point whose squared distance to its cell is below this lies in the cell (the tolerance of
#: DOLFINx's point ownership, ``determine_point_ownership``).
_INSIDE_SQUARED = 10 * np.finfo(np.float64).eps


def _observe(values: torch.Tensor, obs: PointObservation, transpose: bool) -> torch.Tensor:
    """``B values`` (or ``B^T values``) as a tensor of the input's dtype and device."""
    x = values.detach().to("cpu", torch.float64).contiguous().numpy().reshape(-1)
    y = obs._apply(x, transpose=transpose)
    return torch.from_numpy(y).to(device=values.device, dtype=values.dtype)


class _Observe(torch.autograd.Function):
    """``y = B u`` (or ``B^T u`` with ``transpose``): linear, so its backward is the same op
    with the transpose flipped, again differentiable (second derivatives of losses through an
    observation have no term of their own), and its forward mode is the op itself."""

    @staticmethod
    def forward(values: torch.Tensor, obs: PointObservation, transpose: bool) -> torch.Tensor:
        return _observe(values, obs, transpose)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.obs, ctx.transpose = inputs[1], inputs[2]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _Observe.apply(grad, ctx.obs, not ctx.transpose), None, None

    @staticmethod
    def jvp(ctx, d_values: torch.Tensor, _obs, _transpose):
        return _Observe.apply(d_values, ctx.obs, ctx.transpose)  # an op: torch.func unwraps


def _as_points(points: npt.ArrayLike, gdim: int) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim == 1 and gdim == 1:
        points = points[:, None]
    if points.ndim != 2 or points.shape[1] != gdim:
        raise ValueError(f"points must have shape (m, {gdim}) for this mesh, got {points.shape}")
    bad = np.flatnonzero(~np.isfinite(points).all(axis=1))
    if bad.size:
        raise ValueError(f"point {bad[0]} is not finite: {points[bad[0]].tolist()}")
    return points


def _padded(points: np.ndarray) -> np.ndarray:
    out = np.zeros((points.shape[0], 3))
    out[:, : points.shape[1]] = points
    return out


def _is_affine_simplex(mesh: dolfinx.mesh.Mesh) -> bool:
    cell = mesh.topology.cell_type
    num_vertices = dolfinx.cpp.mesh.cell_num_vertices(cell)
    simplex = cell.name in ("interval", "triangle", "tetrahedron")
    affine = mesh.geometry.dofmaps[0].shape[1] == num_vertices
    return simplex and affine and mesh.geometry.dim == mesh.topology.dim


def _pull_back(mesh: dolfinx.mesh.Mesh, points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Reference coordinates ``(m, tdim)`` of ``points`` (also outside) in the given cells.

    Affine simplices: ``X = J^{-1} (x - x_0)``, vectorised; other cells (quadrilaterals,
    hexahedra, curved or manifold cells): one ``cmap.pull_back`` per cell.
    """
    gdim = mesh.geometry.dim
    x, dofmap = mesh.geometry.x[:, :gdim], mesh.geometry.dofmaps[0]
    if _is_affine_simplex(mesh):
        vertices = x[dofmap[cells]]  # (m, tdim + 1, gdim)
        jacobian = np.swapaxes(vertices[:, 1:] - vertices[:, :1], 1, 2)  # (m, gdim, tdim)
        return np.linalg.solve(jacobian, (points - vertices[:, 0])[..., None])[..., 0]
    cmap = mesh.geometry.cmaps[0]
    X = np.zeros((points.shape[0], mesh.topology.dim))
    order = np.argsort(cells, kind="stable")
    unique, starts = np.unique(cells[order], return_index=True)
    for cell, rows in zip(unique, np.split(order, starts[1:]), strict=True):
        X[rows] = cmap.pull_back(points[rows], x[dofmap[cell]])
    return X


def _locate(
    mesh: dolfinx.mesh.Mesh, points: np.ndarray, mine: slice, padding: float
) -> tuple[np.ndarray, np.ndarray]:
    """The global indices of the points this rank owns and their cells (collective).

    Ownership is DOLFINx's ``dolfinx.geometry.determine_point_ownership`` over the owned cells
    (bounding boxes padded by ``padding``): a point inside the mesh belongs to the lowest rank
    with a cell containing it (GJK, squared distance below ``10 eps``); a point outside every
    cell to the rank of its nearest cell, which is accepted when at most ``padding`` away.

    Args:
        mesh: the mesh.
        points: all points ``(num_points, gdim)``, the same on every rank.
        mine: the rows of ``points`` this rank hands to DOLFINx (the ranks' slices partition
            the rows, in rank order).
        padding: the largest accepted distance to the mesh.

    Raises:
        ValueError: on every rank, listing points farther than ``padding`` from the mesh.
    """
    comm, tdim = mesh.comm, mesh.topology.dim
    owned_cells = np.arange(mesh.topology.index_map(tdim).size_local, dtype=np.int32)
    data = dolfinx.geometry.determine_point_ownership(
        mesh, _padded(points[mine]), padding, owned_cells)
    owner = np.concatenate(comm.allgather(np.asarray(data.src_owner, dtype=np.int32)))
    indices = np.flatnonzero(owner == comm.rank)
    # DOLFINx returns a rank's points grouped by sending rank (``dest_owner``, sorted) in the
    # sender's order: with contiguous slices in rank order, increasing global indices.
    cells = np.asarray(data.dest_cells, dtype=np.int32)
    received = np.asarray(data.dest_points).reshape(-1, 3)[:, : points.shape[1]]
    error = None
    if not np.array_equal(received, points[indices]):
        error = RuntimeError("dolfinx.geometry.determine_point_ownership returned the points "
                             "in an unexpected order")
    raise_on_all_ranks(error, comm)
    squared = dolfinx.geometry.squared_distance(mesh, tdim, cells, _padded(points[indices]))
    distance = np.zeros(owner.size)
    distance[indices] = np.where(squared < _INSIDE_SQUARED, 0.0, np.sqrt(squared))
    comm.Allreduce(MPI.IN_PLACE, distance, op=MPI.MAX)
    missing = np.flatnonzero((owner < 0) | (distance > padding))
    if missing.size:
        listed = ", ".join(f"#{i} {points[i].tolist()}" for i in missing[:_MAX_LISTED])
        more = f" and {missing.size - _MAX_LISTED} more" if missing.size > _MAX_LISTED else ""
        raise ValueError(
            f"{missing.size} point(s) outside the mesh (padding {padding}): {listed}{more}"
        )
    return indices, cells


class PointObservation(PetscOwner):
    """Values of functions in ``V`` at given points, as a torch op and on numpy data.

    Args:
        V: a Lagrange or DG space (scalar, vector or tensor-valued).
        points: ``(m, gdim)`` array.  By default the same array on every rank; with
            ``distributed=True`` each rank passes its own points and the global list is their
            concatenation in rank order.
        distributed: whether ``points`` differ between ranks.
        padding: points outside the mesh by at most this distance (e.g. data on a curved
            boundary that the mesh approximates) are evaluated in the nearest cell, by
            extending its polynomials; by default such points are an error.

    Attributes:
        local_indices: positions in the global point list of the points this rank owns,
            increasing.  With replicated points, ``data[obs.local_indices]`` matches ``obs(u)``.
        points: coordinates of the points this rank owns, ``(num_local_points, gdim)``.
        cells: the local cell containing each owned point (as for ``Function.eval``).
        num_points: the global number of points.
        matrix: the PETSc observation matrix.

    Raises:
        ValueError: a point lies outside the mesh (raised on every rank), points of the wrong
            shape or not finite, or an unsupported element.
    """

    def __init__(
        self,
        V: dolfinx.fem.FunctionSpace,
        points: npt.ArrayLike,
        *,
        distributed: bool = False,
        padding: float = 0.0,
    ):
        mesh = V.mesh
        self._comm = mesh.comm
        self._check_element(V)
        self._bs = V.dofmap.index_map_bs
        self._num_owned_dofs = V.dofmap.index_map.size_local * self._bs
        self.value_shape: tuple[int, ...] = tuple(int(s) for s in V.element.value_shape)
        error: ValueError | None = None
        local = np.empty((0, mesh.geometry.dim))
        try:
            local = _as_points(points, mesh.geometry.dim)
        except ValueError as exc:
            error = exc
        if distributed:  # ranks pass different points: fail together
            raise_on_all_ranks(error, self._comm)
        elif error is not None:
            raise error
        if not padding >= 0.0:
            raise ValueError(f"padding must be a non-negative distance, got {padding}")
        if distributed:
            pieces = self._comm.allgather(local)
            all_points = np.concatenate(pieces, axis=0)
            offsets = np.cumsum([0] + [len(p) for p in pieces])
        else:
            all_points = local
            offsets = np.arange(self._comm.size + 1) * len(local) // self._comm.size
        self.num_points = int(all_points.shape[0])
        mine = slice(offsets[self._comm.rank], offsets[self._comm.rank + 1])
        self.local_indices, self.cells = _locate(mesh, all_points, mine, float(padding))
        self.points = all_points[self.local_indices]
        self._reference = _pull_back(mesh, self.points, self.cells)
        self._matrix = self._assemble(V)
        self._x, self._y = cast(tuple[PETSc.Vec, PETSc.Vec], self._matrix.createVecs())

    # ----------------------------------------------------------------------- set-up

    @staticmethod
    def _check_element(V: dolfinx.fem.FunctionSpace) -> None:
        if len(V.component()) > 0:
            raise ValueError(
                f"V is the subspace {V.component()} of another space; pass V.collapse()[0]"
            )
        bs = V.dofmap.index_map_bs
        if bs > 1 and int(np.prod(V.element.value_shape)) != bs:
            raise ValueError(
                "symmetric tensor spaces are not supported: use a full tensor space, got "
                f"{V.ufl_element()}"
            )
        element = V.element
        try:
            basix_element = element.basix_element
        except RuntimeError as exc:
            raise ValueError(
                "PointObservation needs a space with a single (possibly blocked) Basix element, "
                f"got {V.ufl_element()}"
            ) from exc
        if (
            basix_element.map_type != basix.MapType.identity
            or element.needs_dof_transformations
            or basix_element.family == basix.ElementFamily.custom
            or not element.interpolation_ident
        ):
            raise ValueError(
                f"PointObservation supports Lagrange and DG spaces, got {V.ufl_element()}"
            )

    def _assemble(self, V: dolfinx.fem.FunctionSpace) -> PETSc.Mat:
        bs = self._bs
        basis = V.element.basix_element
        m = self.points.shape[0]
        if m:
            phi = np.asarray(basis.tabulate(0, self._reference))[0, :, :, 0]  # (m, ndofs)
        else:
            phi = np.empty((0, basis.dim))
        ndofs = phi.shape[1]
        imap = V.dofmap.index_map
        cell_dofs = V.dofmap.list[self.cells]  # (m, ndofs) local block indices
        global_blocks = imap.local_to_global(cell_dofs.reshape(-1)).reshape(m, ndofs)
        # row (point p, component c): columns global_block * bs + c
        columns = global_blocks[:, None, :] * bs + np.arange(bs)[None, :, None]
        values = np.broadcast_to(phi[:, None, :], columns.shape)
        rows = m * bs
        indptr = np.arange(rows + 1, dtype=PETSc.IntType) * ndofs
        num_owned_dofs = imap.size_local * bs
        matrix = PETSc.Mat().createAIJ(
            size=((rows, PETSc.DETERMINE), (num_owned_dofs, imap.size_global * bs)),
            csr=(  # type: ignore[arg-type]  # stub: Sequences; petsc4py takes (and wants) arrays
                indptr,
                columns.reshape(-1).astype(PETSc.IntType),
                np.ascontiguousarray(values, dtype=PETSc.ScalarType).reshape(-1),
            ),
            comm=self._comm,
        )
        matrix.assemble()
        return matrix

    # ----------------------------------------------------------------------- evaluation

    @property
    def num_local_points(self) -> int:
        """Number of points this rank owns."""
        return int(self.local_indices.size)

    def _shape(self, flat: np.ndarray) -> np.ndarray:
        return flat.reshape((self.num_local_points, *self.value_shape))

    def _apply(self, array: np.ndarray, *, transpose: bool) -> np.ndarray:
        self._require_alive()
        src, dst = (self._y, self._x) if transpose else (self._x, self._y)
        error = None
        if array.shape != (src.getLocalSize(),):
            what = "values at the owned points" if transpose else "owned dofs of V"
            error = ValueError(
                f"expected {src.getLocalSize()} {what} (flattened), got shape {array.shape}")
        elif not np.isfinite(array).all():
            error = ValueError("input holds NaN or inf values; refusing to pass them to PETSc")
        raise_on_all_ranks(error, self._comm)  # the product below is collective
        src.array[:] = array
        (self._matrix.multTranspose if transpose else self._matrix.mult)(src, dst)
        return dst.array.copy()

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        """Values at the owned points, ``(num_local_points, *value_shape)``; differentiable.

        Args:
            u: tensor of V's owned dofs (block size flattened), e.g. ``NeuralFunction``'s output.
        """
        error = None
        if not isinstance(u, torch.Tensor):
            error = TypeError(f"u must be a torch.Tensor of owned dofs, got {type(u).__name__}")
        raise_on_all_ranks(error, self._comm)
        y = _Observe.apply(u.reshape(-1), self, False)
        return y.reshape((self.num_local_points, *self.value_shape))

    def evaluate(self, u: dolfinx.fem.Function) -> np.ndarray:
        """Values of a DOLFINx Function (in V's layout) at the owned points, as numpy."""
        owned = self._num_owned_dofs
        return self._shape(self._apply(u.x.array[:owned].copy(), transpose=False))

    def transpose(self, values: npt.ArrayLike) -> np.ndarray:
        """``B^T values``: owned dofs from values at the owned points (numpy)."""
        flat = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
        return self._apply(flat, transpose=True)

    def gather(self, values: npt.ArrayLike, root: int | None = 0) -> np.ndarray | None:
        """All point values in the global order, on ``root`` (``None``: on every rank).

        Collective.  ``values`` are this rank's, ``(num_local_points, ...)``.
        """
        values = np.asarray(values)
        error = None
        if values.shape[:1] != (self.num_local_points,):
            error = ValueError(
                f"values must have {self.num_local_points} rows (owned points), got {values.shape}"
            )
        raise_on_all_ranks(error, self._comm)
        pieces = (self.local_indices, values)
        parts = self._comm.allgather(pieces) if root is None else self._comm.gather(pieces, root)
        if parts is None:
            return None
        out = np.empty((self.num_points, *values.shape[1:]), dtype=values.dtype)
        for indices, chunk in parts:
            out[indices] = chunk
        return out

    def owned(self, data: npt.ArrayLike, *, distributed: bool = False) -> np.ndarray:
        """Rows of per-point data at this rank's points, matching ``obs(u)`` (collective).

        Args:
            data: one row per input point: the full array (replicated points) or this rank's
                rows (``distributed=True``, same layout as the points passed).
            distributed: as for the constructor.
        """
        data = np.asarray(data)
        if distributed:
            data = np.concatenate(self._comm.allgather(data), axis=0)
        error = None
        if data.shape[0] != self.num_points:
            error = ValueError(f"data must have {self.num_points} rows, got {data.shape[0]}")
        raise_on_all_ranks(error, self._comm)
        return data[self.local_indices]

    @property
    def matrix(self) -> PETSc.Mat:
        """The PETSc observation matrix ``B`` (refused after :meth:`destroy`)."""
        self._require_alive()
        return self._matrix

    def _owned_petsc(self) -> tuple[PETSc.Mat, PETSc.Vec, PETSc.Vec]:
        return self._matrix, self._x, self._y
