"""Binary classifiers ``readout(flow(x))`` whose flow is a constant-weight ResNet or its ODE."""

from __future__ import annotations

import copy

import torch
from torch import nn

from dolfinx_nn.deep_limit.neural_ode import NeuralODE
from dolfinx_nn.deep_limit.resnet import ConstantWeightResNet

#: depth label of the neural-ODE limit in experiment tables
ODE = "ode"


def make_flow(f: nn.Module, depth: int | str, ode_options: dict | None = None) -> nn.Module:
    """A ResNet of ``depth`` layers, or the neural ODE when ``depth == "ode"``.

    Args:
        f: the block (used as is, not copied).
        depth: positive integer or ``"ode"``.
        ode_options: keyword arguments of :class:`NeuralODE` (default: adaptive
            Dormand–Prince, ``rtol=1e-8``, ``atol=1e-10``).
    """
    if depth == ODE:
        return NeuralODE(f, **(ode_options or {"method": "dopri5", "rtol": 1e-8, "atol": 1e-10}))
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer or {ODE!r}, got {depth!r}")
    return ConstantWeightResNet(f, depth)


class FlowClassifier(nn.Module):
    """``logit = readout(flow(x))`` with a linear readout ``R^d -> R``."""

    def __init__(self, flow: nn.Module, readout: nn.Linear) -> None:
        super().__init__()
        self.flow = flow
        self.readout = readout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape ``(n,)``."""
        return self.readout(self.flow(x)).squeeze(-1)


def classifier(
    block: nn.Module, readout: nn.Linear, depth: int | str, ode_options: dict | None = None
) -> FlowClassifier:
    """A classifier with fresh copies of ``block`` and ``readout`` (same initial weights)."""
    return FlowClassifier(
        make_flow(copy.deepcopy(block), depth, ode_options), copy.deepcopy(readout)
    )


def parameter_vector(module: nn.Module) -> torch.Tensor:
    """All parameters of ``module`` flattened into one detached vector."""
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])
