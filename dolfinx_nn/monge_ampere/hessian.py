"""Batched Hessians of a network by automatic differentiation, their determinants and spectra.

For a network ``u: R^d -> R`` evaluated at ``n`` points, :func:`hessians` returns the
``(n, d, d)`` stack of ``D^2 u`` with ``d + 1`` reverse passes (one for the gradient, one per
gradient component).  Points are independent, so the sum trick ``grad(sum_i u(x_i))`` gives
every point's own derivative.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def hessians(
    u: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, create_graph: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Values and Hessians of ``u`` at the points ``x``.

    Args:
        u: maps points ``(n, d)`` to values ``(n,)``, point by point.
        x: points shaped ``(n, d)``.
        create_graph: keep the graph so that a loss built from the Hessians can be
            differentiated with respect to the parameters of ``u`` (training).  Use ``False``
            for evaluation only.

    Returns:
        ``(values (n,), hessians (n, d, d))``.
    """
    if x.ndim != 2:
        raise ValueError(f"expected points shaped (n, d), got {tuple(x.shape)}")
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        values = u(x)
        (grad,) = torch.autograd.grad(values.sum(), x, create_graph=True)
        rows = [
            torch.autograd.grad(
                grad[:, i].sum(), x, create_graph=create_graph, retain_graph=True
            )[0]
            for i in range(x.shape[1])
        ]
    hess = torch.stack(rows, dim=1)
    hess = 0.5 * (hess + hess.transpose(1, 2))  # exact symmetry for eigvalsh
    if not create_graph:
        return values.detach(), hess.detach()
    return values, hess


def batched_det(matrices: torch.Tensor) -> torch.Tensor:
    """Determinants of a stack of square matrices ``(..., d, d)`` (differentiable)."""
    if matrices.ndim < 2 or matrices.shape[-1] != matrices.shape[-2]:
        raise ValueError(f"expected square matrices (..., d, d), got {tuple(matrices.shape)}")
    return torch.linalg.det(matrices)


def min_eigenvalues(matrices: torch.Tensor) -> torch.Tensor:
    """Smallest eigenvalue of each symmetric matrix in a stack ``(..., d, d)``."""
    return torch.linalg.eigvalsh(matrices)[..., 0]
