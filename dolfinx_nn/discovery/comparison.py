"""Noise robustness of this method and of PDE-FIND on the same gridded 1D data.

Both methods see the same data: a DOLFINx simulation observed on a uniform grid of points
(PDE-FIND needs a grid) at uniform times, with Gaussian noise.  For PDE-FIND the STLSQ
threshold is chosen *a posteriori* from a sweep, as the one with the smallest coefficient
error (the most favourable choice for the peer; in practice the truth is unknown).

This method runs with both surrogates: the default ``space-time`` network and the
``separable`` one (regression at stations farther than :data:`MARGIN` from the boundary).
"""

from __future__ import annotations

from collections.abc import Sequence

from mpi4py import MPI

import numpy as np

from dolfinx_nn.discovery.datasets import simulate_dataset
from dolfinx_nn.discovery.peers import pde_find
from dolfinx_nn.discovery.pipeline import DiscoveryConfig, discover
from dolfinx_nn.discovery.simulation import boundary_distance
from dolfinx_nn.discovery.surrogate import SurrogateConfig
from dolfinx_nn.meshes import create_mesh
from dolfinx_nn.output import progress

__all__ = ["benchmark_markdown", "coefficient_error", "noise_comparison"]

PDE_FIND_THRESHOLDS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
#: Settings of the separable surrogate in the comparison (1D, unit interval).
SEPARABLE = SurrogateConfig(kind="separable", width=400, time_degree=10)
MARGIN = 0.05


def coefficient_error(found: dict[str, float], truth: dict[str, float]) -> dict[str, float]:
    """Largest relative error of a true coefficient, and the largest spurious term relative
    to the largest coefficient found."""
    err = max(abs(found.get(k, 0.0) - v) / abs(v) for k, v in truth.items())
    largest = max((abs(v) for v in found.values()), default=1.0) or 1.0
    if not np.isfinite(err):
        err = float("inf")
    spurious = max((abs(v) for k, v in found.items() if k not in truth), default=0.0)
    return {"max_rel_error": err, "max_spurious": spurious / largest, "terms": len(found)}


def noise_comparison(
    problems: Sequence[str] = ("heat", "advection-diffusion"),
    noise_levels: Sequence[float] = (0.0, 0.001, 0.01, 0.05),
    grid_points: int = 101,
    num_times: int = 41,
    seed: int = 1,
    comm: MPI.Comm = MPI.COMM_WORLD,
    with_peer: bool = True,
) -> list[dict]:
    """Coefficient errors of both methods per problem and noise level.

    Args:
        with_peer: also run PDE-FIND (needs the optional package pysindy).

    Returns:
        Rows with ``problem``, ``noise``, ``truth``, and for ``ours`` (space-time surrogate),
        ``separable`` and (``with_peer``) ``pde_find`` the found coefficients and
        :func:`coefficient_error`.
    """
    mesh = create_mesh(comm, "interval", 64)
    grid = np.linspace(0.0, 1.0, grid_points)[:, None]
    interior = boundary_distance(mesh, grid) > MARGIN
    rows = []
    cases = [(p, n) for p in problems for n in noise_levels]
    for problem, noise in progress(cases, comm=comm, desc="noise sweep"):
        data, truth = simulate_dataset(problem, mesh, num_times=num_times, noise=noise,
                                       seed=seed, points=grid)
        train, _ = data.split(0.75)
        ours = discover(train, comm=comm).coefficients
        separable = discover(
            train, DiscoveryConfig(surrogate=SEPARABLE), comm=comm, stations=interior
        ).coefficients
        row = {
            "problem": problem,
            "noise": noise,
            "truth": truth,
            "ours": {"coefficients": ours, **coefficient_error(ours, truth)},
            "separable": {"coefficients": separable, **coefficient_error(separable, truth)},
        }
        if with_peer:
            peer = min(
                (pde_find(train, threshold) for threshold in PDE_FIND_THRESHOLDS),
                key=lambda found: coefficient_error(found, truth)["max_rel_error"],
            )
            row["pde_find"] = {"coefficients": peer, **coefficient_error(peer, truth)}
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The comparison as a Markdown table."""
    lines = [
        "| problem | noise | space-time surrogate: max coef. error | spurious "
        "| separable surrogate: max coef. error | spurious "
        "| PDE-FIND: max coef. error | spurious |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [f"| {r['problem']} | {r['noise']:g} "]
        for key in ("ours", "separable", "pde_find"):
            m = r.get(key)
            if m is None:  # the peer was not run (optional package missing)
                cells.append("| not run | ")
                continue
            cells.append(
                f"| {m['max_rel_error']:.2%} | {m['max_spurious']:.1%} ({m['terms']} terms) "
            )
        lines.append("".join(cells) + "|")
    return "\n".join(lines) + "\n"


#: PDE-FIND's data sets (``Datasets/*.mat`` of the PDE-FIND repository): file -> truth.
BENCHMARKS: dict[str, tuple[str, dict[str, float]]] = {
    "Burgers": ("burgers.mat", {"u*u_x": -1.0, "u_xx": 0.1}),
    "KdV": ("kdv.mat", {"u*u_x": -6.0, "u_xxx": -1.0}),
    "Kuramoto-Sivashinsky": (
        "kuramoto_sivishinky.mat", {"u*u_x": -1.0, "u_xx": -1.0, "u_xxxx": -1.0}
    ),
}
PEER_THRESHOLDS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def benchmark_markdown(rows: list[dict]) -> str:
    """The benchmark as a Markdown table."""
    lines = [
        "| data | noise | sampling | method | max coef. error | largest other term | terms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['data']} | {r['noise']:.0%} | {r['sampling']} | {r['method']} "
            f"| {r['max_rel_error']:.2%} | {r['max_spurious']:.1%} | {r['terms']} |"
        )
    return "\n".join(lines) + "\n"
