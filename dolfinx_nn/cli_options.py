"""Options shared by the commands: declared here, applied here.

Declaring (a command's ``add_arguments(parser)`` calls these, in the argument group where its
``--help`` lists the option):

- :func:`add_output_arguments`: ``--out DIR`` (default ``results/<command>``) and
  ``--overwrite``;
- :func:`add_seed_argument`: ``--seed`` (integer, default 0);
- :func:`add_threads_argument`: ``--threads`` (torch threads per rank, an integer >= 1,
  default 1);
- :func:`add_device_argument`: ``--device`` (the torch device of a network), only in
  commands whose networks can run on another device;
- :func:`add_training_arguments`: the options of :class:`~dolfinx_nn.training.TrainingConfig`
  (``--<phase>-steps``, ``--<phase>-lr``, ... for every optimizer phase of the registry
  :data:`~dolfinx_nn.training.phases.PHASES`, ``--phases``), with the command's defaults;
  :func:`training_from_args` builds the ``TrainingConfig`` back;
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
import dataclasses
import pathlib
import re
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mpi4py import MPI

    from dolfinx_nn.output import RunFolder
    from dolfinx_nn.training import TrainingConfig

#: Where an option is declared: a parser or one of its argument groups.
type Declarer = argparse.ArgumentParser | argparse._ArgumentGroup

#: Help of ``--threads`` (the same words in every command).
THREADS_HELP = "torch threads per MPI rank (small networks run fastest on one)"
#: Help of ``--seed``.
SEED_HELP = "seed of the run's random numbers (data, noise, sample points, network weights)"
#: Help of ``--device``.
DEVICE_HELP = "torch device of the network (cpu, cuda, ...)"


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


def add_seed_argument(where: Declarer, default: int = 0) -> None:
    """``--seed`` (integer, default 0), worded as :data:`SEED_HELP` in every command."""
    where.add_argument("--seed", type=int, default=default, help=SEED_HELP)


def add_threads_argument(where: Declarer) -> None:
    """``--threads`` (integer >= 1, default 1), applied by :func:`apply_options`."""
    where.add_argument("--threads", type=positive_int, default=1, help=THREADS_HELP)


def add_device_argument(where: Declarer, default: str | None = None) -> None:
    """``--device`` (a torch device name such as ``cpu`` or ``cuda``)."""
    where.add_argument("--device", default=default, help=DEVICE_HELP)


def add_training_arguments(where: Declarer, defaults: TrainingConfig, *,
                           phases: Sequence[str] | None = None,
                           fields: Sequence[str] = ()) -> None:
    """The training options of a command, from the registry of optimizer phases.

    For every phase of :data:`~dolfinx_nn.training.phases.PHASES` (or of ``phases``) in the
    registry's order: ``--<phase>-steps`` and one option per setting of the phase
    (``--adam-lr``, ``--lbfgs-lr``, ``--lbfgs-history``, ``--sgd-lr``, ``--sgd-momentum``,
    ...), then ``--phases`` (the order the phases run in); then one option per name in
    ``fields`` (other :class:`~dolfinx_nn.training.TrainingConfig` fields such as
    ``checkpoint_every``).  An option ``--a-b`` sets the field ``a_b`` and its default is that
    field of ``defaults`` (the command's ``DEFAULT_TRAINING``).  A new phase in the registry is
    thus an option of every command that declares its training options here.
    :func:`training_from_args` turns them back into a ``TrainingConfig``.

    Call it more than once to put options in different argument groups (``phases=()`` for
    ``fields`` only).

    Raises:
        ValueError: a name of ``phases`` or ``fields`` is not a phase / field.
    """
    from dolfinx_nn.training.phases import PHASES, get_phase

    names: list[str] = []
    chosen = list(PHASES) if phases is None else [get_phase(p).name for p in phases]
    for name in chosen:
        names += [f"{name}_steps", *PHASES[name].settings]
    types = {f.name: str(f.type) for f in dataclasses.fields(defaults)}
    for name in fields:
        if name not in types or name in ("phases", "seed"):
            raise ValueError(f"{name!r} is not a TrainingConfig field with an option here "
                             "(--seed and --phases are declared separately)")
    for name in (*names, *fields):
        where.add_argument(f"--{name.replace('_', '-')}", dest=name, action=_Given,
                           type=_field_type(types[name]), default=getattr(defaults, name),
                           help=_training_help(name))
    if chosen:
        where.add_argument(
            "--phases", action=_Given, type=_phase_list, default=defaults.phases,
            metavar="NAME,...",
            help=f"optimizer phases in the order they run ({', '.join(PHASES)}); a phase not "
                 "listed does not run; without --phases, a phase given --<name>-steps runs "
                 "after the others",
        )
        names.append("phases")
    where.set_defaults(**{_DECLARED: (*(where.get_default(_DECLARED) or ()), *names, *fields)})


def training_from_args(args: argparse.Namespace, defaults: TrainingConfig) -> TrainingConfig:
    """The :class:`~dolfinx_nn.training.TrainingConfig` of the options that
    :func:`add_training_arguments` declared: ``defaults`` with the values of those options.

    The phases: ``--phases`` if given (a phase not listed runs 0 steps); otherwise those of
    ``defaults``, followed, in the registry's order, by each phase whose steps were given.

    Raises:
        OptionError: a value ``TrainingConfig`` refuses, or steps given to a phase that
            ``--phases`` leaves out (the message names the option).
    """
    from dolfinx_nn.training.phases import PHASES

    declared = tuple(getattr(args, _DECLARED, ()))
    values: dict[str, Any] = {name: getattr(args, name) for name in declared
                              if name != "phases"}
    given: set[str] = getattr(args, _GIVEN, set())
    if "phases" in declared:
        phases = tuple(args.phases)
        if "phases" in given:
            for name in PHASES:
                if name in phases or f"{name}_steps" not in values:
                    continue
                if f"{name}_steps" in given and values[f"{name}_steps"] > 0:
                    raise OptionError(
                        f"{_option(name + '_steps')} {values[name + '_steps']} but {name!r} is "
                        f"not in --phases {','.join(phases)}; list it there or leave it out")
                values[f"{name}_steps"] = 0
        else:
            phases += tuple(name for name in PHASES if name not in phases
                            and f"{name}_steps" in given and values[f"{name}_steps"] > 0)
        values["phases"] = phases
    try:
        return dataclasses.replace(defaults, **values)
    except ValueError as exc:
        raise OptionError(re.sub(r"TrainingConfig\.(\w+)",
                                 lambda m: _option(m.group(1)), str(exc))) from None


#: Attribute of the parsed options: the dests of training options given on the command line.
_GIVEN = "_training_options_given"
#: Attribute of the parsed options: the training options a command declared.
_DECLARED = "_training_options_declared"

#: Help of the training options other than a phase's steps and learning rate.
_TRAINING_HELP = {
    "lbfgs_history": "L-BFGS correction pairs kept",
    "sgd_momentum": "SGD momentum (heavy ball; 0: none)",
    "checkpoint_every": "steps between checkpoints (0: only at the end and on Ctrl-C)",
    "tolerance": "stop once the loss is <= this ('none': never)",
    "patience": "stop after this many steps without a relative improvement by more than "
                "--min-delta ('none': never)",
    "min_delta": "relative improvement that resets --patience",
    "log_every": "steps between refreshes of the loss shown while training",
}


class _Given(argparse.Action):
    """Stores the value and records that the option was given (not left at its default)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        given: set[str] = set(getattr(namespace, _GIVEN, set()))
        setattr(namespace, _GIVEN, given | {self.dest})


def _option(field: str) -> str:
    return f"--{field.replace('_', '-')}"


def _training_help(name: str) -> str:
    from dolfinx_nn.training.phases import PHASES

    phase, _, setting = name.partition("_")
    if phase in PHASES and setting == "steps":
        return f"{PHASES[phase].label} steps; 0 skips the phase"
    if phase in PHASES and setting == "lr":
        return f"{PHASES[phase].label} learning rate"
    if name in _TRAINING_HELP:
        return _TRAINING_HELP[name]
    label = PHASES[phase].label if phase in PHASES else "training"
    return f"{label} setting TrainingConfig.{name}"


def _field_type(annotation: str) -> Callable[[str], Any]:
    """argparse type of a TrainingConfig field annotated ``annotation`` (int, float, ...)."""
    base = int if annotation.startswith("int") else float
    optional = "None" in annotation

    def parse(text: str) -> Any:
        if optional and text.lower() == "none":
            return None
        try:
            return base(text)
        except ValueError:
            kind = "an integer" if base is int else "a number"
            raise argparse.ArgumentTypeError(
                f"expected {kind}{' or none' if optional else ''}, got {text!r}") from None

    parse.__name__ = base.__name__
    return parse


def _phase_list(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated names of optimizer phases."""
    from dolfinx_nn.training.phases import PHASES

    names = tuple(n.strip() for n in text.split(","))
    unknown = [n for n in names if n not in PHASES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown optimizer phase {unknown[0]!r}; choose from: {', '.join(PHASES)}")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a phase is listed twice in {text!r}")
    return names


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
