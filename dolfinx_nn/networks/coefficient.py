"""A positive scalar field of the coordinates: ``q(x) = q_min + softplus(MLP(scaled x))``.

The coefficient of the network prior of Berg & Nystrom ("Neural network augmented inverse
problems for PDEs"): a smooth global approximator with few parameters whose positivity is
built in.  ``scaled x`` is the affine map of a bounding box onto ``[-1, 1]^d``; the last bias is
chosen so that the untrained network is the constant ``q_init``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dolfinx_nn.networks.mlp import mlp


class CoefficientNetwork(torch.nn.Module):
    """``q(x) = q_min + softplus(MLP(scaled x))``, a positive scalar field.

    The MLP has ``depth`` tanh layers of ``width`` neurons (:func:`~dolfinx_nn.networks.mlp`);
    its output layer's weights are scaled by 0.1 and its bias is ``softplus^{-1}(q_init -
    q_min)``.

    Args:
        low, high: corners of the box the inputs are scaled from (onto ``[-1, 1]^d``), shape
            ``(d,)``.
        width: neurons per hidden layer.
        depth: number of hidden layers.
        q_min: positive floor of the coefficient.
        q_init: value of the untrained network (must exceed ``q_min``).
        dtype: parameter dtype (float64 makes L-BFGS converge to tight tolerances).

    Raises:
        ValueError: ``width`` or ``depth`` < 1, or not ``0 < q_min < q_init``.
    """

    centre: torch.Tensor
    half_width: torch.Tensor

    def __init__(
        self,
        low: np.ndarray,
        high: np.ndarray,
        *,
        width: int = 16,
        depth: int = 2,
        q_min: float = 0.05,
        q_init: float = 1.0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"width and depth must be >= 1, got width={width}, depth={depth}.")
        if not q_min > 0 or not q_init > q_min:
            raise ValueError(f"need 0 < q_min < q_init, got q_min={q_min}, q_init={q_init}.")
        lower = torch.as_tensor(low, dtype=dtype)
        upper = torch.as_tensor(high, dtype=dtype)
        self.register_buffer("centre", 0.5 * (lower + upper))
        self.register_buffer("half_width", torch.clamp(0.5 * (upper - lower), min=1e-12))
        self.q_min = float(q_min)
        self.mlp = mlp([len(lower)] + [width] * depth + [1], "tanh", dtype=dtype)
        last = self.mlp[-1]
        assert isinstance(last, torch.nn.Linear)
        with torch.no_grad():
            last.weight.mul_(0.1)
            last.bias.fill_(math.log(math.expm1(q_init - q_min)))  # softplus^{-1}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Coefficient values at points ``x`` of shape ``(n, d)``; returns ``(n,)``."""
        s = (x - self.centre) / self.half_width
        return self.q_min + torch.nn.functional.softplus(self.mlp(s)).squeeze(-1)
