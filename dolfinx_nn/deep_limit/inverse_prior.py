"""Experiment (d): a constant-weight ResNet as the network prior of the inverse problem.

The coefficient of ``-div(q grad u) = f`` is ``q(x) = q_min + softplus(r(F(L(s(x)))))`` with
``s`` the map of the bounding box onto ``[-1, 1]^gdim``, ``L`` a linear lift to ``R^d``, ``F``
the depth-``N`` constant-weight ResNet (or its neural-ODE limit) and ``r`` a linear readout.
Every depth starts from the same weights and takes the same number of full-batch Adam steps
on the data misfit of :mod:`dolfinx_nn.models`; the recovered coefficients ``q_N`` should
converge to the ODE prior's ``q_ODE`` at first order in ``1/N``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial

from mpi4py import MPI

import numpy as np
import torch
from torch import nn

from dolfinx_nn.deep_limit.blocks import dense_block
from dolfinx_nn.deep_limit.classifier import ODE, make_flow
from dolfinx_nn.deep_limit.rates import fitted_order, successive_ratios
from dolfinx_nn.meshes import bounding_box
from dolfinx_nn.models import InverseProblem, ProblemSpec, build_problem
from dolfinx_nn.neural_function import NeuralFunction
from dolfinx_nn.training import TrainingConfig, train


class FlowCoefficient(nn.Module):
    """``q(x) = q_min + softplus(readout(flow(lift(s(x)))))``, a positive scalar field.

    Args:
        low, high: corners of the box mapped onto ``[-1, 1]^gdim``.
        lift: linear map ``R^gdim -> R^d``.
        flow: a :class:`ConstantWeightResNet` or :class:`NeuralODE` on ``R^d``.
        readout: linear map ``R^d -> R``.
        q_min: positive floor of the coefficient.
    """

    centre: torch.Tensor
    half_width: torch.Tensor

    def __init__(self, low, high, lift: nn.Linear, flow: nn.Module, readout: nn.Linear,
                 q_min: float = 0.05) -> None:
        super().__init__()
        self.register_buffer("centre", torch.as_tensor(0.5 * (low + high), dtype=torch.float64))
        self.register_buffer("half_width", torch.as_tensor(
            np.maximum(0.5 * (high - low), 1e-12), dtype=torch.float64))
        self.lift, self.flow, self.readout, self.q_min = lift, flow, readout, float(q_min)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Coefficient at points ``(n, gdim)``; returns ``(n,)``."""
        s = (x - self.centre) / self.half_width
        return self.q_min + nn.functional.softplus(
            self.readout(self.flow(self.lift(s)))).squeeze(-1)


#: Default optimizer settings of :class:`InverseConfig`: 100 Adam steps at learning rate 1e-2,
#: the same for every prior (no L-BFGS, no early stop), the global generators seeded with 0.
DEFAULT_TRAINING = TrainingConfig(adam_steps=100, adam_lr=1e-2, lbfgs_steps=0, patience=None,
                                  seed=0)


@dataclass
class InverseConfig:
    """Settings of the inverse-problem experiment.

    ``training`` (default :data:`DEFAULT_TRAINING`) holds the optimizer settings every prior
    is trained with; ``seed`` seeds the data noise and the shared initial weights.
    """

    resolution: int = 16
    coefficient: str = "1 + 0.5*sin(pi*x[0])*sin(pi*x[1])"
    noise: float = 0.0
    dim: int = 4
    width: int = 16
    activation: str = "tanh"
    q_min: float = 0.05
    q_init: float = 1.0
    training: TrainingConfig = DEFAULT_TRAINING
    depths: Sequence[int] = (1, 2, 4, 8, 16, 32, 64)
    seed: int = 0
    ode_options: dict = field(
        default_factory=lambda: {"method": "dopri5", "rtol": 1e-9, "atol": 1e-9,
                                 "gradient": "adjoint"})
    fit_from: int = 4


