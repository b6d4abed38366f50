"""The benchmark problem of ``bench bridge`` and ``bench hessian``, and its dolfinx-adjoint twin.

Both benchmarks time the same PDE-constrained functional (:func:`setup_problem`): find ``u`` with

    -div(k grad u) [+ u^3] = 10 (1 + x y),  u = 0 on x = 0 and x = 1,
    k = q (linear) or q (1 + u^2) (nonlinear),     J(u) = int (u - 0.1 sin(pi x))^2 dx,

through the bridge and, for comparison, through dolfinx-adjoint (pyadjoint, optional):
:func:`peer_functional` records the same problem on a fresh pyadjoint tape with the same
direct solver (:data:`SOLVER`) for the forward, adjoint and, if asked, tangent-linear solves.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mpi4py import MPI

import numpy as np
import ufl
from dolfinx import fem, mesh

#: Direct solver of every solve (forward, adjoint, tangent-linear) on both sides.
SOLVER: dict[str, object] = {"ksp_type": "preonly", "pc_type": "lu",
                             "pc_factor_mat_solver_type": "mumps"}
#: Newton settings of the nonlinear problem.
NEWTON: dict[str, object] = {"snes_type": "newtonls", "snes_linesearch_type": "basic",
                             "snes_rtol": 1e-10, "snes_atol": 1e-12, "snes_stol": 0.0}
#: How to install the peer (printed when it is missing).
INSTALL_HINT = ("dolfinx-adjoint not installed: pip install --no-deps dolfinx-adjoint "
                "fenicsx-compat && pip install pyadjoint-ad h5py")


def setup_problem(msh: mesh.Mesh, nonlinear: bool, function_type: Any = fem.Function):
    """The benchmark problem on ``msh`` (P1).

    Args:
        msh: the mesh (2D).
        nonlinear: the nonlinear variant (``k = q (1 + u^2)`` and ``+ u^3``).
        function_type: class of ``q`` and ``u`` (``dxa.Function`` for dolfinx-adjoint).

    Returns:
        ``(V, q, u, v, F, M, dofs)``: space, coefficient, state, test function, residual form,
        functional form and the Dirichlet dofs (x = 0 and x = 1).
    """
    V = fem.functionspace(msh, ("Lagrange", 1))
    q = function_type(V, name="q")
    u = function_type(V, name="u")
    v = ufl.TestFunction(V)
    x = ufl.SpatialCoordinate(msh)
    f = 10.0 * (1.0 + x[0] * x[1])
    d = 0.1 * ufl.sin(ufl.pi * x[0])
    k = q * (1 + u**2) if nonlinear else q
    F = k * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - f * v * ufl.dx
    if nonlinear:
        F += u**3 * v * ufl.dx
    facets = mesh.locate_entities_boundary(
        msh, 1, lambda x: np.isclose(x[0], 0.0) | np.isclose(x[0], 1.0)
    )
    dofs = fem.locate_dofs_topological(V, 1, facets)
    return V, q, u, v, F, (u - d) ** 2 * ufl.dx, dofs


@dataclass
class PeerFunctional:
    """The problem recorded by dolfinx-adjoint.

    Attributes:
        Jhat: pyadjoint's reduced functional ``q -> J(u(q))``.
        q: its control (a ``dxa.Function``).
        V: the P1 space.
        dxa: the ``dolfinx_adjoint`` module (to make more functions).
        first_forward_s: wall time of the recorded first solve and assembly (slowest rank).
    """

    Jhat: Any
    q: Any
    V: fem.FunctionSpace
    dxa: Any
    first_forward_s: float

    def owned(self, function: Any) -> np.ndarray:
        """A copy of the owned dof values of a function of ``V``."""
        return function.x.array[: self.V.dofmap.index_map.size_local].copy()


@contextlib.contextmanager
def peer_functional(
    msh: mesh.Mesh, nonlinear: bool, q_values: np.ndarray, prefix: str,
    *, tangent_linear: bool = False,
) -> Iterator[PeerFunctional | None]:
    """The benchmark problem through dolfinx-adjoint, on a fresh tape (collective).

    Args:
        msh: the mesh.
        nonlinear: which problem (see :func:`setup_problem`).
        q_values: local values (owned and ghosts) of the coefficient.
        prefix: PETSc options prefix of the peer's solver (distinct from the bridge's).
        tangent_linear: also give the tangent-linear solves the direct solver (Hessians).

    Yields:
        The recorded functional, or None if dolfinx-adjoint (pyadjoint) is not installed.
        On exit a new empty tape replaces the one used here.
    """
    try:
        import dolfinx_adjoint as dxa
        import pyadjoint
    except ImportError:
        yield None
        return
    pyadjoint.set_working_tape(pyadjoint.Tape())
    try:
        V, q, u, _, F, M, dofs = setup_problem(msh, nonlinear, function_type=dxa.Function)
        q.x.array[:] = q_values
        bc = dxa.dirichletbc(dxa.Function(V), dofs)
        same = {"adjoint_petsc_options": dict(SOLVER)}
        if tangent_linear:
            same["tlm_petsc_options"] = dict(SOLVER)
        if nonlinear:
            problem = dxa.NonlinearProblem(F, u, bcs=[bc], petsc_options={**SOLVER, **NEWTON},
                                           petsc_options_prefix=prefix, **same)
        else:
            trial = ufl.TrialFunction(V)
            problem = dxa.LinearProblem(ufl.lhs(ufl.replace(F, {u: trial})),
                                        ufl.rhs(ufl.replace(F, {u: trial})), u=u, bcs=[bc],
                                        petsc_options=dict(SOLVER), petsc_options_prefix=prefix,
                                        **same)
        start = time.perf_counter()
        problem.solve()
        j = dxa.assemble_scalar(M)
        first = msh.comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
        yield PeerFunctional(pyadjoint.ReducedFunctional(j, pyadjoint.Control(q)), q, V, dxa,
                             first)
    finally:
        pyadjoint.set_working_tape(pyadjoint.Tape())


def relative_difference(ours: np.ndarray, theirs: np.ndarray, comm: MPI.Comm) -> float:
    """``|ours - theirs| / |theirs|`` (Euclidean norms over the owned values of all ranks)."""
    diff = comm.allreduce(float(np.sum((ours - theirs) ** 2)), op=MPI.SUM)
    ref = comm.allreduce(float(np.sum(theirs**2)), op=MPI.SUM)
    return float(np.sqrt(diff / ref))
