"""Deep versus shallow networks ``N`` at equal parameter count, trained identically.

Berg & Nystrom report that deeper networks reach smaller errors than shallow ones with the
same number of parameters.  :func:`compare_depths` measures this on one problem: ``G`` and
``D`` are fitted once and shared, every network trains on the same loss (the same collocation
points), with the same optimizer settings and initial-weight seed, and only the depth and the
width (chosen to give the same parameter count) differ.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from mpi4py import MPI

import dolfinx

from dolfinx_nn.ansatz.ansatz import DirichletAnsatz
from dolfinx_nn.ansatz.errors import network_errors
from dolfinx_nn.ansatz.network_solver import (
    NetworkConfig,
    collocation_points,
    fit_fixed_fields,
    make_loss,
    new_network,
)
from dolfinx_nn.ansatz.networks import parameter_count, width_for_parameters
from dolfinx_nn.ansatz.pdes import Problem
from dolfinx_nn.training import train


@dataclass(frozen=True)
class DepthResult:
    """One trained network of :func:`compare_depths`."""

    depth: int
    width: int
    parameters: int
    seed: int
    relative_l2_error: float
    final_loss: float
    steps: int
    train_time_s: float


def compare_depths(
    problem: Problem,
    mesh: dolfinx.mesh.Mesh,
    reference: dolfinx.mesh.Mesh,
    parameters: int,
    depths: Sequence[int],
    config: NetworkConfig,
    seeds: Sequence[int] = (0,),
) -> list[DepthResult]:
    """Train ``N`` of each depth (and seed) with about ``parameters`` parameters (collective).

    Args:
        problem: the PDE (stationary: the time-dependent ansatz needs its own fields).
        mesh: the mesh of the fits and of the collocation points.
        reference: the mesh on which the errors are measured.
        parameters: target parameter count; each depth gets the width closest to it.
        depths: hidden-layer counts to compare, e.g. ``(4, 1)``.
        config: loss, collocation and training settings (``width``/``depth`` are ignored).
        seeds: seeds of the initial weights; every depth is trained once per seed.

    Returns:
        One :class:`DepthResult` per depth and seed, in the order of ``depths`` then ``seeds``.
    """
    if problem.time_dependent:
        raise ValueError("compare_depths takes a stationary problem")
    if parameters < 1 or not depths or any(d < 1 for d in depths):
        raise ValueError(f"need parameters >= 1 and depths >= 1, got {parameters}, {depths}")
    comm = mesh.comm
    extension, distance = fit_fixed_fields(problem, mesh, config)
    points = collocation_points(problem, mesh, config) if config.loss == "strong" else None
    results = []
    for depth in depths:
        width = width_for_parameters(problem.input_dim, depth, parameters)
        for seed in seeds:
            ansatz = DirichletAnsatz(extension, distance,
                                     new_network(problem, mesh, width, depth, seed))
            loss = make_loss(problem, mesh, ansatz, config, points)
            start = time.perf_counter()
            history = train(loss, ansatz.network, config.training, comm=comm,
                            desc=f"depth {depth}, width {width}, seed {seed}")
            elapsed = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
            error = network_errors(problem, ansatz, reference)["relative_l2_error"]
            results.append(DepthResult(depth, width, parameter_count(problem.input_dim, width,
                                                                     depth),
                                       seed, error, history.losses[-1], history.steps, elapsed))
    return results
