"""FEM and the network ansatz on the same mesh, data and exact solution; errors, costs, plots.

The FEM sequence solves on the base mesh refined uniformly ``0 .. levels - 1`` times (the same
polygonal domain at every level), for each Lagrange degree; by default ``levels`` is chosen
from the mesh (:func:`choose_levels`: up to 4, with at most :data:`FEM_CELL_BUDGET` cells on
the finest mesh).  The network is fitted and trained on the base mesh, and its errors are
measured by quadrature of degree 8 on the finest of the meshes (base refined ``0 .. levels``
times) whose quadrature points number at most what the training evaluated (steps x training
points): measuring never costs more than training did.  The choice is reported under
``network.error_mesh``.

Rank 0 prints each phase as it starts and ends, with the elapsed time.
"""

from __future__ import annotations

import contextlib
import pathlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from mpi4py import MPI

import basix
import dolfinx
import numpy as np
import torch

from dolfinx_nn.ansatz.checks import check_data, check_options
from dolfinx_nn.ansatz.errors import (
    ERROR_DEGREE,
    boundary_error,
    distance_range,
    fem_errors,
    network_errors,
)
from dolfinx_nn.ansatz.fem_reference import solve_fem
from dolfinx_nn.ansatz.network_solver import NetworkConfig, NetworkSolution, solve_network
from dolfinx_nn.ansatz.pdes import Problem
from dolfinx_nn.meshes import create_mesh, mesh_size, refine
from dolfinx_nn.output import (
    check_writable,
    collective_output,
    print0,
    write_json,
)
from dolfinx_nn.parallel import agree_max
from dolfinx_nn.plotting import write_figure
from dolfinx_nn.sampling import rank_rng, sample_boundary, sample_interior


@dataclass(frozen=True)
class CompareConfig:
    """Settings of a comparison.

    Attributes:
        mesh: built-in mesh name or mesh file (see :func:`~dolfinx_nn.meshes.create_mesh`).
        resolution: resolution of the built-in base mesh.
        levels: number of FEM meshes (uniform refinements of the base mesh); None chooses
            them from the mesh (:func:`choose_levels`).
        degrees: Lagrange degrees of the FEM runs.
        stabilization: SUPG choice of the FEM runs ("auto", "supg", "none").
        error_degree: quadrature degree of the error integrals.
        network: settings of the network solver.
    """

    mesh: str = "square-with-hole"
    resolution: int = 8
    levels: int | None = None
    degrees: tuple[int, ...] = (1, 2)
    stabilization: str = "auto"
    error_degree: int = ERROR_DEGREE
    network: NetworkConfig = field(default_factory=NetworkConfig)

    def __post_init__(self) -> None:
        if self.levels is not None and (not isinstance(self.levels, int) or self.levels < 1):
            raise ValueError(f"levels must be an int >= 1 (or None: automatic), got "
                             f"{self.levels!r}")
        if not isinstance(self.error_degree, int) or self.error_degree < 1:
            raise ValueError(f"error_degree must be a positive int, got {self.error_degree!r}")
        if not self.degrees or any(not isinstance(d, int) or d < 1 for d in self.degrees):
            raise ValueError(f"degrees must be positive ints, got {self.degrees!r}")


#: Most FEM meshes of the default sequence, and most cells of its finest mesh.
MAX_LEVELS = 4
FEM_CELL_BUDGET = 400_000


def choose_levels(mesh: dolfinx.mesh.Mesh) -> int:
    """Most uniform refinements (up to :data:`MAX_LEVELS`) within :data:`FEM_CELL_BUDGET`.

    Each refinement multiplies the cells by ``2^tdim``; at least one level (the base mesh).
    Collective.
    """
    tdim = mesh.topology.dim
    cells = mesh.comm.allreduce(mesh.topology.index_map(tdim).size_local, op=MPI.SUM)
    levels = 1
    while levels < MAX_LEVELS and cells * 2 ** (tdim * levels) <= FEM_CELL_BUDGET:
        levels += 1
    return levels


class Phases:
    """Progress of a comparison on rank 0: each phase with its start and elapsed time."""

    def __init__(self, comm: MPI.Comm) -> None:
        self.comm, self.start = comm, time.perf_counter()
        self.times: dict[str, float] = {}
        self._name: str | None = None
        self._t0 = 0.0

    def __call__(self, name: str, detail: str = "") -> None:
        """End the running phase and start ``name``."""
        self.end()
        self._name, self._t0 = name, time.perf_counter()
        print0(f"[{self.elapsed():7.1f} s] {name}{': ' + detail if detail else ''} ...",
               comm=self.comm)

    def end(self) -> None:
        if self._name is not None:
            took = time.perf_counter() - self._t0
            self.times[self._name] = self.comm.allreduce(took, op=MPI.MAX)
            print0(f"[{self.elapsed():7.1f} s] {self._name} done in {took:.1f} s",
                   comm=self.comm)
            self._name = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def _e(value: float | None) -> str:
    """A relative error for the progress lines (None: no relative error)."""
    return "n/a" if value is None else f"{value:.3e}"


