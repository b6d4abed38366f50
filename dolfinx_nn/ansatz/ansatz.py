"""The ansatz ``u(x) = G(x) + D(x) N(x)`` and its spatial derivatives by autograd."""

from __future__ import annotations

from collections.abc import Callable

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.network(x)
        n = n.reshape(-1) if n.ndim == 2 and n.shape[1] == 1 else n
        return self.extension(x) + self.distance(x) * n


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
