"""Training the ansatz ``u = G + D N`` on one problem, data-parallel under MPI."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

from mpi4py import MPI

import basix
import dolfinx
import numpy as np
import torch

from dolfinx_nn.ansatz.ansatz import DirichletAnsatz
from dolfinx_nn.ansatz.fitted_fields import (
    FIT_TOLERANCE,
    fit_boundary_extension,
    fit_distance,
    fit_space_time_extension,
    quadrature_points,
)
from dolfinx_nn.ansatz.losses import RitzLoss, StrongResidualLoss
from dolfinx_nn.ansatz.networks import feed_forward
from dolfinx_nn.ansatz.pdes import Problem
from dolfinx_nn.ansatz.scaling import Scales, problem_scales
from dolfinx_nn.ansatz.units import Canonical, canonical, in_user_units, user_scales
from dolfinx_nn.meshes import bounding_box, refine
from dolfinx_nn.sampling import rank_rng, sample_interior
from dolfinx_nn.training import History, TrainingConfig, train

#: Loss name -> description.
LOSSES = {"strong": "mean squared strong residual at collocation points",
          "ritz": "Ritz energy by DOLFINx quadrature (poisson only)"}

#: Collocation point sets: "random" (uniform in the cells, per-rank streams) or "quadrature"
#: (quadrature points of the cells: the same global set on any number of ranks).
COLLOCATION = ("random", "quadrature")

#: Quadrature point sets that train ``N`` (the Ritz energy, ``collocation="quadrature"``) hold
#: at least this many points per parameter of ``N``; the mesh that carries them is refined
#: uniformly until they do.  With fewer points than parameters the network can fool the
#: rule: the Ritz energy of 4 x 20 tanh (1341 parameters) on the square with a hole (516
#: degree-4 points) fell to -0.59 against -0.39 for the exact solution, where a finer rule
#: gave +7.5 and the L2 error was 1e-1; on the mesh refined once (2064 points) the energies
#: of the two rules agree to 1e-5 and the error is 4.9e-3 (300 L-BFGS steps).
POINTS_PER_PARAMETER = 1.5

#: Stored with a training checkpoint: the convention of the network's inputs and output.
CANONICAL_UNITS = "x_hat = (x - x_0)/L_0, u_hat = u/U_0, data on a 2^-24 grid"


@dataclass(frozen=True)
class NetworkConfig:
    """Settings of the network solver.

    Attributes:
        width, depth: hidden layers of ``N``.
        loss: one of :data:`LOSSES`.
        collocation: one of :data:`COLLOCATION`.
        points: global number of random collocation points.
        quadrature_degree: degree of the quadrature points (``collocation="quadrature"``,
            and of the Ritz energy).
        fit_features: random features of the ``G`` and ``D`` fits.
        fit_boundary_points: boundary points of the ``G`` and ``D`` fits.
        fit_tolerance: largest relative boundary misfit of the ``G`` and ``D`` fits, which
            decides how closely they meet the data (:mod:`~.fitted_fields`).
        distance_scale: frequency scale of the features of ``D`` (None: the default of
            :func:`~dolfinx_nn.ansatz.fitted_fields.fit_distance` for the dimension).
        training: the Adam -> L-BFGS settings.
        seed: seed of the collocation points and of the initial weights.
    """

    width: int = 20
    depth: int = 4
    loss: str = "strong"
    collocation: str = "random"
    points: int = 2000
    quadrature_degree: int = 4
    fit_features: int = 500
    fit_boundary_points: int = 4000
    fit_tolerance: float = FIT_TOLERANCE
    distance_scale: float | None = None
    training: TrainingConfig = field(
        default_factory=lambda: TrainingConfig(adam_steps=0, lbfgs_steps=1000)
    )
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {sorted(LOSSES)}")
        if self.collocation not in COLLOCATION:
            raise ValueError(
                f"unknown collocation {self.collocation!r}; choose one of {COLLOCATION}"
            )
        for name in ("width", "depth", "points", "quadrature_degree"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.fit_features < 1 or self.fit_boundary_points < 1:
            raise ValueError(
                f"fit_features and fit_boundary_points must be positive, got "
                f"{self.fit_features} and {self.fit_boundary_points}"
            )
        if not (np.isfinite(self.fit_tolerance) and 0.0 < self.fit_tolerance < 1.0):
            raise ValueError(f"fit_tolerance must be in (0, 1) (a boundary misfit relative to "
                             f"max |g|), got {self.fit_tolerance!r}")
        if self.distance_scale is not None and not self.distance_scale > 0.0:
            raise ValueError(f"distance_scale must be positive, got {self.distance_scale!r}")


@dataclass
class NetworkSolution:
    """A trained ansatz (of the user's coordinates and units), its scales (in the user's units)
    and what it cost; ``canonical`` is the problem the network was trained on
    (:mod:`~dolfinx_nn.ansatz.units`); ``final_loss`` the loss at the returned parameters
    (:func:`final_loss`; the last entry of ``history.losses`` is the loss before the last
    step)."""

    ansatz: DirichletAnsatz
    parameters: int
    history: History
    fit_time_s: float
    train_time_s: float
    scales: Scales
    canonical: Canonical | None = None
    loss_points: dict | None = None
    final_loss: float | None = None

    @property
    def wall_time_s(self) -> float:
        return self.fit_time_s + self.train_time_s


def quadrature_refinements(mesh: dolfinx.mesh.Mesh, degree: int, parameters: int) -> int:
    """Uniform refinements of ``mesh`` after which its degree-``degree`` quadrature points
    number at least :data:`POINTS_PER_PARAMETER` times ``parameters`` (a refinement
    multiplies the cells by ``2^tdim``)."""
    per_cell = np.asarray(basix.make_quadrature(mesh.basix_cell(), degree)[1]).size
    tdim = mesh.topology.dim
    points, refinements = per_cell * mesh.topology.index_map(tdim).size_global, 0
    while points < POINTS_PER_PARAMETER * parameters:
        points, refinements = points * 2**tdim, refinements + 1
    return refinements


def quadrature_mesh(
    mesh: dolfinx.mesh.Mesh, degree: int, parameters: int
) -> tuple[dolfinx.mesh.Mesh, int]:
    """``mesh`` refined :func:`quadrature_refinements` times (collective); and that number."""
    refinements = quadrature_refinements(mesh, degree, parameters)
    for _ in range(refinements):
        mesh = refine(mesh)
    return mesh, refinements


def collocation_points(
    problem: Problem, mesh: dolfinx.mesh.Mesh, config: NetworkConfig, parameters: int = 0
) -> np.ndarray:
    """This rank's collocation points ``(n_local, input_dim)`` (times uniform in ``[0, T]``).

    ``collocation="quadrature"``: the quadrature points of ``mesh``, refined until there are
    :data:`POINTS_PER_PARAMETER` per parameter of ``N`` (``parameters``).
    """
    if config.collocation == "quadrature":
        qmesh, _ = quadrature_mesh(mesh, config.quadrature_degree, parameters)
        x, _, _ = quadrature_points(qmesh, config.quadrature_degree)
        rng = np.random.default_rng(config.seed)  # times drawn per point below
    else:
        rng = rank_rng(config.seed, mesh.comm)
        x = sample_interior(mesh, config.points, rng)
    if problem.time_dependent:
        t = rng.uniform(0.0, problem.final_time, size=len(x))
        x = np.column_stack([x, t])
    return x


class _SpaceTimeDistance(torch.nn.Module):
    """``D(x, t) = D_x(x) * t / T``: zero on the lateral boundary and at ``t = 0``."""

    def __init__(self, spatial: torch.nn.Module, final_time: float) -> None:
        super().__init__()
        self.spatial, self.final_time = spatial, final_time

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(x[:, :-1]) * x[:, -1] / self.final_time


@dataclass(frozen=True)
class FixedFields:
    """The fitted ``G`` and ``D`` of a problem and its scales (:mod:`~.scaling`)."""

    extension: torch.nn.Module
    distance: torch.nn.Module
    scales: Scales


def fit_fixed_fields(
    problem: Problem, mesh: dolfinx.mesh.Mesh, config: NetworkConfig
) -> FixedFields:
    """Fit ``G`` and ``D`` on the mesh and measure the problem's scales (collective)."""
    fit_args = {"features": config.fit_features, "boundary_points": config.fit_boundary_points}
    spatial = fit_distance(mesh, scale=config.distance_scale, tolerance=config.fit_tolerance,
                           **fit_args)
    distance: torch.nn.Module = spatial
    if problem.time_dependent:
        extension = fit_space_time_extension(mesh, problem.exact_numpy, problem.final_time,
                                             **fit_args)
        distance = _SpaceTimeDistance(spatial, problem.final_time)
    else:
        extension = fit_boundary_extension(mesh, problem.exact_numpy,
                                           tolerance=config.fit_tolerance, **fit_args)
    for name, fit in (("D", spatial), ("G", extension)):
        _warn_unmet(name, fit, config, mesh.comm)
    scales = problem_scales(problem, mesh, extension, spatial.length_scale)
    return FixedFields(extension, distance, scales)


