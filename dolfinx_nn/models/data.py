"""Synthetic measurements without inverse crime.

The "true" state is computed on a uniformly refined copy of the inversion mesh with quadratic
elements and the true coefficient interpolated in P2, then interpolated onto the inversion
mesh's state space (or evaluated at scattered points).  Gaussian noise of relative level
``delta`` is added: ``d_i = u_i + delta * rms(u) * xi_i`` with ``rms(u)`` the root mean square
of the exact observed values and ``xi_i`` drawn by
:func:`~dolfinx_nn.models.noise.standard_normal_at` from the coordinates of the measurement,
so the data do not depend on the number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

from mpi4py import MPI

import dolfinx
import dolfinx.fem
import dolfinx.mesh
import numpy as np
import torch

from dolfinx_nn.conversion import from_torch
from dolfinx_nn.expressions import ParsedExpression
from dolfinx_nn.meshes import bounding_box
from dolfinx_nn.models.noise import standard_normal_at
from dolfinx_nn.models.observations import (
    FieldObservation,
    ScatteredObservation,
    expected_noise_norm,
    region_indicator,
)
from dolfinx_nn.models.poisson import PoissonModel


@dataclass
class ReferenceSolution:
    """The true state on a refined mesh (P2), used to make data and to measure errors."""

    model: PoissonModel
    u: dolfinx.fem.Function

    def interpolate_to(self, V: dolfinx.fem.FunctionSpace) -> dolfinx.fem.Function:
        """The true state interpolated into ``V`` (a space on the inversion mesh)."""
        target = dolfinx.fem.Function(V, name="u_true")
        mesh = V.mesh
        tdim = mesh.topology.dim
        imap = mesh.topology.index_map(tdim)
        cells = np.arange(imap.size_local + imap.num_ghosts, dtype=np.int32)
        data = dolfinx.fem.create_interpolation_data(V, self.u.function_space, cells, padding=1e-10)
        target.interpolate_nonmatching(self.u, cells, data)
        target.x.scatter_forward()
        return target


def reference_solution(
    mesh: dolfinx.mesh.Mesh,
    coefficient: ParsedExpression,
    source: ParsedExpression,
    boundary: ParsedExpression,
    *,
    refinements: int = 1,
    degree: int = 2,
    solver: str = "reproducible",
) -> ReferenceSolution:
    """Solve the forward problem with the true coefficient on a refined mesh.

    Args:
        mesh: the inversion mesh; it is refined uniformly ``refinements`` times.
        coefficient, source, boundary: formulas of ``q``, ``f`` and ``g``.
        refinements: number of uniform refinements (>= 1 avoids the inverse crime).
        degree: Lagrange degree of the reference state and coefficient.
        solver: LU solver (see :func:`dolfinx_nn.models.poisson.solver_options`).
    """
    if not isinstance(refinements, int) or refinements < 0:
        raise ValueError(f"refinements must be a non-negative integer, got {refinements!r}.")
    fine = mesh
    for _ in range(refinements):
        fine.topology.create_entities(1)
        fine, _, _ = dolfinx.mesh.refine(fine)
    model = PoissonModel(fine, source, boundary, degree=degree, coefficient_degree=degree,
                         solver=solver)
    with torch.no_grad():
        model.solve(model.interpolate_coefficient(coefficient))
    u = dolfinx.fem.Function(model.V, name="u_reference")
    u.x.array[:] = model.u.x.array
    return ReferenceSolution(model, u)


def noisy_values(
    exact: np.ndarray, points: np.ndarray, noise: float, seed: int, comm: MPI.Comm
) -> tuple[np.ndarray, float]:
    """Add Gaussian noise of relative level ``noise`` to the owned values ``exact`` at ``points``.

    Returns:
        The noisy values and the noise standard deviation ``noise * rms(exact)`` (global).
    """
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite relative level >= 0 (e.g. 0.01), got {noise!r}.")
    total = comm.allreduce(float(np.sum(exact**2)), op=MPI.SUM)
    count = comm.allreduce(int(exact.size), op=MPI.SUM)
    sigma = noise * np.sqrt(total / max(count, 1))
    return exact + sigma * standard_normal_at(points, seed), float(sigma)


@dataclass
class FieldData:
    """Synthetic field data on the inversion mesh and the exact state they come from."""

    observation: FieldObservation
    exact_state: dolfinx.fem.Function
    indicator: dolfinx.fem.Function
    sigma: float


def synthetic_field_data(
    model: PoissonModel,
    reference: ReferenceSolution,
    *,
    noise: float = 0.0,
    seed: int = 0,
    region: ParsedExpression | None = None,
) -> FieldData:
    """Noisy measurements of the reference state at the dofs of ``model.V`` in ``region``.

    Args:
        model: forward model on the inversion mesh.
        reference: the true state (see :func:`reference_solution`).
        noise: relative noise level (0.01 is 1 %).
        seed: seed of the noise.
        region: formula; the observed cells are those whose midpoint has ``region > 0``
            (``None``: the whole domain).
    """
    exact = reference.interpolate_to(model.V)
    indicator = region_indicator(model.mesh, region)
    n = model.num_owned_state
    points = model.state_points()
    values = exact.x.array[:n]
    observed = np.ones(n, dtype=bool) if region is None else region.numpy(points.T) > 0.0
    noisy, sigma = noisy_values(values[observed], points[observed], noise, seed, model.comm)
    data_values = values.copy()
    data_values[observed] = noisy
    data = from_torch(torch.from_numpy(data_values), dolfinx.fem.Function(model.V, name="data"))
    observation = FieldObservation(model.u, data, indicator)
    observation.noise_norm = expected_noise_norm(model.V, indicator, sigma) / observation.data_norm
    return FieldData(observation, exact, indicator, sigma)


def points_inside(mesh: dolfinx.mesh.Mesh, points: np.ndarray) -> np.ndarray:
    """Mask of the points (same array on every rank) that lie in the mesh (collective)."""
    import dolfinx.geometry

    tdim = mesh.topology.dim
    num_cells = mesh.topology.index_map(tdim).size_local
    tree = dolfinx.geometry.bb_tree(mesh, tdim, entities=np.arange(num_cells, dtype=np.int32))
    padded = np.zeros((points.shape[0], 3))
    padded[:, : points.shape[1]] = points
    candidates = dolfinx.geometry.compute_collisions_points(tree, padded)
    colliding = dolfinx.geometry.compute_colliding_cells(mesh, candidates, padded)
    found = (np.diff(colliding.offsets) > 0).astype(np.int32)
    anywhere = np.empty_like(found)
    mesh.comm.Allreduce(found, anywhere, op=MPI.MAX)
    return anywhere > 0


def random_points(mesh: dolfinx.mesh.Mesh, n: int, seed: int) -> np.ndarray:
    """``n`` uniform random points in the mesh, identical on every rank and for any partition.

    Points are drawn in the bounding box from one seeded generator and those outside the mesh
    (e.g. in a hole) are rejected.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of observation points must be a positive int, got {n!r}.")
    low, high = bounding_box(mesh)
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    count = 0
    for _ in range(100):
        batch = low + (high - low) * rng.random((2 * n, low.size))
        batch = batch[points_inside(mesh, batch)]
        chosen.append(batch)
        count += batch.shape[0]
        if count >= n:
            break
    else:
        raise ValueError("could not place observation points in the mesh.")
    return np.concatenate(chosen)[:n]


