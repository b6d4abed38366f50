"""Check a discovered equation by simulating it with DOLFINx and comparing with held-out data.

The initial state is the surrogate at the first snapshot, put into the finite element space
with :class:`~dolfinx_nn.NeuralFunction`; the Dirichlet values are the surrogate on the
boundary, frozen after the last training time (no data is used beyond it).  The discovered
equation is turned into a UFL form (:func:`~dolfinx_nn.discovery.equation.weak_rhs`) and
integrated with :func:`~dolfinx_nn.discovery.simulation.integrate`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import dolfinx
import numpy as np
import torch

from dolfinx_nn.discovery.data import SpaceTimeData
from dolfinx_nn.discovery.simulation import PointEvaluator, integrate
from dolfinx_nn.discovery.surrogate import SurrogateBase
from dolfinx_nn.neural_function import NeuralFunction

__all__ = ["Validation", "validate"]


class _Snapshot(torch.nn.Module):
    """The surrogate at a fixed time, as a network of space only."""

    def __init__(self, surrogate: SurrogateBase):
        super().__init__()
        self.surrogate = surrogate
        self.time = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.surrogate(x, self.time)


@dataclasses.dataclass(frozen=True)
class Validation:
    """Simulated values at the data points and their error on the held-out snapshots."""

    times: np.ndarray  # all snapshot times
    simulated: np.ndarray  # (M, N) simulated values at the data points
    held_out: np.ndarray  # boolean (M,), snapshots not used for discovery
    rel_l2_error: float  # over all held-out observations
    snapshot_errors: np.ndarray  # relative l2 error per held-out snapshot


def _relative_error(sim: np.ndarray, obs: np.ndarray) -> float:
    mask = ~(np.isnan(obs) | np.isnan(sim))
    return float(np.linalg.norm(sim[mask] - obs[mask]) / (np.linalg.norm(obs[mask]) or 1.0))


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
    """Simulate ``u_t = sum_k c_k T_k`` from the first snapshot and compare with later data.

    Args:
        coefficients: the discovered equation (term name -> coefficient, data units; the mesh
            must use the data's coordinates).
        surrogate: gives the initial state and the boundary values.
        mesh: the data's geometry.
        data: all snapshots (training and held out).
        train_end: last time used for discovery; later snapshots are the held-out ones.
        degree: Lagrange degree of the simulation.
        steps_per_interval: Crank-Nicolson steps between snapshots.
        on_snapshot: optional ``f(u, t)`` called at each snapshot (e.g. to write ParaView files).
    """
    if not coefficients:
        raise ValueError("the discovered equation has no terms; nothing to simulate")
    held_out = data.t > train_end
    if not held_out.any():
        raise ValueError(f"no snapshot after train_end={train_end}; nothing to validate")
    snapshot = _Snapshot(surrogate)
    evaluate = PointEvaluator(mesh, data.x)
    simulated = np.empty_like(data.u)
    bridge: dict[str, NeuralFunction] = {}

    def fill(target: dolfinx.fem.Function, t: float) -> None:
        if "q" not in bridge:
            bridge["q"] = NeuralFunction(snapshot, target.function_space, name="surrogate")
        snapshot.time = min(t, train_end)
        with torch.no_grad():
            bridge["q"]()
        target.x.array[:] = bridge["q"].function.x.array

    def observe(u: dolfinx.fem.Function, k: int) -> None:
        simulated[k] = evaluate(u)
        if on_snapshot is not None:
            on_snapshot(u, float(data.t[k]))

    integrate(
        mesh, coefficients, lambda u: fill(u, float(data.t[0])), fill, data.t, observe,
        degree, steps_per_interval, prefix="discovery_validation_",
    )
    errors = np.array([_relative_error(simulated[k], data.u[k]) for k in np.flatnonzero(held_out)])
    return Validation(
        times=data.t,
        simulated=simulated,
        held_out=held_out,
        rel_l2_error=_relative_error(simulated[held_out], data.u[held_out]),
        snapshot_errors=errors,
    )
