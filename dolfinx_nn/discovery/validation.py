"""Check discovered equations by simulating them with DOLFINx on a held-out time window.

Each candidate equation is integrated with :func:`~dolfinx_nn.discovery.simulation.integrate`
from the last training snapshot to the end of the record, and compared with the held-out
snapshots, which discovery never saw.  The initial state and the boundary values come from the
*data*: a surrogate fitted to the validation window alone (:func:`window_surrogate`), evaluated
at the last training snapshot (initial state) and on the boundary at every step (Dirichlet
values, and second derivatives for equations of order 3 or 4).  Because the candidates share
the initial state, the boundary values and the window, their errors can be compared side by
side (:func:`validate_candidates`): a wrong equation drifts away from the data, whatever the
boundary conditions were.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from mpi4py import MPI

import dolfinx
import numpy as np
import torch

from dolfinx_nn.discovery.data import SpaceTimeData
from dolfinx_nn.discovery.equation import format_equation, hessian_pairs
from dolfinx_nn.discovery.simulation import PointEvaluator, integrate, needs_mixed
from dolfinx_nn.discovery.surrogate import (
    FitReport,
    SurrogateBase,
    SurrogateConfig,
    fit_surrogate,
)
from dolfinx_nn.errors import SolverError
from dolfinx_nn.meshes import boundary_dofs

__all__ = ["Validation", "validate", "validate_candidates", "window_surrogate"]


@dataclasses.dataclass(frozen=True)
class Validation:
    """Simulated values at the data points and their error on the held-out snapshots."""

    times: np.ndarray  # all snapshot times
    simulated: np.ndarray  # (M, N) simulated values at the data points (NaN before the start)
    held_out: np.ndarray  # boolean (M,), snapshots not used for discovery
    rel_l2_error: float  # over all held-out observations
    snapshot_errors: np.ndarray  # relative l2 error per held-out snapshot
    start_time: float = 0.0  # the simulation starts here (the last training snapshot)
    formulation: str = "lagrange"  # or "mixed" (second derivatives as fields)


def _relative_error(sim: np.ndarray, obs: np.ndarray) -> float:
    mask = ~(np.isnan(obs) | np.isnan(sim))
    return float(np.linalg.norm(sim[mask] - obs[mask]) / (np.linalg.norm(obs[mask]) or 1.0))


def window_surrogate(
    data: SpaceTimeData, train_end: float, fit: FitReport, comm: MPI.Comm = MPI.COMM_WORLD
) -> SurrogateBase:
    """A surrogate of the snapshots from the last training one to the end of the record.

    It supplies the initial state and the boundary values of the re-simulation.  It has the
    kind and spatial scale of the discovery surrogate ``fit``; its time resolution and ridge
    are chosen again from the window's data.

    Raises:
        ValueError: no snapshot after ``train_end``.
    """
    start = int(np.searchsorted(data.t, train_end, side="right")) - 1
    if start < 0 or start >= data.t.size - 1:
        raise ValueError(f"no snapshot after train_end={train_end}; nothing to validate")
    window = data.window(start, data.t.size)
    config = SurrogateConfig(
        kind=fit.kind or "auto",
        width=fit.scales.get("width"),
        input_scale=fit.scales.get("input_scale"),
        screen_edges=False,
    )
    surrogate, _ = fit_surrogate(window, config, comm=comm)
    return surrogate


def _interpolator(surrogate: SurrogateBase, t: float, axes: tuple[int, ...] = ()) -> Callable:
    """``x (3, n) -> d^axes u(x, t)`` for ``Function.interpolate`` (autograd for derivatives)."""
    dim = surrogate.dim

    def evaluate(x: np.ndarray) -> np.ndarray:
        points = torch.as_tensor(np.ascontiguousarray(x[:dim].T), dtype=torch.float64)
        if not axes:
            with torch.no_grad():
                return surrogate(points, t).numpy()
        points.requires_grad_(True)
        value = surrogate(points, t)
        for axis in axes:
            (grad,) = torch.autograd.grad(value.sum(), points, create_graph=True)
            value = grad[:, axis]
        return value.detach().numpy()

    return evaluate


def validate(
    coefficients: Mapping[str, float],
    surrogate: SurrogateBase,
    mesh: dolfinx.mesh.Mesh,
    data: SpaceTimeData,
    train_end: float,
    degree: int = 2,
    steps_per_interval: int = 4,
    on_snapshot: Callable[[dolfinx.fem.Function, float], None] | None = None,
) -> Validation:
    """Simulate ``u_t = sum_k c_k T_k`` over the held-out window and compare with the data.

    Args:
        coefficients: the equation (term name -> coefficient, data units; the mesh must use
            the data's coordinates).
        surrogate: gives the initial state at the last training snapshot and the boundary
            values, e.g. :func:`window_surrogate`.
        mesh: the data's geometry.
        data: all snapshots (training and held out).
        train_end: last time used for discovery; later snapshots are the held-out ones.
        degree: Lagrange degree of the simulation (of every field).
        steps_per_interval: Crank-Nicolson steps between snapshots.
        on_snapshot: optional ``f(u, t)`` called at each simulated snapshot.

    Raises:
        ValueError: no terms, or no snapshot after ``train_end``.
        SolverError: the simulation diverged.
    """
    if not coefficients:
        raise ValueError("the discovered equation has no terms; nothing to simulate")
    held_out = data.t > train_end
    if not held_out.any():
        raise ValueError(f"no snapshot after train_end={train_end}; nothing to validate")
    start = int(np.flatnonzero(held_out)[0]) - 1
    if start < 0:
        raise ValueError("the held-out window needs a training snapshot before it")
    times = data.t[start:]
    evaluate = PointEvaluator(mesh, data.x)
    simulated = np.full_like(data.u, np.nan)
    pairs = hessian_pairs(mesh.geometry.dim)

    boundary: dict = {}  # id(space) -> (space, boundary dofs, their coordinates (3, n))

    def on_boundary(target: dolfinx.fem.Function, t: float, axes: tuple[int, ...]) -> None:
        """Dirichlet values: the surrogate at the boundary dofs only (the rest is unused)."""
        space = target.function_space
        if id(space) not in boundary:
            dofs = boundary_dofs(space)
            boundary[id(space)] = (space, dofs, space.tabulate_dof_coordinates()[dofs].T)
        _, dofs, points = boundary[id(space)]
        target.x.array[dofs] = _interpolator(surrogate, t, axes)(points)

    def fill(target: dolfinx.fem.Function, t: float) -> None:
        on_boundary(target, t, ())

    def fill_hessian(targets: Sequence[dolfinx.fem.Function], t: float) -> None:
        for target, pair in zip(targets, pairs, strict=True):
            if t == times[0]:
                target.interpolate(_interpolator(surrogate, t, pair))
            else:
                on_boundary(target, t, pair)

    def initial(target: dolfinx.fem.Function) -> None:
        target.interpolate(_interpolator(surrogate, float(times[0])))

    def observe(u: dolfinx.fem.Function, k: int) -> None:
        simulated[start + k] = evaluate(u)
        if on_snapshot is not None:
            on_snapshot(u, float(times[k]))

    integrate(
        mesh, coefficients, initial, fill, times, observe,
        degree, steps_per_interval, prefix="discovery_validation_", hessian=fill_hessian,
    )
    errors = np.array([_relative_error(simulated[k], data.u[k]) for k in np.flatnonzero(held_out)])
    return Validation(
        times=data.t,
        simulated=simulated,
        held_out=held_out,
        rel_l2_error=_relative_error(simulated[held_out], data.u[held_out]),
        snapshot_errors=errors,
        start_time=float(times[0]),
        formulation="mixed" if needs_mixed(coefficients, mesh.geometry.dim) else "lagrange",
    )


def validate_candidates(
    candidates: Sequence[Mapping[str, float]],
    surrogate: SurrogateBase,
    mesh: dolfinx.mesh.Mesh,
    data: SpaceTimeData,
    train_end: float,
    degree: int = 2,
) -> list[dict]:
    """Re-simulate several equations on the same window; a failure is reported, not raised.

    Returns:
        One row per candidate: ``equation``, ``coefficients``, ``rel_l2_error`` (None on
        failure), ``snapshot_errors``, ``formulation``, ``failure`` (None or the reason).
    """
    rows = []
    for coefficients in candidates:
        row: dict = {"equation": format_equation(coefficients), "coefficients": dict(coefficients),
                     "rel_l2_error": None, "snapshot_errors": [], "failure": None}
        try:
            check = validate(coefficients, surrogate, mesh, data, train_end, degree)
            if not np.isfinite(check.rel_l2_error):
                raise ValueError("the simulation produced non-finite values")
            row.update(rel_l2_error=check.rel_l2_error,
                       snapshot_errors=check.snapshot_errors.tolist(),
                       formulation=check.formulation)
        except (SolverError, ValueError) as exc:  # a wrong equation may blow up
            row["failure"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
    return rows
