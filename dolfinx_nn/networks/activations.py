"""The activation registry: name -> ``torch.nn.Module`` class, one table for every network.

Add an activation here; every network of the package (and every ``--activation`` choice built
from :data:`ACTIVATIONS`) then accepts its name.
"""

from __future__ import annotations

from collections.abc import Collection

import torch


class Sine(torch.nn.Module):
    """``sin(z)`` elementwise (smooth and periodic; SIREN-type features)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sin(z)


#: Activation name -> module class (PyTorch's defaults, e.g. exact GELU, softplus beta 1).
ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
    "relu": torch.nn.ReLU,
    "elu": torch.nn.ELU,
    "softplus": torch.nn.Softplus,
    "gelu": torch.nn.GELU,
    "silu": torch.nn.SiLU,
    "sin": Sine,
}


#: Names whose second derivative is continuous: for networks whose Laplacian or Hessian enters
#: a loss (PDE residuals, derivative features).
SMOOTH: frozenset[str] = frozenset({"tanh", "sigmoid", "softplus", "gelu", "silu", "sin"})


def activation(name: str, allowed: Collection[str] | None = None) -> type[torch.nn.Module]:
    """The module class of activation ``name``.

    Args:
        name: a key of :data:`ACTIVATIONS`.
        allowed: the names a caller accepts (default: all of :data:`ACTIVATIONS`), e.g. the
            smooth ones where second derivatives are taken, or the convex ones of an ICNN.

    Raises:
        ValueError: ``name`` is not among the allowed names; the message lists them.
    """
    names = list(ACTIVATIONS) if allowed is None else [n for n in ACTIVATIONS if n in allowed]
    if name not in names:
        raise ValueError(f"unknown activation {name!r}; choose one of: {', '.join(names)}")
    return ACTIVATIONS[name]