def observed_rates(errors: list[float], sizes: list[float]) -> list[float | None]:
    """``log(e_i / e_{i-1}) / log(h_i / h_{i-1})``; None for the first entry and where an
    error is 0 (an exact solution the elements contain)."""
    rates: list[float | None] = [None]
    for i in range(1, len(errors)):
        ratio = errors[i] / errors[i - 1] if min(errors[i], errors[i - 1]) > 0.0 else None
        rates.append(None if ratio is None
                     else float(np.log(ratio) / np.log(sizes[i] / sizes[i - 1])))
    return rates


def run_fem(problem: Problem, meshes: list[dolfinx.mesh.Mesh], config: CompareConfig):
    """FEM errors and costs for every degree and mesh.

    Returns:
        ``(rows, solutions)``: ``solutions[degree]`` lists the solutions of every level.
    """
    rows: list[dict] = []
    finest: dict[int, list[dolfinx.fem.Function]] = {}
    t = problem.final_time if problem.time_dependent else None
    for degree in config.degrees:
        # One untimed solve on the coarsest mesh compiles the forms (JIT) for this degree.
        solve_fem(problem, meshes[0], degree, stabilization=config.stabilization)
        block: list[dict[str, Any]] = []
        for level, mesh in enumerate(meshes):
            sol = solve_fem(problem, mesh, degree, stabilization=config.stabilization)
            err = fem_errors(problem, sol.uh, t, config.error_degree)
            block.append({"degree": degree, "level": level, "h": mesh_size(mesh),
                          "dofs": sol.dofs, "wall_time_s": sol.wall_time_s, "supg": sol.supg,
                          **err})
            print0(f"FEM P{degree} level {level}: {sol.dofs} dofs, rel. L2 "
                   f"{_e(err['relative_l2_error'])}, {sol.wall_time_s:.3f} s")
            finest.setdefault(degree, []).append(sol.uh)
        for key in ("l2", "h1", "h1_seminorm"):
            rates = observed_rates([r[f"{key}_error"] for r in block], [r["h"] for r in block])
            for r, rate in zip(block, rates, strict=True):
                r[f"{key}_rate"] = rate
        rows += block
    return rows, finest


def quadrature_size(mesh: dolfinx.mesh.Mesh, degree: int, refinements: int = 0) -> int:
    """Global number of quadrature points of ``degree`` on ``mesh`` refined uniformly."""
    cells = mesh.topology.index_map(mesh.topology.dim).size_global
    weights = basix.make_quadrature(mesh.basix_cell(), degree)[1]
    per_cell = len(cast(np.ndarray, weights))  # basix annotates ArrayLike
    return int(cells * 2 ** (mesh.topology.dim * refinements) * per_cell)


def training_points(mesh: dolfinx.mesh.Mesh, config: CompareConfig) -> int:
    """Global points at which one training step evaluates the network."""
    net = config.network
    if net.loss == "ritz" or net.collocation == "quadrature":
        return quadrature_size(mesh, net.quadrature_degree)
    return net.points


def error_mesh_level(
    base: dolfinx.mesh.Mesh, levels: int, degree: int, budget: int
) -> int:
    """The most refinements (0..levels) of ``base`` with at most ``budget`` error points."""
    level = 0
    while level < levels and quadrature_size(base, degree, level + 1) <= budget:
        level += 1
    return level


def fit_report(field: torch.nn.Module) -> dict | None:
    """The boundary-weight choice of a fitted ``G`` or ``D`` (None if it was not chosen)."""
    report = getattr(field, "fit_report", None)
    spatial = getattr(field, "spatial", None)  # D(x, t) = D(x) t / T
    return report if report is not None else getattr(spatial, "fit_report", None)


