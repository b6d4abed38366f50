"""The fixed parts of the ansatz, fitted once on the mesh: boundary extension G and distance D.

Both are :class:`~dolfinx_nn.ansatz.networks.RandomFeatureNetwork` fits (a small network whose
output layer is found by weighted linear least squares) to a FEM field computed on the same mesh:

- ``D`` fits the normalised torsion function ``phi`` (``-lap phi = 1``, ``phi = 0`` on the
  boundary, P2 FEM), a smooth approximate distance: zero on the boundary, positive inside, with
  a nonzero normal derivative (Hopf's lemma);
- ``G`` fits the Dirichlet data ``g`` on the boundary and its harmonic extension (P2 FEM) inside.

Boundary rows are uniform random boundary points (:func:`~dolfinx_nn.sampling.sample_boundary`)
weighted by ``boundary_weight``; interior rows are the quadrature points of the owned cells.
With enough boundary points the boundary misfit is far below that of a gradient-trained network
(``G`` typically 1e-10 relative, ``D`` 1e-6 of its maximum).
"""

from __future__ import annotations

from collections.abc import Callable

from mpi4py import MPI

import basix
import dolfinx
import dolfinx.fem.petsc
import numpy as np
import torch
import ufl

from dolfinx_nn.ansatz.networks import RandomFeatureNetwork
from dolfinx_nn.meshes import boundary_dofs, bounding_box
from dolfinx_nn.sampling import rank_rng, sample_boundary
from dolfinx_nn import petsc_problems

#: Function of points ``(n, d)`` returning ``(n,)`` values (NumPy).
PointFunction = Callable[[np.ndarray], np.ndarray]


