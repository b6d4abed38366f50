"""Discover the PDE behind scattered space-time data and check it with a DOLFINx simulation.

A surrogate u(x, t) is fitted to the data (the first --train-fraction of the time span), with
every scale chosen from the data by generalised cross-validation; u_t = sum_k c_k T_k is then
found by sparse regression (STRidge, one-standard-error rule over blocks in time) twice: on the
surrogate's derivatives (strong form) and on integrals of its values against test functions
inside the domain (weak form).  The selected equations and their neighbours on the Pareto
fronts are simulated with DOLFINx over the held-out window, from the data's state at the last
training snapshot with the data's boundary values, and compared side by side with the held-out
data; the formulation whose selected equation fits the held-out data better gives the answer.

Data: --data FILE (.npz with x (N x d), t (M,), u (M x N); .csv with columns
station,x[,y[,z]],t,value; .mat with x, t or tt and one of u, usol, uu; missing values
allowed), or --simulate NAME for a built-in DOLFINx simulation (heat, advection-diffusion,
fisher-kpp, diffusion-reaction, nonlinear-diffusion) on --mesh.

Writes to --out DIR (results.json is written after every stage, with "status" and, when a
stage fails, "failure"; the command then exits with status 1):
  results.json     equation, coefficients (term -> value, data units), formulation, the
                   strong and weak regressions (Pareto fronts, collinearity), the chosen
                   scales of the surrogate (with the scored grid), the validation of each
                   candidate, timings
  pareto.png       number of terms vs cross-validation error (both formulations)
  validation.png   relative error of the re-simulations per held-out snapshot
  validation.bp    the re-simulation of the chosen equation (ParaView, VTX)
  data.npz         the simulated data set (with --simulate)

A result the command can tell is poor is flagged on the console and in results.json
("assessment"): the re-simulation of the chosen equation misses the held-out data by more than
max(5 %, 3 x the noise level), or cannot be integrated at all. A correct equation, re-simulated
from the last training snapshot, stays within a few times the noise of the held-out data.

Examples:
  dolfinx-nn discover --data burgers.npz --out out/burgers
  dolfinx-nn discover --simulate diffusion-reaction --mesh holes.msh --points 2000 \\
      --noise 0.01 --out out/dr
  mpiexec -n 2 dolfinx-nn discover --data stations.csv --library u,u_xx,u_yy --out out/st
"""

from __future__ import annotations

import argparse
import pathlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mpi4py import MPI

import dolfinx
import dolfinx.io
import numpy as np

from dolfinx_nn.cli_options import (
    OptionError,
    about_option,
    add_device_argument,
    add_output_arguments,
    add_seed_argument,
    add_threads_argument,
    existing_file,
    mesh_spec,
)
from dolfinx_nn.discovery.data import SpaceTimeData, load_data, save_npz, with_noise
from dolfinx_nn.discovery.datasets import PROBLEMS, simulate_dataset
from dolfinx_nn.discovery.library import LIBRARY_PRESETS, parse_library
from dolfinx_nn.discovery.pipeline import Discovery, DiscoveryConfig, regress, regress_weak
from dolfinx_nn.discovery.regression import SELECTION_CRITERIA
from dolfinx_nn.discovery.simulation import boundary_distance
from dolfinx_nn.discovery.surrogate import SURROGATE_KINDS, SurrogateConfig, fit_surrogate
from dolfinx_nn.discovery.validation import validate, validate_candidates, window_surrogate
from dolfinx_nn.errors import SolverError
from dolfinx_nn.meshes import create_mesh
from dolfinx_nn.output import (
    OutputError,
    check_writable,
    on_root,
    prepare_output_dir,
    print0,
    write_json,
)
from dolfinx_nn.plotting import subplots, write_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMULATION_CHOICES = ("both", "strong", "weak")

#: Measured with /usr/bin/time (user + sys, per rank) on a shared 2-core machine.
RUN_TIME = ("discover has no default data (--data or --simulate is required); the Burgers "
            "example (256 stations x 101 snapshots) takes about 7 s of CPU time on one rank "
            "(17 s wall on a loaded machine, imports included)")

