"""The ``dolfinx-nn`` command line.

Each experiment lives in a module that provides ``add_arguments(parser)`` and ``run(args)``
and whose docstring is its help text.  Modules are imported only when their command runs, so
``dolfinx-nn --help`` is instant and one module's optional dependency never breaks another.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

#: command -> (module, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "inverse": ("dolfinx_nn.inverse.cli", "estimate a PDE coefficient with a network prior"),
    "compare": ("dolfinx_nn.ansatz.cli", "network ansatz u = G + D*N versus FEM on one problem"),
    "monge-ampere": ("dolfinx_nn.monge_ampere.cli", "Monge-Ampere Dirichlet problem (ICNN, FEM)"),
    "discover": ("dolfinx_nn.discovery.cli", "discover a PDE from scattered space-time data"),
    "deep-limit": ("dolfinx_nn.deep_limit.cli", "constant-weight ResNets and their neural-ODE limit"),
    "diffmap": ("dolfinx_nn.diffusion_maps.cli", "diffusion maps of optimizer trajectories"),
}

#: benchmark -> (module, one-line summary)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "bridge": ("dolfinx_nn.bench.bridge", "forward/gradient cost of the bridge vs dolfinx-adjoint"),
    "operator": ("dolfinx_nn.bench.operator", "network operators in Jacobian/residual assembly"),
    "inverse": ("dolfinx_nn.inverse.bench", "time per inverse-problem training iteration"),
    "compare": ("dolfinx_nn.ansatz.bench", "time to a given error: FEM vs network ansatz"),
    "monge-ampere": ("dolfinx_nn.monge_ampere.bench", "Monge-Ampere training time vs dimension"),
    "discover": ("dolfinx_nn.discovery.bench", "PDE discovery cost vs number of data points"),
    "diffmap": ("dolfinx_nn.diffusion_maps.bench", "diffusion maps vs peers, 1e4/1e5 points"),
    "deep-limit": ("dolfinx_nn.deep_limit.bench", "cost of constant-weight ResNets vs neural ODEs"),
    "reuse": ("dolfinx_nn.bench.reuse", "time loops, batches, transposed factors, multigrid"),
    "hessian": ("dolfinx_nn.bench.hessian", "Hessian-vector products vs gradients and dolfinx-adjoint"),
}


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _available(registry: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    return {k: v for k, v in registry.items() if _exists(v[0])}


def _listing(title: str, registry: dict[str, tuple[str, str]]) -> str:
    width = max((len(k) for k in registry), default=0)
    rows = "\n".join(f"  {k.ljust(width)}  {summary}" for k, (_, summary) in registry.items())
    return f"{title}:\n{rows}"


def _run_module(prog: str, module_name: str, argv: Sequence[str]) -> int:
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=prog,
        description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    args = parser.parse_args(list(argv))
    result = module.run(args)
    # Rank 0 writes the files: return on every rank only once they are all there.
    from mpi4py import MPI

    MPI.COMM_WORLD.Barrier()
    return int(result or 0)


def _dispatch(prog: str, registry: dict, argv: Sequence[str], what: str, header: str) -> int:
    available = _available(registry)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {prog} {{{','.join(available)}}} [options]\n\n{header}\n")
        print(_listing(f"{what}s", available))
        print(f"\nRun `{prog} {what.upper()} --help` for the options of one {what}.")
        return 0
    name = argv[0]
    if name not in available:
        choices = ", ".join(available)
        print(f"{prog}: error: unknown {what} {name!r}; choose one of: {choices}", file=sys.stderr)
        return 2
    return _run_module(f"{prog} {name}", available[name][0], argv[1:])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dolfinx-nn``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        return _dispatch(
            "dolfinx-nn bench",
            BENCHMARKS,
            argv[1:],
            "benchmark",
            "Measure performance and write BENCH_<name>.json. Run under `mpiexec -n N` for N ranks.",
        )
    header = (
        "PyTorch networks inside DOLFINx forms. Each command runs one experiment and writes\n"
        "DIR/results.json, PNG plots and ParaView files. Every command runs under\n"
        "`mpiexec -n N dolfinx-nn ...`.  `dolfinx-nn bench --help` lists the benchmarks."
    )
    return _dispatch("dolfinx-nn", COMMANDS, argv, "command", header)


if __name__ == "__main__":
    sys.exit(main())
