"""The ansatz ``u(x) = G(x) + D(x) N(x)`` and its spatial derivatives by autograd."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dolfinx_nn.networks.pointwise import laplacian


class DirichletAnsatz(torch.nn.Module):
    """``u = G + D * N``: meets the Dirichlet data wherever ``G = g`` and ``D = 0``.

    ``G`` and ``D`` are fixed (fitted once); only the parameters of ``N`` train.  On the
    boundary ``|u - g| <= |G - g| + |D| |N|``, so the boundary error is set by the fits.

    Args:
        extension: ``G``, maps points ``(n, d)`` to ``(n,)``.
        distance: ``D``, maps points ``(n, d)`` to ``(n,)``.
        network: ``N``, maps points ``(n, d)`` to ``(n, 1)`` or ``(n,)``.
    """

    def __init__(
        self, extension: torch.nn.Module, distance: torch.nn.Module, network: torch.nn.Module
    ) -> None:
        super().__init__()
        self.extension = extension.requires_grad_(False)
        self.distance = distance.requires_grad_(False)
        self.network = network

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        n = self.network(x)
        return n.reshape(-1) if n.ndim == 2 and n.shape[1] == 1 else n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extension(x) + self.distance(x) * self._network(x)

    def fixed_derivatives(self, x: torch.Tensor, spatial_dim: int) -> FixedDerivatives:
        """Values, gradients and Laplacians of ``G`` and ``D`` at ``x``, computed once."""
        g = laplacian(self.extension, x, spatial_dim, create_graph=False)
        d = laplacian(self.distance, x, spatial_dim, create_graph=False)
        return FixedDerivatives(x.detach(), spatial_dim, *g, *d)

    def derivatives_at(
        self, fixed: FixedDerivatives
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Value, gradient and Laplacian of ``u`` at the points of ``fixed`` (for training).

        Only ``N`` is differentiated; the product rule
        ``lap u = lap G + N lap D + 2 grad D . grad N + D lap N`` reuses ``fixed``.
        """
        n, grad_n, lap_n = laplacian(self._network, fixed.x, fixed.spatial_dim)
        s = fixed.spatial_dim
        u = fixed.g + fixed.d * n
        grad = fixed.grad_g + n[:, None] * fixed.grad_d + fixed.d[:, None] * grad_n
        cross = (fixed.grad_d[:, :s] * grad_n[:, :s]).sum(dim=1)
        lap = fixed.lap_g + n * fixed.lap_d + 2.0 * cross + fixed.d * lap_n
        return u, grad, lap


@dataclass(frozen=True)
class FixedDerivatives:
    """``G`` and ``D`` with their gradients and spatial Laplacians at fixed points ``x``."""

    x: torch.Tensor
    spatial_dim: int
    g: torch.Tensor
    grad_g: torch.Tensor
    lap_g: torch.Tensor
    d: torch.Tensor
    grad_d: torch.Tensor
    lap_d: torch.Tensor
