"""ResNets whose layers all share one weight set."""

from __future__ import annotations

import torch
from torch import nn


class ConstantWeightResNet(nn.Module):
    """``x_{k+1} = x_k + f(x_k) / N`` for ``k = 0, ..., N - 1``, with one block ``f``.

    This is the forward Euler scheme with step ``1/N`` for ``dx/dt = f(x)`` on ``[0, 1]``;
    as ``N`` grows it converges to :class:`~dolfinx_nn.deep_limit.NeuralODE` with the same
    ``f`` (Avelin & Nyström, "Neural ODEs as the deep limit of ResNets with constant
    weights", 2021).

    Args:
        f: any module mapping ``(..., d)`` to ``(..., d)``.
        depth: the number of layers ``N``.
    """

    def __init__(self, f: nn.Module, depth: int) -> None:
        super().__init__()
        if not isinstance(f, nn.Module):
            raise TypeError(f"f must be a torch.nn.Module, got {type(f).__name__}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive integer, got {depth!r}")
        self.f = f
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The output ``x_N`` for the input ``x_0 = x``."""
        for _ in range(self.depth):
            x = x + self.f(x) / self.depth
        return x

    def extra_repr(self) -> str:
        return f"depth={self.depth}"
