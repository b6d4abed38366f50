"""The network prior: the coefficient is a small fully connected network of the coordinates.

Following Berg & Nystrom ("Neural network augmented inverse problems for PDEs"), the network
itself is the regulariser: a smooth global approximator with few parameters, trained on the data
misfit alone.  Positivity is built in:

    q(x) = q_min + softplus(N(s(x)))

with ``s`` the affine map of the mesh's bounding box onto ``[-1, 1]^d`` and ``N`` a tanh MLP
whose last bias is chosen so that the untrained network is the constant ``q_init``
(:class:`~dolfinx_nn.networks.coefficient.CoefficientNetwork`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Literal

import torch

from dolfinx_nn.inverse.result import PriorResult
from dolfinx_nn.meshes import bounding_box
from dolfinx_nn.models.inverse_problem import InverseProblem
from dolfinx_nn.networks.coefficient import CoefficientNetwork
from dolfinx_nn.neural_function import NeuralFunction
from dolfinx_nn.training import TrainingConfig, train


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of the network prior (see
    :class:`~dolfinx_nn.networks.coefficient.CoefficientNetwork`)."""

    width: int = 32
    depth: int = 2
    q_min: float = 0.05
    q_init: float = 1.0
    seed: int = 0


#: Training defaults of the network prior: a short Adam warm-up, then L-BFGS.
DEFAULT_TRAINING = TrainingConfig(adam_steps=200, adam_lr=1e-2, lbfgs_steps=300,
                                  patience=50, min_delta=1e-6)


def discrepancy_tolerance(noise_norm: float, tau: float) -> float | None:
    """Loss value ``1/2 (tau * noise_norm)^2`` at which the discrepancy principle stops."""
    return 0.5 * (tau * noise_norm) ** 2 if noise_norm > 0 and tau > 0 else None


def fit_network_prior(
    problem: InverseProblem,
    network: NetworkConfig = NetworkConfig(),
    training: TrainingConfig = DEFAULT_TRAINING,
    *,
    discrepancy_tau: float = 0.0,
    device: torch.device | str | None = None,
    checkpoint: str | None = None,
    resume: bool | Literal["auto"] = False,
    problem_record: dict | None = None,
) -> PriorResult:
    """Train the network prior on the data misfit of ``problem``.

    The network is a :class:`~dolfinx_nn.networks.coefficient.CoefficientNetwork`.  The
    gradient of the misfit with respect to the weights is one adjoint FEM solve followed by
    backpropagation through the network; under MPI every rank evaluates the network at its
    own dofs and the gradient shares are summed by the training loop.

    Args:
        problem: the inverse problem.
        network: architecture and initialisation.
        training: optimizer settings (Adam, then L-BFGS).
        discrepancy_tau: if > 0 and the data are noisy, stop as soon as the relative residual
            falls below ``tau`` times the relative noise level (discrepancy principle as an
            early-stopping rule); 0 trains on the misfit alone.
        device: where the network lives (default: CPU).
        checkpoint, resume: see :func:`dolfinx_nn.training.train`.
        problem_record: what defines the problem, stored in the checkpoint; resuming with
            another one is refused (``problem`` of :func:`dolfinx_nn.training.train`).
    """
    start = time.perf_counter()
    torch.manual_seed(network.seed)  # the same initial weights on every rank
    low, high = bounding_box(problem.model.mesh)
    net = CoefficientNetwork(low, high, width=network.width, depth=network.depth,
                             q_min=network.q_min, q_init=network.q_init)
    if device is not None:
        net = net.to(device)
    q = NeuralFunction(net, problem.model.Q, device=device)
    tolerance = discrepancy_tolerance(problem.noise_norm, discrepancy_tau)
    if tolerance is not None:
        training = dataclasses.replace(training, tolerance=tolerance)
    history = train(lambda: problem.loss(q()), net, training, comm=problem.comm,
                    checkpoint=checkpoint, resume=resume, desc="network prior",
                    problem=problem_record)
    with torch.no_grad():
        coefficient = q().detach().clone()
    n_params = sum(p.numel() for p in net.parameters())
    return PriorResult(
        prior="network",
        coefficient=coefficient,
        history=history,
        errors=problem.errors(coefficient),
        iterations=history.steps,
        wall_time_s=time.perf_counter() - start,
        details={"parameters": n_params, "width": network.width, "depth": network.depth,
                 "discrepancy_tolerance": tolerance},
    )
