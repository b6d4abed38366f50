"""Experiment (a): at fixed weights, ResNet outputs and gradients converge to the ODE flow.

With one block ``f`` and its readout fixed, the depth-``N`` ResNet output is compared with the
time-one flow of ``dx/dt = f(x)`` (adaptive Dormand–Prince at tight tolerance), and so is the
gradient of the classification loss with respect to the block's weights.  Forward Euler is
first order, so both errors should halve when ``N`` doubles.  RK4 with ``N`` steps and the
continuous-adjoint gradient are measured alongside, for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from dolfinx_nn.deep_limit.annulus import annulus
from dolfinx_nn.deep_limit.blocks import dense_block
from dolfinx_nn.deep_limit.classifier import FlowClassifier
from dolfinx_nn.deep_limit.neural_ode import NeuralODE
from dolfinx_nn.deep_limit.rates import fitted_order, successive_ratios
from dolfinx_nn.deep_limit.resnet import ConstantWeightResNet
from dolfinx_nn.deep_limit.sgd import bce_loss


@dataclass
class ForwardConfig:
    """Settings of the forward-convergence experiment."""

    dim: int = 3
    width: int = 16
    activation: str = "relu"
    n_points: int = 256
    depths: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    seed: int = 0
    reference_tol: float = 1e-12
    fit_from: int = 4


def _gradient(
    model: nn.Module, block: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """The loss gradient with respect to the shared block's parameters, flattened."""
    block.zero_grad()
    bce_loss(model, x, y).backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in block.parameters()]
    return torch.cat([g.reshape(-1).clone() for g in grads])


def forward_convergence(config: ForwardConfig) -> dict:
    """Run experiment (a); returns per-depth errors and fitted orders.

    Output errors are ``max |x_N - x(1)|`` over points and components; gradient errors are
    relative 2-norms.  Orders are least-squares slopes over depths ``>= config.fit_from``.
    """
    g = torch.Generator().manual_seed(config.seed)
    block = dense_block(config.dim, config.width, config.activation, generator=g)
    readout = nn.Linear(config.dim, 1).to(torch.float64)
    with torch.no_grad():
        bound = 1.0 / config.dim**0.5
        readout.weight.uniform_(-bound, bound, generator=g)
        readout.bias.uniform_(-bound, bound, generator=g)
    x, y = annulus(config.n_points, config.dim, generator=g)
    tol = config.reference_tol
    ode = NeuralODE(block, "dopri5", rtol=tol, atol=tol)
    with torch.no_grad():
        x_ref = ode(x)
    g_ref = _gradient(FlowClassifier(ode, readout), block, x, y)
    depths = [int(n) for n in config.depths]
    rows: dict[str, list[float]] = {k: [] for k in (
        "resnet_error", "resnet_gradient_error", "rk4_error", "euler_adjoint_gap",
        "rk4_adjoint_gap")}
    for n in depths:
        resnet = ConstantWeightResNet(block, n)
        with torch.no_grad():
            rows["resnet_error"].append(float((resnet(x) - x_ref).abs().max()))
            rk4 = NeuralODE(block, "rk4", steps=n)
            rows["rk4_error"].append(float((rk4(x) - x_ref).abs().max()))
        g_res = _gradient(FlowClassifier(resnet, readout), block, x, y)
        rows["resnet_gradient_error"].append(float((g_res - g_ref).norm() / g_ref.norm()))
        for method in ("euler", "rk4"):
            direct = _gradient(
                FlowClassifier(NeuralODE(block, method, steps=n), readout), block, x, y)
            adjoint = _gradient(FlowClassifier(
                NeuralODE(block, method, steps=n, gradient="adjoint"), readout), block, x, y)
            rows[f"{method}_adjoint_gap"].append(
                float((adjoint - direct).norm() / direct.norm()))
    fit = [i for i, n in enumerate(depths) if n >= config.fit_from]
    result = {"config": asdict(config), "depths": depths, "reference_steps":
              ode.stats[0].accepted}
    for key, errors in rows.items():
        result[key] = errors
        result[key.replace("error", "ratio").replace("gap", "gap_ratio")] = successive_ratios(
            errors)
        result[key.replace("error", "order").replace("gap", "gap_order")] = fitted_order(
            [depths[i] for i in fit], [errors[i] for i in fit])
    return result
