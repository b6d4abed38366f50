"""The residual block ``f: R^d -> R^d`` shared by every layer."""

from __future__ import annotations

import torch
from torch import nn

#: activation name -> module class
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


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
        activation: a name from :data:`ACTIVATIONS`.
        generator: makes the initialization reproducible (PyTorch's default init otherwise
            uses the global generator).
        dtype, device: of the parameters.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}"
        )
    for name, value in (("dim", dim), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    block = nn.Sequential(
        nn.Linear(dim, width), ACTIVATIONS[activation](), nn.Linear(width, dim)
    ).to(dtype=dtype, device=device)
    if generator is not None:
        with torch.no_grad():
            for layer in (block[0], block[2]):
                bound = 1.0 / layer.in_features**0.5
                cpu = torch.empty(layer.weight.shape, dtype=torch.float64)
                layer.weight.copy_(cpu.uniform_(-bound, bound, generator=generator))
                cpu = torch.empty(layer.bias.shape, dtype=torch.float64)
                layer.bias.copy_(cpu.uniform_(-bound, bound, generator=generator))
    return block
