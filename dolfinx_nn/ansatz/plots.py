"""Figures (written with :mod:`dolfinx_nn.plotting`) and ParaView output of a comparison."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

from mpi4py import MPI

import dolfinx
import dolfinx.io
import numpy as np
import torch

from dolfinx_nn.ansatz.pdes import Problem
from dolfinx_nn.neural_function import NeuralFunction
from dolfinx_nn.plotting import subplots, write_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def errors_figure(results: dict) -> Figure:
    """Relative L2 error against wall time and against unknowns (write it with ``dpi=90``)."""
    fig, axes = subplots(1, 2, figsize=(9, 3.6))
    degrees = sorted({r["degree"] for r in results["fem"]})
    net = results["network"]
    for ax, key, label in ((axes[0], "wall_time_s", "wall time [s]"),
                           (axes[1], "dofs", "unknowns (dofs / parameters)")):
        for d in degrees:
            rows = [r for r in results["fem"] if r["degree"] == d]
            ax.loglog([r[key] for r in rows], [r["relative_l2_error"] for r in rows], "o-",
                      label=f"FEM P{d}")
        x = net["wall_time_s"] if key == "wall_time_s" else net["parameters"]
        ax.loglog([x], [net["relative_l2_error"]], "r*", ms=12, label="network")
        ax.set_xlabel(label)
        ax.set_ylabel("relative L2 error")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    return fig


def _cell_vertex_values(problem: Problem, uh: dolfinx.fem.Function, field: torch.nn.Module):
    """Vertices of the owned cells (repeated per cell) with FEM, network and exact values."""
    mesh = uh.function_space.mesh
    V1 = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    u1 = dolfinx.fem.Function(V1)
    u1.interpolate(uh)
    num_cells = mesh.topology.index_map(mesh.topology.dim).size_local
    dofs = V1.dofmap.list[:num_cells].reshape(-1)
    x = V1.tabulate_dof_coordinates()[dofs, : problem.gdim]
    inputs = x if not problem.time_dependent else np.column_stack(
        [x, np.full(len(x), problem.final_time)])
    with torch.no_grad():
        net = field(torch.from_numpy(np.ascontiguousarray(inputs))).numpy()
    return x, u1.x.array[dofs], net, problem.exact_numpy(inputs), V1.dofmap.list.shape[1]


def field_plots(
    problem: Problem, uh: dolfinx.fem.Function, field: torch.nn.Module, path: pathlib.Path,
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> None:
    """FEM solution, network solution and both pointwise errors side by side.

    2D: the mesh's own triangles (holes stay holes); 3D: the vertices of the cells nearest to
    the mid-plane ``z = centre`` as points.
    """
    x, fem, net, exact, per_cell = _cell_vertex_values(problem, uh, field)
    gathered = comm.gather((x, fem, net, exact), root=0)
    write_figure(path, lambda: _fields_figure(problem, gathered or [], per_cell), comm, dpi=80)


def _fields_figure(problem: Problem, gathered: list, per_cell: int) -> Figure:
    x, fem, net, exact = (np.concatenate(parts) for parts in zip(*gathered, strict=True))
    if problem.gdim == 3:
        mid = 0.5 * (x[:, 2].min() + x[:, 2].max())
        near = np.abs(x[:, 2] - mid) <= np.sort(np.abs(x[:, 2] - mid))[len(x) // 8]
        x, fem, net, exact = x[near], fem[near], net[near], exact[near]
    if problem.gdim == 1:
        x = np.column_stack([x[:, 0], np.zeros(len(x))])
    fig, axes = subplots(1, 4, figsize=(15, 3.4))
    panels = [(fem, "FEM"), (net, "network"), (np.abs(fem - exact), "|FEM - exact|"),
              (np.abs(net - exact), "|network - exact|")]
    triangles = np.arange(len(x)).reshape(-1, per_cell) if problem.gdim == 2 else None
    for ax, (values, title) in zip(axes, panels, strict=True):
        if triangles is not None and per_cell == 3:
            art = ax.tripcolor(x[:, 0], x[:, 1], triangles, values, shading="gouraud")
        else:
            art = ax.scatter(x[:, 0], x[:, 1], c=values, s=4)
        ax.set_title(title)
        ax.set_aspect("equal")
        fig.colorbar(art, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


def write_paraview(
    problem: Problem, uh: dolfinx.fem.Function, field: torch.nn.Module, path: pathlib.Path
) -> None:
    """FEM and network fields in one VTX (ADIOS2) file, both in the FEM space (collective)."""
    V = uh.function_space
    if problem.time_dependent:
        T = problem.final_time

        class _AtFinalTime(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return field(torch.cat([x, torch.full_like(x[:, :1], T)], dim=1))

        net_fn = NeuralFunction(_AtFinalTime(), V, name="u_network")
    else:
        net_fn = NeuralFunction(field, V, name="u_network")
    with torch.no_grad():
        net_fn()
    exact = dolfinx.fem.Function(V, name="u_exact")
    t = problem.final_time if problem.time_dependent else None
    exact.interpolate(lambda x: problem.exact_numpy(
        x[: problem.gdim].T if t is None else np.column_stack([x[: problem.gdim].T,
                                                               np.full(x.shape[1], t)])))
    with dolfinx.io.VTXWriter(V.mesh.comm, str(path), [uh, net_fn.function, exact],
                              ) as writer:
        writer.write(0.0)
