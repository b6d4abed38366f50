"""The fixed parts of the ansatz, fitted once on the mesh: boundary extension G and distance D.

Both are :class:`~dolfinx_nn.ansatz.networks.RandomFeatureNetwork` fits (a small network whose
output layer is found by weighted linear least squares) to a FEM field computed on the same mesh:

- ``D`` fits the normalised torsion function ``phi`` (``-lap phi = 1``, ``phi = 0`` on the
  boundary, P2 FEM), a smooth approximate distance: zero on the boundary, positive inside, with
  a nonzero normal derivative (Hopf's lemma);
- ``G`` fits the Dirichlet data ``g`` on the boundary and its harmonic extension (P2 FEM) inside.

At a re-entrant corner of a 2D domain (interior angle ``omega > pi``) a smooth ``D`` that
vanishes on both edges behaves like the product of the two edge lines, which changes sign
inside the domain: on the disk minus a rotated square (four corners of 270 degrees) the smooth
fit reached ``min D / max D = -5.1e-2``, vanished inside the domain, and the network
``N = (u - G) / D`` reached a relative L2 error of 4.2e-2 to 5.3e-2 (seeds 0 to 2, one rank).
The fit of ``D`` therefore also has the singular function
``r^(pi/omega) sin(pi theta/omega) chi(r/R)`` of each such corner in its basis
(:mod:`~dolfinx_nn.ansatz.corners`; Fix, Gulati & Wakoff 1973), which vanishes on both edges
and is positive inside: ``min D / max D = -5.9e-4`` there, network errors 3.8e-3 to 9.0e-3 (one
rank; 4.2e-3 to 7.5e-3 on two; ``docs/ansatz.md``).  Meshes without re-entrant corners get
exactly the fits they had; re-entrant edges of 3D domains are not treated.

Boundary rows are uniform random boundary points (:func:`~dolfinx_nn.sampling.sample_boundary`);
interior rows are the quadrature points of the owned cells.  The weight of the boundary rows is
chosen from the data (:func:`_fit`): the smoothest fit whose misfit at held-out boundary points
is below ``tolerance`` (default 1e-3 relative).  Meeting the data more closely costs smoothness:
with a boundary weight of 1e4 (the earlier fixed choice; misfit 1e-5 to 1e-10) the fits on an
ellipse with two holes had Laplacians off by 100 % or more (rms of ``max phi lap D + 1`` was
1.6, of ``lap G`` 3.0 against ``rms f = 6.5``), and the strong residual of ``u = G + D N``, which
contains them, stalled at a relative L2 error of 3e-2.

The boundary of a mesh of a curved domain is made of chords, and a smooth ``D`` cannot vanish
on chords (it would have to bend at every vertex): the misfit a smooth fit of the torsion
function leaves there is about the chords' sagitta times the normal derivative of ``D``
(:func:`chord_misfit`, :mod:`~dolfinx_nn.ansatz.chords`), and ``D``'s tolerance is at least
that.  Held to 1e-3 below it, the fits traded the interior for the chords: on the gallery's
ellipse with two holes (chord misfit 5.5e-3) ``D`` missed ``phi / max phi`` by 74 % (rms) and
reached ``max D = 0.33``; on two disks joined by a neck ``D`` went negative in the whole neck
(``min D / max D = -2.9e-2``), and the network's error was 2.5e-2 (2.8e-3 with the chord
misfit as the tolerance; ``docs/ansatz.md``).

The FEM fields are rounded to a grid of ``2^-24`` of their magnitude
(:mod:`~dolfinx_nn.ansatz.rounding`) before they are fitted: a parallel direct solve (MUMPS on
several ranks) returns results that differ in the last bits from call to call, and the fits,
and every step of the training after them, would inherit that difference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

from mpi4py import MPI

import basix
import dolfinx
import dolfinx.fem.petsc
import numpy as np
import torch
import ufl

from dolfinx_nn import petsc_problems
from dolfinx_nn.ansatz.chords import boundary_measure, chord_sagitta, facet_vertex_count
from dolfinx_nn.ansatz.corners import CornerFunctions, reentrant_corners
from dolfinx_nn.ansatz.networks import RandomFeatureNetwork
from dolfinx_nn.ansatz.rounding import data_grid, round_scalar, round_to_grid
from dolfinx_nn.meshes import (
    boundary_dofs,
    boundary_facets,
    bounding_box,
    mesh_volume,
    refine,
)
from dolfinx_nn.sampling import rank_rng, sample_boundary

#: Function of points ``(n, d)`` returning ``(n,)`` values (NumPy).
PointFunction = Callable[[np.ndarray], np.ndarray]


def quadrature_points(
    mesh: dolfinx.mesh.Mesh, degree: int, fields: Sequence[ufl.core.expr.Expr] = ()
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
    # basix annotates both as ArrayLike; they are NumPy arrays
    ref_points, ref_weights = cast(tuple[np.ndarray, np.ndarray],
                                   basix.make_quadrature(cell, degree))
    cells = np.arange(mesh.topology.index_map(mesh.topology.dim).size_local, dtype=np.int32)
    gdim = mesh.geometry.dim

    def evaluate(expr: ufl.core.expr.Expr) -> np.ndarray:
        compiled = dolfinx.fem.Expression(expr, ref_points)
        return compiled.eval(mesh, cells)

    x = evaluate(ufl.SpatialCoordinate(mesh)).reshape(-1, gdim)
    detj = np.abs(evaluate(ufl.JacobianDeterminant(mesh))).reshape(cells.size, ref_weights.size)
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
    solved = problem.solve()
    assert isinstance(solved, dolfinx.fem.Function)  # one form, one solution
    return solved


#: A boundary component whose bounding box is at most this fraction of the mesh's (largest
#: extent) gets its own group of features (:func:`feature_boxes`).
SMALL_COMPONENT = 0.5


def boundary_components(mesh: dolfinx.mesh.Mesh) -> list[tuple[np.ndarray, np.ndarray]]:
    """Bounding boxes ``(lower, upper)`` of the connected components of the boundary.

    The outer boundary and each hole (cavity) are one component each; facets are connected
    through shared vertices.  Collective; the same list on every rank, largest box first.
    Empty for 1D meshes (whose boundary components are points).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    tdim, gdim = mesh.topology.dim, mesh.geometry.dim
    if tdim < 2:
        return []
    facets = boundary_facets(mesh)
    mesh.topology.create_connectivity(tdim - 1, 0)
    mesh.topology.create_connectivity(0, tdim)
    f2v = mesh.topology.connectivity(tdim - 1, 0)
    per = facet_vertex_count(mesh)  # explicit: a rank may own no boundary facet
    vertices = np.array([f2v.links(f) for f in facets], dtype=np.int32).reshape(len(facets), per)
    ids = mesh.topology.index_map(0).local_to_global(vertices.ravel()).reshape(vertices.shape)
    nodes = dolfinx.mesh.entities_to_geometry(mesh, 0, vertices.ravel().astype(np.int32))
    coords = mesh.geometry.x[nodes.ravel(), :gdim]
    ids = np.concatenate([np.zeros((0, per), np.int64)] + mesh.comm.allgather(ids))
    coords = np.concatenate([np.zeros((0, gdim))] + mesh.comm.allgather(coords))
    unique, index = np.unique(ids.ravel(), return_inverse=True)
    index = index.reshape(ids.shape)
    rows = np.repeat(index[:, 0], per - 1)
    cols = index[:, 1:].ravel()
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(unique), len(unique)))
    count, labels = connected_components(graph, directed=False)
    per_vertex = labels[index.ravel()]
    boxes = [(coords[per_vertex == c].min(axis=0), coords[per_vertex == c].max(axis=0))
             for c in range(count)]
    return sorted(boxes, key=lambda b: -float(np.max(b[1] - b[0])))


