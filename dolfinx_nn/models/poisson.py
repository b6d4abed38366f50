"""The Poisson coefficient model: ``-div(q grad u) = f`` with Dirichlet data.

:class:`PoissonModel` discretises the equation with Lagrange elements and exposes the solve
``q -> u`` as a differentiable torch operation (:func:`dolfinx_nn.fem_operator`): the backward
pass is one adjoint solve that reuses the forward LU factorisation (the operator is symmetric).

Reproducibility under MPI: distributed MUMPS schedules its work dynamically (Amestoy et al.,
SIAM J. Matrix Anal. Appl. 23, 2001), so the same system solved twice on N > 1 ranks may differ
in the last bits, and hundreds of L-BFGS steps amplify that into percent-level differences of
the recovered coefficient.  The default ``solver="reproducible"`` therefore gathers the matrix
onto rank 0 (``PCTELESCOPE``) and factorizes it there with sequential MUMPS: a seeded run repeats
to the bit on the same machine and number of ranks.  ``solver="parallel"`` is distributed
MUMPS, for meshes whose factorization does not fit one process.
"""

from __future__ import annotations

import atexit
import itertools

from petsc4py import PETSc

import dolfinx
import dolfinx.fem
import numpy as np
import torch
import ufl

from dolfinx_nn.conversion import num_owned, to_torch
from dolfinx_nn.expressions import ParsedExpression
from dolfinx_nn.fem_operator import FEMOperator, fem_operator
from dolfinx_nn.meshes import boundary_facets
from dolfinx_nn.petsc_problems import PetscOwner

_PREFIXES = itertools.count()

#: Options of inner (telescope) solvers that PETSc reads only at the first solve.
_LAZY_OPTIONS: list[str] = []


@atexit.register
def _forget_lazy_options() -> None:
    """Remove the inner-solver options of models that never solved (e.g. a run refused before
    its first solve), so that PETSc does not report them as unused at exit."""
    if not _LAZY_OPTIONS or not PETSc.Sys.isInitialized() or PETSc.Sys.isFinalized():
        return
    options = PETSc.Options()
    for name in _LAZY_OPTIONS:
        if options.hasName(name):
            options.delValue(name)

#: Forward solvers of :class:`PoissonModel`.
SOLVERS = ("reproducible", "parallel")


def solver_options(solver: str, size: int, rank: int = 0) -> dict[str, object]:
    """PETSc options of the LU solve named ``solver`` on ``size`` ranks, for ``rank``.

    ``"reproducible"`` on several ranks: ``PCTELESCOPE`` gathers the system onto rank 0,
    whose inner KSP (the only one) gets the LU options; the other ranks get none, which would
    stay unused.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}.")
    lu = {"pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}
    if solver == "parallel" or size == 1:
        return {"ksp_type": "preonly", **lu}
    inner = {"ksp_type": "preonly", **lu} if rank == 0 else {}
    return {
        "ksp_type": "preonly",
        "pc_type": "telescope",
        "pc_telescope_reduction_factor": size,
        **{f"telescope_{k}": v for k, v in inner.items()},
    }


class PoissonModel(PetscOwner):
    """``-div(q grad u) = f`` in the mesh, ``u = g`` on its whole boundary.

    Owns the solver of :attr:`solve` (the package's PETSc rule): :meth:`destroy` or a ``with``
    block frees it on every rank.

    Args:
        mesh: the (distributed) mesh.
        source: formula of ``f``.
        boundary: formula of the Dirichlet data ``g``.
        degree: Lagrange degree of the state ``u``.
        coefficient_degree: Lagrange degree of the coefficient ``q``.
        petsc_options: options of the forward KSP (default: :func:`solver_options` of
            ``solver``).
        solver: ``"reproducible"`` (LU on rank 0; bitwise repeatable) or ``"parallel"``
            (distributed MUMPS); ignored when ``petsc_options`` are given.

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
        solver: str = "reproducible",
    ) -> None:
        for name, value in (("degree", degree), ("coefficient_degree", coefficient_degree)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if petsc_options is None:
            petsc_options = solver_options(solver, mesh.comm.size, mesh.comm.rank)
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
        prefix = f"inverse_{next(_PREFIXES)}_"
        self.solve = fem_operator(
            F, self.u, controls=[self.q], bcs=[self.bc], petsc_options=petsc_options,
            petsc_options_prefix=prefix, symmetric=True,
        )
        _LAZY_OPTIONS.extend(prefix + k for k in petsc_options if k.startswith("telescope_"))
        self.num_owned_coefficient = num_owned(self.Q)
        self.num_owned_state = num_owned(self.V)

    def _owned_petsc(self) -> tuple[FEMOperator]:
        return (self.solve,)

    def interpolate_coefficient(self, expression: ParsedExpression) -> torch.Tensor:
        """Owned dofs of the coefficient space interpolating ``expression``."""
        q = dolfinx.fem.Function(self.Q)
        q.interpolate(expression.numpy)
        return to_torch(q)

    def coefficient_points(self) -> np.ndarray:
        """Coordinates ``(n_owned, gdim)`` of the owned coefficient dofs."""
        n = self.Q.dofmap.index_map.size_local
        return self.Q.tabulate_dof_coordinates()[:n, : self.mesh.geometry.dim].copy()

    def state_points(self) -> np.ndarray:
        """Coordinates ``(n_owned, gdim)`` of the owned state dofs."""
        n = self.V.dofmap.index_map.size_local
        return self.V.tabulate_dof_coordinates()[:n, : self.mesh.geometry.dim].copy()
