"""Estimate the coefficient q(x) of -div(q grad u) = f (u = g on the boundary) from noisy,
possibly incomplete measurements of u, with a neural-network prior (Berg & Nystrom) and, on the
same data, the classical Tikhonov baseline.

The network prior is q(x) = q_min + softplus(N(x)) with N a small tanh MLP trained on the data
misfit alone (Adam, then L-BFGS; each gradient is one FEM adjoint solve plus backpropagation),
stopped by the discrepancy principle when the data are noisy.  The baseline is a P1 coefficient
with H1 (or L2) Tikhonov regularisation, its parameter chosen by the discrepancy principle on a
grid.  Synthetic data come from a finer mesh and a higher degree (no inverse crime), with
Gaussian noise of the given relative level on the whole domain, a subdomain or random points;
or read --data FILE (CSV x[,y[,z]],value or a meshio file with point data).

Formulas (--coefficient, --source, --boundary, --subdomain) use x[0], x[1], x[2], pi, e,
+ - * / **, sin cos tan exp log sqrt abs tanh ... and where(cond, a, b); they are parsed
safely (no code is executed).

Writes to --out: results.json (per prior: coefficient_rel_l2_error, state_rel_l2_error,
iterations, wall_time_s, loss history; the problem as solved, with the true coefficient's
formula), inverse.png (true vs recovered q, loss curves), coefficients.bp and state.bp
(ParaView), network.ckpt (checkpoint; Ctrl-C writes it before exiting; --resume continues it,
with more steps if asked, and refuses a changed problem, listing the differences).
--sweep-noise L1,L2,... runs one experiment per noise level and writes sweep.json,
noise_sweep.png and a table.

A seeded run repeats to the bit on the same machine and number of ranks (--solver
reproducible, the default: the LU factorization runs on rank 0; --solver parallel uses
distributed MUMPS, whose dynamic scheduling changes the last bits from run to run).

Examples:
  dolfinx-nn inverse --dim 2 --prior both --noise 0.01 --out results/inverse
  mpiexec -n 2 dolfinx-nn inverse --mesh square-with-hole --sweep-noise 0,0.01,0.05,0.1 \\
      --out results/inverse_sweep
  dolfinx-nn inverse --dim 1 --observe points --points 50 --coefficient "1 + x[0]**2"
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib

from mpi4py import MPI

from dolfinx_nn.cli_options import (
    OptionError,
    add_device_argument,
    add_output_arguments,
    add_seed_argument,
    add_threads_argument,
    add_training_arguments,
    existing_file,
    formula,
    mesh_spec,
    positive_int,
    training_from_args,
)
from dolfinx_nn.inverse.experiment import (
    PRIOR_CHOICES,
    ExperimentConfig,
    run_experiment,
    run_noise_sweep,
    summary_table,
    sweep_table,
)
from dolfinx_nn.inverse.network_prior import DEFAULT_TRAINING, NetworkConfig
from dolfinx_nn.inverse.tikhonov import (
    DEFAULT_ALPHAS,
    OPTIMIZERS,
    REGULARIZATIONS,
    TikhonovConfig,
)
from dolfinx_nn.models.inverse_problem import OBSERVE_CHOICES, ProblemSpec
from dolfinx_nn.models.poisson import SOLVERS
from dolfinx_nn.output import print0, write_json


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 0,0.01,0.05, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


_formula = formula

#: Measured with /usr/bin/time (user + sys, per rank) on a shared 2-core machine.
RUN_TIME = ("the default run (2D, 16 cells per side, both priors; the run of `make demo`) "
            "takes about 15 s of CPU time on one rank (CPU time is the wall time of an idle "
            "machine; 75 s wall on a 2-core machine with load average 15)")


#: Training settings of the network prior: its ``DEFAULT_TRAINING``, a checkpoint every 50 steps.
TRAINING = dataclasses.replace(DEFAULT_TRAINING, checkpoint_every=50)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dolfinx-nn inverse``."""
    g = parser.add_argument_group("problem")
    g.add_argument("--dim", type=int, choices=(1, 2, 3), default=None,
                   help="dimension: chooses the default mesh (interval, square, cube) and is "
                        "checked against --mesh (default: the mesh's; 2 without --mesh)")
    g.add_argument("--mesh", type=mesh_spec, default=None,
                   help="built-in mesh (interval, square, cube, square-with-hole, "
                        "cube-with-hole) or a mesh file (.msh, .xdmf, .vtu, ...) (default: by "
                        "--dim)")
    g.add_argument("--resolution", type=positive_int, default=16,
                   help="cells per unit length")
    g.add_argument("--degree", type=int, choices=(1, 2, 3), default=1,
                   help="Lagrange degree of the state on the inversion mesh")
    g.add_argument("--coefficient-degree", type=int, choices=(1, 2, 3), default=1,
                   help="Lagrange degree of the coefficient space (both priors)")
    g.add_argument("--coefficient", type=_formula, default=None,
                   help="true q (EXPR); default by dimension: 1 + 0.5*sin(2*pi*x[0]) (1D), "
                        "1 + 0.5*sin(pi*x[0])*sin(2*pi*x[1]) (2D), "
                        "1 + 0.5*sin(pi*x[0])*sin(2*pi*x[1])*sin(pi*x[2]) (3D); results.json "
                        "records the one used")
    g.add_argument("--source", type=_formula, default="1", help="source f (EXPR)")
    g.add_argument("--boundary", type=_formula, default="0", help="Dirichlet data g (EXPR)")
    g = parser.add_argument_group("data")
    g.add_argument("--noise", type=float, default=0.0, help="relative noise level (0.01 = 1%%)")
    g.add_argument("--observe", choices=OBSERVE_CHOICES, default="all",
                   help="where u is measured")
    g.add_argument("--subdomain", type=_formula, default="where(x[0] <= 0.5, 1, 0)",
                   help="observed region {EXPR > 0} for --observe subdomain")
    g.add_argument("--points", type=positive_int, default=300,
                   help="number of random points for --observe points")
    g.add_argument("--data", type=existing_file, default=None, metavar="FILE",
                   help="read measurements (CSV x[,y[,z]],value or a meshio file)")
    add_seed_argument(g)
    g.add_argument("--sweep-noise", type=_floats, default=None, metavar="L1,L2,...",
                   help="run one experiment per noise level and tabulate the errors")
    g = parser.add_argument_group("priors")
    g.add_argument("--prior", choices=tuple(PRIOR_CHOICES), default="both")
    g.add_argument("--width", type=int, default=NetworkConfig.width, help="network width")
    g.add_argument("--depth", type=int, default=NetworkConfig.depth, help="hidden layers")
    add_training_arguments(g, TRAINING)
    g.add_argument("--stop-tau", type=float, default=1.0,
                   help="stop the network at tau x noise level (discrepancy); 0: off")
    g.add_argument("--regularization", choices=sorted(REGULARIZATIONS), default="h1",
                   help="Tikhonov regularisation")
    g.add_argument("--alphas", type=_floats, default=DEFAULT_ALPHAS,
                   help="Tikhonov parameter grid (comma-separated)")
    g.add_argument("--tau", type=float, default=1.1, help="discrepancy principle factor")
    g.add_argument("--tikhonov-optimizer", choices=OPTIMIZERS, default="lbfgs",
                   help="optimizer of each Tikhonov run: L-BFGS, or Newton-CG with exact "
                        "Hessian-vector products")
    g.add_argument("--posterior", choices=("none", "laplace"), default="none",
                   help="pointwise posterior standard deviation of q of each prior by a "
                        "low-rank Laplace approximation (posterior.json, posterior.png, "
                        "posterior.bp)")
    g = parser.add_argument_group("run")
    g.add_argument("--solver", choices=SOLVERS, default="reproducible",
                   help="LU solver: 'reproducible' factorizes on rank 0 (bitwise repeatable "
                        "runs), 'parallel' is distributed MUMPS (for meshes too large for one "
                        "process; the last bits vary from run to run)")
    g.add_argument("--resume", action="store_true",
                   help="continue the network prior from OUT/network.ckpt (same problem; more "
                        "steps allowed)")
    add_training_arguments(g, TRAINING, phases=(), fields=("checkpoint_every",))
    add_device_argument(g)
    add_threads_argument(g)
    add_output_arguments(parser, "inverse")


