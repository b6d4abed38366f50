"""Constant-weight ResNets and their deep limit, the neural ODE (Avelin & Nyström).

A ResNet whose N layers share one block f, x_{k+1} = x_k + f(x_k)/N, is forward Euler for
dx/dt = f(x) on [0, 1].  Experiments (depths N = 1, 2, 4, ..., --max-depth):

  forward  fixed weights: error of the ResNet output and of its loss gradient against the
           neural ODE (adaptive Dormand-Prince, tol 1e-12); RK4 and adjoint gradients too
  sgd      SGD from the same weights on the same mini-batches for every N and for the ODE:
           distance between parameter trajectories and between loss curves
  annulus  test accuracy and loss on the annulus classification set versus N, over seeds
  inverse  the ResNet as network prior of the coefficient in -div(q grad u) = f (DOLFINx):
           distance of the recovered q_N to the ODE prior's q (runs under MPI)
  all      the four above, in sub-folders, plus DIR/rates.md (the table of observed orders)

Writes DIR/results.json (per N: errors or losses; the fitted orders), then DIR/<experiment>.png
and, for `inverse` (the only experiment on a mesh), DIR/coefficients.bp (ParaView, VTX) with
the recovered coefficients.

Example:
  dolfinx-nn deep-limit --experiment sgd --max-depth 128 --out results/deep_limit_sgd
  mpiexec -n 2 dolfinx-nn deep-limit --experiment all --out results/deep_limit \
      --images docs/images
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import pathlib
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING

from mpi4py import MPI

from dolfinx_nn.cli_options import (
    add_output_arguments,
    add_seed_argument,
    add_threads_argument,
    positive_int,
)
from dolfinx_nn.deep_limit import plots
from dolfinx_nn.deep_limit.annulus_study import AnnulusConfig, annulus_study
from dolfinx_nn.deep_limit.forward_convergence import ForwardConfig, forward_convergence
from dolfinx_nn.deep_limit.sgd_convergence import SGDConfig, sgd_convergence
from dolfinx_nn.networks.activations import ACTIVATIONS
from dolfinx_nn.output import (
    markdown_table,
    prepare_output_dir,
    print0,
    write_json,
    write_on_root,
    write_text,
    write_vtx,
)
from dolfinx_nn.plotting import write_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Measured with /usr/bin/time (user + sys, per rank) on a shared 2-core machine.
RUN_TIME = ("the default run (--experiment forward, N up to 256) takes about 8 s of CPU time "
            "on one rank (wall time on an idle machine); --quick shrinks every experiment to "
            "seconds")


def _depths(max_depth: int) -> tuple[int, ...]:
    return tuple(2**k for k in range(max_depth.bit_length()) if 2**k <= max_depth)


def _dimension(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(
            f"must be >= 2 (the annulus lives in R^2), got {text!r}")
    return value


def run_forward(args: argparse.Namespace, comm: MPI.Comm, out: pathlib.Path) -> dict:
    config = ForwardConfig(dim=args.dim, activation=args.activation or "relu",
                           depths=_depths(args.max_depth or 256), seed=args.seed)
    if args.quick:
        config = dataclasses.replace(config, n_points=64, reference_tol=1e-10)
    result = forward_convergence(config)
    return result


def run_sgd(args: argparse.Namespace, comm: MPI.Comm, out: pathlib.Path) -> dict:
    config = SGDConfig(dim=args.dim, activation=args.activation or "relu",
                       depths=_depths(args.max_depth or 256), seed=args.seed)
    if args.quick:
        config = dataclasses.replace(config, n_train=64, batch_size=16, steps=10,
                                     ode_options={"method": "rk4", "steps": 128})
    result = sgd_convergence(config, comm)
    return result


def run_annulus(args: argparse.Namespace, comm: MPI.Comm, out: pathlib.Path) -> dict:
    config = AnnulusConfig(dim=args.dim, activation=args.activation or "relu",
                           depths=_depths(args.max_depth or 64),
                           seeds=tuple(range(args.seed, args.seed + args.seeds)))
    if args.quick:
        config = dataclasses.replace(config, n_train=100, n_test=200, epochs=3,
                                     ode_options={"method": "rk4", "steps": 32})
    result = annulus_study(config, comm)
    return result


def run_inverse(args: argparse.Namespace, comm: MPI.Comm, out: pathlib.Path) -> dict:
    from dolfinx_nn.deep_limit.inverse_prior import DEFAULT_TRAINING, InverseConfig, inverse_prior

    training = dataclasses.replace(DEFAULT_TRAINING, seed=args.seed,
                                   adam_steps=20 if args.quick else DEFAULT_TRAINING.adam_steps)
    config = InverseConfig(activation=args.activation or "tanh",
                           depths=_depths(args.max_depth or 64), seed=args.seed,
                           training=training)
    if args.quick:
        config = dataclasses.replace(config, resolution=8,
                                     ode_options={"method": "rk4", "steps": 64})
    result = inverse_prior(config, comm)
    result["_fields"] = list(result.pop("functions").values())
    return result


#: experiment name -> runner(args, comm, out) -> results
EXPERIMENTS: dict[str, Callable[[argparse.Namespace, MPI.Comm, pathlib.Path], dict]] = {
    "forward": run_forward,
    "sgd": run_sgd,
    "annulus": run_annulus,
    "inverse": run_inverse,
}

#: experiment -> its figure
FIGURES: dict[str, Callable[[dict], Figure]] = {
    "forward": plots.forward_figure,
    "sgd": plots.sgd_figure,
    "annulus": plots.annulus_figure,
    "inverse": plots.inverse_figure,
}

#: (experiment, label, key of the per-N values, key of the fitted order)
RATE_ROWS = (
    ("forward", "ResNet output vs ODE flow (fixed weights)", "resnet_error", "resnet_order"),
    ("forward", "ResNet loss gradient vs ODE gradient", "resnet_gradient_error",
     "resnet_gradient_order"),
    ("forward", "RK4 (N steps) output vs ODE flow", "rk4_error", "rk4_order"),
    ("forward", "adjoint vs direct gradient, Euler", "euler_adjoint_gap",
     "euler_adjoint_gap_order"),
    ("sgd", "SGD parameter trajectory distance", "trajectory_distance", "trajectory_order"),
    ("sgd", "SGD loss-curve gap", "loss_gap", "loss_gap_order"),
    ("inverse", "recovered coefficient q_N vs q_ODE", "coefficient_distance",
     "coefficient_order"),
    ("inverse", "final misfit gap", "misfit_gap", "misfit_gap_order"),
)


def rates_table(results: dict[str, dict]) -> str:
    """Markdown table of the observed orders (least-squares slopes) of all experiments."""
    cells = []
    for name, label, values, order in RATE_ROWS:
        if name not in results:
            continue
        r = results[name]
        depths = r["depths"]
        cells.append([label, f"{depths[0]}-{depths[-1]}", f"{r[values][0]:.3e}",
                      f"{r[values][-1]:.3e}", f"{r[order]:.3f}"])
    return markdown_table(["quantity", "N range", "value at smallest N", "value at largest N",
                           "observed order"], cells) + "\n"


def annulus_table(result: dict) -> str:
    """Markdown table of test accuracy and loss (mean ± std over seeds) per depth."""
    cells = []
    for label in result["labels"]:
        s = result["summary"][label]
        acc, loss = s["test_accuracy"], s["test_loss"]
        cells.append([label, f"{acc['mean']:.4f} ± {acc['std']:.4f}",
                      f"{loss['mean']:.4f} ± {loss['std']:.4f}"])
    return markdown_table(["N", "test accuracy", "test loss"], cells) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", choices=[*EXPERIMENTS, "all"], default="forward",
                        help="which experiment to run (default: forward)")
    parser.add_argument("--max-depth", type=positive_int, default=None,
                        help="largest N (depths are the powers of two up to it; default 256 "
                             "for forward/sgd, 64 for annulus/inverse)")
    parser.add_argument("--dim", type=_dimension, default=3,
                        help="state dimension d of the annulus experiments (>= 2; default 3)")
    parser.add_argument("--activation", choices=list(ACTIVATIONS), default=None,
                        help="activation of the block (default relu; tanh for inverse)")
    add_seed_argument(parser)
    add_threads_argument(parser)
    parser.add_argument("--seeds", type=positive_int, default=3,
                        help="number of seeds of the annulus study (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="small problem sizes (seconds), for smoke tests")
    parser.add_argument("--images", default=None,
                        help="also copy the plots to IMAGES/deep_limit_<experiment>.png "
                             "(e.g. docs/images)")
    add_output_arguments(parser, "deep-limit")


def _copy_file(source: pathlib.Path, target: pathlib.Path) -> None:
    """Copy ``source`` to ``target``, creating ``target``'s folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def run(args: argparse.Namespace) -> int:
    comm = MPI.COMM_WORLD
    if args.dim < 2:
        raise ValueError(f"--dim must be >= 2 (the annulus lives in R^2), got {args.dim}")
    root = prepare_output_dir(args.out, comm)
    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    results: dict[str, dict] = {}
    for name in names:
        out = prepare_output_dir(root / name, comm) if len(names) > 1 else root
        print0(f"deep-limit: running experiment {name!r}", comm=comm)
        results[name] = EXPERIMENTS[name](args, comm, out)
        fields = results[name].pop("_fields", None)
        write_json(out / "results.json", results[name], comm)  # first: the numbers are kept
        plot = out / f"{name}.png"
        write_figure(plot, functools.partial(FIGURES[name], results[name]), comm, dpi=plots.DPI)
        if fields is not None:
            write_vtx(out / "coefficients.bp", fields, comm, engine="BP4")
        if args.images:
            images = pathlib.Path(args.images)
            target = images / f"deep_limit_{name}.png"
            write_on_root(target, functools.partial(_copy_file, plot), comm)
    table = rates_table(results)
    if "annulus" in results:
        table += "\nAnnulus set, test metrics over seeds:\n\n" + annulus_table(results["annulus"])
    write_text(root / "rates.md", table, comm)
    print0(table, comm=comm)
    return 0
