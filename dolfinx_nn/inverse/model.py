"""The forward model of the inverse problem: ``-div(q grad u) = f`` with Dirichlet data.

:class:`PoissonModel` discretises the equation with Lagrange elements and exposes the solve
``q -> u`` as a differentiable torch operation (:func:`dolfinx_nn.fem_operator`): the backward
pass is one adjoint solve that reuses the forward LU factorisation (the operator is symmetric).
"""

from __future__ import annotations

import itertools


import dolfinx
import dolfinx.fem
import numpy as np
import torch
import ufl

from dolfinx_nn._dofs import owned_size
from dolfinx_nn.expressions import ParsedExpression
from dolfinx_nn.fem_operator import fem_operator
from dolfinx_nn.meshes import boundary_facets

_PREFIXES = itertools.count()


class PoissonModel:
    """``-div(q grad u) = f`` in the mesh, ``u = g`` on its whole boundary.

    Args:
        mesh: the (distributed) mesh.
        source: formula of ``f``.
        boundary: formula of the Dirichlet data ``g``.
        degree: Lagrange degree of the state ``u``.
        coefficient_degree: Lagrange degree of the coefficient ``q``.
        petsc_options: options of the forward KSP (default: LU with MUMPS).

    Attributes:
        V: state space; ``u`` its function (holds the last solution).
        Q: coefficient space; ``q`` its function (holds the last coefficient).
        solve: differentiable ``q_t -> u_t`` on owned dofs.
    """

    def __init__(
        self,
        mesh: dolfinx.mesh.Mesh,
        source: ParsedExpression,
        boundary: ParsedExpression,
        *,
        degree: int = 1,
        coefficient_degree: int = 1,
        petsc_options: dict[str, object] | None = None,
    ) -> None:
        for name, value in (("degree", degree), ("coefficient_degree", coefficient_degree)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.mesh = mesh
        self.comm = mesh.comm
        self.V = dolfinx.fem.functionspace(mesh, ("Lagrange", degree))
        self.Q = dolfinx.fem.functionspace(mesh, ("Lagrange", coefficient_degree))
        self.u = dolfinx.fem.Function(self.V, name="u")
        self.q = dolfinx.fem.Function(self.Q, name="q")
        self.x = ufl.SpatialCoordinate(mesh)
        self.f = source.ufl(self.x)
        g = dolfinx.fem.Function(self.V, name="g")
        g.interpolate(boundary.numpy)
        tdim = mesh.topology.dim
        dofs = dolfinx.fem.locate_dofs_topological(self.V, tdim - 1, boundary_facets(mesh))
        self.bc = dolfinx.fem.dirichletbc(g, dofs)
        v = ufl.TestFunction(self.V)
        F = self.q * ufl.inner(ufl.grad(self.u), ufl.grad(v)) * ufl.dx - self.f * v * ufl.dx
        self.solve = fem_operator(
            F, self.u, controls=[self.q], bcs=[self.bc], petsc_options=petsc_options,
            petsc_options_prefix=f"inverse_{next(_PREFIXES)}_", symmetric=True,
        )
        self.num_owned_coefficient = owned_size(self.Q)
        self.num_owned_state = owned_size(self.V)

    def interpolate_coefficient(self, expression: ParsedExpression) -> torch.Tensor:
        """Owned dofs of the coefficient space interpolating ``expression``."""
        q = dolfinx.fem.Function(self.Q)
        q.interpolate(expression.numpy)
        return torch.from_numpy(q.x.array[: self.num_owned_coefficient].copy())

    def coefficient_points(self) -> np.ndarray:
        """Coordinates ``(n_owned, gdim)`` of the owned coefficient dofs."""
        n = self.Q.dofmap.index_map.size_local
        return self.Q.tabulate_dof_coordinates()[:n, : self.mesh.geometry.dim].copy()

    def state_points(self) -> np.ndarray:
        """Coordinates ``(n_owned, gdim)`` of the owned state dofs."""
        n = self.V.dofmap.index_map.size_local
        return self.V.tabulate_dof_coordinates()[:n, : self.mesh.geometry.dim].copy()
