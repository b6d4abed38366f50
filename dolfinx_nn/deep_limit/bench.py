"""Cost of constant-weight ResNets and of the neural ODE: forward and gradient.

For a Dense(16, ReLU) -> Dense(d) block and a batch of annulus points, measures the wall time
of one forward pass and of one forward + backward pass (median of --repeat runs) for

  * ConstantWeightResNet at depths N = 1, 4, 16, 64, 256;
  * NeuralODE with Euler/RK4 (N steps) and adaptive Dormand-Prince, direct and adjoint
    gradients, with the number of block evaluations;
  * torchdiffeq's odeint/odeint_adjoint (dopri5) with the same tolerances, when the optional
    package torchdiffeq is installed (`pip install torchdiffeq`); skipped otherwise.

Writes BENCH_deep_limit.json (in --out).  The computation is replicated on every rank (pure
torch); rank 0 writes.  Example:

  python -m dolfinx_nn.deep_limit.bench --batch 256 --out results
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mpi4py import MPI

import torch

from dolfinx_nn.deep_limit.annulus import annulus
from dolfinx_nn.deep_limit.blocks import dense_block
from dolfinx_nn.deep_limit.neural_ode import NeuralODE
from dolfinx_nn.deep_limit.resnet import ConstantWeightResNet
from dolfinx_nn.output import prepare_output_dir, print0, write_json
from dolfinx_nn.timing import median_wall_time

DEPTHS = (1, 4, 16, 64, 256)


def _measure(model: torch.nn.Module, block: torch.nn.Module, x: torch.Tensor,
             repeat: int) -> dict[str, float]:
    def forward():
        with torch.no_grad():
            model(x)

    def gradient():
        block.zero_grad()
        model(x).square().sum().backward()

    return {"forward_s": median_wall_time(forward, None, repeat),
            "forward_backward_s": median_wall_time(gradient, None, repeat)}


def _torchdiffeq_cases(block, x, rtol, atol, repeat) -> dict[str, dict]:
    try:
        torchdiffeq = importlib.import_module("torchdiffeq")
    except ImportError:
        return {"skipped": {"reason": "optional package torchdiffeq is not installed "
                                      "(pip install torchdiffeq)"}}
    t = torch.tensor([0.0, 1.0], dtype=x.dtype)

    class Field(torch.nn.Module):
        def __init__(self, f):
            super().__init__()
            self.f = f

        def forward(self, _t, y):
            return self.f(y)

    field = Field(block)
    out = {}
    for name, odeint in (("direct", torchdiffeq.odeint), ("adjoint", torchdiffeq.odeint_adjoint)):
        def model(y, odeint=odeint):
            return odeint(field, y, t, rtol=rtol, atol=atol, method="dopri5")[-1]
        wrapped = _Callable(model)
        out[f"torchdiffeq dopri5 {name}"] = _measure(wrapped, block, x, repeat)
    return out


class _Callable(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=256, help="number of points (default 256)")
    parser.add_argument("--dim", type=int, default=3, help="state dimension (default 3)")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions (default 5)")
    parser.add_argument("--rtol", type=float, default=1e-6, help="dopri5 rtol (default 1e-6)")
    parser.add_argument("--atol", type=float, default=1e-8, help="dopri5 atol (default 1e-8)")
    parser.add_argument("--out", default=".", help="folder of BENCH_deep_limit.json")


def run(args: argparse.Namespace) -> int:
    comm = MPI.COMM_WORLD
    if args.batch < 1 or args.dim < 2 or args.repeat < 1:
        raise ValueError(f"need --batch >= 1, --dim >= 2, --repeat >= 1; got {args.batch}, "
                         f"{args.dim}, {args.repeat}")
    g = torch.Generator().manual_seed(0)
    block = dense_block(args.dim, 16, "relu", generator=g)
    x, _ = annulus(args.batch, args.dim, generator=g)
    cases: dict[str, dict] = {}
    for n in DEPTHS:
        cases[f"resnet N={n}"] = _measure(ConstantWeightResNet(block, n), block, x, args.repeat)
        for method in ("euler", "rk4"):
            for gradient in ("direct", "adjoint"):
                model = NeuralODE(block, method, steps=n, gradient=gradient)
                cases[f"ode {method} {n} steps {gradient}"] = {
                    **_measure(model, block, x, args.repeat),
                    "evaluations": sum(s.evaluations for s in model.stats)}
    for gradient in ("direct", "adjoint"):
        model = NeuralODE(block, "dopri5", rtol=args.rtol, atol=args.atol, gradient=gradient)
        cases[f"ode dopri5 {gradient}"] = {**_measure(model, block, x, args.repeat),
                                           "evaluations": sum(s.evaluations for s in model.stats)}
    cases.update(_torchdiffeq_cases(block, x, args.rtol, args.atol, args.repeat))
    out = prepare_output_dir(args.out, comm)
    write_json(out / "BENCH_deep_limit.json",
               {"batch": args.batch, "dim": args.dim, "ranks": comm.size,
                "threads": torch.get_num_threads(), "cases": cases}, comm)
    print0("| case | forward (ms) | forward+backward (ms) | block evaluations |", comm=comm)
    print0("|---|---|---|---|", comm=comm)
    for name, c in cases.items():
        if "forward_s" in c:
            print0(f"| {name} | {1e3 * c['forward_s']:.2f} | {1e3 * c['forward_backward_s']:.2f}"
                   f" | {c.get('evaluations', '')} |", comm=comm)
        else:
            print0(f"| {name} | {c} |", comm=comm)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark as ``python -m dolfinx_nn.deep_limit.bench``."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
