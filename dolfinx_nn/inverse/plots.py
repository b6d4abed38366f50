"""Figures of an inverse-problem run (PNG, drawn on rank 0; see :mod:`dolfinx_nn.plotting`).

- :func:`plot_run`: the true and recovered coefficients (1D: curves; 2D: colour maps on the
  mesh; 3D: true vs recovered at the dofs) and the loss curves of each prior.
- :func:`plot_noise_sweep`: coefficient error against noise level for each prior.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from mpi4py import MPI

import dolfinx
import dolfinx.cpp
import numpy as np

from dolfinx_nn.plotting import subplots, write_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def gather_cells(q: dolfinx.fem.Function) -> tuple[np.ndarray, np.ndarray] | None:
    """Vertex coordinates ``(n_cells, k, gdim)`` and vertex values ``(n_cells, k)`` of all owned
    cells, gathered on rank 0 (``None`` on other ranks).  Collective."""
    V = q.function_space
    mesh = V.mesh
    tdim, gdim = mesh.topology.dim, mesh.geometry.dim
    num_cells = mesh.topology.index_map(tdim).size_local
    num_vertices = dolfinx.cpp.mesh.cell_num_vertices(mesh.topology.cell_type)
    dofs = V.dofmap.list[:num_cells, :num_vertices]  # Lagrange: vertex dofs come first
    coords = V.tabulate_dof_coordinates()[:, :gdim][dofs]
    values = q.x.array[dofs]
    parts = mesh.comm.gather((coords, values), root=0)
    if parts is None:
        return None
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def _draw_field(ax, cells: np.ndarray, values: np.ndarray, vmin: float, vmax: float):
    import matplotlib.tri as mtri

    gdim = cells.shape[2]
    if gdim == 1:
        x = cells[:, :, 0].reshape(-1)
        order = np.argsort(x, kind="stable")
        ax.plot(x[order], values.reshape(-1)[order])
        ax.set_ylim(vmin - 0.05 * (vmax - vmin), vmax + 0.05 * (vmax - vmin))
        return None
    k = cells.shape[1]
    points = cells.reshape(-1, 2)
    if k == 3:
        triangles = np.arange(points.shape[0]).reshape(-1, 3)
    else:  # quadrilaterals (DOLFINx vertex order 0 1 3 2): two triangles each
        base = np.arange(0, points.shape[0], 4)[:, None]
        triangles = np.concatenate([base + [0, 1, 3], base + [0, 3, 2]])
    tri = mtri.Triangulation(points[:, 0], points[:, 1], triangles)
    image = ax.tripcolor(tri, values.reshape(-1), shading="gouraud", vmin=vmin, vmax=vmax)
    ax.set_aspect("equal")
    return image


def plot_run(
    path: str | pathlib.Path,
    coefficients: Mapping[str, dolfinx.fem.Function],
    histories: Mapping[str, Sequence[float]],
    errors: Mapping[str, float],
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> None:
    """True vs recovered coefficients and loss curves in one PNG (collective).

    Args:
        path: PNG file.
        coefficients: label -> P1 function (e.g. "true", "network", "tikhonov").
        histories: prior -> loss per step.
        errors: prior -> relative L2 error of the coefficient (shown in the titles).
    """
    gathered = {name: gather_cells(f) for name, f in coefficients.items()}
    write_figure(path, lambda: _draw_run(gathered, histories, errors), comm, dpi=80,
                 bbox_inches="tight")


def _draw_run(gathered, histories, errors) -> Figure:
    names = list(gathered)
    gdim = next(iter(gathered.values()))[0].shape[2]
    all_values = np.concatenate([v[1].reshape(-1) for v in gathered.values()])
    vmin, vmax = float(all_values.min()), float(all_values.max())
    panels = len(names) + 1
    fig, axes = subplots(1, panels, figsize=(4.2 * panels, 3.8), squeeze=False)
    axes = axes[0]
    image = None
    for ax, name in zip(axes, names, strict=False):
        cells, values = gathered[name]
        title = name if name not in errors else f"{name} (error {100 * errors[name]:.2f} %)"
        ax.set_title(title)
        if gdim <= 2:
            image = _draw_field(ax, cells, values, vmin, vmax) or image
        else:
            true_values = gathered[names[0]][1].reshape(-1)
            ax.plot(true_values, values.reshape(-1), ".", markersize=2)
            ax.plot([vmin, vmax], [vmin, vmax], "k--", linewidth=0.8)
            ax.set_xlabel(f"{names[0]} q at the vertices")
            ax.set_ylabel(f"{name} q")
    if image is not None:
        fig.colorbar(image, ax=list(axes[:-1]), shrink=0.8, label="q")
    ax = axes[-1]
    for name, losses in histories.items():
        if len(losses):
            ax.semilogy(np.arange(1, len(losses) + 1), losses, label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("training loss")
    ax.legend()
    return fig


def plot_noise_sweep(
    path: str | pathlib.Path,
    rows: Sequence[Mapping[str, float]],
    priors: Sequence[str],
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> None:
    """Coefficient error against noise level (rows: ``{"noise": ..., prior: error}``)."""
    write_figure(path, lambda: _draw_sweep(rows, priors), comm, dpi=80, bbox_inches="tight")


def _draw_sweep(rows, priors) -> Figure:
    fig, ax = subplots(figsize=(5, 3.8))
    noise = [100 * r["noise"] for r in rows]
    for prior in priors:
        ax.plot(noise, [100 * r[prior] for r in rows], "o-", label=prior)
    ax.set_xlabel("noise level (%)")
    ax.set_ylabel("relative L2 error of q (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig
