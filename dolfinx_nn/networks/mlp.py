"""The multilayer perceptron: one builder for every fully connected network of the package."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

from dolfinx_nn.networks.activations import activation as activation_class


def mlp(
    sizes: Sequence[int],
    activation: str = "tanh",
    *,
    output_activation: str | None = None,
    dtype: torch.dtype = torch.float64,
    init_dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.nn.Sequential:
    """``Linear(sizes[0], sizes[1]) -> act -> ... -> Linear(sizes[-2], sizes[-1])``.

    The layers are created in order with PyTorch's default initialisation (uniform in
    ``+-1/sqrt(fan_in)``, drawn from the global generator), so a seed fixes the weights.  The
    module indices are those of a hand-written ``torch.nn.Sequential`` of the same layers.

    Args:
        sizes: widths ``[inputs, hidden..., outputs]``, at least two, each >= 1.
        activation: a key of :data:`~dolfinx_nn.networks.activations.ACTIVATIONS`, applied
            after every layer but the last.
        output_activation: an activation after the last layer too (default: none, linear
            output).
        dtype: dtype of the parameters.
        init_dtype: dtype the initial weights are drawn in before they are cast to ``dtype``
            (default: ``dtype``).  The same seed draws different numbers in float32 and
            float64; ``torch.float32`` reproduces ``torch.nn.Linear(...).double()``.
        device: where the parameters live (they are drawn on the CPU, then moved, so the
            weights do not depend on the device).

    Returns:
        The network, a ``torch.nn.Sequential``; inputs ``(..., sizes[0])``, outputs
        ``(..., sizes[-1])``.

    Raises:
        ValueError: fewer than two sizes, a size that is not a positive integer, or an unknown
            activation (the message lists the valid names).
    """
    sizes = [int(s) if isinstance(s, numbers.Integral) and not isinstance(s, bool) else s
             for s in sizes]  # numpy integers too
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least an input and an output size, got {sizes}")
    bad = [s for s in sizes if isinstance(s, bool) or not isinstance(s, int) or s < 1]
    if bad:
        raise ValueError(f"MLP sizes must be positive integers, got {sizes}")
    hidden = activation_class(activation)
    last = None if output_activation is None else activation_class(output_activation)
    layers: list[torch.nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b, dtype=init_dtype or dtype))
        act = hidden if k < len(sizes) - 2 else last
        if act is not None:
            layers.append(act())
    return torch.nn.Sequential(*layers).to(dtype=dtype, device=device)
