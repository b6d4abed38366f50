"""Determinants and spectra of stacks of Hessians.

The Hessians ``(n, d, d)`` of a network at ``n`` points come from
:func:`dolfinx_nn.networks.pointwise.hessian`.
"""

from __future__ import annotations

import torch


def batched_det(matrices: torch.Tensor) -> torch.Tensor:
    """Determinants of a stack of square matrices ``(..., d, d)`` (differentiable)."""
    if matrices.ndim < 2 or matrices.shape[-1] != matrices.shape[-2]:
        raise ValueError(f"expected square matrices (..., d, d), got {tuple(matrices.shape)}")
    return torch.linalg.det(matrices)


def min_eigenvalues(matrices: torch.Tensor) -> torch.Tensor:
    """Smallest eigenvalue of each symmetric matrix in a stack ``(..., d, d)``."""
    return torch.linalg.eigvalsh(matrices)[..., 0]
