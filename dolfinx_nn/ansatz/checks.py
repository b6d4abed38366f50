"""Checks of a comparison's inputs before anything is solved: option combinations and data.

Every check ends the same way on every rank: a failure found on one rank (data that are not
finite in its cells) is agreed over all ranks (:func:`dolfinx_nn.parallel.raise_on_all_ranks`),
which then all raise a one-line ``ValueError`` naming the bad value and what was expected (the
failing rank's, with its number on the other ranks).  A raise on one rank alone would leave
the others waiting in the next collective operation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mpi4py import MPI

import dolfinx
import numpy as np
import torch

from dolfinx_nn.ansatz.equations import PDES
from dolfinx_nn.ansatz.fitted_fields import quadrature_points
from dolfinx_nn.ansatz.pdes import Problem
from dolfinx_nn.meshes import bounding_box
from dolfinx_nn.parallel import raise_on_all_ranks

if TYPE_CHECKING:
    from dolfinx_nn.ansatz.network_solver import NetworkConfig


#: Range of ``max |u|`` that the errors can measure: ``u^2`` times a volume stays a normal,
#: finite double (the volumes of meshes in SI units span many orders of magnitude too).
SOLUTION_RANGE = (1e-100, 1e100)


def check_options(problem: Problem, network: NetworkConfig) -> None:
    """Refuse option combinations that a later stage would refuse (same on every rank).

    Raises:
        ValueError: ``loss="ritz"`` for an equation that is not symmetric (no energy).
    """
    if network.loss == "ritz" and not problem.equation.symmetric:
        symmetric = sorted(name for name, pde in PDES.items() if pde.symmetric)
        raise ValueError(
            f"--loss ritz needs a symmetric equation (pde one of {symmetric}), got pde "
            f"{problem.pde!r}: it has no energy to minimise; use --loss strong"
        )


def _first_bad(what: str, values: np.ndarray, points: np.ndarray) -> str | None:
    """A one-line message on the first non-finite value of ``what`` (None: all finite)."""
    bad = np.flatnonzero(~np.isfinite(values))
    if not bad.size:
        return None
    where = ", ".join(f"{c:.6g}" for c in points[bad[0]])
    return (f"{what} is {float(values[bad[0]])!r} at ({where}) ({bad.size} points of one rank's "
            f"cells): expected finite values at every vertex, dof and quadrature point of the "
            f"mesh")


def check_data(problem: Problem, mesh: dolfinx.mesh.Mesh, degrees: tuple[int, ...],
               quadrature_degree: int) -> None:
    """Refuse data that are not finite on the mesh, or an exact solution that is zero
    (collective, agreed over the ranks).

    The exact solution ``u`` (the Dirichlet data ``g`` and the initial value are its values),
    the source ``f`` (by autograd of ``u``) and the advection field are evaluated at the
    mesh's nodes, the dofs of the highest Lagrange degree of ``degrees`` and the quadrature
    points of ``quadrature_degree`` (at ``t = 0`` and ``t = T`` if time-dependent): the
    points where FEM, the network's training and the error measurement read them.

    Raises:
        ValueError: a value is NaN or infinite (the message names it and where), ``u`` is
            zero at every point (relative errors divide by its norm), or ``max |u|`` is outside
            :data:`SOLUTION_RANGE`.
    """
    gdim = mesh.geometry.dim
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", max(degrees)))
    points = np.concatenate([mesh.geometry.x[:, :gdim], V.tabulate_dof_coordinates()[:, :gdim],
                             quadrature_points(mesh, quadrature_degree)[0]])
    # mapped points (dofs, quadrature) can leave the box by round-off (x = -1e-17 on a side
    # x = 0), where sqrt(x[0]) is NaN though the data are fine on the domain
    points = np.clip(points, *bounding_box(mesh))
    times = [0.0, problem.final_time] if problem.time_dependent else [None]
    message, u_max = None, 0.0
    for t in times:
        inputs = points if t is None else np.column_stack([points, np.full(len(points), t)])
        x = torch.from_numpy(np.ascontiguousarray(inputs))
        u = problem.exact_numpy(inputs)
        f = problem.source_torch(x).detach().numpy()
        text = problem.exact.text
        fields = [(f"the exact solution {text!r}", u),
                  (f"the source f = L u of the exact solution {text!r}", f)]
        fields += [(f"the advection component b_{i} = {b.text!r}", b.numpy(points.T, t))
                   for i, b in enumerate(problem.advection)]
        for what, values in fields:
            message = message or _first_bad(what, values, inputs)
        u_max = max(u_max, float(np.abs(u[np.isfinite(u)]).max(initial=0.0)))
    raise_on_all_ranks(None if message is None else ValueError(message), mesh.comm)
    u_max = mesh.comm.allreduce(u_max, op=MPI.MAX)
    if u_max == 0.0:
        raise ValueError(f"the exact solution {problem.exact.text!r} is 0 at every point of the "
                         f"mesh: expected a nonzero solution (relative errors divide by its "
                         f"norm)")
    if not SOLUTION_RANGE[0] <= u_max <= SOLUTION_RANGE[1]:
        raise ValueError(f"the exact solution {problem.exact.text!r} reaches max |u| = "
                         f"{u_max:.3g}: expected max |u| in [{SOLUTION_RANGE[0]:g}, "
                         f"{SOLUTION_RANGE[1]:g}] (its square, in the L2 norms, would underflow "
                         f"or overflow in double precision); express u in another unit")
