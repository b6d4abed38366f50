"""Errors against the exact solution, by DOLFINx quadrature of high degree.

- FEM solutions: ``L2`` and ``H1`` errors are assembled on the solution's own mesh with
  ``quadrature_degree`` (the exact solution is a UFL expression, so no interpolation enters);
- networks: evaluated with autograd gradients at the quadrature points of a reference mesh
  (the problem's mesh refined uniformly), where DOLFINx also evaluates the exact solution.

Definitions, for the error ``e = u - u_exact`` on the domain ``Omega`` of dimension ``d``:

- ``l2_error = ||e||`` (the L2 norm; unit of ``u`` times length^(d/2));
- ``h1_seminorm_error = L ||grad e||``, with ``L`` the largest extent of the mesh's bounding
  box (:func:`length_scale`, the ``L_0`` of :mod:`~dolfinx_nn.ansatz.units`): the seminorm
  times a length of the domain has the unit of the L2 norm;
- ``h1_error = sqrt(||e||^2 + L^2 ||grad e||^2)``.  Without ``L`` the sum adds quantities of
  different units (the H1 error of one problem then changed with the unit of length: on
  ``[0, 1e-3]`` it was the seminorm alone, on ``[0, 1e3]`` the L2 norm alone);
- ``max_error``: the largest ``|e|`` over those quadrature points (and, for FEM, the dofs).

Relative errors divide by the same norm of ``u_exact``; they do not change with the unit of
length or of ``u`` (absolute ones change by the factor of the unit, ``length^(d/2)`` times
that of ``u``).  ``L`` is reported as ``h1_length``.  The bounding box is the same on the
uniform refinements of a mesh, so FEM and network errors use the same ``L``.
"""

from __future__ import annotations

from typing import cast

from mpi4py import MPI

import dolfinx
import numpy as np
import torch
import ufl

from dolfinx_nn.ansatz.fitted_fields import quadrature_points
from dolfinx_nn.ansatz.pdes import Problem
from dolfinx_nn.expressions import on_mesh
from dolfinx_nn.meshes import bounding_box

#: Default quadrature degree of the error integrals.
ERROR_DEGREE = 8


def length_scale(mesh: dolfinx.mesh.Mesh) -> float:
    """``L``: the largest extent of the mesh's bounding box, the length that weights the H1
    seminorm in the H1 error (collective; unit of ``x``)."""
    lower, upper = bounding_box(mesh)
    return float(np.max(upper - lower))


def _relative(error: float, norm: float) -> float | None:
    """``error / norm``; None where the exact solution's norm is 0 (no relative error)."""
    return float(error / norm) if norm > 0.0 else None


def _norms(comm: MPI.Comm, l2_sq: float, semi_sq: float, ex_l2_sq: float, ex_semi_sq: float,
           max_err: float, ex_max: float, length: float) -> dict[str, float | None]:
    l2_sq, semi_sq, ex_l2_sq, ex_semi_sq = comm.allreduce(
        np.array([l2_sq, semi_sq, ex_l2_sq, ex_semi_sq]), op=MPI.SUM
    )
    max_err = comm.allreduce(max_err, op=MPI.MAX)
    ex_max = comm.allreduce(ex_max, op=MPI.MAX)
    l2, semi = np.sqrt(l2_sq), length * np.sqrt(semi_sq)
    ex_l2, ex_semi = np.sqrt(ex_l2_sq), length * np.sqrt(ex_semi_sq)
    h1, ex_h1 = np.hypot(l2, semi), np.hypot(ex_l2, ex_semi)
    return {
        "l2_error": float(l2),
        "h1_error": float(h1),
        "h1_seminorm_error": float(semi),
        "max_error": float(max_err),
        "relative_l2_error": _relative(l2, ex_l2),
        "relative_h1_error": _relative(h1, ex_h1),
        "relative_h1_seminorm_error": _relative(semi, ex_semi),
        "relative_max_error": _relative(max_err, ex_max),
        "h1_length": float(length),
    }


def relative_l2(errors: dict[str, float | None]) -> float:
    """``errors["relative_l2_error"]`` of :func:`fem_errors` or :func:`network_errors`.

    Raises:
        ValueError: the exact solution is 0 (no relative error).
    """
    value = errors["relative_l2_error"]
    if value is None:
        raise ValueError("the exact solution is 0: there is no relative L2 error")
    return value


