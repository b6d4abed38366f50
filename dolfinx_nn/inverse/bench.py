"""Time per training iteration of the network prior, split into its parts.

One iteration of the inverse problem is: evaluate the network at the coefficient dofs
("network", forward and backward through the net), solve the forward problem ("forward":
assembly and LU factorisation), evaluate the misfit and its gradient ("misfit"), solve the
adjoint problem and assemble dJ/dq ("adjoint"; it reuses the forward factorisation), and sum
the gradients over the ranks and take an Adam step ("optimizer").  Each part is timed
separately (maximum over ranks, median over iterations) on the 2D unit square at two mesh
sizes.  The target is forward + adjoint <= 2.5 x forward.

Writes OUT/BENCH_inverse_np<N>.json for N ranks; when the 1-rank and 2-rank files are both
there, also OUT/BENCH_inverse.json with the speed-up of 2 ranks over 1.

Example:
  dolfinx-nn bench inverse --out results/bench
  mpiexec -n 2 dolfinx-nn bench inverse --out results/bench
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

from mpi4py import MPI

import numpy as np
import torch

from dolfinx_nn.cli_options import add_threads_argument
from dolfinx_nn.meshes import bounding_box
from dolfinx_nn.models.inverse_problem import InverseProblem, ProblemSpec, build_problem
from dolfinx_nn.models.poisson import SOLVERS
from dolfinx_nn.networks.coefficient import CoefficientNetwork
from dolfinx_nn.neural_function import NeuralFunction
from dolfinx_nn.output import prepare_output_dir, print0, write_json
from dolfinx_nn.parallel import sync_gradients

PARTS = ("network", "forward", "misfit", "adjoint", "optimizer")


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes such as 64,128, got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return sizes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dolfinx-nn bench inverse``."""
    parser.add_argument("--sizes", type=_sizes, default=(64, 128),
                        help="cells per edge of the unit square (comma-separated)")
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    parser.add_argument("--width", type=int, default=32, help="network width")
    parser.add_argument("--out", default="results/bench", help="output folder")
    add_threads_argument(parser)
    parser.add_argument("--solver", choices=SOLVERS, default="parallel",
                        help="LU solver (dolfinx-nn inverse --help); 'parallel' measures the "
                             "scaling of distributed MUMPS, 'reproducible' the command's default")


def time_iterations(problem: InverseProblem, width: int, iterations: int, warmup: int
                    ) -> dict[str, float]:
    """Median seconds (max over ranks) of each part of a training iteration."""
    comm = problem.comm
    torch.manual_seed(0)
    net = CoefficientNetwork(*bounding_box(problem.model.mesh), width=width)
    q = NeuralFunction(net, problem.model.Q)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    samples: dict[str, list[float]] = {part: [] for part in PARTS}
    for it in range(warmup + iterations):
        comm.Barrier()
        stamps = [time.perf_counter()]
        optimizer.zero_grad()
        q_t = q()
        q_leaf = q_t.detach().requires_grad_(True)
        stamps.append(time.perf_counter())
        u_t = problem.model.solve(q_leaf)
        stamps.append(time.perf_counter())
        u_leaf = u_t.detach().requires_grad_(True)
        problem.observation.misfit(u_leaf).backward()
        stamps.append(time.perf_counter())
        u_t.backward(u_leaf.grad)
        stamps.append(time.perf_counter())
        q_t.backward(q_leaf.grad)
        stamps.append(time.perf_counter())
        sync_gradients(net, comm)
        optimizer.step()
        stamps.append(time.perf_counter())
        if it < warmup:
            continue
        d = np.diff(stamps)
        local = {"network": d[0] + d[4], "forward": d[1], "misfit": d[2], "adjoint": d[3],
                 "optimizer": d[5]}
        for part in PARTS:
            samples[part].append(comm.allreduce(local[part], op=MPI.MAX))
    out = {part: float(np.median(v)) for part, v in samples.items()}
    out["total"] = float(sum(out[p] for p in PARTS))
    out["fem_over_forward"] = (out["forward"] + out["adjoint"]) / out["forward"]
    return out


def run(args: argparse.Namespace) -> int:
    """Time the iterations at each size and write the JSON files."""
    comm = MPI.COMM_WORLD
    out = prepare_output_dir(args.out, comm)
    rows = []
    for n in args.sizes:
        problem = build_problem(ProblemSpec(dim=2, resolution=n, noise=0.01), comm,
                                solver=args.solver)
        timing = time_iterations(problem, args.width, args.iterations, args.warmup)
        dofs = problem.model.V.dofmap.index_map.size_global
        rows.append({"resolution": n, "dofs": dofs, **timing})
        print0(f"n={n:4d} dofs={dofs:7d} " + " ".join(
            f"{k}={1e3 * timing[k]:.2f}ms" for k in (*PARTS, "total"))
            + f" (forward+adjoint)/forward={timing['fem_over_forward']:.2f}", comm=comm)
    write_json(out / f"BENCH_inverse_np{comm.size}.json",
               {"ranks": comm.size, "solver": args.solver, "rows": rows}, comm=comm)
    if comm.rank == 0:
        _combine(out)
    comm.Barrier()
    return 0


def _combine(out: pathlib.Path) -> None:
    """Write BENCH_inverse.json with the 2-over-1-rank speed-up when both runs exist."""
    files = {n: out / f"BENCH_inverse_np{n}.json" for n in (1, 2)}
    if not all(f.is_file() for f in files.values()):
        return
    runs = {n: json.loads(f.read_text())["rows"] for n, f in files.items()}
    combined = []
    for one in runs[1]:
        two = next((r for r in runs[2] if r["resolution"] == one["resolution"]), None)
        if two is not None:
            combined.append({"resolution": one["resolution"], "dofs": one["dofs"],
                             "total_1": one["total"], "total_2": two["total"],
                             "speedup": one["total"] / two["total"],
                             "fem_over_forward_1": one["fem_over_forward"],
                             "fem_over_forward_2": two["fem_over_forward"]})
    (out / "BENCH_inverse.json").write_text(json.dumps({"rows": combined, "ranks": runs},
                                                       indent=2) + "\n")
    for r in combined:
        print(f"n={r['resolution']}: 1 rank {1e3 * r['total_1']:.1f} ms, 2 ranks "
              f"{1e3 * r['total_2']:.1f} ms, speed-up {r['speedup']:.2f}", flush=True)
