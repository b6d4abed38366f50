"""The ``dolfinx-nn`` command line.

Each experiment lives in a module that provides ``add_arguments(parser)`` and ``run(args)``
and whose docstring is its help text (and, optionally, ``RUN_TIME``: how long its default run
or first example takes).  Modules are imported only when their command runs, so
``dolfinx-nn --help`` is instant and one module's optional dependency never breaks another.

What every command gets from here, under ``mpiexec`` too:

- ``--out DIR`` (default ``results/<command>``) is claimed before the run: a folder holding an
  earlier run's results is not overwritten (the run goes to ``DIR-2``, ``DIR-3``... unless
  ``--overwrite``), and a folder another live run is writing is refused (a lock file);
- an error ends every rank with one line naming what was wrong (``--debug``: the traceback),
  printed once, not once per rank; argument errors are printed once too;
- ``--help`` shows every default; ``dolfinx-nn --version``.

The options the commands share (``--out``, ``--overwrite``, ``--seed``, ``--threads``,
``--device``, and the training options of every optimizer phase), the option types (formulas,
mesh files, ...) and their application (claiming the output folder, torch threads) live in
:mod:`dolfinx_nn.cli_options`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import textwrap
import time
import traceback
from collections.abc import Sequence
from typing import Any

from dolfinx_nn.cli_options import apply_options, claim_output, world_rank

#: command -> (module, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "inverse": ("dolfinx_nn.inverse.cli", "estimate a PDE coefficient with a network prior"),
    "compare": ("dolfinx_nn.ansatz.cli", "network ansatz u = G + D*N versus FEM on one problem"),
    "monge-ampere": ("dolfinx_nn.monge_ampere.cli", "Monge-Ampere Dirichlet problem (ICNN, FEM)"),
    "discover": ("dolfinx_nn.discovery.cli", "discover a PDE from scattered space-time data"),
    "deep-limit": ("dolfinx_nn.deep_limit.cli",
                   "constant-weight ResNets and their neural-ODE limit"),
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
    "hessian": ("dolfinx_nn.bench.hessian",
                "Hessian-vector products vs gradients and dolfinx-adjoint"),
}

#: Seconds a failed rank waits after printing its error before it aborts the run.
ABORT_GRACE_S = 1.0

#: Exit status of a failed run (argument errors exit with 2, Ctrl-C with 130).
FAILED = 1
INTERRUPTED = 130


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


#: Stands for the help of an option that has none, so that its default is still shown.
_NO_HELP = "-"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the module docstring's layout and shows every option's default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = "" if action.help == _NO_HELP else action.help or ""
        if (
            action.default is argparse.SUPPRESS
            or not action.option_strings
            or isinstance(action, argparse._StoreTrueAction | argparse._HelpAction)
            or "default" in text.lower()
            or action.required
        ):
            return text
        value = action.default
        if value is None:
            shown = "not set"
        elif isinstance(value, list | tuple):
            shown = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        else:
            shown = str(value)
        return f"{text} (default: {shown.replace('%', '%%')})".lstrip()


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that prints on rank 0 only; an error is one line (exit status 2)."""

    def _print_message(self, message: str, file=None) -> None:
        if world_rank() == 0:
            super()._print_message(message, file)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser(prog: str, module: Any, claim_out: bool = True) -> argparse.ArgumentParser:
    run_time = getattr(module, "RUN_TIME", None)
    epilog = textwrap.fill(f"Run time: {run_time}.", width=92) if run_time else None
    parser = _Parser(prog=prog, description=module.__doc__, formatter_class=_HelpFormatter,
                     epilog=epilog)
    module.add_arguments(parser)
    for action in parser._actions:
        if action.help is None and action.option_strings:
            action.help = _NO_HELP
    options = {s for a in parser._actions for s in a.option_strings}
    if "--debug" not in options:
        parser.add_argument("--debug", action="store_true",
                            help="on an error, show the traceback of every failed rank")
    if claim_out and "--out" in options and "--overwrite" not in options:
        parser.add_argument("--overwrite", action="store_true",
                            help="write into --out even if it holds an earlier run's results")
    return parser


# --------------------------------------------------------------------------------------------
# Running a command on every rank
# --------------------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    from dolfinx_nn.output import describe_error

    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return describe_error(exc)


