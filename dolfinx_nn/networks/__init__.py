"""Networks shared by the topics: activations, one MLP builder, pointwise derivatives.

- :mod:`.activations`: the activation registry (:data:`ACTIVATIONS`, :func:`activation`);
- :mod:`.mlp`: :func:`mlp`, the one builder of multilayer perceptrons;
- :mod:`.pointwise`: value, gradient, Laplacian and Hessian of a network with respect to its
  input points (``torch.func``), differentiable with respect to the parameters;
- :mod:`.coefficient`: :class:`CoefficientNetwork`, a positive scalar field of the coordinates.
"""

from __future__ import annotations

from dolfinx_nn.networks.activations import ACTIVATIONS, activation
from dolfinx_nn.networks.coefficient import CoefficientNetwork
from dolfinx_nn.networks.mlp import mlp
from dolfinx_nn.networks.pointwise import gradient, hessian, laplacian, partial_derivatives

__all__ = [
    "ACTIVATIONS",
    "CoefficientNetwork",
    "activation",
    "gradient",
    "hessian",
    "laplacian",
    "mlp",
    "partial_derivatives",
]