def _warn_unmet(name: str, fit: torch.nn.Module, config: NetworkConfig, comm) -> None:
    """Warn (rank 0; the misfit is agreed over ranks) when a fit misses its boundary tolerance.

    ``G`` or ``D`` off the boundary data bounds the accuracy of every trained ``N`` from below
    (the ansatz meets the boundary condition only as closely as ``G`` and ``D`` do), so a fit
    that misses its tolerance at the held-out boundary points is said, not only recorded in
    ``fit_report["met"]``.
    """
    report = getattr(fit, "fit_report", None)
    if not report or report.get("met", True) or comm.rank != 0:
        return
    warnings.warn(
        f"the fit of {name} misses its boundary tolerance: largest relative misfit "
        f"{report['boundary_misfit']:.3g} at held-out boundary points, tolerance "
        f"{report['tolerance']:.3g} (fit_features={config.fit_features}, "
        f"fit_boundary_points={config.fit_boundary_points}); the ansatz meets the boundary "
        f"data only this closely: raise fit_boundary_points or fit_features",
        RuntimeWarning, stacklevel=3)


def new_network(
    problem: Problem, mesh: dolfinx.mesh.Mesh, width: int, depth: int, seed: int,
    output_scale: float | None = None,
) -> torch.nn.Sequential:
    """A freshly initialised ``N`` (seeded, identical on every rank) on the mesh's box.

    ``output_scale``: the solution scale ``U`` of :mod:`~dolfinx_nn.ansatz.scaling` (the
    output of the dimensionless network is multiplied by it).
    """
    lower, upper = bounding_box(mesh)
    if problem.time_dependent:
        lower, upper = np.append(lower, 0.0), np.append(upper, problem.final_time)
    torch.manual_seed(seed)
    return feed_forward(problem.input_dim, width, depth, box=(lower, upper),
                        output_scale=output_scale)


