"""Discover the PDE behind scattered space-time data and check it with a DOLFINx simulation.

A network surrogate u(x, t) is fitted to the data (the first --train-fraction of the time
span), differentiated with autograd, and u_t = sum_k c_k T_k is found by sparse regression
(STRidge) with model selection over a library of terms.  The discovered equation is then
simulated with DOLFINx from the first snapshot and compared with the held-out later data.

Data: --data FILE (.npz with x (N x d), t (M,), u (M x N); or .csv with columns
station,x[,y[,z]],t,value; missing values allowed), or --simulate NAME for a built-in DOLFINx
simulation (heat, advection-diffusion, fisher-kpp, nonlinear-diffusion) on --mesh.

Writes to --out DIR:
  results.json     equation, coefficients (term -> value, data units, selected terms only),
                   raw coefficients, Pareto front, validation_rel_l2_error (null, with
                   validation_failure, if the discovered equation cannot be integrated),
                   timings
  pareto.png       number of terms vs cross-validation error
  validation.png   relative error of the re-simulation per snapshot
  validation.bp    the re-simulation (ParaView, VTX)
  data.npz         the simulated data set (with --simulate)

A result the command can tell is poor is flagged on the console and in results.json
("assessment"): the re-simulation of the discovered equation misses the held-out data by
more than max(5 %, 3 x the noise level), or cannot be integrated at all.  A correct equation,
re-simulated from the first snapshot, stays within a few times the noise of the held-out data.

Examples (the first is flagged as poor: on the domain with a hole and the default
space-time surrogate the heat equation is not recovered; the second recovers it):
  dolfinx-nn discover --simulate heat --mesh square-with-hole --noise 0.01 --out out/heat
  dolfinx-nn discover --simulate heat --resolution 16 --points 3000 --noise 0.01 \\
      --surrogate separable --width 1200 --time-degree 8 --margin 0.1 --out out/heat2d
  mpiexec -n 2 dolfinx-nn discover --data stations.csv --library u,u_xx,u_yy --out out/st
"""

from __future__ import annotations

import argparse
import pathlib
import time

from mpi4py import MPI

import dolfinx
import dolfinx.io
import numpy as np

from dolfinx_nn.cli import (
    OptionError,
    about_option,
    add_output_arguments,
    existing_file,
    mesh_spec,
)
from dolfinx_nn.discovery.data import SpaceTimeData, load_data, save_npz, with_noise
from dolfinx_nn.discovery.datasets import PROBLEMS, simulate_dataset
from dolfinx_nn.discovery.library import LIBRARY_PRESETS, parse_library
from dolfinx_nn.discovery.pipeline import Discovery, DiscoveryConfig, discover
from dolfinx_nn.discovery.regression import SELECTION_CRITERIA
from dolfinx_nn.discovery.simulation import boundary_distance
from dolfinx_nn.discovery.surrogate import SURROGATE_KINDS, SurrogateConfig
from dolfinx_nn.discovery.validation import Validation, validate
from dolfinx_nn.errors import SolverError
from dolfinx_nn.meshes import create_mesh
from dolfinx_nn.output import (
    check_writable,
    on_root,
    prepare_output_dir,
    print0,
    write_json,
)

#: Measured with /usr/bin/time (user + sys, per rank) on a shared 2-core machine.
RUN_TIME = ("discover has no default data (--data or --simulate is required); the first "
            "example takes about 12 s of CPU time on one rank (wall time on an idle machine)")

#: A re-simulation error above max(POOR_FLOOR, POOR_NOISE_FACTOR x noise) flags the result.
POOR_FLOOR = 0.05
POOR_NOISE_FACTOR = 3.0


def _data_file(text: str) -> pathlib.Path:
    return pathlib.Path(existing_file(text))


