"""Diffusion maps of SGD trajectories and Hessian spectra at their end points.

Trains a network with plain SGD while recording every k-th parameter vector (optionally
randomly projected), then computes:
  * the diffusion map of the recorded trajectory (kernel exp(-|x-y|^2/epsilon), epsilon at the
    steepest point of the log kernel sum over 64-neighbourhoods of the distinct iterates,
    isolated iterates attached by spanning-tree edges, alpha = 1), its eigenvalues and
    coordinates;
  * the intrinsic dimension of the trajectory (Levina-Bickel maximum likelihood, k = 10..20,
    near-duplicate iterates merged);
  * the top Hessian eigenvalues of the full loss at the end point (Lanczos on Hessian-vector
    products) and the spectral density (stochastic Lanczos quadrature);
  * the alignment of the leading diffusion coordinates with the top Hessian eigenvectors.

Experiments:
  regression  1-64-64-1 tanh MLP (4353 parameters) on 32 noisy samples of sin(3x)
  digits      64-32-10 MLP on the scikit-learn 8x8 digits (needs scikit-learn)
  inverse     network prior of the coefficient q in -div(q grad u) = 1 through the
              DOLFINx bridge (distributed under MPI; Hessian by finite differences of
              adjoint gradients)

Writes DIR/results.json, then DIR/diffmap_<experiment>.png, the trajectory DIR/trajectory/
(trajectory.bin, float64 rows; trajectory.json header; steps.txt), and for `inverse` (the only
experiment on a mesh) the coefficient, its reference and the state as
DIR/inverse_fields_<k>.bp (VTX, for ParaView; one file per function space).

Example:
  mpiexec -n 2 dolfinx-nn diffmap --experiment inverse --out results/diffmap_inverse
  dolfinx-nn diffmap --experiment regression --steps 4000 --every 4 --out results/reg
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

from mpi4py import MPI

from dolfinx_nn.cli_options import (
    OptionError,
    add_output_arguments,
    add_seed_argument,
    add_threads_argument,
)
from dolfinx_nn.diffusion_maps.experiment import ExperimentConfig, run_experiment
from dolfinx_nn.diffusion_maps.problems import PROBLEMS
from dolfinx_nn.output import prepare_output_dir, print0, write_json, write_vtx

#: Measured with /usr/bin/time (user + sys, per rank) on a shared 2-core machine.
RUN_TIME = ("diffmap has no default experiment (--experiment is required); the first example "
            "takes about 17 s of CPU time per rank on 2 ranks (wall time on an idle machine)")

#: experiment -> default settings (any of them can be overridden on the command line)
DEFAULTS: dict[str, dict] = {
    "regression": {"steps": 2000, "lr": 0.05, "every": 2},
    "digits": {"steps": 2000, "lr": 0.1, "every": 2},
    "inverse": {"steps": 400, "lr": 2.0, "every": 1, "hessian_k": 6, "slq_probes": 2,
                "slq_steps": 30},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dolfinx-nn diffmap``."""
    parser.add_argument("--experiment", required=True, choices=list(PROBLEMS))
    parser.add_argument("--steps", type=int, help="SGD steps (default per experiment)")
    parser.add_argument("--lr", type=float, help="SGD learning rate (default per experiment)")
    parser.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    parser.add_argument("--every", type=int, help="record every k-th step")
    parser.add_argument(
        "--projection-dim", type=int, default=None,
        help="record a Gaussian random projection of this dimension (default: all parameters)",
    )
    parser.add_argument("--components", type=int, default=6, help="diffusion coordinates")
    parser.add_argument(
        "--epsilon", type=_epsilon, default="auto",
        help="kernel bandwidth, or 'auto' (steepest log kernel sum)"
    )
    parser.add_argument("--alpha", type=float, default=1.0, help="Coifman-Lafon alpha in [0, 1]")
    parser.add_argument("--t", type=float, default=1.0, help="diffusion time")
    parser.add_argument("--hessian-k", type=int, help="number of top Hessian eigenvalues")
    parser.add_argument("--slq-probes", type=int, help="probe vectors of the SLQ density")
    parser.add_argument("--slq-steps", type=int, help="Lanczos steps per SLQ probe")
    parser.add_argument("--resolution", type=int, default=16, help="mesh cells per side (inverse)")
    add_seed_argument(parser)
    add_threads_argument(parser)
    add_output_arguments(parser, "diffmap")


def _epsilon(text: str) -> str | float:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive number or 'auto', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {text!r}")
    return value


def _config(args: argparse.Namespace) -> ExperimentConfig:
    values = dict(DEFAULTS[args.experiment])
    overrides = {
        "steps": args.steps, "lr": args.lr, "every": args.every, "hessian_k": args.hessian_k,
        "slq_probes": args.slq_probes, "slq_steps": args.slq_steps,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    epsilon: float | str = args.epsilon
    if epsilon != "auto":
        try:
            epsilon = float(epsilon)
        except ValueError:
            raise OptionError(
                f"--epsilon must be a positive number or 'auto'; got {epsilon!r}") from None
    return ExperimentConfig(
        momentum=args.momentum, projection_dim=args.projection_dim,
        n_components=args.components, epsilon=epsilon, alpha=args.alpha, t=args.t,
        seed=args.seed, **values,
    )


def _write_fields(fields: list, path: pathlib.Path) -> None:
    # VTX needs one element per file: group the functions by space
    groups: dict[int, list] = {}
    for f in fields:
        groups.setdefault(id(f.function_space), []).append(f)
    for i, group in enumerate(groups.values()):
        name = path.with_name(f"{path.stem}_{i}.bp")
        write_vtx(name, group, group[0].function_space.mesh.comm)


def run(args: argparse.Namespace) -> int:
    """Run one experiment and write its results."""
    comm = MPI.COMM_WORLD
    cfg = _config(args)
    out = prepare_output_dir(args.out, comm)
    kwargs = {"resolution": args.resolution} if args.experiment == "inverse" else {}
    problem = PROBLEMS[args.experiment](seed=args.seed, comm=comm, **kwargs)
    print0(f"diffmap {args.experiment}: {dataclasses.asdict(cfg)}")
    results = run_experiment(problem, cfg, out, comm)
    results["mpi_ranks"] = comm.size
    write_json(out / "results.json", results, comm)
    fields = problem.fields()
    if fields:
        _write_fields(fields, out / "inverse_fields.bp")
    from dolfinx_nn.diffusion_maps.plots import DPI, experiment_figure
    from dolfinx_nn.plotting import write_figure

    write_figure(out / f"diffmap_{args.experiment}.png", lambda: experiment_figure(results),
                 comm, dpi=DPI)
    dm, h = results["diffusion_map"], results["hessian"]
    print0(
        f"final loss {results['final_loss']:.3e}; diffusion eigenvalues "
        f"{[round(float(v), 4) for v in dm['eigenvalues']]}; estimated dimension "
        f"{results['estimated_dimension']}; top Hessian eigenvalues "
        f"{[round(float(v), 4) for v in h['top_eigenvalues'][:5]]}"
    )
    print0(f"wrote {out / 'results.json'}")
    return 0