def run_network(
    problem: Problem, mesh: dolfinx.mesh.Mesh, references: list[dolfinx.mesh.Mesh],
    config: CompareConfig, checkpoint: str | None = None, problem_record: dict | None = None,
    phases: Phases | None = None,
) -> tuple[dict, NetworkSolution]:
    """Train the ansatz on ``mesh``; measure it on the finest of ``references`` (``mesh``
    refined 0, 1, ... times) that costs at most the training's network evaluations."""
    phases = phases or Phases(mesh.comm)

    def fitted(ansatz) -> None:
        reports = [fit_report(f) for f in (ansatz.extension, ansatz.distance)]
        detail = ", ".join(f"{n} boundary misfit {r['boundary_misfit']:.1e} (weight "
                           f"{r['boundary_weight']:.0e})" for n, r in zip("GD", reports,
                                                                          strict=True) if r)
        phases(f"training N ({config.network.training.total_steps} steps)", detail)

    phases("fitting G and D", f"{config.network.fit_features} random features each")
    sol = solve_network(problem, mesh, config.network, checkpoint=checkpoint,
                        problem_record=problem_record, on_fitted=fitted)
    t = problem.final_time if problem.time_dependent else None
    budget = max(sol.history.steps, 1) * training_points(mesh, config)
    level = error_mesh_level(mesh, len(references) - 1, config.error_degree, budget)
    error_mesh = {"refinements": level, "budget_points": budget,
                  "quadrature_points": quadrature_size(mesh, config.error_degree, level)}
    phases("measuring the network's errors",
           f"degree {config.error_degree}, {error_mesh['quadrature_points']} quadrature points "
           f"(base mesh refined {level} times; training evaluated {budget} points)")
    err = network_errors(problem, sol.ansatz, references[level], t, config.error_degree)
    xb, _ = sample_boundary(mesh, 2000, rank_rng(12345, mesh.comm))
    if problem.time_dependent:
        xb = np.column_stack([xb, np.full(len(xb), problem.final_time)])
    bnd = boundary_error(problem, sol.ansatz, xb, mesh.comm)
    xi = sample_interior(mesh, 20000, rank_rng(12346, mesh.comm))
    if problem.time_dependent:
        xi = np.column_stack([xi, np.full(len(xi), problem.final_time)])
    dist = distance_range(sol.ansatz.distance, xi, mesh.comm)
    row = {"parameters": sol.parameters, **err, **bnd, **dist, "wall_time_s": sol.wall_time_s,
           "fit_time_s": sol.fit_time_s, "train_time_s": sol.train_time_s,
           "final_loss": sol.final_loss,
           "steps": sol.history.steps, "stopped_because": sol.history.stopped_because,
           "scales": sol.scales.as_dict(),
           "units": sol.canonical.units.as_dict() if sol.canonical else None,
           "loss_points": sol.loss_points,
           "fits": {"G": fit_report(sol.ansatz.extension), "D": fit_report(sol.ansatz.distance)},
           "error_mesh": error_mesh}
    if sol.history.checkpoint_error:
        row["checkpoint_error"] = sol.history.checkpoint_error
    print0(f"network: {sol.parameters} parameters, rel. L2 {_e(err['relative_l2_error'])}, "
           f"{sol.wall_time_s:.1f} s")
    return row, sol


def compare(
    problem: Problem, config: CompareConfig, comm: MPI.Comm = MPI.COMM_WORLD,
    out: pathlib.Path | None = None, checkpoint: str | None = None,
    base: dolfinx.mesh.Mesh | None = None, problem_record: dict | None = None,
) -> dict:
    """Run FEM and the network on one problem; with ``out``, write ``results.json``, then the
    plots and the ParaView file.

    Returns:
        ``{"problem", "config", "fem": [...], "network": {...}}`` (the content of results.json).

    Args:
        problem: the PDE and exact solution.
        config: the settings.
        comm: communicator.
        out: output directory for plots and ParaView files (None: none written).
        checkpoint: training checkpoint file (resumed when it exists).
        base: the base mesh, if already created from ``config.mesh``.
        problem_record: what defines the problem, stored in the checkpoint (resuming another
            problem is refused; see :func:`dolfinx_nn.training.train`).

    Raises:
        ValueError: the mesh, an option combination or the data are refused
            (:mod:`~dolfinx_nn.ansatz.checks`), before anything is solved.
        StageError: the FEM or the network stage failed (the other one still ran);
            ``results.json`` holds what was done and ``failures``: stage -> reason.
        OutputError: a file could not be written (``results.json`` is written first).
    """
    phases = Phases(comm)
    if base is None:
        phases("reading the mesh", str(config.mesh))
        base = create_mesh(comm, config.mesh, config.resolution)
    check_mesh(base, problem, str(config.mesh))
    check_options(problem, config.network)
    check_data(problem, base, config.degrees, config.error_degree)
    levels = config.levels or choose_levels(base)
    cells = comm.allreduce(base.topology.index_map(base.topology.dim).size_local, op=MPI.SUM)
    meshes = [base]
    for _ in range(levels - 1):
        meshes.append(refine(meshes[-1]))
    results: dict[str, Any] = {
        "problem": problem.describe(),
        "config": {**_config_dict(config), "levels_used": levels},
        "ranks": comm.size,
        "fem": None,
        "network": None,
    }
    failures: dict[str, str] = {}
    phases("FEM", f"{cells} cells, {levels} meshes, degrees {list(config.degrees)}")
    with _stage("FEM", failures, comm):
        results["fem"], finest = run_fem(problem, meshes, config)
    budget_level = error_mesh_level(
        base, levels, config.error_degree,
        max(config.network.training.total_steps, 1) * training_points(base, config))
    references = meshes + ([refine(meshes[-1])] if budget_level == levels else [])
    with _stage("network", failures, comm):
        results["network"], net = run_network(problem, base, references, config, checkpoint,
                                              problem_record, phases)
    if failures:
        results["failures"] = failures
    if out is not None and not failures:
        from dolfinx_nn.ansatz import plots

        phases("plots and ParaView files")
        write_json(out / "results.json", results, comm)
        write_figure(out / "errors.png", lambda: plots.errors_figure(results), comm, dpi=90)
        levels_fem = finest[max(finest)]
        with collective_output(f"cannot write {out / 'fields.png'}", comm):
            plots.field_plots(problem, _plot_solution(levels_fem), net.ansatz,
                              out / "fields.png", comm)
        check_writable(out, comm)
        with collective_output(f"cannot write {out / 'fields.bp'}", comm):
            plots.write_paraview(problem, levels_fem[-1], net.ansatz, out / "fields.bp")
    phases.end()
    results["phase_times_s"] = phases.times
    results["wall_time_s"] = comm.allreduce(phases.elapsed(), op=MPI.MAX)
    if out is not None:
        write_json(out / "results.json", results, comm)  # again, with the time of the plots
    if failures:
        stage, reason = next(iter(failures.items()))
        kept = [label for name, label in (("fem", "FEM"), ("network", "network"))
                if results[name] is not None]
        where = f"{out / 'results.json'}" if out is not None else "the returned results"
        held = f"the {' and '.join(kept)} results" if kept else "the settings"
        raise StageError(f"the {stage} stage failed: {reason.splitlines()[0]} ({where} holds "
                         f"{held} and the reason)")
    return results