def _library(text: str) -> str:
    """argparse type: a preset or terms (checked for up to 3 space dimensions here)."""
    from dolfinx_nn.discovery.library import parse_library

    try:
        parse_library(text, 3)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def assess(validation_error: float | None, noise: float, failure: str | None) -> dict:
    """Whether the discovered equation is poor, judged by its held-out re-simulation."""
    limit = max(POOR_FLOOR, POOR_NOISE_FACTOR * noise)
    if validation_error is None:
        return {"poor": True, "limit": limit,
                "reason": f"the discovered equation cannot be integrated ({failure})"}
    if validation_error > limit:
        return {"poor": True, "limit": limit,
                "reason": f"its re-simulation misses the held-out data by "
                          f"{100 * validation_error:.1f} % (more than {100 * limit:.0f} %)"}
    return {"poor": False, "limit": limit, "reason": None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=_data_file, help="data file (.npz or .csv)")
    source.add_argument("--simulate", choices=list(PROBLEMS), help="built-in simulated data set")
    add_output_arguments(parser, "discover")
    parser.add_argument(
        "--library",
        type=_library,
        default="quadratic",
        help=f"preset ({', '.join(LIBRARY_PRESETS)}) or terms, e.g. 'u,u_x,u_xx,u*u_x'",
    )
    parser.add_argument("--noise", type=float, default=0.0,
                        help="relative Gaussian noise added to the values (0.01 = 1%%)")
    parser.add_argument("--mesh", type=mesh_spec, default=None,
                        help="geometry: interval, square, square-with-hole, ... or a mesh file "
                        "(default: square-with-hole for --simulate, the data's bounding box "
                        "for --data)")
    parser.add_argument("--resolution", type=int, default=32, help="cells per unit length")
    parser.add_argument("--points", type=int, default=1000, help="observation points (--simulate)")
    parser.add_argument("--times", type=int, default=41, help="snapshots (--simulate)")
    parser.add_argument("--train-fraction", type=float, default=0.75,
                        help="fraction of the time span used for discovery; the rest is held out")
    parser.add_argument("--criterion", choices=list(SELECTION_CRITERIA), default="cv")
    parser.add_argument("--tolerance", type=float, default=0.2,
                        help="relative slack of the cv criterion")
    parser.add_argument("--surrogate", choices=list(SURROGATE_KINDS), default="space-time",
                        help="network of (x, t), or spatial features x Legendre polynomials in t "
                        "(needs every station at every snapshot; better in 2D and 3D)")
    parser.add_argument("--time-degree", type=int, default=12,
                        help="Legendre degree in time (--surrogate separable)")
    parser.add_argument("--margin", type=float, default=0.0,
                        help="regression only at stations farther than this from the mesh "
                        "boundary (data units)")
    parser.add_argument("--width", type=int, default=400, help="neurons of the surrogate")
    parser.add_argument("--depth", type=int, default=1, help="hidden layers of the surrogate")
    parser.add_argument("--adam-steps", type=int, default=0,
                        help="Adam steps on the hidden layers (0: random features)")
    parser.add_argument("--degree", type=int, default=2, help="Lagrange degree of simulations")
    parser.add_argument("--device", default="cpu", help="torch device of the surrogate")
    parser.add_argument("--seed", type=int, default=0)


def _box_mesh(comm: MPI.Comm, data: SpaceTimeData, resolution: int) -> dolfinx.mesh.Mesh:
    lo, hi = data.x.min(axis=0), data.x.max(axis=0)
    cells = [max(2, int(np.ceil(resolution * (b - a)))) for a, b in zip(lo, hi, strict=True)]
    if data.dim == 1:
        return dolfinx.mesh.create_interval(comm, cells[0], [lo[0], hi[0]])
    if data.dim == 2:
        return dolfinx.mesh.create_rectangle(comm, [lo, hi], cells)
    return dolfinx.mesh.create_box(comm, [lo, hi], cells)


def _plot(out: pathlib.Path, found: Discovery, check: Validation | None, comm: MPI.Comm) -> None:
    on_root(lambda: _draw(out, found, check), f"cannot write the plots in {out}", comm)


