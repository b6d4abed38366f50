"""Monge-Ampere: network training time to a target error against d, and FEM time to it.

Network: the ICNN on the smooth case (u = exp(|x|^2/2)) on the unit ball in d = 2..6
(option --dims); training (Adam, then L-BFGS) stops as soon as the relative L2 error on 2000
validation points drops below --target (checked every --check-every steps; the checks are
not timed).  Reported: wall time and steps to the target, or the error reached within the
step budget.

FEM: the C0 penalty P2 method on the unit square/cube (smooth case), meshes refined until the
relative L2 error is below --target; reported: the time of the first solve that reaches it
(form compilation excluded by a warm-up solve) and its dofs.

Rank 0 writes BENCH_monge-ampere.json into --out.  Runs under mpiexec -n N (points and
meshes are split over the ranks).

Example:
  dolfinx-nn bench monge-ampere --out results/bench
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from mpi4py import MPI

import numpy as np
import torch

from dolfinx_nn.cli_options import (
    add_threads_argument,
    add_training_arguments,
    training_from_args,
)
from dolfinx_nn.monge_ampere.cases import get_case
from dolfinx_nn.monge_ampere.domains import Ball
from dolfinx_nn.monge_ampere.network_solver import (
    DEFAULT_TRAINING,
    NetworkConfig,
    evaluate,
    solve_network,
)
from dolfinx_nn.monge_ampere.networks import make_network
from dolfinx_nn.output import prepare_output_dir, print0, write_json

#: Training settings: the solver's ``DEFAULT_TRAINING`` with a longer budget (the run stops at
#: the target error).
TRAINING = replace(DEFAULT_TRAINING, adam_steps=1000, lbfgs_steps=500)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dolfinx-nn bench monge-ampere``."""
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3, 4, 5, 6])
    parser.add_argument("--target", type=float, default=1e-2, help="relative L2 error")
    add_training_arguments(parser, TRAINING)
    parser.add_argument("--n-interior", type=int, default=1000)
    parser.add_argument("--check-every", type=int, default=10)
    parser.add_argument("--fem-resolutions", type=int, nargs="+", default=[2, 3, 4, 6, 8, 12])
    add_threads_argument(parser)
    parser.add_argument("--out", default=".", help="folder of BENCH_monge-ampere.json")


class _StopAtError:
    """Training callback: True once the validation error is below the target (untimed)."""

    def __init__(self, case, domain, target: float, every: int, comm: MPI.Comm):
        self.case, self.domain, self.target = case, domain, target
        self.every, self.comm = every, comm
        self.net: torch.nn.Module | None = None  # set before training starts
        self.steps: int | None = None
        self.paused = 0.0
        self.error = np.inf

    def __call__(self, steps_done: int, loss: float) -> bool:
        if steps_done % self.every:
            return False
        if self.net is None:
            raise RuntimeError("_StopAtError.net must be set before training")
        start = time.perf_counter()
        self.error = evaluate(self.net, self.case, self.domain, 2000, 1e-8, self.comm,
                              seed=99)["rel_l2_error"]
        self.paused += time.perf_counter() - start
        if self.error < self.target:
            self.steps = steps_done
            return True
        return False


def network_time_to_error(dim: int, args, comm: MPI.Comm) -> dict:
    """Train the ICNN in ``dim`` dimensions until the target error; time and steps."""
    case, domain = get_case("smooth"), Ball(dim)
    config = NetworkConfig(training=training_from_args(args, TRAINING),
                           n_interior=args.n_interior, n_boundary=max(args.n_interior // 2, 100),
                           n_test=10_000)
    stop = _StopAtError(case, domain, args.target, args.check_every, comm)
    torch.manual_seed(config.seed)
    lower, upper = domain.bounds
    stop.net = make_network("icnn", dim, width=config.width, depth=config.depth, lower=lower,
                            upper=upper)
    result = solve_network(case, domain, config, comm, callback=stop, net=stop.net)
    return {
        "dim": dim,
        "reached": stop.steps is not None,
        "steps": stop.steps,
        "time_s": result.wall_time_s - comm.allreduce(stop.paused, op=MPI.MAX),
        "rel_l2_error": result.rel_l2_error,
        "convexity_violation_fraction": result.convexity_violation_fraction,
    }


def fem_time_to_error(dim: int, args, comm: MPI.Comm) -> dict:
    """Refine until the FEM error is below the target; time of that solve."""
    from dolfinx_nn.meshes import create_mesh
    from dolfinx_nn.monge_ampere.fem import solve_fem

    shape = {2: "square", 3: "cube"}[dim]
    case = get_case("smooth")
    solve_fem(case, create_mesh(comm, shape, 2), center=[0.5] * dim)  # compile the forms
    for n in args.fem_resolutions:
        res = solve_fem(case, create_mesh(comm, shape, n), center=[0.5] * dim)
        if res.rel_l2_error < args.target:
            return {"dim": dim, "reached": True, "resolution": n, **res.summary(),
                    "time_s": res.wall_time_s}
    return {"dim": dim, "reached": False, **res.summary(), "time_s": res.wall_time_s}


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and write BENCH_monge-ampere.json."""
    if not 0 < args.target < 1:
        raise ValueError(f"--target must be in (0, 1), got {args.target}")
    comm = MPI.COMM_WORLD
    out = prepare_output_dir(args.out, comm)
    network = []
    for dim in args.dims:
        row = network_time_to_error(dim, args, comm)
        print0(f"network d={dim}: {row}")
        network.append(row)
    fem = []
    for dim in (2, 3):
        row = fem_time_to_error(dim, args, comm)
        print0(f"fem d={dim}: {row}")
        fem.append(row)
    write_json(out / "BENCH_monge-ampere.json",
               {"target": args.target, "ranks": comm.size, "network": network, "fem": fem}, comm)
    print0(f"wrote {out / 'BENCH_monge-ampere.json'}")
    return 0