def _agree(prog: str, error: BaseException | None, code: int, debug: bool, guard) -> int:
    """Every rank learns whether any rank failed; the first failure is printed once.

    A failed rank waits at most :data:`dolfinx_nn.parallel.AGREE_TIMEOUT_S` for the others:
    if they do not arrive they are stuck in a collective call it will never join, and it
    aborts the run (after printing its own error) rather than leave them waiting forever.
    ``guard`` is a duplicate of ``COMM_WORLD`` made before the run (so that these calls
    cannot match a collective call the other ranks are stuck in).
    """
    from mpi4py import MPI

    from dolfinx_nn.parallel import agree_max

    comm = MPI.COMM_WORLD
    message = None if error is None else _describe(error)
    if debug and error is not None:
        text = "".join(traceback.format_exception(error))
        print(f"[rank {comm.rank}] {text}", file=sys.stderr, end="", flush=True)
    if comm.size == 1:
        if error is None:
            return code
        print(f"{prog}: error: {message}" + ("" if debug or isinstance(
            error, KeyboardInterrupt) else " (--debug shows the traceback)"),
            file=sys.stderr, flush=True)
        return INTERRUPTED if isinstance(error, KeyboardInterrupt) else FAILED
    kind = 0 if error is None else (2 if isinstance(error, KeyboardInterrupt) else 1)
    total = agree_max([kind, code], guard, failed=error is not None)
    if total is None:
        print(f"{prog}: error on rank {comm.rank}: {message} (the other ranks did "
              "not stop with it; aborting the run)", file=sys.stderr, flush=True)
        # MPI_Abort ends the launcher's forwarding of output too: give it time to
        # pass the line on first (without this pause the line was lost 2 runs in 3).
        time.sleep(ABORT_GRACE_S)
        comm.Abort(FAILED)
        return FAILED  # not reached
    messages = guard.gather(message, root=0)
    if total[0] == 0:
        return int(total[1])
    if comm.rank == 0:
        first = next((m for m in messages if m is not None), "unknown error")
        hint = "" if debug or total[0] == 2 else " (--debug shows the traceback)"
        print(f"{prog}: error: {first}{hint}", file=sys.stderr, flush=True)
    return INTERRUPTED if total[0] == 2 else FAILED


def _run_module(prog: str, module_name: str, argv: Sequence[str], *, debug: bool = False,
                claim_out: bool = True) -> int:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    guard = comm.Dup() if comm.size > 1 else None
    error: BaseException | None = None
    code = 0
    folder = None
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an optional dependency of the command is missing
        error = exc
    else:
        parser = _parser(prog, module, claim_out)
        args = parser.parse_args(list(argv))  # SystemExit(2) on every rank for bad options
        debug = debug or bool(getattr(args, "debug", False))
        try:
            if claim_out:
                folder = claim_output(args, comm, prog)
            apply_options(args)
            code = int(module.run(args) or 0)
        except (Exception, KeyboardInterrupt) as exc:
            error = exc
    try:
        code = _agree(prog, error, code, debug, guard)
    finally:
        if guard is not None:
            guard.Free()
    if folder is not None:
        folder.release(comm, failed=code != 0)
    return code


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


def _dispatch(prog: str, registry: dict, argv: Sequence[str], what: str, header: str,
              debug: bool, claim_out: bool) -> int:
    available = _available(registry)
    if not argv or argv[0] in ("-h", "--help"):
        if world_rank() == 0:
            print(f"usage: {prog} [--version] [--debug] {{{','.join(available)}}} [options]"
                  f"\n\n{header}\n")
            print(_listing(f"{what}s", available))
            print(f"\nRun `{prog} {what.upper()} --help` for the options of one {what}.")
        return 0
    name = argv[0]
    if name not in available:
        choices = ", ".join(available)
        if world_rank() == 0:
            print(f"{prog}: error: unknown {what} {name!r}; choose one of: {choices}",
                  file=sys.stderr)
        return 2
    return _run_module(f"{prog} {name}", available[name][0], argv[1:], debug=debug,
                       claim_out=claim_out)


def version() -> str:
    """``dolfinx-nn X (DOLFINx Y, PyTorch Z, PETSc W)``."""
    from petsc4py import PETSc

    import dolfinx
    import torch

    import dolfinx_nn

    petsc = ".".join(str(v) for v in PETSc.Sys.getVersion())
    return (f"dolfinx-nn {dolfinx_nn.__version__} (DOLFINx {dolfinx.__version__}, "
            f"PyTorch {torch.__version__}, PETSc {petsc})")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dolfinx-nn``; returns the exit status (the same on every rank)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = False
    while argv and argv[0] in ("--debug", "--version", "-V"):
        flag = argv.pop(0)
        if flag == "--debug":
            debug = True
        else:
            from mpi4py import MPI  # noqa: F401  (before dolfinx)

            text = version()
            if world_rank() == 0:
                print(text)
            return 0
    if argv and argv[0] == "bench":
        return _dispatch(
            "dolfinx-nn bench",
            BENCHMARKS,
            argv[1:],
            "benchmark",
            "Measure performance and write BENCH_<name>.json. "
            "Run under `mpiexec -n N` for N ranks.",
            debug,
            claim_out=False,
        )
    header = (
        "PyTorch networks inside DOLFINx forms. Each command runs one experiment and writes\n"
        "DIR/results.json and PNG plots; those that solve on a mesh also write ParaView (VTX)\n"
        "files. Every command runs under `mpiexec -n N dolfinx-nn ...`.\n"
        "`dolfinx-nn bench --help` lists the benchmarks."
    )
    return _dispatch("dolfinx-nn", COMMANDS, argv, "command", header, debug, claim_out=True)


if __name__ == "__main__":
    sys.exit(main())