def _draw(out: pathlib.Path, found: Discovery, check: Validation | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = found.pareto_front()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.semilogy([r["complexity"] for r in front], [r["cv_error"] for r in front], "o-")
    chosen = len(found.coefficients)
    ax.semilogy([chosen], [found.regression.selected.cv_error], "r*", ms=14, label="selected")
    ax.set_xlabel("number of terms")
    ax.set_ylabel("relative cross-validation error")
    ax.set_title(found.equation, fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=120)
    plt.close(fig)
    if check is None:
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    times = check.times[check.held_out]
    ax.plot(times, check.snapshot_errors, "o-")
    ax.set_xlabel("t")
    ax.set_ylabel("relative l2 error vs held-out data")
    ax.set_title("DOLFINx simulation of the discovered PDE")
    fig.tight_layout()
    fig.savefig(out / "validation.png", dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    comm = MPI.COMM_WORLD
    if not 0.0 < args.train_fraction < 1.0:
        raise OptionError(f"--train-fraction must lie in (0, 1), got {args.train_fraction}")
    if not (np.isfinite(args.noise) and args.noise >= 0):
        raise OptionError(f"--noise must be >= 0, got {args.noise}")
    if not (np.isfinite(args.margin) and args.margin >= 0):
        raise OptionError(f"--margin must be >= 0, got {args.margin}")
    out = prepare_output_dir(args.out, comm)
    rng = np.random.default_rng(args.seed)
    truth = None
    start = time.perf_counter()
    if args.simulate:
        with about_option("--mesh"):
            mesh = create_mesh(comm, args.mesh or "square-with-hole", args.resolution)
        print0(f"simulating {args.simulate} on {args.mesh or 'square-with-hole'} ...")
        data, truth = simulate_dataset(
            args.simulate, mesh, args.points, args.times, args.noise, args.seed, args.degree
        )
        on_root(lambda: save_npz(out / "data.npz", data), f"cannot write {out / 'data.npz'}",
                comm)
    else:
        with about_option("--data"):
            data = load_data(args.data)
        if args.noise > 0:
            data = with_noise(data, args.noise, rng)
        with about_option("--mesh"):
            mesh = (
                create_mesh(comm, args.mesh, args.resolution)
                if args.mesh
                else _box_mesh(comm, data, args.resolution)
            )
    data_s = time.perf_counter() - start
    train, _ = data.split(args.train_fraction)
    with about_option("--library"):
        parse_library(args.library, data.dim)
    config = DiscoveryConfig(
        library=args.library,
        criterion=args.criterion,
        tolerance=args.tolerance,
        seed=args.seed,
        surrogate=SurrogateConfig(
            kind=args.surrogate, width=args.width, depth=args.depth,
            time_degree=args.time_degree, adam_steps=args.adam_steps, seed=args.seed,
            device=args.device,
        ),
    )
    stations = boundary_distance(mesh, data.x) > args.margin if args.margin > 0 else None
    found = discover(train, config, comm=comm, stations=stations)
    print0(f"discovered: {found.equation}")
    writer: list[dolfinx.io.VTXWriter] = []

    def write(u: dolfinx.fem.Function, t: float) -> None:
        if not writer:
            writer.append(dolfinx.io.VTXWriter(comm, out / "validation.bp", [u], engine="BP4"))
        writer[0].write(t)

    def summary(check: Validation | None, failure: str | None, validation_s: float | None,
                assessment: dict | None) -> dict:
        results = {
            "equation": found.equation,
            "coefficients": found.coefficients,
            "raw_coefficients": found.raw_coefficients,
            "validation_rel_l2_error": None if check is None else check.rel_l2_error,
            "validation_snapshot_errors": {} if check is None else dict(
                zip(map(str, check.times[check.held_out]), check.snapshot_errors, strict=True)
            ),
            "validation_failure": failure,
            "assessment": assessment,
            "pareto_front": found.pareto_front(),
            "surrogate": {
                "ridge": found.fit.ridge, "cv_rmse": found.fit.cv_rmse,
                "train_rmse": found.fit.train_rmse,
            },
            "data": {
                "source": str(args.data) if args.data else f"simulated:{args.simulate}",
                "points": int(data.x.shape[0]), "snapshots": int(data.t.size),
                "observed": data.num_observed, "train_end": float(train.t[-1]),
                "noise": args.noise,
            },
            "timings": {"data_s": data_s, **found.timings, "validation_s": validation_s},
            "settings": {
                k: str(v) if isinstance(v, pathlib.Path) else v for k, v in vars(args).items()
            },
            "ranks": comm.size,
        }
        if truth is not None:
            results["true_coefficients"] = truth
            results["coefficient_errors"] = {
                name: abs(found.coefficients.get(name, 0.0) - value) / abs(value)
                for name, value in truth.items()
            }
            results["spurious_terms"] = {
                k: v for k, v in found.coefficients.items() if k not in truth
            }
        return results

    # the discovered equation is kept even if the re-simulation or its output fails
    write_json(out / "results.json", summary(None, "not run yet", None, None), comm)
    start = time.perf_counter()
    check, failure = None, None
    check_writable(out, comm)  # validation.bp is written during the re-simulation
    try:
        check = validate(
            found.coefficients, found.surrogate, mesh, data, float(train.t[-1]), args.degree,
            on_snapshot=write,
        )
    except SolverError as exc:  # a wrong equation may blow up: report it, keep the results
        failure = str(exc)
    finally:
        for w in writer:
            w.close()
    validation_s = time.perf_counter() - start
    if check is not None:
        print0(f"re-simulation vs held-out data: relative l2 error {check.rel_l2_error:.3e}")
    else:
        print0(f"re-simulation of the discovered equation failed: {failure}")
    assessment = assess(None if check is None else check.rel_l2_error, args.noise, failure)
    if assessment["poor"]:
        print0(f"WARNING: poor result: {assessment['reason']}; the discovered equation is "
               "probably not the PDE behind the data (try --surrogate separable, a larger "
               "--margin or more --points; see docs/discovery.md)")
    results = summary(check, failure, validation_s, assessment)
    write_json(out / "results.json", results, comm)
    _plot(out, found, check, comm)
    print0(f"wrote {out / 'results.json'}")
    return 0