def configs_from_args(args: argparse.Namespace) -> tuple[ProblemSpec, ExperimentConfig]:
    """The problem and experiment settings described by the command-line options."""
    spec = ProblemSpec(
        dim=args.dim, mesh=args.mesh, resolution=args.resolution, degree=args.degree,
        coefficient_degree=args.coefficient_degree,
        coefficient=args.coefficient, source=args.source, boundary=args.boundary,
        observe=args.observe, subdomain=args.subdomain, num_points=args.points,
        data_file=args.data, noise=args.noise, seed=args.seed,
    )
    training = dataclasses.replace(
        training_from_args(args, TRAINING), seed=args.seed,
    )
    priors = PRIOR_CHOICES[args.prior]
    if args.data is not None:
        priors = tuple(p for p in priors if p == "network") or priors
    config = ExperimentConfig(
        priors=priors,
        network=NetworkConfig(width=args.width, depth=args.depth, seed=args.seed),
        network_training=training,
        discrepancy_tau=args.stop_tau,
        tikhonov=TikhonovConfig(regularization=args.regularization, alphas=args.alphas,
                                tau=args.tau, optimizer=args.tikhonov_optimizer),
        device=args.device,
        solver=args.solver,
    )
    return spec, config


def run(args: argparse.Namespace) -> int:
    """Run the experiment (or the noise sweep) and print a summary table on rank 0."""
    comm = MPI.COMM_WORLD
    spec, config = configs_from_args(args)
    if args.resume:
        if args.sweep_noise is not None:
            raise OptionError("--resume continues one run; it cannot be used with --sweep-noise")
        checkpoint = f"{args.out}/network.ckpt"
        found = comm.bcast(os.path.isfile(checkpoint) if comm.rank == 0 else None, root=0)
        if not found:
            raise OptionError(f"--resume: there is no checkpoint {checkpoint} to continue; "
                              "run without --resume")
    if args.sweep_noise is not None and args.posterior != "none":
        raise OptionError(f"--posterior {args.posterior} describes one run; it cannot be used "
                          "with --sweep-noise")
    if args.sweep_noise is not None:
        rows = run_noise_sweep(spec, args.sweep_noise, config, args.out, comm=comm)
        print0(sweep_table(rows, config.priors), comm=comm)
        print0(f"results in {args.out}/ (sweep.json, noise_sweep.png)", comm=comm)
        return 0
    try:
        experiment = run_experiment(spec, config, args.out, resume=args.resume, comm=comm)
    except KeyboardInterrupt:
        print0(f"\ninterrupted: checkpoint written to {args.out}/network.ckpt; "
               "rerun with --resume to continue.", comm=comm)
        return 130
    print0(summary_table(experiment), comm=comm)
    print0(f"results in {args.out}/ (results.json, inverse.png, coefficients.bp, state.bp)",
           comm=comm)
    if args.posterior == "laplace":
        return _posterior(experiment, config, pathlib.Path(args.out), comm)
    return 0


def _posterior(experiment, config: ExperimentConfig, folder: pathlib.Path, comm) -> int:
    """The Laplace posterior; on failure posterior.json holds the reason, exit status 1."""
    from dolfinx_nn.inverse.posterior import run_posterior, summary_lines

    try:
        posteriors = run_posterior(experiment, config, folder, comm)
    except Exception as error:  # noqa: BLE001 (reported in the file and on one line)
        reason = f"{type(error).__name__}: {error}"
        write_json(folder / "posterior.json", {"failed": reason}, comm=comm)
        print0(f"posterior failed: {reason}", comm=comm)
        return 1
    print0(summary_lines(posteriors), comm=comm)
    print0(f"posterior in {folder}/ (posterior.json, posterior.png, posterior.bp)", comm=comm)
    return 0
