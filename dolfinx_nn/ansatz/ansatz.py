"""The ansatz ``u(x) = G(x) + D(x) N(x)`` and its spatial derivatives by autograd."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


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
        g = derivatives(self.extension, x, spatial_dim, create_graph=False)
        d = derivatives(self.distance, x, spatial_dim, create_graph=False)
        return FixedDerivatives(x.detach(), spatial_dim, *g, *d)

    def derivatives_at(
        self, fixed: FixedDerivatives
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Value, gradient and Laplacian of ``u`` at the points of ``fixed`` (for training).

        Only ``N`` is differentiated; the product rule
        ``lap u = lap G + N lap D + 2 grad D . grad N + D lap N`` reuses ``fixed``.
        """
        n, grad_n, lap_n = derivatives(self._network, fixed.x, fixed.spatial_dim)
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


def derivatives(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    spatial_dim: int | None = None,
    *,
    create_graph: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Value, gradient and spatial Laplacian of a scalar field at points, by autograd.

    Args:
        fn: maps ``(n, d)`` points to ``(n,)`` values.
        x: points ``(n, d)``; the last column may be time.
        spatial_dim: number of leading spatial coordinates in the Laplacian (default ``d``).
        create_graph: keep the graph so that the results can be differentiated again
            (needed for training).

    Returns:
        ``(u (n,), grad u (n, d) with respect to all inputs, Laplacian (n,))``.
    """
    x = x.detach().requires_grad_(True)
    u = fn(x)
    (grad,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    dims = x.shape[1] if spatial_dim is None else spatial_dim
    lap = torch.zeros_like(u)
    for i in range(dims):
        (second,) = torch.autograd.grad(
            grad[:, i].sum(), x, create_graph=create_graph, retain_graph=True
        )
        lap = lap + second[:, i]
    if not create_graph:
        return u.detach(), grad.detach(), lap.detach()
    return u, grad, lap
