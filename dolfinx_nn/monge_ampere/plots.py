"""Figures of a Monge-Ampere solution and its error (written with :mod:`dolfinx_nn.plotting`).

In d > 2 dimensions the plots show the plane through the domain centre spanned by the first
two coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from dolfinx_nn.monge_ampere.cases import Case
from dolfinx_nn.plotting import subplots

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Resolution of the written figures (dots per inch).
DPI = 80


def _plane_points(domain, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lower, upper = domain.bounds
    s = np.linspace(lower[0], upper[0], n)
    t = np.linspace(lower[1], upper[1], n)
    ss, tt = np.meshgrid(s, t)
    points = np.tile(np.asarray(domain.center, float), (n * n, 1))
    points[:, 0], points[:, 1] = ss.ravel(), tt.ravel()
    return ss, tt, points


def _inside(domain, points: np.ndarray) -> np.ndarray:
    if getattr(domain, "name", "") == "ball":
        return np.linalg.norm(points - domain.center, axis=1) <= domain.radius
    return np.ones(len(points), dtype=bool)


def solution_figure(
    net: torch.nn.Module,
    case: Case,
    domain,
    title: str = "",
    n: int = 121,
) -> Figure:
    """Network solution, exact solution and pointwise error (without an exact solution: the
    network and its residual) on an ``n x n`` grid of the plane.

    Needs no other rank (the network is replicated).
    """
    from dolfinx_nn.networks.pointwise import hessian

    ss, tt, points = _plane_points(domain, n)
    param = next(net.parameters())
    center = [float(c) for c in domain.center]
    x = torch.as_tensor(points, dtype=param.dtype, device=param.device)
    mask = ~_inside(domain, points)
    if case.has_exact:
        with torch.no_grad():
            approx = net(x).cpu().numpy()
            exact = case.u_torch(x, center).cpu().numpy()
        panels: Sequence[tuple[str, np.ndarray]] = (
            ("network", approx), ("exact", exact), ("|error|", np.abs(approx - exact)),
        )
    else:  # no exact solution: the network and its residual |det D^2 u - f|
        u, _, hess = hessian(net, x, create_graph=False)
        residual = (torch.linalg.det(hess) - case.f_torch(x, center)).abs()
        panels = (("network", u.cpu().numpy()),
                  ("|det D^2 u - f|", residual.cpu().numpy()))
    fig, axes = subplots(1, len(panels), figsize=(4.4 * len(panels), 4),
                         layout="constrained")
    for ax, (label, values) in zip(axes, panels, strict=True):
        grid = np.ma.masked_array(values, mask).reshape(ss.shape)
        im = ax.pcolormesh(ss, tt, grid, shading="auto", cmap="viridis")
        ax.set_aspect("equal")
        ax.set_title(label)
        ax.set_xlabel("$x_0$")
        ax.set_ylabel("$x_1$")
        fig.colorbar(im, ax=ax, shrink=0.85)
    if title:
        fig.suptitle(title)
    return fig


def history_figure(history: Sequence[float], title: str = "") -> Figure:
    """Training loss against step (log scale)."""
    fig, ax = subplots(figsize=(5, 3.5), layout="constrained")
    ax.semilogy(np.arange(len(history)), history)
    ax.set_xlabel("step (Adam, then L-BFGS)")
    ax.set_ylabel("loss")
    ax.set_title(title)
    return fig