#: A re-simulation error above max(POOR_FLOOR, POOR_NOISE_FACTOR x noise) flags the result.
POOR_FLOOR = 0.05
POOR_NOISE_FACTOR = 3.0


def _data_file(text: str) -> pathlib.Path:
    return pathlib.Path(existing_file(text))


def _library(text: str) -> str:
    """argparse type: a preset or terms (checked for up to 3 space dimensions here)."""
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
    source.add_argument("--data", type=_data_file, help="data file (.npz, .csv or .mat)")
    source.add_argument("--simulate", choices=list(PROBLEMS), help="built-in simulated data set")
    add_output_arguments(parser, "discover")
    parser.add_argument(
        "--library",
        type=_library,
        default="quadratic",
        help=f"preset ({', '.join(LIBRARY_PRESETS)}) or terms, e.g. 'u,u_x,u_xx,u*u_x'",
    )
    parser.add_argument("--formulation", choices=FORMULATION_CHOICES, default="both",
                        help="regression on derivatives (strong), on integrals against test "
                        "functions (weak), or both (the one that predicts the held-out data "
                        "better is reported)")
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
    parser.add_argument("--criterion", choices=list(SELECTION_CRITERIA), default="cv-1se")
    parser.add_argument("--tolerance", type=float, default=0.2,
                        help="relative slack of the cv criterion")
    parser.add_argument("--surrogate", choices=list(SURROGATE_KINDS), default="auto",
                        help="auto: separable for stations observed at every snapshot, kernel "
                        "otherwise")
    parser.add_argument("--margin", type=float, default=None,
                        help="strong form: regression only at stations farther than this from "
                        "the mesh boundary (data units; default: chosen by cross-validation "
                        "among 0 and multiples of the stations' median distance)")
    parser.add_argument("--width", type=int, default=None,
                        help="features of the surrogate (default per kind)")
    parser.add_argument("--candidates", type=int, default=3,
                        help="models per formulation re-simulated side by side: the selected one "
                        "and its neighbours on the Pareto front")
    parser.add_argument("--degree", type=int, default=2, help="Lagrange degree of simulations")
    add_device_argument(parser, default="cpu")
    add_seed_argument(parser)
    add_threads_argument(parser)


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse bad values before any work (every rank sees the same arguments)."""
    if not 0.0 < args.train_fraction < 1.0:
        raise OptionError(f"--train-fraction must lie in (0, 1), got {args.train_fraction}")
    if not (np.isfinite(args.noise) and args.noise >= 0):
        raise OptionError(f"--noise must be >= 0, got {args.noise}")
    if args.margin is not None and not (np.isfinite(args.margin) and args.margin >= 0):
        raise OptionError(f"--margin must be >= 0, got {args.margin}")
    if args.candidates < 1:
        raise OptionError(f"--candidates must be >= 1, got {args.candidates}")
    if args.degree < 1:
        raise OptionError(f"--degree must be >= 1, got {args.degree}")
    if args.width is not None and args.width < 1:
        raise OptionError(f"--width must be >= 1, got {args.width}")


def _box_mesh(comm: MPI.Comm, data: SpaceTimeData, resolution: int) -> dolfinx.mesh.Mesh:
    lo, hi = data.x.min(axis=0), data.x.max(axis=0)
    cells = [max(2, int(np.ceil(resolution * (b - a)))) for a, b in zip(lo, hi, strict=True)]
    if data.dim == 1:
        return dolfinx.mesh.create_interval(comm, cells[0], [lo[0], hi[0]])
    if data.dim == 2:
        return dolfinx.mesh.create_rectangle(comm, [lo, hi], cells)
    return dolfinx.mesh.create_box(comm, [lo, hi], cells)


def _neighbours(found: Discovery, count: int) -> list[dict[str, float]]:
    """The selected model first, then the front's models nearest to it in complexity."""
    front = found.regression.front
    selected = found.regression.selected
    order = sorted(
        range(len(front)), key=lambda i: (abs(front[i].complexity - selected.complexity), i)
    )
    models = [found.coefficients]
    for i in order:
        if len(models) >= count:
            break
        if front[i].support != selected.support:
            models.append(found.candidate_coefficients(front[i]))
    return models