class StageError(RuntimeError):
    """A stage of :func:`compare` failed; the others ran and their results were written."""


@contextlib.contextmanager
def _stage(name: str, failures: dict[str, str], comm: MPI.Comm):
    """Run a stage of :func:`compare`: an exception is recorded in ``failures[name]``
    (``"Type: message"``, agreed over the ranks: the lowest failing rank's) instead of
    ending the comparison, so that the other stage runs and results.json holds both.

    A stage that fails on some ranks only may leave the others inside one of its collective
    calls: the failed ranks wait for them at most :data:`~dolfinx_nn.parallel.AGREE_TIMEOUT_S`
    seconds (:func:`~dolfinx_nn.parallel.agree_max`, on a duplicate communicator made before
    the stage) and then raise the error itself, which ends the run with it (``dolfinx-nn``
    aborts the ranks left waiting) instead of a hang.
    """
    guard = comm.Dup() if comm.size > 1 else None
    reason: str | None = None
    error: Exception | None = None
    try:
        yield
    except Exception as err:  # noqa: BLE001 (recorded, and raised as StageError at the end)
        reason, error = f"{type(err).__name__}: {err}", err
    if guard is not None:
        if agree_max([error is not None], guard, failed=error is not None) is None:
            assert error is not None
            raise error  # the others are stuck in the stage (the guard is left to the abort)
        reasons = guard.allgather(reason)
        guard.Free()
    else:
        reasons = [reason]
    first = next((r for r in reasons if r is not None), None)
    if first is not None:
        failures[name] = first


#: Most cells of the mesh drawn in ``fields.png`` (matplotlib draws every triangle).
PLOT_CELLS = 20_000


def _plot_solution(solutions: list[dolfinx.fem.Function]) -> dolfinx.fem.Function:
    """The solution on the finest mesh with at most :data:`PLOT_CELLS` cells (or the base)."""
    chosen = solutions[0]
    for uh in solutions[1:]:
        mesh = uh.function_space.mesh
        cells = mesh.comm.allreduce(mesh.topology.index_map(mesh.topology.dim).size_local,
                                    op=MPI.SUM)
        if cells > PLOT_CELLS:
            break
        chosen = uh
    return chosen


def check_mesh(mesh: dolfinx.mesh.Mesh, problem: Problem, name: str) -> None:
    """Refuse meshes the comparison cannot use, with the same error on every rank.

    Raises:
        ValueError: the cells do not fill the space (a curve in 2D, a surface in 3D), or the
            mesh's dimension is not the problem's.
    """
    tdim, gdim = mesh.topology.dim, mesh.geometry.dim
    if tdim != gdim:
        raise ValueError(
            f"the mesh {name!r} has {tdim}D cells in {gdim}D space: the comparison needs cells "
            f"that fill the domain (a {gdim}D mesh of {gdim}D cells)"
        )
    if gdim != problem.gdim:
        raise ValueError(
            f"the mesh {name!r} is {gdim}D but the problem was set up for {problem.gdim}D"
        )


def _config_dict(config: CompareConfig) -> dict:
    data = asdict(config)
    data["network"]["training"] = config.network.training.as_dict()
    return data