def _template(config: InverseConfig, gdim: int) -> tuple[nn.Linear, nn.Module, nn.Linear]:
    g = torch.Generator().manual_seed(config.seed)
    block = dense_block(config.dim, config.width, config.activation, generator=g)
    lift = nn.Linear(gdim, config.dim).to(torch.float64)
    readout = nn.Linear(config.dim, 1).to(torch.float64)
    with torch.no_grad():
        for layer in (lift, readout):
            bound = 1.0 / layer.in_features**0.5
            layer.weight.uniform_(-bound, bound, generator=g)
            layer.bias.zero_()
        readout.weight.mul_(0.1)
        readout.bias.fill_(math.log(math.expm1(config.q_init - config.q_min)))
    return lift, block, readout


def _misfit(problem: InverseProblem, q: NeuralFunction) -> torch.Tensor:
    """The data misfit of the coefficient ``q`` (the training loss)."""
    return problem.loss(q())


def _global_norm(v: torch.Tensor, comm: MPI.Comm) -> float:
    return math.sqrt(comm.allreduce(float(v.square().sum()), op=MPI.SUM))


def inverse_prior(config: InverseConfig, comm: MPI.Comm = MPI.COMM_WORLD) -> dict:
    """Run experiment (d) (collective: every rank takes part in every run).

    Returns:
        Per depth: relative distance ``|q_N - q_ODE| / |q_ODE|`` of the coefficient dof
        vectors, relative gap of the final misfits, relative L2 error against the true
        coefficient; the ODE prior's values; fitted orders over depths ``>= fit_from``;
        ``functions``: the recovered coefficients as DOLFINx functions (for ParaView).
    """
    problem = build_problem(ProblemSpec(dim=2, resolution=config.resolution,
                                        coefficient=config.coefficient, noise=config.noise,
                                        seed=config.seed), comm)
    Q = problem.model.Q
    low, high = bounding_box(problem.model.mesh)
    lift, block, readout = _template(config, len(low))
    labels: list[int | str] = [*(int(n) for n in config.depths), ODE]
    coefficients, misfits, errors, functions = {}, {}, {}, {}
    for label in labels:
        flow = make_flow(copy.deepcopy(block), label, config.ode_options)
        net = FlowCoefficient(low, high, copy.deepcopy(lift), flow, copy.deepcopy(readout),
                              config.q_min)
        q = NeuralFunction(net, Q, name=f"q_{label}")
        history = train(partial(_misfit, problem, q), net, config.training, comm=comm,
                        desc=f"prior N={label}")
        with torch.no_grad():
            coefficients[label] = q().detach().clone()
        misfits[label] = float(problem.loss(coefficients[label]))
        errors[label] = problem.errors(coefficients[label]).get("coefficient_rel_l2_error")
        functions[label] = q.function
        del history
    q_ode = coefficients[ODE]
    depths = [int(n) for n in config.depths]
    distance = [_global_norm(coefficients[n] - q_ode, comm) / _global_norm(q_ode, comm)
                for n in depths]
    gap = [abs(misfits[n] - misfits[ODE]) / misfits[ODE] for n in depths]
    fit = [i for i, n in enumerate(depths) if n >= config.fit_from]
    return {
        "config": asdict(config),
        "depths": depths,
        "coefficient_distance": distance,
        "coefficient_ratio": successive_ratios(distance),
        "coefficient_order": fitted_order([depths[i] for i in fit], [distance[i] for i in fit]),
        "misfit": [misfits[n] for n in depths],
        "misfit_gap": gap,
        "misfit_gap_ratio": successive_ratios(gap),
        "misfit_gap_order": fitted_order([depths[i] for i in fit], [gap[i] for i in fit]),
        "coefficient_error": [errors[n] for n in depths],
        "ode_misfit": misfits[ODE],
        "ode_coefficient_error": errors[ODE],
        "coefficient_dofs": problem.model.Q.dofmap.index_map.size_global,
        "functions": functions,
    }
