"""One inverse-problem experiment: build the problem, fit the priors, write the results.

:func:`run_experiment` is what ``dolfinx-nn inverse`` runs; :func:`run_noise_sweep` repeats it
over noise levels.  Files written to the output folder (rank 0):

- ``results.json``: the problem, and per prior ``coefficient_rel_l2_error``,
  ``state_rel_l2_error``, ``iterations``, ``wall_time_s``, the loss history and details;
- ``inverse.png``: true vs recovered coefficients and loss curves;
- ``coefficients.bp`` and ``state.bp`` (ADIOS2/VTX, open in ParaView): the coefficients and the
  data, the exact state and the state of each recovered coefficient;
- ``network.ckpt``: the network prior's training checkpoint (``--resume`` continues from it;
  it records the problem, see :func:`problem_record`, and refuses to continue another one).

``results.json`` is written first: a plot or ParaView file that cannot be written never costs
the numbers.  A final checkpoint that could not be written is reported (``checkpoint_error``)
after ``results.json``, as an :class:`~dolfinx_nn.output.OutputError`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mpi4py import MPI

import dolfinx
import torch

from dolfinx_nn.conversion import from_torch
from dolfinx_nn.inverse.network_prior import (
    DEFAULT_TRAINING as NETWORK_TRAINING,
)
from dolfinx_nn.inverse.network_prior import (
    NetworkConfig,
    fit_network_prior,
)
from dolfinx_nn.inverse.plots import plot_noise_sweep, plot_run
from dolfinx_nn.inverse.result import PriorResult
from dolfinx_nn.inverse.tikhonov import (
    DEFAULT_TRAINING as TIKHONOV_TRAINING,
)
from dolfinx_nn.inverse.tikhonov import (
    TikhonovConfig,
    fit_tikhonov,
)
from dolfinx_nn.models.inverse_problem import InverseProblem, ProblemSpec, build_problem
from dolfinx_nn.output import (
    OutputError,
    file_sha256,
    prepare_output_dir,
    print0,
    write_json,
    write_vtx,
)
from dolfinx_nn.training import TrainingConfig

#: Prior choices of the command line.
PRIOR_CHOICES: dict[str, tuple[str, ...]] = {
    "network": ("network",),
    "tikhonov": ("tikhonov",),
    "both": ("network", "tikhonov"),
}


@dataclass(frozen=True)
class ExperimentConfig:
    """How the priors are fitted.

    Attributes:
        priors: which priors to fit, in order (``"network"``, ``"tikhonov"``).
        network: architecture of the network prior.
        network_training: its optimizer settings.
        discrepancy_tau: early stopping of the network prior at ``tau`` times the noise level
            (0: off).
        tikhonov: regularisation and parameter grid of the baseline.
        tikhonov_training: optimizer settings of each Tikhonov run.
        device: torch device of the network.
        extra_files: also write the plot and the ParaView files.
        solver: LU solver of the forward problems (see
            :func:`dolfinx_nn.models.poisson.solver_options`).
    """

    priors: tuple[str, ...] = ("network", "tikhonov")
    network: NetworkConfig = NetworkConfig()
    network_training: TrainingConfig = NETWORK_TRAINING
    discrepancy_tau: float = 1.0
    tikhonov: TikhonovConfig = TikhonovConfig()
    tikhonov_training: TrainingConfig = TIKHONOV_TRAINING
    device: str | None = None
    extra_files: bool = True
    solver: str = "reproducible"

    def __post_init__(self) -> None:
        unknown = [p for p in self.priors if p not in ("network", "tikhonov")]
        if unknown or not self.priors:
            raise ValueError(f"priors must be among ('network', 'tikhonov'), got {self.priors!r}.")


@dataclass
class ExperimentResult:
    """The problem and the result of each prior."""

    problem: InverseProblem
    results: dict[str, PriorResult] = field(default_factory=dict)
    solver: str = "reproducible"

    def summary(self, spec: ProblemSpec) -> dict[str, Any]:
        """The content of ``results.json`` (the problem as solved: mesh, dimension, formulas)."""
        return {
            "problem": spec.resolved(self.problem.model.mesh.geometry.dim),
            "ranks": self.problem.comm.size,
            "solver": self.solver,
            "noise_norm": self.problem.noise_norm,
            "coefficient_dofs": self.problem.model.Q.dofmap.index_map.size_global,
            **{name: r.summary() for name, r in self.results.items()},
        }



def problem_record(
    spec: ProblemSpec, problem: InverseProblem, config: ExperimentConfig
) -> dict[str, Any]:
    """What makes a network-prior run the same problem: the resolved spec, the contents of the
    mesh and data files, the network and the early stopping (collective).

    The number of steps, the checkpoint interval, the device and the solver may change on
    resume; anything here may not.
    """
    record = spec.resolved(problem.model.mesh.geometry.dim)
    if spec.mesh is not None and pathlib.Path(spec.mesh).suffix:
        record["mesh_sha256"] = file_sha256(spec.mesh, problem.comm)
        record.pop("resolution")  # ignored for a mesh file
    if spec.data_file is not None:
        record["data_sha256"] = file_sha256(spec.data_file, problem.comm)
    record["network"] = dataclasses.asdict(config.network)
    record["discrepancy_tau"] = config.discrepancy_tau
    return record


def _fit(name: str, problem: InverseProblem, config: ExperimentConfig, checkpoint, resume,
         record=None):
    if name == "network":
        return fit_network_prior(
            problem, config.network, config.network_training,
            discrepancy_tau=config.discrepancy_tau, device=config.device,
            checkpoint=checkpoint, resume=resume, problem_record=record,
        )
    return fit_tikhonov(problem, config.tikhonov, config.tikhonov_training)


def _coefficient_function(problem: InverseProblem, values: torch.Tensor, name: str):
    return from_torch(values, dolfinx.fem.Function(problem.model.Q, name=name))


def _state_function(problem: InverseProblem, values: torch.Tensor, name: str):
    with torch.no_grad():
        u = problem.model.solve(values)
    return from_torch(u, dolfinx.fem.Function(problem.model.V, name=name))


def write_outputs(
    out: pathlib.Path, spec: ProblemSpec, experiment: ExperimentResult, comm: MPI.Comm
) -> None:
    """``results.json``, ``inverse.png`` and the ParaView files (collective)."""
    problem = experiment.problem
    write_json(out / "results.json", experiment.summary(spec), comm=comm)
    coefficients = {}
    if problem.true_coefficient is not None:
        q_true = dolfinx.fem.Function(problem.model.Q, name="q_true")
        q_true.interpolate(problem.true_coefficient.numpy)
        coefficients["true"] = q_true
    for name, r in experiment.results.items():
        coefficients[name] = _coefficient_function(problem, r.coefficient, f"q_{name}")
    errors = {
        name: r.errors["coefficient_rel_l2_error"]
        for name, r in experiment.results.items() if "coefficient_rel_l2_error" in r.errors
    }
    histories = {name: r.history.losses for name, r in experiment.results.items()}
    plot_run(out / "inverse.png", coefficients, histories, errors, comm=comm)
    states = [_state_function(problem, r.coefficient, f"u_{name}")
              for name, r in experiment.results.items()]
    data = getattr(problem.observation, "data", None)
    if data is not None:
        states.append(data)
    if problem.exact_state is not None:
        states.append(problem.exact_state)
    write_vtx(out / "coefficients.bp", list(coefficients.values()), comm)
    write_vtx(out / "state.bp", states, comm)


def summary_table(experiment: ExperimentResult) -> str:
    """A small Markdown table of the results (one row per prior)."""
    lines = [
        "| prior | coefficient error (%) | state error (%) | data residual (%) | iterations "
        "| time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in experiment.results.items():
        e = r.errors
        q = 100 * e.get("coefficient_rel_l2_error", float("nan"))
        u = 100 * e.get("state_rel_l2_error", float("nan"))
        label = name if name != "tikhonov" else f"tikhonov ({r.details['regularization']}, " \
            f"alpha={r.details['alpha']:.0e})"
        lines.append(f"| {label} | {q:.2f} | {u:.3f} | {100 * e['data_residual']:.3f} "
                     f"| {r.iterations} | {r.wall_time_s:.1f} |")
    return "\n".join(lines)


def run_experiment(
    spec: ProblemSpec,
    config: ExperimentConfig = ExperimentConfig(),
    out: str | pathlib.Path | None = None,
    *,
    resume: bool = False,
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> ExperimentResult:
    """Build the problem of ``spec``, fit the priors of ``config``, write files to ``out``.

    Args:
        spec: the problem.
        config: the priors and their settings.
        out: output folder (None: write nothing, no checkpoint).
        resume: continue the network prior's training from ``out/network.ckpt``.
        comm: communicator.
    """
    folder = prepare_output_dir(out, comm) if out is not None else None
    problem = build_problem(spec, comm, solver=config.solver)
    experiment = ExperimentResult(problem, solver=config.solver)
    record = problem_record(spec, problem, config) if "network" in config.priors else None
    for name in config.priors:
        checkpoint = folder / "network.ckpt" if folder is not None and name == "network" else None
        experiment.results[name] = _fit(name, problem, config, checkpoint,
                                        resume if checkpoint else False, record)
    if folder is not None and config.extra_files:
        write_outputs(folder, spec, experiment, comm)
    elif folder is not None:
        write_json(folder / "results.json", experiment.summary(spec), comm=comm)
    failed = [r.history.checkpoint_error for r in experiment.results.values()
              if r.history.checkpoint_error]
    if failed:
        raise OutputError(f"{failed[0]} (results.json holds the finished results)")
    return experiment


def run_noise_sweep(
    spec: ProblemSpec,
    noise_levels: Sequence[float],
    config: ExperimentConfig = ExperimentConfig(),
    out: str | pathlib.Path | None = None,
    *,
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> list[dict[str, float]]:
    """Repeat the experiment for each noise level; returns one row per level.

    Each level gets its own subfolder ``noise_<level>`` with the files of
    :func:`run_experiment`; ``out/sweep.json`` and ``out/noise_sweep.png`` summarise.
    """
    folder = prepare_output_dir(out, comm) if out is not None else None
    rows = []
    for level in noise_levels:
        print0(f"noise level {level:g}", comm=comm)
        sub = folder / f"noise_{level:g}" if folder is not None else None
        experiment = run_experiment(dataclasses.replace(spec, noise=level), config, sub, comm=comm)
        row: dict[str, float] = {"noise": level}
        for name, r in experiment.results.items():
            row[name] = r.errors.get("coefficient_rel_l2_error", float("nan"))
            row[f"{name}_state"] = r.errors.get("state_rel_l2_error", float("nan"))
            row[f"{name}_iterations"] = r.iterations
            row[f"{name}_wall_time_s"] = r.wall_time_s
            if name == "tikhonov":
                row["tikhonov_alpha"] = r.details["alpha"]
                row["tikhonov_best"] = r.details.get("best_coefficient_rel_l2_error", float("nan"))
        rows.append(row)
    if folder is not None:
        gdim = experiment.problem.model.mesh.geometry.dim
        write_json(folder / "sweep.json", {"problem": spec.resolved(gdim), "rows": rows},
                   comm=comm)
        plot_noise_sweep(folder / "noise_sweep.png", rows, list(config.priors), comm=comm)
    return rows


def sweep_table(rows: Sequence[dict[str, float]], priors: Sequence[str]) -> str:
    """Markdown table of a noise sweep: coefficient errors (%) per prior."""
    header = "| noise (%) | " + " | ".join(f"{p} error of q (%)" for p in priors)
    if "tikhonov" in priors:
        header += " | Tikhonov alpha | best Tikhonov on the grid (%)"
    lines = [header + " |", "|" + "---|" * (header.count("|"))]
    for r in rows:
        cells = [f"{100 * r['noise']:g}"] + [f"{100 * r[p]:.2f}" for p in priors]
        if "tikhonov" in priors:
            cells += [f"{r['tikhonov_alpha']:.0e}", f"{100 * r['tikhonov_best']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
