"""Quadrature spaces, and UFL expressions evaluated at their points on the owned cells.

A basix quadrature element stores one value (scalar, vector or tensor) per quadrature point of
each cell.  Forms that contain such a function must be integrated with the same rule, so the
space and the measure are created together here.
"""

from __future__ import annotations

from mpi4py import MPI

import basix.ufl
import dolfinx
import numpy as np
import ufl


def quadrature_space(
    mesh: dolfinx.mesh.Mesh, degree: int, value_shape: tuple[int, ...] = ()
) -> dolfinx.fem.FunctionSpace:
    """The space of values at the points of the default quadrature rule of ``degree``.

    Args:
        mesh: the mesh.
        degree: polynomial degree integrated exactly by the rule.
        value_shape: ``()`` for scalars, ``(n,)`` for vectors, ``(m, n)`` for tensors.
    """
    if not isinstance(degree, int | np.integer) or degree < 0:
        raise ValueError(f"quadrature degree must be a non-negative integer, got {degree!r}.")
    element = basix.ufl.quadrature_element(
        mesh.basix_cell(), value_shape=tuple(value_shape), degree=int(degree)
    )
    return dolfinx.fem.functionspace(mesh, element)


def is_quadrature_space(V: dolfinx.fem.FunctionSpace) -> bool:
    """Whether ``V`` is built on a basix quadrature element."""
    return V.ufl_element().family_name == "quadrature"


def quadrature_degree(V: dolfinx.fem.FunctionSpace) -> int:
    """Degree of the rule of a quadrature space."""
    return int(V.ufl_element().embedded_superdegree)


def quadrature_measure(V: dolfinx.fem.FunctionSpace, **kwargs) -> ufl.Measure:
    """The cell measure whose rule matches the quadrature space ``V`` (use it in forms)."""
    metadata = {"quadrature_degree": quadrature_degree(V), "quadrature_rule": "default"}
    metadata.update(kwargs.pop("metadata", {}))
    return ufl.Measure("dx", domain=V.mesh, metadata=metadata, **kwargs)


class QuadratureLayout:
    """Where the values at the quadrature points of the owned cells live in a quadrature space.

    Points are ordered cell by cell (owned cells only) and point by point within a cell; arrays
    of point values have shape ``(num_points, *value_shape)``.
    """

    def __init__(self, V: dolfinx.fem.FunctionSpace) -> None:
        if not is_quadrature_space(V):
            raise ValueError(
                f"expected a space on a basix quadrature element, got element "
                f"{V.ufl_element()} (family {V.ufl_element().family_name!r})."
            )
        mesh = V.mesh
        tdim = mesh.topology.dim
        self.space = V
        self.comm: MPI.Comm = mesh.comm
        self.cells = np.arange(mesh.topology.index_map(tdim).size_local, dtype=np.int32)
        self.points_per_cell = V.element.interpolation_points.shape[0]
        self.num_points = self.cells.size * self.points_per_cell
        self.value_shape = tuple(int(s) for s in V.value_shape)
        bs = V.dofmap.bs
        dofs = V.dofmap.list[self.cells].reshape(-1)
        #: local (block-flattened) indices of the values of each point, shape (num_points, bs)
        self.indices = (dofs[:, None] * bs + np.arange(bs)[None, :]).astype(np.int64)

    def cell_of_point(self, point: int) -> int:
        """Local index of the cell that holds the point ``point``."""
        return int(self.cells[point // self.points_per_cell])

    def write(self, f: dolfinx.fem.Function, values: np.ndarray) -> None:
        """Write point values of shape ``(num_points, ...)`` into ``f``; update ghosts."""
        f.x.array[self.indices] = values.reshape(self.indices.shape)
        f.x.scatter_forward()

    def read(self, array: np.ndarray) -> np.ndarray:
        """Point values ``(num_points, *value_shape)`` from a local array of the space."""
        return array[self.indices].reshape((self.num_points, *self.value_shape))


class QuadratureEvaluator:
    """A UFL expression evaluated at the quadrature points of the owned cells."""

    def __init__(self, expression: ufl.core.expr.Expr, layout: QuadratureLayout) -> None:
        points = layout.space.element.interpolation_points
        self.layout = layout
        self.shape = tuple(int(s) for s in expression.ufl_shape)
        self.size = int(np.prod(self.shape, dtype=int))
        self._expression = dolfinx.fem.Expression(expression, points)

    def __call__(self) -> np.ndarray:
        """Values of shape ``(num_points, size)`` (float64)."""
        mesh = self.layout.space.mesh
        values = self._expression.eval(mesh, self.layout.cells)
        return np.ascontiguousarray(values, dtype=np.float64).reshape(-1, self.size)