def build_ansatz(
    problem: Problem, mesh: dolfinx.mesh.Mesh, config: NetworkConfig
) -> tuple[DirichletAnsatz, Scales]:
    """Fit ``G`` and ``D`` on the mesh and attach a fresh network ``N`` (collective)."""
    fixed = fit_fixed_fields(problem, mesh, config)
    network = new_network(problem, mesh, config.width, config.depth, config.seed,
                          fixed.scales.solution)
    return DirichletAnsatz(fixed.extension, fixed.distance, network), fixed.scales


def make_loss(
    problem: Problem, mesh: dolfinx.mesh.Mesh, ansatz: DirichletAnsatz, config: NetworkConfig,
    scales: Scales, points: np.ndarray | None = None,
) -> RitzLoss | StrongResidualLoss:
    """The dimensionless training loss of ``config.loss`` (``points``: collocation points to
    reuse).  Quadrature point sets get :data:`POINTS_PER_PARAMETER` points per parameter."""
    parameters = sum(p.numel() for p in ansatz.network.parameters())
    if config.loss == "ritz":
        qmesh, _ = quadrature_mesh(mesh, config.quadrature_degree, parameters)
        return RitzLoss(problem, ansatz, qmesh, degree=config.quadrature_degree,
                        scale=scales.energy)
    if points is None:
        points = collocation_points(problem, mesh, config, parameters)
    return StrongResidualLoss(problem, ansatz, points, mesh.comm, scale=scales.residual)


