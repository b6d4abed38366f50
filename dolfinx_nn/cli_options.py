"""Options shared by the commands: declared here, applied here.

Declaring (a command's ``add_arguments(parser)`` calls these, in the argument group where its
``--help`` lists the option):

- :func:`add_output_arguments`: ``--out DIR`` (default ``results/<command>``) and
  ``--overwrite``;
- :func:`add_seed_argument`: ``--seed`` (integer, default 0);
- :func:`add_threads_argument`: ``--threads`` (torch threads per rank, an integer >= 1,
  default 1);
- :func:`add_device_argument`: ``--device`` (the torch device of a network);
- option types checked while parsing (the message names the bad value): :func:`formula`,
  :func:`formula_list`, :func:`existing_file`, :func:`mesh_spec`, :func:`positive_int`;
- :func:`about_option` and :class:`OptionError`: a value found wrong later names its option;
- :func:`world_rank`: this process's rank (a parser prints on rank 0 only).

Applying (``dolfinx-nn`` does it for every command and benchmark before ``run(args)``):

- :func:`claim_output`: the folder ``--out`` is claimed (``--overwrite``/``--resume`` honoured,
  see :func:`dolfinx_nn.output.claim_output_dir`) and ``args.out`` names the claimed folder;
- :func:`apply_options`: ``--threads`` sets torch's intra-op threads.  ``--seed`` is not applied
  globally: each command passes it to the configurations that seed their own generators.

A new option that every command shares is declared and applied in this module only (and, if
it is applied before a command runs, called from :func:`apply_options`).
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mpi4py import MPI

    from dolfinx_nn.output import RunFolder

#: Where an option is declared: a parser or one of its argument groups.
type Declarer = argparse.ArgumentParser | argparse._ArgumentGroup

#: Help of ``--threads`` unless a command words it differently.
THREADS_HELP = "torch threads per rank"


# --------------------------------------------------------------------------------------------
# Option types
# --------------------------------------------------------------------------------------------


def world_rank() -> int:
    """This process's rank in ``MPI.COMM_WORLD`` (output and checks on rank 0 only)."""
    from mpi4py import MPI

    return MPI.COMM_WORLD.rank


def _bcast_root(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (argument checks must agree, or a rank hangs)."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    return comm.bcast(value, root=0) if comm.size > 1 else value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def formula(text: str) -> str:
    """argparse type: a formula (x[0], x[1], x[2], t, pi, sin, where, ...), checked now."""
    from dolfinx_nn.expressions import parse_expression

    try:
        parse_expression(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def formula_list(text: str) -> str:
    """argparse type: comma-separated formulas (a vector field such as ``"1, 0.5"``)."""
    parts = _split_top_level(text)
    if not all(p.strip() for p in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated formulas, got {text!r}")
    for part in parts:
        formula(part)
    return text


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(c, 0)
        if c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def existing_file(text: str) -> str:
    """argparse type: a file that exists (checked on rank 0, the same answer on every rank)."""
    path = pathlib.Path(text)
    problem = None
    if world_rank() == 0:
        if not path.exists():
            problem = f"no such file: {text!r}"
        elif not path.is_file():
            problem = f"{text!r} is not a file"
    problem = _bcast_root(problem)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def mesh_spec(text: str) -> str:
    """argparse type: a built-in mesh name or an existing mesh file of a known format.

    The names and suffixes are those :func:`dolfinx_nn.meshes.create_mesh` reads.
    """
    from dolfinx_nn import meshes

    if text in meshes.MESH_KINDS:
        return text
    suffix = pathlib.Path(text).suffix.lower()
    known = meshes.mesh_file_suffixes()
    if suffix not in known:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a built-in mesh ({', '.join(sorted(meshes.MESH_KINDS))}) nor "
            f"a mesh file ({', '.join(known[:6])}, ...)"
        )
    return existing_file(text)


class OptionError(ValueError):
    """A value given on the command line is wrong (the message names the option)."""


@contextlib.contextmanager
def about_option(option: str) -> Iterator[None]:
    """Prefix a ``ValueError``/``OSError`` raised in the block with the option it concerns."""
    try:
        yield
    except OptionError:
        raise
    except (ValueError, OSError) as exc:
        from dolfinx_nn.output import describe_error

        text = describe_error(exc)
        raise OptionError(text if text.startswith(option) else f"{option}: {text}") from exc


# --------------------------------------------------------------------------------------------
# Declaring the shared options
# --------------------------------------------------------------------------------------------


def add_output_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """``--out DIR`` (default ``results/<command>``) and ``--overwrite``, in a group "output"."""
    group = parser.add_argument_group("output")
    group.add_argument(
        "--out", default=f"results/{command.replace('-', '_')}", metavar="DIR",
        help="output folder; if it holds an earlier run's results the run goes to DIR-2, "
             "DIR-3, ... instead (default: %(default)s)",
    )
    group.add_argument("--overwrite", action="store_true",
                       help="write into DIR even if it holds an earlier run's results")


def add_seed_argument(where: Declarer, help: str | None = None) -> None:
    """``--seed`` (integer, default 0); ``help`` says what it seeds in this command."""
    where.add_argument("--seed", type=int, default=0, help=help)


def add_threads_argument(where: Declarer, help: str = THREADS_HELP) -> None:
    """``--threads`` (integer >= 1, default 1), applied by :func:`apply_options`."""
    where.add_argument("--threads", type=positive_int, default=1, help=help)


def add_device_argument(where: Declarer, default: str | None = None,
                        help: str = "torch device of the network") -> None:
    """``--device`` (a torch device name such as ``cpu`` or ``cuda``)."""
    where.add_argument("--device", default=default, help=help)


# --------------------------------------------------------------------------------------------
# Applying them
# --------------------------------------------------------------------------------------------


def apply_options(args: argparse.Namespace) -> None:
    """Apply the shared options a command declared (today ``--threads``) to this process."""
    threads = getattr(args, "threads", None)
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, int(threads)))


def claim_output(args: argparse.Namespace, comm: MPI.Comm, command: str) -> RunFolder | None:
    """Claim the folder ``args.out`` (collective); ``args.out`` becomes the claimed folder.

    ``--overwrite`` and ``--resume`` write into the folder itself; otherwise a folder holding
    an earlier run's results leads to ``DIR-2``, ``DIR-3``, ...

    Returns:
        The claimed folder (release it when the command ends), or None without ``--out``.

    Raises:
        OutputError: on every rank (a file of that name, no permission, another live run).
    """
    if getattr(args, "out", None) is None:
        return None
    from dolfinx_nn.output import claim_output_dir

    folder = claim_output_dir(
        args.out, comm, overwrite=bool(getattr(args, "overwrite", False)),
        resume=bool(getattr(args, "resume", False)), command=command,
    )
    args.out = type(args.out)(folder.path) if isinstance(
        args.out, pathlib.PurePath) else str(folder.path)
    return folder
