"""The residual block ``f: R^d -> R^d`` shared by every layer."""

from __future__ import annotations

import torch
from torch import nn

from dolfinx_nn.networks.activations import activation as activation_class
from dolfinx_nn.networks.mlp import mlp


def dense_block(
    dim: int,
    width: int = 16,
    activation: str = "relu",
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> nn.Sequential:
    """``Dense(width, activation) -> Dense(dim)``, the block of Avelin & Nyström.

    Args:
        dim: state dimension ``d``.
        width: hidden width.
        activation: a name from :data:`~dolfinx_nn.networks.activations.ACTIVATIONS`.
        generator: makes the initialization reproducible (PyTorch's default init otherwise
            uses the global generator).
        dtype, device: of the parameters.

    Raises:
        ValueError: an unknown activation (the message lists the valid names), or ``dim`` or
            ``width`` not a positive integer.
    """
    activation_class(activation)
    for name, value in (("dim", dim), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    # default init drawn in float32, then cast (the blocks, and results, of earlier versions)
    block = mlp([dim, width, dim], activation, dtype=dtype, init_dtype=torch.float32,
                device=device)
    if generator is not None:
        with torch.no_grad():
            for layer in (block[0], block[2]):
                assert isinstance(layer, nn.Linear)
                bound = 1.0 / layer.in_features**0.5
                cpu = torch.empty(layer.weight.shape, dtype=torch.float64)
                layer.weight.copy_(cpu.uniform_(-bound, bound, generator=generator))
                cpu = torch.empty(layer.bias.shape, dtype=torch.float64)
                layer.bias.copy_(cpu.uniform_(-bound, bound, generator=generator))
    return block