def quadrature_points(
    mesh: dolfinx.mesh.Mesh, degree: int, fields: list[ufl.core.expr.Expr] = ()
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Physical quadrature points, weights and field values in the owned cells.

    Args:
        mesh: the mesh.
        degree: degree of the basix default quadrature rule.
        fields: scalar UFL expressions to evaluate at the points.

    Returns:
        ``(points (n, gdim), weights (n,), [values (n,) per field])``; the weights include
        ``|det J|``, so ``sum(weights * f)`` approximates the integral of ``f`` over the
        rank's cells.
    """
    cell = mesh.basix_cell()
    ref_points, ref_weights = basix.make_quadrature(cell, degree)
    cells = np.arange(mesh.topology.index_map(mesh.topology.dim).size_local, dtype=np.int32)
    gdim = mesh.geometry.dim

    def evaluate(expr: ufl.core.expr.Expr) -> np.ndarray:
        compiled = dolfinx.fem.Expression(expr, ref_points)
        return compiled.eval(mesh, cells)

    x = evaluate(ufl.SpatialCoordinate(mesh)).reshape(-1, gdim)
    detj = np.abs(evaluate(ufl.JacobianDeterminant(mesh))).reshape(cells.size, -1)
    weights = (detj * ref_weights[None, :]).reshape(-1)
    values = [evaluate(f).reshape(-1) for f in fields]
    return x, weights, values


def _solve_p2(
    mesh: dolfinx.mesh.Mesh, source: float, boundary: PointFunction | None
) -> dolfinx.fem.Function:
    """P2 solution of ``-lap w = source`` with ``w = boundary`` (or 0) on the boundary."""
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 2))
    gdim = mesh.geometry.dim
    dofs = boundary_dofs(V)
    w_bc = dolfinx.fem.Function(V)
    if boundary is not None:
        w_bc.interpolate(lambda x: boundary(np.ascontiguousarray(x[:gdim].T)))
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    f = dolfinx.fem.Constant(mesh, float(source))
    problem = petsc_problems.LinearProblem(
        ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx,
        f * v * ufl.dx,
        bcs=[dolfinx.fem.dirichletbc(w_bc, dofs)],
        petsc_options_prefix="ansatz_lift_",
        petsc_options={"ksp_type": "preonly", "pc_type": "lu",
                       "pc_factor_mat_solver_type": "mumps"},
    )
    return problem.solve()


def _fit(
    mesh: dolfinx.mesh.Mesh,
    interior_field: dolfinx.fem.Function,
    boundary_values: PointFunction,
    laplacian: float,
    *,
    features: int,
    boundary_points: int,
    boundary_weight: float,
    laplacian_weight: float,
    scale: float,
    seed: int,
) -> RandomFeatureNetwork:
    """Least-squares fit: FEM values inside, ``lap = laplacian`` inside, data on the boundary."""
    comm = mesh.comm
    net = RandomFeatureNetwork(mesh.geometry.dim, features, bounding_box(mesh), scale=scale,
                               seed=seed)
    xi, _, (yi,) = quadrature_points(mesh, 4, [interior_field])
    xb, _ = sample_boundary(mesh, boundary_points, rank_rng(seed, comm))
    ti, tb = torch.from_numpy(xi), torch.from_numpy(xb)
    rows = torch.cat([net.features(ti), net.laplacian_features(ti), net.features(tb)])
    y = np.concatenate([yi, np.full(len(xi), float(laplacian)), boundary_values(xb)])
    w = np.concatenate([np.ones(len(xi)), np.full(len(xi), float(laplacian_weight)),
                        np.full(len(xb), float(boundary_weight))])
    net.fit(None, torch.from_numpy(y), torch.from_numpy(w), comm, rows=rows)
    return net


#: Default frequency scale of the features of ``D`` per space dimension.  Sharp features
#: make ``D`` oscillate near the boundary: in 2D (square with a hole, 500 features) scale 4
#: gives ``min D = -3.3e-2 max D`` (so ``D`` also vanishes on a curve inside the domain), scale
#: 1 gives ``-2.1e-3 max D``.  In 3D the boundary is a surface on which the traces of sharp
#: features are nearly independent: the combinations that vanish there are close to zero
#: inside too, and the fit shrinks ``D`` (cube, 500 features of scale 4: ``max D = 1.5e-3``
#: with a boundary misfit of 1 % of it); scale 1.5 with 1000 features keeps ``max D = 0.98``
#: with a boundary misfit of 2e-5 of it.
DISTANCE_SCALE = {1: 1.0, 2: 1.0, 3: 1.5}


def fit_distance(
    mesh: dolfinx.mesh.Mesh,
    *,
    features: int = 500,
    boundary_points: int = 4000,
    boundary_weight: float = 1e4,
    laplacian_weight: float = 0.1,
    scale: float | None = None,
    seed: int = 1,
) -> RandomFeatureNetwork:
    """Fit ``D``: a smooth approximate distance to the whole boundary, ``max D ~ 1``.

    Args:
        mesh: the (affine) mesh.
        features: hidden neurons of the fit.
        boundary_points: global number of boundary points (>> ``features``).
        boundary_weight: weight of the boundary rows relative to the interior rows.
        scale: frequency scale of the random features (None: :data:`DISTANCE_SCALE` of the
            mesh's dimension).
        seed: seed of the features and of the boundary points.
    """
    if scale is None:
        scale = DISTANCE_SCALE[mesh.geometry.dim]
    phi = _solve_p2(mesh, 1.0, None)
    top = mesh.comm.allreduce(float(phi.x.array.max(initial=0.0)), op=MPI.MAX)
    phi.x.array[:] /= top
    return _fit(mesh, phi, lambda x: np.zeros(len(x)), -1.0 / top, features=features,
                boundary_points=boundary_points, boundary_weight=boundary_weight,
                laplacian_weight=laplacian_weight * top, scale=scale, seed=seed)


def fit_boundary_extension(
    mesh: dolfinx.mesh.Mesh,
    g: PointFunction,
    *,
    features: int = 500,
    boundary_points: int = 4000,
    boundary_weight: float = 1e4,
    laplacian_weight: float = 0.1,
    scale: float = 3.0,
    seed: int = 2,
) -> RandomFeatureNetwork:
    """Fit ``G``: equal to ``g`` on the boundary, close to its harmonic extension inside.

    Args:
        mesh: the (affine) mesh.
        g: Dirichlet data, a NumPy function of points ``(n, gdim)``.
        features, boundary_points, boundary_weight, scale, seed: as in :func:`fit_distance`.
    """
    extension = _solve_p2(mesh, 0.0, g)
    return _fit(mesh, extension, g, 0.0, features=features, boundary_points=boundary_points,
                boundary_weight=boundary_weight, laplacian_weight=laplacian_weight, scale=scale,
                seed=seed)


def fit_space_time_extension(
    mesh: dolfinx.mesh.Mesh,
    g: PointFunction,
    final_time: float,
    *,
    features: int = 500,
    boundary_points: int = 4000,
    boundary_weight: float = 1e4,
    scale: float = 3.0,
    seed: int = 2,
) -> RandomFeatureNetwork:
    """Fit ``G(x, t)`` for a time-dependent problem on ``Omega x [0, T]``.

    Rows: the Dirichlet data on the lateral boundary (boundary points at uniform random
    times) and the initial value ``g(x, 0)`` at the quadrature points, both weighted by
    ``boundary_weight``; inside, weakly, the initial value held constant in time.

    Args:
        mesh: the (affine) mesh.
        g: data as a NumPy function of inputs ``(n, gdim + 1)`` (time last).
        final_time: ``T``.
        features, boundary_points, boundary_weight, scale, seed: as in :func:`fit_distance`.
    """
    comm = mesh.comm
    lower, upper = bounding_box(mesh)
    box = (np.append(lower, 0.0), np.append(upper, final_time))
    net = RandomFeatureNetwork(mesh.geometry.dim + 1, features, box, scale=scale, seed=seed)
    rng = rank_rng(seed, comm)
    xb, _ = sample_boundary(mesh, boundary_points, rng)
    lateral = np.column_stack([xb, rng.uniform(0.0, final_time, len(xb))])
    xq, _, _ = quadrature_points(mesh, 4)
    initial = np.column_stack([xq, np.zeros(len(xq))])
    inside = np.column_stack([xq, rng.uniform(0.0, final_time, len(xq))])
    x = np.concatenate([lateral, initial, inside])
    y = np.concatenate([g(lateral), g(initial), g(initial)])
    w = np.concatenate([np.full(len(lateral) + len(initial), float(boundary_weight)),
                        np.ones(len(inside))])
    net.fit(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(w), comm)
    return net