def fem_errors(
    problem: Problem, uh: dolfinx.fem.Function, t: float | None = None,
    degree: int = ERROR_DEGREE, length: float | None = None,
) -> dict[str, float | None]:
    """Errors of a FEM solution ``uh`` (at time ``t`` for time-dependent problems), as defined
    in the module docstring (collective).

    Args:
        problem: the problem, whose exact solution is the reference.
        uh: the FEM solution.
        t: time of ``uh`` (time-dependent problems).
        degree: quadrature degree of the integrals.
        length: ``L`` of the H1 error (None: :func:`length_scale` of ``uh``'s mesh).
    """
    mesh = uh.function_space.mesh
    comm = mesh.comm
    x = ufl.SpatialCoordinate(mesh)
    ue = problem.exact_ufl(x, t)
    dx = ufl.dx(metadata={"quadrature_degree": degree})

    def integral(expr: ufl.core.expr.Expr) -> float:
        # dolfinx annotates float | complex; the package works with real PETSc
        form = dolfinx.fem.form(on_mesh(expr, x) * dx)  # grad of a constant u is Zero
        return cast(float, dolfinx.fem.assemble_scalar(form))

    e = uh - ue
    l2_sq, semi_sq = integral(e**2), integral(ufl.inner(ufl.grad(e), ufl.grad(e)))
    ex_l2, ex_semi = integral(ue**2), integral(ufl.inner(ufl.grad(ue), ufl.grad(ue)))
    _, _, (diff, exact) = quadrature_points(mesh, degree, [e, ue])
    V = uh.function_space
    nodes = V.tabulate_dof_coordinates()[: V.dofmap.index_map.size_local, : mesh.geometry.dim]
    inputs = nodes if t is None else np.column_stack([nodes, np.full(len(nodes), t)])
    at_dofs = np.abs(uh.x.array[: len(nodes)] - problem.exact_numpy(inputs))
    max_err = max(float(np.abs(diff).max(initial=0.0)), float(at_dofs.max(initial=0.0)))
    return _norms(comm, l2_sq, semi_sq, ex_l2, ex_semi, max_err,
                  float(np.abs(exact).max(initial=0.0)),
                  length_scale(mesh) if length is None else length)


def _value_and_gradient(
    field: torch.nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Values and gradients of a scalar field at ``x`` (no second derivatives)."""
    x = x.detach().requires_grad_(True)
    u = field(x)
    (grad,) = torch.autograd.grad(u.sum(), x)
    return u.detach(), grad


def network_errors(
    problem: Problem, field: torch.nn.Module, reference_mesh: dolfinx.mesh.Mesh,
    t: float | None = None, degree: int = ERROR_DEGREE, chunk: int = 20000,
    length: float | None = None,
) -> dict[str, float | None]:
    """Errors of a network field on ``reference_mesh`` (at time ``t`` if time-dependent), as
    defined in the module docstring (collective); ``length``: ``L`` of the H1 error (None:
    :func:`length_scale` of ``reference_mesh``)."""
    mesh = reference_mesh
    x_ufl = ufl.SpatialCoordinate(mesh)
    ue = problem.exact_ufl(x_ufl, t)
    points, weights, (exact, *exact_grad) = quadrature_points(
        mesh, degree, [on_mesh(e, x_ufl) for e in [ue, *ufl.grad(ue)]]
    )
    inputs = points if t is None else np.column_stack([points, np.full(len(points), t)])
    values, grads = [], []
    for start in range(0, len(inputs), chunk):
        xb = torch.from_numpy(np.ascontiguousarray(inputs[start : start + chunk]))
        ub, gb = _value_and_gradient(field, xb)
        values.append(ub.numpy())
        grads.append(gb[:, : problem.gdim].numpy())
    gdim = problem.gdim
    u = np.concatenate(values) if values else np.empty(0)
    g = np.concatenate(grads) if grads else np.empty((0, gdim))
    ge = np.column_stack(exact_grad) if exact_grad else np.empty((len(u), 0))
    err = u - exact
    return _norms(
        mesh.comm,
        float(weights @ err**2),
        float(weights @ ((g - ge) ** 2).sum(axis=1)),
        float(weights @ exact**2),
        float(weights @ (ge**2).sum(axis=1)),
        float(np.abs(err).max(initial=0.0)),
        float(np.abs(exact).max(initial=0.0)),
        length_scale(mesh) if length is None else length,
    )


def boundary_error(
    problem: Problem, field: torch.nn.Module, points: np.ndarray, comm: MPI.Comm
) -> dict[str, float]:
    """Max ``|u - g|`` at boundary ``points`` (rank-local), absolute and relative to max ``|g|``."""
    x = torch.from_numpy(np.asarray(points, dtype=np.float64))
    with torch.no_grad():
        diff = (field(x) - problem.exact_torch(x)).abs().numpy() if len(x) else np.empty(0)
        g = problem.exact_torch(x).abs().numpy() if len(x) else np.empty(0)
    err = comm.allreduce(float(diff.max(initial=0.0)), op=MPI.MAX)
    gmax = comm.allreduce(float(g.max(initial=0.0)), op=MPI.MAX)
    return {"boundary_max_error": err, "boundary_relative_max_error": err / max(gmax, 1e-300)}


def distance_range(
    distance: torch.nn.Module, points: np.ndarray, comm: MPI.Comm
) -> dict[str, float]:
    """Smallest and largest ``D`` at interior ``points`` (rank-local), and their ratio.

    A negative ``distance_min`` means the fitted ``D`` dips below zero near the boundary,
    and so also vanishes on a curve (surface) inside the domain, where ``u = G``.
    """
    with torch.no_grad():
        d = distance(torch.from_numpy(np.asarray(points, dtype=np.float64))).numpy()
    lo = comm.allreduce(float(d.min(initial=np.inf)), op=MPI.MIN)
    hi = comm.allreduce(float(d.max(initial=-np.inf)), op=MPI.MAX)
    return {"distance_min": lo, "distance_max": hi, "distance_min_relative": lo / hi}