def _summary(found: Discovery) -> dict:
    return {
        "equation": found.equation,
        "coefficients": found.coefficients,
        "raw_coefficients": found.raw_coefficients,
        "selected_cv_error": found.regression.selected.cv_error,
        "pareto_front": found.pareto_front(),
        "collinearity": found.collinearity,
        "timings": found.timings,
        **found.details,
    }


def _plot(out: pathlib.Path, found: dict[str, Discovery], rows: list[dict], comm: MPI.Comm):
    write_figure(out / "pareto.png", lambda: _pareto_figure(found), comm, dpi=120)
    write_figure(out / "validation.png", lambda: _validation_figure(rows), comm, dpi=120)


def _pareto_figure(found: dict[str, Discovery]) -> Figure:
    fig, ax = subplots(figsize=(5, 3.5))
    for name, f in found.items():
        front = f.pareto_front()
        ax.semilogy([r["complexity"] for r in front], [r["cv_error"] for r in front], "o-",
                    label=name)
        ax.semilogy([len(f.regression.selected.support)], [f.regression.selected.cv_error],
                    "r*", ms=12)
    ax.set_xlabel("number of terms")
    ax.set_ylabel("relative cross-validation error")
    ax.legend()
    fig.tight_layout()
    return fig


def _validation_figure(rows: list[dict]) -> Figure:
    fig, ax = subplots(figsize=(6, 4))
    for row in rows:
        if row["rel_l2_error"] is not None:
            ax.semilogy(row["snapshot_errors"], "o-", label=row["equation"][:60], lw=1)
    ax.set_xlabel("held-out snapshot")
    ax.set_ylabel("relative l2 error vs data")
    ax.set_title("DOLFINx re-simulation of the candidates", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def run(args: argparse.Namespace) -> int:
    comm = MPI.COMM_WORLD
    _check_arguments(args)
    out = prepare_output_dir(args.out, comm)
    results: dict = {
        "status": "running",
        "settings": {
            k: str(v) if isinstance(v, pathlib.Path) else v for k, v in vars(args).items()
        },
        "ranks": comm.size,
        "timings": {},
    }
    try:
        _discover(args, comm, out, results)
    except (OptionError, OutputError):
        raise  # one line naming the option, or the file that could not be written
    except Exception as exc:  # noqa: BLE001 - reported in results.json, then exit 1
        stage = results.get("stage", "data")
        results["status"] = "failed"
        results["failure"] = {"stage": stage, "error": f"{type(exc).__name__}: {exc}"}
        write_json(out / "results.json", results, comm)
        print0(f"discover failed in stage '{stage}': {type(exc).__name__}: {exc} "
               f"(partial results in {out / 'results.json'})")
        return 1
    print0(f"wrote {out / 'results.json'}")
    return 0


def _discover(args, comm, out, results) -> None:  # noqa: C901 - one stage after another
    def stage(name: str) -> None:
        results["stage"] = name
        write_json(out / "results.json", results, comm)

    stage("data")
    start = time.perf_counter()
    truth = None
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
            data = with_noise(data, args.noise, np.random.default_rng(args.seed))
        with about_option("--mesh"):
            mesh = (
                create_mesh(comm, args.mesh, args.resolution)
                if args.mesh
                else _box_mesh(comm, data, args.resolution)
            )
    with about_option("--library"):
        library = parse_library(args.library, data.dim)  # fail early on a bad library
    train, _ = data.split(args.train_fraction)
    results["data"] = {
        "source": str(args.data) if args.data else f"simulated:{args.simulate}",
        "points": int(data.x.shape[0]), "snapshots": int(data.t.size),
        "observed": data.num_observed, "train_end": float(train.t[-1]), "noise": args.noise,
        "library_terms": len(library),
    }
    if truth is not None:
        results["true_coefficients"] = truth
    results["timings"]["data_s"] = time.perf_counter() - start

    stage("surrogate")
    start = time.perf_counter()
    config = DiscoveryConfig(
        library=args.library, criterion=args.criterion, tolerance=args.tolerance,
        seed=args.seed,
        surrogate=SurrogateConfig(
            kind=args.surrogate, width=args.width, seed=args.seed, device=args.device
        ),
    )
    surrogate, fit = fit_surrogate(train, config.surrogate, comm=comm)
    results["surrogate"] = fit.as_dict()
    results["timings"]["surrogate_fit_s"] = time.perf_counter() - start
    print0(f"surrogate: {fit.kind}, scales {fit.scales}, ridge {fit.ridge:g}, "
           f"GCV RMS {fit.cv_rmse:.3g} (values / max|u|)")

    stage("regression")
    distance = boundary_distance(mesh, data.x)
    found: dict[str, Discovery] = {}
    if args.formulation in ("both", "strong"):
        stations = distance > args.margin if args.margin is not None else None
        found["strong"] = regress(surrogate, fit, train, config, stations, distance)
        results["strong"] = _summary(found["strong"])
        print0(f"strong form: {found['strong'].equation}")
    if args.formulation in ("both", "weak"):
        try:
            found["weak"] = regress_weak(surrogate, fit, train, config, distance, comm)
            results["weak"] = _summary(found["weak"])
            print0(f"weak form:   {found['weak'].equation}")
        except ValueError as exc:  # e.g. no station deep enough inside the domain
            if args.formulation == "weak":
                raise
            results["weak"] = {"failure": str(exc)}
            print0(f"weak form skipped: {exc}")
    # until validated, the strong form's model (or the only one) is the answer
    first = found.get("strong") or found["weak"]
    results.update(equation=first.equation, coefficients=first.coefficients,
                   formulation=first.formulation)
    _errors(results, truth, first.coefficients)

    stage("validation")
    start = time.perf_counter()
    train_end = float(train.t[-1])
    boundary = window_surrogate(data, train_end, fit, comm)
    models: list = []
    owners: list[str] = []
    for name, f in found.items():
        for model in _neighbours(f, args.candidates):
            if model and all(model != m for m in models):
                models.append(model)
                owners.append(name)
    rows = validate_candidates(models, boundary, mesh, data, train_end, args.degree)
    for row, name in zip(rows, owners, strict=True):
        row["from"] = name
    results["validation"] = rows
    results["timings"]["validation_s"] = time.perf_counter() - start
    finalists = {
        name: next(r for r in rows if r["coefficients"] == f.coefficients)
        for name, f in found.items()
    }
    scored = {
        n: r["rel_l2_error"] for n, r in finalists.items() if r["rel_l2_error"] is not None
    }
    best = min(scored, key=scored.__getitem__) if scored else next(iter(found))
    chosen = found[best]
    results.update(equation=chosen.equation, coefficients=chosen.coefficients,
                   formulation=best, validation_rel_l2_error=finalists[best]["rel_l2_error"],
                   validation_failure=finalists[best]["failure"])
    _errors(results, truth, chosen.coefficients)
    for row in rows:
        err = "failed" if row["rel_l2_error"] is None else f"{row['rel_l2_error']:.3e}"
        print0(f"  held-out error {err:>10}  [{row['from']}] {row['equation']}")
    print0(f"discovered ({best} form): {chosen.equation}")
    results["assessment"] = assess(results["validation_rel_l2_error"], args.noise,
                                   results["validation_failure"])
    if results["assessment"]["poor"]:
        print0(f"WARNING: poor result: {results['assessment']['reason']}; the discovered "
               "equation is probably not the PDE behind the data (try more stations, another "
               "--library or --formulation; see docs/discovery.md)")
    write_json(out / "results.json", results, comm)  # before the optional files
    check_writable(out, comm)  # validation.bp is written during the re-simulation
    _write_validation(out, chosen.coefficients, boundary, mesh, data, train_end, args.degree, comm)
    _plot(out, found, rows, comm)
    results["status"] = "ok"
    stage("done")


def _errors(results: dict, truth: dict | None, found: dict[str, float]) -> None:
    if truth is None:
        return
    results["coefficient_errors"] = {
        name: abs(found.get(name, 0.0) - value) / abs(value) for name, value in truth.items()
    }
    results["spurious_terms"] = {k: v for k, v in found.items() if k not in truth}


def _write_validation(out, coefficients, boundary, mesh, data, train_end, degree, comm) -> None:
    """The chosen equation's re-simulation as ParaView files (skipped if it fails)."""
    writer: list[dolfinx.io.VTXWriter] = []

    def write(u: dolfinx.fem.Function, t: float) -> None:
        if not writer:
            writer.append(dolfinx.io.VTXWriter(comm, out / "validation.bp", [u], engine="BP4"))
        writer[0].write(t)

    try:
        validate(coefficients, boundary, mesh, data, train_end, degree, on_snapshot=write)
    except (SolverError, ValueError):
        pass  # already reported in results["validation"]
    finally:
        for w in writer:
            w.close()


__all__ = ["add_arguments", "run"]


def benchmark_table(
    folder: str | pathlib.Path,
    out: str | pathlib.Path,
    noise_levels: Sequence[float] = (0.0, 0.01),
    scattered_fraction: float = 0.1,
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> list[dict]:
    """This method's defaults vs PySINDy's PDE-FIND and weak-form library on PDE-FIND's data.

    Every method gets the same library: ``u^p d^k u`` with ``p <= 2`` and ``k <= 4`` (and a
    constant), PDE-FIND's standard one.  This method runs ``dolfinx-nn discover --library
    pde-find`` with nothing else set (full grid, and ``scattered_fraction`` of the values
    at random); PySINDy (full grid only) gets its STLSQ threshold chosen *a posteriori* as the
    one with the smallest coefficient error (the most favourable choice for it).

    Args:
        folder: holds the ``.mat`` files of :data:`BENCHMARKS` (absent ones are skipped).
        out: output folder (one ``discover`` run per case).
        noise_levels: relative noise levels (of ``std(u)``).
        scattered_fraction: fraction of the values kept for the scattered case.
        comm: communicator.

    Returns:
        Rows with ``data``, ``noise``, ``sampling``, ``method``, ``coefficients`` and
        :func:`coefficient_error`.
    """
    import json

    from dolfinx_nn.cli import main  # the whole command: output folder, options, exit status
    from dolfinx_nn.discovery.comparison import BENCHMARKS, PEER_THRESHOLDS, coefficient_error
    from dolfinx_nn.discovery.peers import pde_find, weak_pde_find

    folder, out = pathlib.Path(folder), pathlib.Path(out)
    rows = []
    for name, (file, truth) in BENCHMARKS.items():
        if not (folder / file).is_file():
            continue
        clean = load_data(folder / file)
        for noise in noise_levels:
            rng = np.random.default_rng(0)
            data = with_noise(clean, noise, rng) if noise > 0 else clean
            keep = rng.random(data.u.shape) < scattered_fraction
            cases = {
                "full": data,
                "scattered": SpaceTimeData(data.x, data.t, np.where(keep, data.u, np.nan)),
            }
            for sampling, case in cases.items():
                stem = f"{name}_{noise:g}_{sampling}".replace(" ", "_")
                if comm.rank == 0:
                    save_npz(out / f"{stem}.npz", case)
                comm.Barrier()
                code = main(["discover", "--data", str(out / f"{stem}.npz"), "--library",
                             "pde-find", "--out", str(out / stem)])
                results = json.loads((out / stem / "results.json").read_text())
                found = results.get("coefficients", {}) if code == 0 else {}
                rows.append({"data": name, "noise": noise, "sampling": sampling,
                             "method": f"this method ({results.get('formulation', 'failed')})",
                             "coefficients": found, **coefficient_error(found, truth)})
            for method, peer in (("PDE-FIND", pde_find), ("PySINDy weak", weak_pde_find)):
                found = min(
                    (peer(data, t, degree=2, order=4, constant=True) for t in PEER_THRESHOLDS),
                    key=lambda f: coefficient_error(f, truth)["max_rel_error"],
                )
                rows.append({"data": name, "noise": noise, "sampling": "full", "method": method,
                             "coefficients": found, **coefficient_error(found, truth)})
    return rows