def feature_boxes(
    mesh: dolfinx.mesh.Mesh, features: int
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Extra feature groups of a fit: one per small boundary component (a hole).

    A component whose box is at most :data:`SMALL_COMPONENT` of the mesh's largest extent gets
    features on its own box, doubled about its centre (so that they resolve the neighbourhood
    of the hole); ``min(features // 4, features // count)`` each, so at most ``features`` in
    all.  Collective.
    """
    lower, upper = bounding_box(mesh)
    extent = float(np.max(upper - lower))
    small = [b for b in boundary_components(mesh)
             if float(np.max(b[1] - b[0])) <= SMALL_COMPONENT * extent]
    if not small:
        return []
    each = max(1, min(features // 4, features // len(small)))
    groups = []
    for lo, hi in small:
        centre, half = 0.5 * (lo + hi), np.maximum(hi - lo, 1e-3 * extent)
        groups.append((centre - half, centre + half, each))
    return groups


#: Default number of singular functions per re-entrant corner in the fit of ``D``
#: (:mod:`~dolfinx_nn.ansatz.corners`).  Two (the next term ``r^(2a) sin(2 a theta)`` too) did
#: not help: on the disk minus a rotated square the network's errors over seeds 0, 1, 2 were
#: 3.6e-3, 1.1e-2, 1.8e-2 against 3.8e-3, 7.6e-3, 9.0e-3 with one.
DISTANCE_CORNER_TERMS = 1

#: Default for ``G``: none.  The harmonic extension also behaves like ``r^a sin(a theta)`` at
#: a re-entrant corner, but the corner functions in ``G`` did not help the network (disk minus
#: a rotated square, seeds 0, 1, 2: 5.1e-3, 8.4e-3, 1.8e-2; L-shape, seed 0: 1.7e-3 against
#: 2.1e-3), and the boundary weight the fit chose fell from 1e5 to 1e4.
EXTENSION_CORNER_TERMS = 0

#: Relative weights of the boundary rows tried by :func:`_fit`, smoothest first.
BOUNDARY_WEIGHTS = tuple(float(w) for w in 10.0 ** np.arange(0.0, 6.01, 0.5))

#: Default largest boundary misfit of ``G`` (relative to ``max |g|``) and ``D`` (relative to
#: its maximum, 1), measured at held-out boundary points.
FIT_TOLERANCE = 1e-3

#: Interior points (degree-4 quadrature points: a value row and a Laplacian row each) per
#: random feature that a fit gets at least; a coarser mesh is refined for the fit
#: (:func:`fit_mesh`), as the Ritz quadrature is for the parameters of ``N``.  On a decagon
#: of 40 cells (240 points for 500 features) the fits met their boundary tolerance and still
#: left the default network at a relative L2 error of 1.8e-2: the interior rows left most
#: features free.
FIT_POINTS_PER_FEATURE = 1.5


def fit_mesh(mesh: dolfinx.mesh.Mesh, features: int) -> dolfinx.mesh.Mesh:
    """``mesh``, uniformly refined until its degree-4 quadrature points number at least
    :data:`FIT_POINTS_PER_FEATURE` times ``features`` (``mesh`` itself if they already do).

    Refinement keeps the boundary's vertices and facets' lines, so the domain, its corners and
    its chords are the user's.  Collective.
    """
    tdim = mesh.topology.dim
    per_cell = np.asarray(basix.make_quadrature(mesh.basix_cell(), 4)[1]).size
    points = per_cell * mesh.topology.index_map(tdim).size_global
    while points < FIT_POINTS_PER_FEATURE * features:
        mesh, points = refine(mesh), points * 2**tdim
    return mesh


def _fit(
    mesh: dolfinx.mesh.Mesh,
    interior_field: dolfinx.fem.Function,
    boundary_values: PointFunction,
    laplacian: float,
    *,
    features: int,
    boundary_points: int,
    laplacian_weight: float,
    scale: float,
    seed: int,
    length: float,
    tolerance: float,
    corner_terms: int,
) -> RandomFeatureNetwork:
    """Least-squares fit: FEM values inside, ``lap = laplacian`` inside, data on the boundary.

    Three blocks of rows, each normalised by the square root of its global row count (so the
    balance does not depend on how many points there are): the FEM values at the degree-4
    quadrature points (weight 1), the Laplacian there (weight ``laplacian_weight``; rows and
    target multiplied by ``length**2``, so every row is dimensionless and the fit is the same
    in any unit of length), and the boundary data at ``boundary_points`` random boundary
    points (weight ``w_b``).

    The boundary weight trades the boundary misfit against smoothness: a large ``w_b`` makes
    the fit meet the data closely with large, cancelling coefficients, whose Laplacian is
    rough (and the strong residual of the ansatz contains the Laplacians of ``G`` and ``D``).
    ``w_b`` is chosen from the data: the smallest of :data:`BOUNDARY_WEIGHTS` whose largest
    misfit at as many held-out boundary points is at most ``tolerance`` (relative to
    ``max |g|``, or to 1 for ``D``); the largest weight if none is.  The choice is reported in
    ``net.fit_report`` (``tolerance``: the one used).

    The first ``corner_terms`` singular functions of each re-entrant corner of a 2D mesh
    (:func:`~dolfinx_nn.ansatz.corners.reentrant_corners`) are more columns of the basis;
    the corners (position, angle, cutoff radius) are reported in ``net.fit_report``.  A mesh
    without such corners gets the basis (and the fit) it had without them.  Collective.
    """
    comm = mesh.comm
    if corner_terms < 0:
        raise ValueError(f"corner_terms must be >= 0 (functions per corner), got {corner_terms}")
    found = reentrant_corners(mesh) if corner_terms > 0 else []
    singular = CornerFunctions(found, corner_terms) if found else None
    net = RandomFeatureNetwork(mesh.geometry.dim, features, bounding_box(mesh), scale=scale,
                               seed=seed, extra_boxes=feature_boxes(mesh, features),
                               corners=singular)
    xi, _, (yi,) = quadrature_points(mesh, 4, [interior_field])
    xb, _ = sample_boundary(mesh, boundary_points, rank_rng(seed, comm))
    xv, _ = sample_boundary(mesh, boundary_points, rank_rng(seed + 7919, comm))
    ti, tb, tv = torch.from_numpy(xi), torch.from_numpy(xb), torch.from_numpy(xv)
    l2 = float(length) ** 2
    n_i = comm.allreduce(len(xi), op=MPI.SUM)
    n_b = comm.allreduce(len(xb), op=MPI.SUM)
    factors = [
        net.factor(net.features(ti), torch.from_numpy(yi), comm) / np.sqrt(n_i),
        net.factor(l2 * net.laplacian_features(ti),
                   torch.full((len(xi),), l2 * float(laplacian), dtype=torch.float64),
                   comm) / np.sqrt(n_i),
        net.factor(net.features(tb), torch.from_numpy(boundary_values(xb)), comm)
        / np.sqrt(n_b),
    ]
    yv = boundary_values(xv)
    reference = comm.allreduce(float(np.abs(yv).max(initial=0.0)), op=MPI.MAX)
    reference = reference if reference > 0.0 else 1.0
    if laplacian != 0.0:  # D: misfit relative to max D = 1
        reference = 1.0
    features_v = net.features(tv)
    tried = []
    for weight in BOUNDARY_WEIGHTS:
        net.solve_factors(factors, [1.0, float(laplacian_weight), weight])
        with torch.no_grad():
            diff = (features_v @ net.coefficients - torch.from_numpy(yv)).abs().numpy()
        local = float(diff.max(initial=0.0))
        misfit = comm.allreduce(local, op=MPI.MAX) / reference
        tried.append((weight, misfit))
        if misfit <= tolerance:
            break
    else:
        weight, misfit = min(tried, key=lambda t: t[1])
        net.solve_factors(factors, [1.0, float(laplacian_weight), weight])
    net.fit_report = {"boundary_weight": weight, "boundary_misfit": misfit,
                      "tolerance": tolerance, "met": misfit <= tolerance,
                      "corners": [c.as_dict() for c in found], "corner_terms": corner_terms}
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
    laplacian_weight: float = 1.0,
    scale: float | None = None,
    seed: int = 1,
    tolerance: float = FIT_TOLERANCE,
    corner_terms: int = DISTANCE_CORNER_TERMS,
) -> RandomFeatureNetwork:
    """Fit ``D``: a smooth approximate distance to the whole boundary, ``max D ~ 1``.

    ``D`` fits ``phi / max phi``, and its Laplacian rows ``lap D = -1 / max phi`` are made
    dimensionless with ``max phi`` (a length squared).  The returned network carries
    ``length_scale = sqrt(max phi)``, the length of :mod:`~dolfinx_nn.ansatz.scaling`.

    Args:
        mesh: the (affine) mesh; a coarse one is refined for the fit (:func:`fit_mesh`).
        features: hidden neurons of the fit.
        boundary_points: global number of boundary points (>> ``features``), and as many
            held-out points to measure the boundary misfit.
        laplacian_weight: weight of the Laplacian rows relative to the interior value rows.
        scale: frequency scale of the random features (None: :data:`DISTANCE_SCALE` of the
            mesh's dimension).
        seed: seed of the features and of the boundary points.
        tolerance: largest boundary misfit (relative) that decides the boundary weight; the
            fit uses the larger of it and :func:`chord_misfit` (both are reported in
            ``fit_report``, as ``requested_tolerance`` and ``chord_misfit``).
        corner_terms: singular functions per re-entrant corner of a 2D mesh added to the
            basis (:mod:`~dolfinx_nn.ansatz.corners`; 0: none; no effect on meshes without
            such corners).

    Raises:
        ValueError: the torsion function is not positive (a mesh without P2 nodes off its
            boundary even after :func:`fit_mesh`, such as an empty one).
    """
    if scale is None:
        scale = DISTANCE_SCALE[mesh.geometry.dim]
    chords_of = mesh  # the chords are the user's facets, not halves of them
    mesh = fit_mesh(mesh, features)
    phi = _solve_p2(mesh, 1.0, None)
    top = round_scalar(mesh.comm.allreduce(float(phi.x.array.max(initial=0.0)), op=MPI.MAX))
    if not top > 0.0:
        cells = mesh.comm.allreduce(mesh.topology.index_map(mesh.topology.dim).size_local,
                                    op=MPI.SUM)
        raise ValueError(
            f"the torsion function of the mesh (P2, zero on the boundary) is not positive: the "
            f"mesh of {cells} cell(s) has no P2 node inside the domain; refine the mesh")
    phi.x.array[:] = round_to_grid(phi.x.array / top, data_grid(1.0))
    chords = chord_misfit(chords_of, top)
    net = _fit(mesh, phi, lambda x: np.zeros(len(x)), -1.0 / top, features=features,
               boundary_points=boundary_points, laplacian_weight=laplacian_weight, scale=scale,
               seed=seed, length=np.sqrt(top), tolerance=max(tolerance, chords),
               corner_terms=corner_terms)
    net.fit_report.update({"requested_tolerance": tolerance, "chord_misfit": chords})
    net.length_scale = float(np.sqrt(top))
    return net


def chord_misfit(mesh: dolfinx.mesh.Mesh, top: float) -> float:
    """The boundary misfit (relative to ``max D = 1``) that a smooth ``D`` vanishing on the curve
    through the boundary vertices of ``mesh`` leaves at the middles of its facets (a fit can
    meet the facets more closely only by bending towards them): the largest sagitta of a facet
    (:func:`~dolfinx_nn.ansatz.chords.chord_sagitta`) times the mean normal derivative of
    ``D = phi / max phi`` on the boundary, ``|Omega| / (|boundary| max phi)`` (the flux of
    ``-lap phi = 1``).  Collective; 0 for meshes whose facets are not chords of a curve.
    """
    sagitta = chord_sagitta(mesh)
    if sagitta == 0.0:
        return 0.0
    area = boundary_measure(mesh)
    return round_scalar(sagitta * mesh_volume(mesh) / (area * top))


def fit_boundary_extension(
    mesh: dolfinx.mesh.Mesh,
    g: PointFunction,
    *,
    features: int = 500,
    boundary_points: int = 4000,
    laplacian_weight: float = 1.0,
    scale: float = 3.0,
    seed: int = 2,
    tolerance: float = FIT_TOLERANCE,
    corner_terms: int = EXTENSION_CORNER_TERMS,
) -> RandomFeatureNetwork:
    """Fit ``G``: equal to ``g`` on the boundary, close to its harmonic extension inside.

    The Laplacian rows are made dimensionless with the largest extent of the mesh's bounding
    box (1 on the unit square).

    Args:
        mesh: the (affine) mesh; a coarse one is refined for the fit (:func:`fit_mesh`).
        g: Dirichlet data, a NumPy function of points ``(n, gdim)``.
        features, boundary_points, laplacian_weight, scale, seed, tolerance, corner_terms: as in
            :func:`fit_distance` (the misfit is relative to ``max |g|``; ``corner_terms``
            defaults to :data:`EXTENSION_CORNER_TERMS`, 0).
    """
    mesh = fit_mesh(mesh, features)
    extension = _solve_p2(mesh, 0.0, g)
    top = mesh.comm.allreduce(float(np.abs(extension.x.array).max(initial=0.0)), op=MPI.MAX)
    extension.x.array[:] = round_to_grid(extension.x.array, data_grid(top))
    lower, upper = bounding_box(mesh)
    net = _fit(mesh, extension, g, 0.0, features=features, boundary_points=boundary_points,
               laplacian_weight=laplacian_weight, scale=scale, seed=seed,
               length=float(np.max(upper - lower)), tolerance=tolerance, corner_terms=corner_terms)
    return net


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
