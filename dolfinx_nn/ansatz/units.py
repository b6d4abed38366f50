"""Canonical units of the network side: the same data, bit for bit, in every unit system.

:mod:`~dolfinx_nn.ansatz.scaling` makes the network side dimensionless, so that a change of
the unit of length (metres, millimetres, kilometres) or of the solution changes the inputs of
the optimizer by round-off only.  Round-off is not enough for the default optimizer: L-BFGS
with a strong Wolfe line search branches on comparisons of loss values, and two runs whose
data differ in the last bit part after some tens of steps (the gap grows about tenfold every
ten steps once the loss falls fast), so after a thousand steps their errors differ by factors
of several, as two seeds do.

The network side therefore works on a *canonical* copy of the problem:

- coordinates ``x_hat = (x - x_0) / L_0`` with ``x_0`` the lower corner and ``L_0`` the largest
  extent of the mesh's bounding box, so the domain fits in ``[0, 1]^d``; time ``t_hat = t / T``;
- the solution ``u_hat = u / U_0`` with ``U_0`` the largest ``|g|`` of the Dirichlet data at
  the boundary vertices (``tau max |f|`` if ``g = 0``, 1 if both vanish; ``g`` counts as 0 where
  it is below the grid of ``max |u|``, as ``sin(pi x / L)`` at ``x = L`` is);
- the PDE ``u_t - k lap u + b . grad u = f`` multiplied by a time ``tau``:
  ``(tau / T) u_hat_t - (k tau / L_0^2) lap u_hat + (b tau / L_0) . grad u_hat = tau f / U_0``,
  with ``tau = T`` for time-dependent problems (the coefficient of ``u_hat_t`` stays 1) and
  ``tau = 1 / (k / L_0^2 + max |b| / L_0)`` for stationary ones (the coefficients sum to 1:
  ``(k, b, f)`` and ``(c k, c b, c f)`` are one problem);
- every datum the network side reads (mesh coordinates, ``g``, ``f``, ``b``, ``k``) is rounded
  to a grid of about ``2^-24`` of its own magnitude after the change of units
  (:mod:`~dolfinx_nn.ansatz.rounding`: dyadic for coordinates and scalars, irrational for
  values of functions, so that polynomial data at dyadic coordinates never sit on a midpoint
  of their grid): data that differ by the round-off of a change of units (about ``1e-16``)
  round to the same value unless they straddle a midpoint, which happens with probability
  about ``1e-8`` per value.

So for ``L = 1e-3``, ``1`` and ``1e3`` the fits, the collocation points, the scales and every
step of the optimizer are the same operations on the same numbers: one run, reported in three
unit systems.  The rounding moves data by at most ``3e-8`` of their magnitude (the vertices of
a mesh by ``3e-8`` of its extent, or less where its cells are small: the grid of the
coordinates is at most ``2^-10`` of the smallest cell), far below the accuracy of a network.
FEM and the errors stay in the user's units; the trained ansatz is returned as a module of the
user's coordinates (:class:`InUserUnits`).  The Ritz energy is assembled from UFL forms of the
data, which are not rounded: it is invariant up to round-off only.

Reference: the nondimensionalisation is the usual one (Langtangen & Pedersen, *Scaling of
Differential Equations*, Springer 2016, ch. 3); rounding the data to a grid coarser than the
round-off is what makes it exact in floating point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mpi4py import MPI

import dolfinx
import numpy as np
import torch
import ufl

from dolfinx_nn.ansatz.ansatz import DirichletAnsatz
from dolfinx_nn.ansatz.pdes import Problem
from dolfinx_nn.ansatz.rounding import GRID_BITS, data_grid, grid, round_scalar, round_to_grid
from dolfinx_nn.ansatz.scaling import Scales
from dolfinx_nn.expressions import ParsedExpression
from dolfinx_nn.meshes import boundary_facets, bounding_box

#: The grid of the coordinates is at most this fraction of the smallest cell diameter.
CELL_FRACTION = 2.0**-10


@dataclass(frozen=True)
class CanonicalUnits:
    """The units of the canonical problem, in the user's units.

    Attributes:
        origin: ``x_0``, lower corner of the mesh's bounding box, shape ``(gdim,)``.
        length: ``L_0``, largest extent of the bounding box (unit of ``x``).
        solution: ``U_0`` (unit of ``u``).
        time: ``tau``, the factor of the equation (unit of ``u / f``); for time-dependent
            problems also the unit of time (``T``).
        time_dependent: whether the inputs end with a time.
        coordinate_grid: spacing of the grid of canonical coordinates.
    """

    origin: tuple[float, ...]
    length: float
    solution: float
    time: float
    time_dependent: bool
    coordinate_grid: float

    @property
    def gdim(self) -> int:
        return len(self.origin)

    def to_user(self, x_hat: torch.Tensor) -> torch.Tensor:
        """Canonical inputs ``(n, gdim [+ 1])`` to the user's."""
        origin = torch.as_tensor(self.origin, dtype=x_hat.dtype, device=x_hat.device)
        x = origin + self.length * x_hat[:, : self.gdim]
        return torch.cat([x, self.time * x_hat[:, self.gdim:]], dim=1)

    def to_canonical(self, x: torch.Tensor) -> torch.Tensor:
        """The user's inputs ``(n, gdim [+ 1])`` to canonical ones (not rounded: for
        evaluating a trained ansatz, not for data)."""
        origin = torch.as_tensor(self.origin, dtype=x.dtype, device=x.device)
        x_hat = (x[:, : self.gdim] - origin) / self.length
        return torch.cat([x_hat, x[:, self.gdim:] / self.time], dim=1)

    def corner_to_user(self, corner: dict[str, Any]) -> dict[str, Any]:
        """A corner of :meth:`~dolfinx_nn.ansatz.corners.ReentrantCorner.as_dict` (canonical
        coordinates) in the user's: ``vertex = x_0 + L_0 vertex_hat``, ``radius = L_0
        radius_hat`` (angles and exponents have no unit)."""
        vertex = [o + self.length * v for o, v in zip(self.origin, corner["vertex"], strict=True)]
        return {**corner, "vertex": vertex, "radius": self.length * corner["radius"]}

    def user_time(self, t: Any) -> Any:
        """The user's time of a canonical time ``t_hat`` (None stays None)."""
        return None if t is None else self.time * t

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {"origin": list(self.origin), "length": self.length, "solution": self.solution,
                "time": self.time, "coordinate_grid": self.coordinate_grid,
                "grid_bits": GRID_BITS}