def loss_points(
    loss: RitzLoss | StrongResidualLoss, mesh: dolfinx.mesh.Mesh, config: NetworkConfig,
    parameters: int,
) -> dict:
    """What the loss was evaluated on: its global point count, the refinements of ``mesh``
    that carry a quadrature and its degree (None for random points), and the points per
    parameter (for ``results.json``)."""
    count = loss.points if isinstance(loss, RitzLoss) else loss.total
    quadrature = config.loss == "ritz" or config.collocation == "quadrature"
    refinements = (quadrature_refinements(mesh, config.quadrature_degree, parameters)
                   if quadrature else None)
    return {"points": count, "refinements": refinements,
            "quadrature_degree": config.quadrature_degree if quadrature else None,
            "points_per_parameter": count / max(parameters, 1)}


def final_loss(loss: RitzLoss | StrongResidualLoss) -> float:
    """The loss at the network's current parameters (collective).

    :class:`~dolfinx_nn.training.History` records the loss evaluated before each step, so its
    last entry is the loss before the last update; this evaluates it once more after
    training.  Gradients stay on (the losses differentiate the network in ``x``).
    """
    return float(loss().detach())


def solve_network(
    problem: Problem, mesh: dolfinx.mesh.Mesh, config: NetworkConfig,
    *, checkpoint: str | None = None, desc: str = "network",
    callback=None, state: dict | None = None, on_fitted=None,
    problem_record: dict | None = None,
) -> NetworkSolution:
    """Fit ``G`` and ``D``, then train ``N`` with :func:`~dolfinx_nn.training.train`.

    The network side works on the canonical copy of the problem and mesh
    (:func:`~dolfinx_nn.ansatz.units.canonical`), so a change of units does not change a bit
    of what the optimizer sees; the returned ansatz takes the user's coordinates.

    Args:
        problem: the PDE.
        mesh: the mesh of the fits and of the collocation points.
        config: the settings.
        checkpoint: training checkpoint (resumed when it exists).
        desc: progress-bar label.
        callback: passed to :func:`~dolfinx_nn.training.train` (``callback(step, loss)``;
            returning True stops training).
        state: if given, ``state["ansatz"]`` is set to the ansatz before training starts
            (for callbacks that evaluate it).
        on_fitted: called as ``on_fitted(ansatz)`` once ``G`` and ``D`` are fitted (progress).
        problem_record: stored in the checkpoint; resuming with another is refused
            (``problem`` of :func:`~dolfinx_nn.training.train`).
    """
    comm = mesh.comm
    comm.Barrier()
    start = time.perf_counter()
    hat = canonical(problem, mesh)
    ansatz_hat, scales_hat = build_ansatz(hat.problem, hat.mesh, config)
    ansatz = in_user_units(ansatz_hat, hat.units)
    if state is not None:
        state["ansatz"] = ansatz
    comm.Barrier()
    fit_time = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    if on_fitted is not None:
        on_fitted(ansatz)
    start = time.perf_counter()
    loss = make_loss(hat.problem, hat.mesh, ansatz_hat, config, scales_hat)
    # the network trains in canonical units: a checkpoint of another convention is refused
    record = None if problem_record is None else {**problem_record,
                                                  "network_units": CANONICAL_UNITS}
    history = train(loss, ansatz_hat.network, config.training, comm=comm, checkpoint=checkpoint,
                    resume="auto" if checkpoint else False, desc=desc, callback=callback,
                    problem=record)
    comm.Barrier()
    train_time = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    parameters = sum(p.numel() for p in ansatz.network.parameters())
    points = loss_points(loss, hat.mesh, config, parameters)
    if isinstance(loss, RitzLoss):
        points.update(loss.held_out())  # its "energy" is the loss at the final parameters
        last = points["energy"]
    else:
        last = final_loss(loss)
    return NetworkSolution(ansatz, parameters, history, fit_time, train_time,
                           user_scales(scales_hat, hat.units, problem), hat, points, last)