@dataclass
class PointData:
    """Synthetic point data and the exact state on the inversion mesh."""

    observation: ScatteredObservation
    exact_state: dolfinx.fem.Function
    sigma: float


def synthetic_point_data(
    model: PoissonModel,
    reference: ReferenceSolution,
    *,
    num_points: int = 200,
    noise: float = 0.0,
    seed: int = 0,
) -> PointData:
    """Noisy values of the reference state at ``num_points`` random points of the mesh."""
    from dolfinx_nn.point_evaluation import PointObservation

    points = random_points(model.mesh, num_points, seed)
    with PointObservation(reference.u.function_space, points) as evaluation:
        owned_values = evaluation.evaluate(reference.u).reshape(-1)
        exact = evaluation.gather(owned_values, root=None)
    assert exact is not None  # root=None: every rank holds all values
    noisy, sigma = noisy_values(exact, points, noise, seed, MPI.COMM_SELF)
    observation = ScatteredObservation(model.u, points, noisy)
    observation.noise_norm = sigma * np.sqrt(points.shape[0]) / observation.data_norm
    return PointData(observation, reference.interpolate_to(model.V), sigma)


def read_point_data(path: str, comm: MPI.Comm) -> tuple[np.ndarray, np.ndarray]:
    """Read measurements ``(points (m, d), values (m,))`` from a file, on rank 0, broadcast.

    Formats: CSV (``.csv``/``.txt``; one row per point, the coordinates then the value; a
    header line is skipped) or any point cloud / mesh file meshio reads, whose first point-data
    array holds the values.
    """
    import pathlib

    result: tuple | Exception | None = None
    if comm.rank == 0:
        try:
            result = _read_points(pathlib.Path(path))
        except (OSError, ValueError) as exc:
            result = ValueError(f"cannot read measurements from {path!r}: {exc}")
    result = comm.bcast(result, root=0)
    if isinstance(result, Exception):
        raise result
    return result


def _read_points(path):
    if not path.is_file():
        raise ValueError("no such file")
    if path.suffix.lower() in (".csv", ".txt"):
        with path.open() as fh:
            first = fh.readline()
        has_header = any(c.isalpha() for c in first.replace("e", "").replace("E", ""))
        table = np.loadtxt(path, delimiter="," if "," in first else None, skiprows=int(has_header),
                           ndmin=2)
        if table.shape[1] < 2:
            raise ValueError("expected columns x[, y[, z]], value")
        points, values = table[:, :-1], table[:, -1]
    else:
        import meshio

        mesh = meshio.read(path)
        if not mesh.point_data:
            raise ValueError("the file has no point data to use as measurements")
        name = next(iter(mesh.point_data))
        values = np.asarray(mesh.point_data[name], dtype=np.float64).reshape(-1)
        points = np.asarray(mesh.points, dtype=np.float64)
    if not (np.isfinite(points).all() and np.isfinite(values).all()):
        raise ValueError("the file contains NaN or Inf values")
    return np.ascontiguousarray(points), np.ascontiguousarray(values)
