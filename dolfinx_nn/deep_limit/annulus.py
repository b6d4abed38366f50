"""The two-class "annulus" data set of Avelin & Nyström.

Class 0 (inner): ``r = rho (2 + cos 5 theta)`` with ``rho ~ U[0, 1]``; class 1 (outer): the
same curve with ``rho ~ U[1.5, 3]``; ``theta ~ U[-pi, pi]``.  Points are ``(r cos theta,
r sin theta)`` followed by ``dim - 2`` zeros.  The classes are nested, so no flow of the plane
separates them linearly: the zero padding gives a flow room to lift one class over the other.
"""

from __future__ import annotations

import math

import torch

INNER_RHO = (0.0, 1.0)
OUTER_RHO = (1.5, 3.0)


def annulus(
    n: int,
    dim: int = 2,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` labelled points, half of each class (class 1 gets the odd one).

    Args:
        n: number of points.
        dim: ambient dimension (>= 2); coordinates beyond the second are zero.
        generator: source of randomness (reproducible data).
        dtype: of the points.

    Returns:
        ``x`` of shape ``(n, dim)`` and labels ``y`` of shape ``(n,)`` (0 inner, 1 outer),
        in random order.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an integer >= 2, got {dim!r}")
    labels = (torch.arange(n) >= n // 2).to(dtype)
    low = torch.where(labels > 0, OUTER_RHO[0], INNER_RHO[0]).to(dtype)
    high = torch.where(labels > 0, OUTER_RHO[1], INNER_RHO[1]).to(dtype)
    rho = low + (high - low) * torch.rand(n, generator=generator, dtype=dtype)
    theta = (2 * torch.rand(n, generator=generator, dtype=dtype) - 1) * math.pi
    r = rho * (2 + torch.cos(5 * theta))
    x = torch.zeros(n, dim, dtype=dtype)
    x[:, 0] = r * torch.cos(theta)
    x[:, 1] = r * torch.sin(theta)
    order = torch.randperm(n, generator=generator)
    return x[order], labels[order]
