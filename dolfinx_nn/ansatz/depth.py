"""Deep versus shallow networks ``N`` at equal parameter count, trained identically.

Berg & Nystrom report that deeper networks reach smaller errors than shallow ones with the
same number of parameters.  :func:`compare_depths` measures this on one problem: ``G`` and
``D`` are fitted once and shared, every network trains on the same loss (the same collocation
points), with the same optimizer settings and initial-weight seed, and only the depth and the
width (chosen to give the same parameter count) differ.

One training run is no evidence: L-BFGS on a non-convex loss amplifies round-off (another CPU,
another rank count) into another trajectory, and the error of one run moves by tens of percent.
The claim is therefore a statistic over initial-weight seeds (:func:`summarize`: medians,
quartiles and extremes per depth, and the per-seed ratio deep / shallow).  Run
``python -m dolfinx_nn.ansatz.depth --seeds 16 --out depth.json`` for the table of
``docs/ansatz.md``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from mpi4py import MPI

import dolfinx
import numpy as np

from dolfinx_nn.ansatz.ansatz import DirichletAnsatz
from dolfinx_nn.ansatz.errors import network_errors, relative_l2
from dolfinx_nn.ansatz.network_solver import (
    NetworkConfig,
    collocation_points,
    final_loss,
    fit_fixed_fields,
    make_loss,
    new_network,
)
from dolfinx_nn.ansatz.networks import parameter_count, width_for_parameters
from dolfinx_nn.ansatz.pdes import Problem
from dolfinx_nn.ansatz.units import canonical, in_user_units
from dolfinx_nn.training import train


@dataclass(frozen=True)
class DepthResult:
    """One trained network of :func:`compare_depths`."""

    depth: int
    width: int
    parameters: int
    seed: int
    relative_l2_error: float
    final_loss: float
    steps: int
    train_time_s: float


def compare_depths(
    problem: Problem,
    mesh: dolfinx.mesh.Mesh,
    reference: dolfinx.mesh.Mesh,
    parameters: int,
    depths: Sequence[int],
    config: NetworkConfig,
    seeds: Sequence[int] = (0,),
) -> list[DepthResult]:
    """Train ``N`` of each depth (and seed) with about ``parameters`` parameters (collective).

    Args:
        problem: the PDE (stationary: the time-dependent ansatz needs its own fields).
        mesh: the mesh of the fits and of the collocation points.
        reference: the mesh on which the errors are measured.
        parameters: target parameter count; each depth gets the width closest to it.
        depths: hidden-layer counts to compare, e.g. ``(4, 1)``.
        config: loss, collocation and training settings (``width``/``depth`` are ignored).
        seeds: seeds of the initial weights; every depth is trained once per seed.

    Returns:
        One :class:`DepthResult` per depth and seed, in the order of ``depths`` then ``seeds``.
    """
    if problem.time_dependent:
        raise ValueError("compare_depths takes a stationary problem")
    if parameters < 1 or not depths or any(d < 1 for d in depths):
        raise ValueError(f"need parameters >= 1 and depths >= 1, got {parameters}, {depths}")
    comm = mesh.comm
    hat = canonical(problem, mesh)  # the network side of solve_network, in canonical units
    fixed = fit_fixed_fields(hat.problem, hat.mesh, config)
    points = (collocation_points(hat.problem, hat.mesh, config) if config.loss == "strong"
              else None)
    results = []
    for depth in depths:
        width = width_for_parameters(problem.input_dim, depth, parameters)
        for seed in seeds:
            network = new_network(hat.problem, hat.mesh, width, depth, seed,
                                  fixed.scales.solution)
            ansatz = DirichletAnsatz(fixed.extension, fixed.distance, network)
            loss = make_loss(hat.problem, hat.mesh, ansatz, config, fixed.scales, points)
            start = time.perf_counter()
            history = train(loss, ansatz.network, config.training, comm=comm,
                            desc=f"depth {depth}, width {width}, seed {seed}")
            elapsed = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
            error = relative_l2(network_errors(problem, in_user_units(ansatz, hat.units),
                                               reference))
            results.append(DepthResult(depth, width, parameter_count(problem.input_dim, width,
                                                                     depth),
                                       seed, error, final_loss(loss), history.steps, elapsed))
    return results


def _spread(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    q25, median, q75 = np.quantile(v, [0.25, 0.5, 0.75])
    return {"median": float(median), "q25": float(q25), "q75": float(q75),
            "min": float(v.min()), "max": float(v.max())}


def summarize(results: Sequence[DepthResult]) -> dict:
    """Statistics over seeds of :func:`compare_depths` results.

    Returns:
        ``{"depths": {depth: {"width", "parameters", "seeds", "relative_l2_error": spread,
        "final_loss": spread}}, "ratios": {"<deep>/<shallow>": spread of the per-seed error
        ratios, with "wins" (seeds where the deeper network is more accurate) and "seeds"}}``;
        a spread is ``{"median", "q25", "q75", "min", "max"}``.
    """
    by_depth: dict[int, list[DepthResult]] = {}
    for r in results:
        by_depth.setdefault(r.depth, []).append(r)
    depths = {
        d: {"width": rs[0].width, "parameters": rs[0].parameters, "seeds": len(rs),
            "relative_l2_error": _spread([r.relative_l2_error for r in rs]),
            "final_loss": _spread([r.final_loss for r in rs])}
        for d, rs in by_depth.items()
    }
    ratios = {}
    ordered = sorted(by_depth, reverse=True)
    for i, deep in enumerate(ordered):
        for shallow in ordered[i + 1:]:
            errors = {r.seed: r.relative_l2_error for r in by_depth[shallow]}
            pairs = [(r.relative_l2_error, errors[r.seed]) for r in by_depth[deep]
                     if r.seed in errors]
            if pairs:
                ratio = [a / b for a, b in pairs]
                ratios[f"{deep}/{shallow}"] = {**_spread(ratio), "seeds": len(ratio),
                                               "wins": int(sum(q < 1.0 for q in ratio))}
    return {"depths": depths, "ratios": ratios}


#: The setting of the documented statistic (``docs/ansatz.md``) and of the test.
EXACT = "sin(2*pi*x[0])*sin(2*pi*x[1]) + x[0]*x[1]"


def main(argv: Sequence[str] | None = None) -> dict:
    """Deep (4 layers) versus shallow (1 layer) over seeds on the square with a hole."""
    from dolfinx_nn.ansatz.compare import refine
    from dolfinx_nn.meshes import create_mesh
    from dolfinx_nn.output import print0, write_json
    from dolfinx_nn.training import TrainingConfig

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0 .. SEEDS-1")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--parameters", type=int, default=300)
    parser.add_argument("--depths", default="4,1")
    parser.add_argument("--steps", type=int, default=800, help="L-BFGS steps")
    parser.add_argument("--resolution", type=int, default=6)
    parser.add_argument("--quadrature-degree", type=int, default=4,
                        help="collocation at the quadrature points of this degree")
    parser.add_argument("--out", default=None, help="JSON file of the results")
    args = parser.parse_args(argv)
    comm = MPI.COMM_WORLD
    mesh = create_mesh(comm, "square-with-hole", args.resolution)
    problem = Problem.from_text("poisson", EXACT, 2)
    config = NetworkConfig(loss="strong", collocation="quadrature",
                           quadrature_degree=args.quadrature_degree, fit_features=300,
                           fit_boundary_points=2000,
                           training=TrainingConfig(adam_steps=0, lbfgs_steps=args.steps))
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    depths = tuple(int(d) for d in args.depths.split(","))
    results = compare_depths(problem, mesh, refine(mesh), args.parameters, depths, config, seeds)
    summary = {"ranks": comm.size, "settings": vars(args), "runs": [asdict(r) for r in results],
               **summarize(results)}
    for d, row in summary["depths"].items():
        e = row["relative_l2_error"]
        print0(f"depth {d} width {row['width']}: median {e['median']:.3e} "
               f"[{e['q25']:.3e}, {e['q75']:.3e}], range [{e['min']:.3e}, {e['max']:.3e}]")
    for name, r in summary["ratios"].items():
        print0(f"ratio {name}: median {r['median']:.3f} [{r['q25']:.3f}, {r['q75']:.3f}], "
               f"range [{r['min']:.3f}, {r['max']:.3f}], deeper wins {r['wins']}/{r['seeds']}")
    if args.out:
        write_json(args.out, summary, comm)
    return summary


if __name__ == "__main__":
    main()