class CanonicalExpression(ParsedExpression):
    """A formula of the user's ``(x, t)`` as one of ``(x_hat, t_hat)``:
    ``c * e(x_0 + L_0 x_hat, tau t_hat)``.

    NumPy and torch values are rounded to the grid ``spacing`` (:func:`round_to_grid`; no
    gradient flows through them); the UFL form is exact.

    Args:
        user: the formula in the user's coordinates.
        units: the canonical units.
        factor: ``c``.
        spacing: the grid of the values (0: not rounded).
    """

    def __init__(self, user: ParsedExpression, units: CanonicalUnits, factor: float,
                 spacing: float) -> None:
        super().__init__(f"{factor!r}*({user.text}) at x = x_0 + L_0*x_hat", None,
                         user.uses_time, user.max_coordinate)
        self.user, self.units, self.factor, self.spacing = user, units, factor, spacing

    def ufl(self, x: Any, t: Any = None) -> Any:
        if not isinstance(x, ufl.core.expr.Expr):
            x = ufl.SpatialCoordinate(x)
        u = self.units
        xu = ufl.as_vector([u.origin[i] + u.length * x[i] for i in range(x.ufl_shape[0])])
        return self.factor * self.user.ufl(xu, self.units.user_time(t))

    def numpy(self, x: np.ndarray, t: Any = None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        origin = np.zeros(x.shape[0])
        origin[: self.units.gdim] = self.units.origin[: x.shape[0]]
        values = self.factor * self.user.numpy(origin[:, None] + self.units.length * x,
                                               self.units.user_time(t))
        return round_to_grid(values, self.spacing)

    def torch(self, x: torch.Tensor, t: Any = None) -> torch.Tensor:
        values = self.factor * self.user.torch(self.units.to_user(x),
                                               self.units.user_time(t))
        return round_to_grid(values.detach(), self.spacing)


@dataclass(frozen=True, kw_only=True)
class CanonicalProblem(Problem):
    """``user`` in :class:`CanonicalUnits`: ``exact`` and ``advection`` are
    :class:`CanonicalExpression`, ``diffusion`` is ``k tau / L_0^2`` rounded, ``final_time``
    is 1 if time-dependent, and the source is the user's ``tau f / U_0`` at the user's
    ``(x, t)``, rounded to the grid ``source_grid``."""

    user: Problem
    units: CanonicalUnits
    source_grid: float

    def source_torch(self, x: torch.Tensor) -> torch.Tensor:
        u = self.units
        f = self.user.source_torch(u.to_user(x.detach())) * (u.time / u.solution)
        return round_to_grid(f, self.source_grid)


@dataclass(frozen=True)
class Canonical:
    """A problem and its mesh in canonical units (:func:`canonical`)."""

    problem: CanonicalProblem
    mesh: dolfinx.mesh.Mesh
    units: CanonicalUnits


def _global_max(values: np.ndarray, comm: MPI.Comm) -> float:
    return float(comm.allreduce(float(np.max(np.abs(values), initial=0.0)), op=MPI.MAX))


def canonical(problem: Problem, mesh: dolfinx.mesh.Mesh) -> Canonical:
    """The canonical problem and mesh of ``problem`` on ``mesh`` (collective).

    The mesh is a copy (``dolfinx.mesh.create_submesh`` of the owned cells: same cells, same
    partition) whose coordinates are ``x_hat`` rounded to the coordinate grid; ``mesh`` itself
    is not changed.

    Raises:
        ValueError: the mesh has no extent, or the data are not finite at its vertices.
    """
    comm, gdim, tdim = mesh.comm, mesh.geometry.dim, mesh.topology.dim
    lower, upper = bounding_box(mesh)
    length = float(np.max(upper - lower))
    if not (np.isfinite(length) and length > 0.0):
        raise ValueError(f"the mesh has no extent: bounding box {lower} to {upper}")
    cells = np.arange(mesh.topology.index_map(tdim).size_local, dtype=np.int32)
    h_min = comm.allreduce(float(mesh.h(tdim, cells).min(initial=np.inf)), op=MPI.MIN)
    coordinate_grid = min(grid(1.0), grid(CELL_FRACTION * h_min / length, bits=0))
    copy = dolfinx.mesh.create_submesh(mesh, tdim, cells)[0]
    x = copy.geometry.x
    x[:, :gdim] = round_to_grid((x[:, :gdim] - lower) / length, coordinate_grid)

    # the data at the vertices (at t = 0 and T), in the user's units: the units and the grids
    timed = problem.time_dependent
    times = [0.0, problem.final_time] if timed else [None]
    points = mesh.geometry.x[:, :gdim]
    on_boundary = np.unique(dolfinx.mesh.entities_to_geometry(mesh, tdim - 1,
                                                              boundary_facets(mesh)))
    values, sources, speeds = [], [], []
    for t in times:
        xt = points if t is None else np.column_stack([points, np.full(len(points), t)])
        values.append(problem.exact_numpy(xt))
        sources.append(problem.source_torch(torch.from_numpy(xt)).detach().numpy())
        speeds.append([_global_max(b.numpy(points.T, t), comm) for b in problem.advection])
    g_max = _global_max(np.concatenate([v[on_boundary] for v in values]), comm)
    u_max = _global_max(np.concatenate(values), comm)
    if g_max <= data_grid(u_max):
        # g = 0 written as a formula that evaluates to round-off there (``sin(pi x / L)`` at
        # x = L): the round-off depends on the units and is no scale of the solution
        g_max = 0.0
    f_max = _global_max(np.concatenate(sources), comm)
    b_max = [max(s[i] for s in speeds) for i in range(len(problem.advection))]
    if not all(np.isfinite([u_max, f_max, *b_max])):
        raise ValueError(f"the data are not finite at the vertices of the mesh: max |u| = "
                         f"{u_max}, max |f| = {f_max}, max |b_i| = {b_max}")
    k = problem.diffusion
    tau = (problem.final_time if timed
           else 1.0 / (k / length**2 + max(b_max, default=0.0) / length))
    solution = g_max if g_max > 0.0 else (tau * f_max if f_max > 0.0 else 1.0)
    units = CanonicalUnits(tuple(float(v) for v in lower), length, solution, tau, timed,
                           coordinate_grid)

    advection = tuple(CanonicalExpression(b, units, tau / length, data_grid(m * tau / length))
                      for b, m in zip(problem.advection, b_max, strict=True))
    diffusion = round_scalar(k * tau / length**2)
    # f is rounded relative to the size of the operator's terms, not only to max |f|: for a
    # harmonic u, f is round-off of terms of size (k + |b|) max |u|, which must round to 0
    operator = diffusion + sum(m * tau / length for m in b_max) + float(timed)
    source_grid = data_grid(max(tau * f_max, operator * u_max) / solution)
    exact = CanonicalExpression(problem.exact, units, 1.0 / solution,
                                data_grid(u_max / solution))
    hat = CanonicalProblem(problem.pde, exact, gdim, diffusion, advection, 1.0,
                           user=problem, units=units, source_grid=source_grid)
    return Canonical(hat, copy, units)


class InUserUnits(torch.nn.Module):
    """A field of canonical inputs as a field of the user's: ``x -> c * field(x_hat)``.

    ``fit_report`` and ``spatial`` (of a fitted ``G`` or ``D``) are those of ``field``.

    Args:
        field: maps canonical inputs ``(n, input_dim)`` to ``(n,)`` or ``(n, 1)``.
        units: the canonical units.
        scale: ``c``, e.g. ``U_0`` for a field in units of the solution.
    """

    def __init__(self, field: torch.nn.Module, units: CanonicalUnits, scale: float = 1.0) -> None:
        super().__init__()
        self.field, self.units, self.scale = field, units, float(scale)

    @property
    def fit_report(self) -> Any:
        """The fit's report, its re-entrant corners (position and cutoff radius) in the user's
        coordinates."""
        report = getattr(self.field, "fit_report", None)
        if report is None:  # a space-time field: the report of its spatial part
            report = getattr(getattr(self.field, "spatial", None), "fit_report", None)
        if not report or not report.get("corners"):
            return report
        return {**report, "corners": [self.units.corner_to_user(c) for c in report["corners"]]}

    @property
    def spatial(self) -> Any:
        return getattr(self.field, "spatial", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.field(self.units.to_canonical(x))


def in_user_units(ansatz: DirichletAnsatz, units: CanonicalUnits) -> DirichletAnsatz:
    """The canonical ansatz ``u_hat = G_hat + D_hat N_hat`` as ``u = U_0 u_hat`` of the user's
    coordinates: ``G = U_0 G_hat``, ``D = D_hat`` (dimensionless), ``N = U_0 N_hat``.  The
    parameters of ``N`` are those of the canonical network (shared, not copied)."""
    return DirichletAnsatz(InUserUnits(ansatz.extension, units, units.solution),
                           InUserUnits(ansatz.distance, units),
                           InUserUnits(ansatz.network, units, units.solution))


def user_scales(scales: Scales, units: CanonicalUnits, problem: Problem) -> Scales:
    """:class:`~dolfinx_nn.ansatz.scaling.Scales` of the canonical problem in the user's units
    (``f_hat = tau f / U_0``, ``u_hat = u / U_0``, ``x_hat = (x - x_0) / L_0``)."""
    return Scales(length=scales.length * units.length,
                  residual=scales.residual * units.solution / units.time,
                  operator=scales.operator / units.time,
                  solution=scales.solution * units.solution,
                  volume=scales.volume * units.length**units.gdim,
                  diffusion=float(problem.diffusion))
