"""Rank-aware output: result folders, atomic files, collective error handling and progress.

Under MPI rank 0 writes the files while the other ranks wait for it.  If a rank-0 write fails
(read-only folder, a file where a folder should be, a full disk) and only rank 0 raises, the
other ranks wait forever.  Every helper here therefore runs its rank-0 action, broadcasts the
outcome and raises the same :class:`OutputError` on every rank.  Files are written atomically
(a temporary file in the same folder, then a rename), so a failed write never leaves half a
file or a stray ``.tmp``, and never destroys an earlier complete file.

A run's folder is claimed with :func:`claim_output_dir`: it refuses a folder another live run
is writing (a lock file naming host and process) and never reuses a folder holding an earlier
run's results unless asked (``overwrite=True``): it picks the next free ``DIR-2``, ``DIR-3``...

:func:`progress` shows a tqdm bar (phase, k of n, time left) on rank 0 when stderr is a
terminal; otherwise it prints one line per phase (and, for phases longer than
:data:`HEARTBEAT_S`, one line per :data:`HEARTBEAT_S` seconds), never a stream of
carriage-return updates.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from typing import Any

from mpi4py import MPI

import numpy as np

from dolfinx_nn.parallel import raise_on_all_ranks

#: Name of the lock file a running command keeps in its output folder.
LOCK_NAME = ".dolfinx-nn.lock"

#: Seconds between two progress lines of one long phase when stderr is not a terminal.
HEARTBEAT_S = 600.0


class OutputError(RuntimeError):
    """A file or folder could not be written; raised on every rank with the same message."""


def is_root(comm: MPI.Comm = MPI.COMM_WORLD) -> bool:
    """True on rank 0 of ``comm``."""
    return comm.rank == 0


def print0(*args: Any, comm: MPI.Comm = MPI.COMM_WORLD, **kwargs: Any) -> None:
    """``print`` on rank 0 only."""
    if comm.rank == 0:
        print(*args, **kwargs, flush=True)


def describe_error(exc: BaseException) -> str:
    """One line saying what went wrong (``OSError``: the system's words and the file)."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        text = f"{exc.strerror}{where}"
    elif isinstance(exc, ValueError | RuntimeError | OSError | ImportError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) or type(exc).__name__


def on_root[T](action: Callable[[], T], what: str, comm: MPI.Comm = MPI.COMM_WORLD) -> T | None:
    """Run ``action()`` on rank 0; if it raises, raise :class:`OutputError` on every rank.

    Args:
        action: the rank-0 work (write a file, make a folder).
        what: what it does, for the message (e.g. ``"cannot write results/x/results.json"``).
        comm: communicator whose ranks wait for the outcome.

    Returns:
        The action's return value on rank 0, ``None`` elsewhere.

    Raises:
        OutputError: on every rank, ``"{what}: {reason}"``.
    """
    result: T | None = None
    error = None
    if comm.rank == 0:
        try:
            result = action()
        except Exception as exc:
            error = OutputError(f"{what}: {describe_error(exc)}")
    raise_on_all_ranks(error, comm)
    return result


@contextlib.contextmanager
def collective_output(what: str, comm: MPI.Comm = MPI.COMM_WORLD) -> Iterator[None]:
    """Run a block on every rank; if it fails on any rank, raise the same error on all.

    For collective writers (VTX/ADIOS2): the block must not fail on one rank while another
    is inside a collective call of the block; :func:`check_writable` beforehand turns the
    usual failures (read-only folder, missing folder) into a rank-0 check.
    """
    error: Exception | None = None
    try:
        yield
    except OutputError as exc:  # raised on every rank by a helper here; it names the file
        error = exc
    except Exception as exc:
        error = OutputError(f"{what}: {describe_error(exc)}")
    raise_on_all_ranks(error, comm)


def atomic_write(path: str | pathlib.Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (one process).

    On failure the temporary file is removed and an existing ``path`` is left untouched.
    """
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _make_folder(path: pathlib.Path) -> pathlib.Path:
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(20, "it is a file, not a folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def prepare_output_dir(path: str | pathlib.Path, comm: MPI.Comm = MPI.COMM_WORLD) -> pathlib.Path:
    """Create the folder ``path`` (on rank 0) and return it once every rank can see it.

    Raises:
        OutputError: on every rank, if it cannot be created (a file of that name, no
            permission, ...).
    """
    path = pathlib.Path(path)
    on_root(lambda: _make_folder(path), f"cannot create the folder {path}", comm)
    return path


def check_writable(folder: str | pathlib.Path, comm: MPI.Comm = MPI.COMM_WORLD) -> None:
    """Raise :class:`OutputError` on every rank unless rank 0 can create files in ``folder``."""
    folder = pathlib.Path(folder)

    def probe() -> None:
        _make_folder(folder)
        atomic_write(folder / ".write-probe", b"")
        (folder / ".write-probe").unlink()

    on_root(probe, f"cannot write in {folder}", comm)


def file_sha256(path: str | pathlib.Path | None, comm: MPI.Comm = MPI.COMM_WORLD) -> str | None:
    """SHA-256 of a file's bytes, read on rank 0 (None: no path, or not a file such as a
    built-in mesh name); the same value on every rank."""
    digest = None
    if comm.rank == 0 and path is not None and pathlib.Path(path).is_file():
        digest = hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
    return comm.bcast(digest, root=0) if comm.size > 1 else digest


def _to_builtin(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_builtin(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_builtin(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    if hasattr(obj, "item") and hasattr(obj, "numel") and obj.numel() == 1:  # 0-dim tensor
        return obj.item()
    return obj


def write_json(path: str | pathlib.Path, data: dict | list,
               comm: MPI.Comm = MPI.COMM_WORLD) -> None:
    """Write ``data`` as indented JSON on rank 0, atomically (numpy/torch scalars converted).

    Raises:
        OutputError: on every rank, if the file cannot be written.
    """
    path = pathlib.Path(path)

    def write() -> None:
        atomic_write(path, (json.dumps(_to_builtin(data), indent=2) + "\n").encode())

    on_root(write, f"cannot write {path}", comm)


def write_text(path: str | pathlib.Path, text: str, comm: MPI.Comm = MPI.COMM_WORLD) -> None:
    """Write ``text`` (a table, a report) on rank 0, atomically.

    Raises:
        OutputError: on every rank, if the file cannot be written.
    """
    path = pathlib.Path(path)
    on_root(lambda: atomic_write(path, text.encode()), f"cannot write {path}", comm)


def write_on_root(
    path: str | pathlib.Path, writer: Callable[[pathlib.Path], Any],
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> None:
    """Call ``writer(path)`` on rank 0 (a plot, a table); its failure is raised on every rank."""
    path = pathlib.Path(path)
    on_root(lambda: writer(path), f"cannot write {path}", comm)


def write_vtx(
    path: str | pathlib.Path, functions: list, comm: MPI.Comm = MPI.COMM_WORLD,
    *, time_value: float = 0.0, engine: str | None = None,
) -> None:
    """Write ``functions`` to the ParaView (VTX) file ``path`` at one time (collective).

    Raises:
        OutputError: on every rank, if the folder is not writable or ADIOS2 fails.
    """
    import dolfinx.io

    path = pathlib.Path(path)
    check_writable(path.parent, comm)
    kwargs = {} if engine is None else {"engine": engine}
    with collective_output(f"cannot write {path}", comm):
        with dolfinx.io.VTXWriter(comm, path, functions, **kwargs) as writer:
            writer.write(time_value)


# --------------------------------------------------------------------------------------------
# Tables of reports
# --------------------------------------------------------------------------------------------


def format_value(row: Mapping[str, Any], key: str, spec: str = ".2e", missing: str = "-") -> str:
    """``row[key]`` formatted with ``spec``, or ``missing`` if the row has no such entry."""
    value = row.get(key)
    return missing if value is None else format(value, spec)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]],
                   align: Sequence[str] | None = None) -> str:
    """A Markdown table (no trailing newline).

    Args:
        header: the column titles.
        rows: one sequence of cells per row (converted with ``str``; a short row is padded
            with empty cells).
        align: per column ``"l"`` or ``"r"`` (default: all left).

    Raises:
        ValueError: a row longer than the header, or ``align`` of another length.
    """
    align = align or ["l"] * len(header)
    if len(align) != len(header):
        raise ValueError(f"align has {len(align)} entries for {len(header)} columns")
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    for row in rows:
        cells = [str(c) for c in row]
        if len(cells) > len(header):
            raise ValueError(f"a row has {len(cells)} cells for {len(header)} columns: {cells}")
        cells += [""] * (len(header) - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The folder of one run
# --------------------------------------------------------------------------------------------


def _lock_owner(lock: pathlib.Path) -> dict[str, Any] | None:
    """The live run holding ``lock`` (host, pid, command), or None if it is stale or absent."""
    try:
        owner = json.loads(lock.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"host": "?", "pid": "?", "command": "an unreadable lock"}
    if owner.get("host") != socket.gethostname():
        return owner  # cannot tell from here: respect it
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return None
    except (PermissionError, KeyError, TypeError, ValueError):
        return owner
    return owner


def _holds_results(folder: pathlib.Path) -> bool:
    return folder.is_dir() and any(p.name != LOCK_NAME for p in folder.iterdir())


class RunFolder:
    """The output folder a command claimed, with its lock (see :func:`claim_output_dir`).

    Attributes:
        path: the folder the run writes to (``DIR`` or a free ``DIR-k``).
        requested: the folder asked for.
        created: whether this run created the folder.
    """

    def __init__(self, path: pathlib.Path, requested: pathlib.Path, created: bool, token: str):
        self.path = path
        self.requested = requested
        self.created = created
        self._token = token

    def release(self, comm: MPI.Comm = MPI.COMM_WORLD, *, failed: bool = False) -> None:
        """Remove the lock (rank 0); a folder this run created and left empty goes too."""
        if comm.rank != 0:
            return
        lock = self.path / LOCK_NAME
        with contextlib.suppress(OSError, ValueError):
            if json.loads(lock.read_text()).get("token") == self._token:
                lock.unlink()
        if failed and self.created:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if empty


def _claim(path: pathlib.Path, overwrite: bool, resume: bool, command: str):
    def owner_text(owner: dict[str, Any]) -> str:
        return (f"being written by another run ({owner.get('command', '?')}, process "
                f"{owner.get('pid')} on "
                f"{owner.get('host')}, started {owner.get('started', '?')})")

    candidate, note = path, None
    if not (overwrite or resume):
        k = 1
        while True:
            is_file = candidate.exists() and not candidate.is_dir()
            if is_file and candidate == path:
                raise NotADirectoryError(20, "it is a file, not a folder")
            owner = None if is_file else _lock_owner(candidate / LOCK_NAME)
            if owner is not None and candidate == path:
                raise FileExistsError(
                    f"{path} is {owner_text(owner)}; choose another --out, or wait. If that "
                    f"run is gone, delete {path / LOCK_NAME}."
                )
            if not is_file and owner is None and not _holds_results(candidate):
                break
            k += 1
            candidate = path.with_name(f"{path.name}-{k}")
        if candidate != path:
            note = (f"{path} holds the results of an earlier run: writing to {candidate} "
                    "(--overwrite replaces them instead)")
    else:
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(20, "it is a file, not a folder")
        owner = _lock_owner(path / LOCK_NAME)
        if owner is not None:
            raise FileExistsError(
                f"{path} is {owner_text(owner)}; wait for it to finish. If that run is gone, "
                f"delete {path / LOCK_NAME}."
            )
    created = not candidate.exists()
    candidate.mkdir(parents=True, exist_ok=True)
    lock = candidate / LOCK_NAME
    with contextlib.suppress(FileNotFoundError):
        lock.unlink()  # stale (checked above)
    token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "command": command,
             "started": time.strftime("%Y-%m-%d %H:%M:%S"), "token": token}
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise FileExistsError(
            f"{candidate} is {owner_text(_lock_owner(lock) or {})}; choose another --out."
        ) from None
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(owner))
    return candidate, created, token, note


def claim_output_dir(
    path: str | pathlib.Path, comm: MPI.Comm = MPI.COMM_WORLD, *, overwrite: bool = False,
    resume: bool = False, command: str = "dolfinx-nn", option: str = "--out",
) -> RunFolder:
    """Claim the output folder of a run (collective; rank 0 checks and locks).

    - ``path`` is a file, or cannot be created or written: :class:`OutputError`;
    - another live run holds its lock (``path/.dolfinx-nn.lock``): :class:`OutputError`;
    - it holds an earlier run's files: the run goes to the first free ``path-2``,
      ``path-3``, ... (a note is printed), unless ``overwrite`` or ``resume``, which write
      into ``path`` itself.

    Args:
        path: the folder asked for.
        comm: communicator of the run.
        overwrite: write into ``path`` even if it holds earlier results.
        resume: the run continues the one in ``path`` (implies writing into it).
        command: recorded in the lock (shown to a run that finds it).
        option: the command-line option named in messages.

    Returns:
        The claimed :class:`RunFolder`; call :meth:`RunFolder.release` at the end.
    """
    path = pathlib.Path(path)
    claimed = on_root(
        lambda: _claim(path, overwrite, resume, command), f"{option} {path}", comm
    )
    if comm.size > 1:
        claimed = comm.bcast(claimed, root=0)
    assert claimed is not None  # rank 0's claim, on every rank
    folder, created, token, note = claimed
    if note:
        print0(note, comm=comm)
    return RunFolder(folder, path, created, token)


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------


def _format_seconds(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class LineProgress:
    """tqdm's interface (the parts used here) printing one line per phase.

    A phase ends when the description changes, when ``total`` is reached or on
    :meth:`close`; its line gives the phase, ``k/n``, the elapsed time and the postfix.
    """

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None,
                 initial: int = 0, desc: str = "", file=None, heartbeat: float = HEARTBEAT_S,
                 **_: Any) -> None:
        self.iterable = iterable
        if total is None and isinstance(iterable, Sized):
            total = len(iterable)
        self.total = total
        self.n = initial
        self.desc = desc
        self.file = file
        self.heartbeat = heartbeat
        self._postfix = ""
        self._phase_start_n = initial
        self._phase_start = time.perf_counter()
        self._last_line = self._phase_start
        self._open = True

    def _line(self, final: bool) -> None:
        elapsed = time.perf_counter() - self._phase_start
        done = self.n - self._phase_start_n
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        text = f"{self.desc or 'progress'}: {count}, {_format_seconds(elapsed)}"
        if not final and self.total and done > 0:
            left = elapsed / done * (self.total - self.n)
            text += f", about {_format_seconds(left)} left"
        if self._postfix:
            text += f" ({self._postfix})"
        print(text, file=self.file or sys.stderr, flush=True)
        self._last_line = time.perf_counter()

    def _end_phase(self) -> None:
        if self.n != self._phase_start_n:
            self._line(final=True)
        self._phase_start_n = self.n
        self._phase_start = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.total is not None and self.n >= self.total:
            return  # the line comes with close()
        if time.perf_counter() - self._last_line > self.heartbeat:
            self._line(final=False)

    def set_description(self, desc: str, refresh: bool = True) -> None:
        if desc != self.desc:
            self._end_phase()
            self.desc = desc

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def close(self) -> None:
        if self._open:
            self._open = False
            self._end_phase()

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Silent(LineProgress):
    def _line(self, final: bool) -> None:
        pass


def progress(iterable: Iterable | None = None, *, comm: MPI.Comm = MPI.COMM_WORLD,
             **kwargs: Any):
    """A progress display on rank 0 (other ranks iterate silently).

    On a terminal: a tqdm bar (phase, k of n, elapsed and remaining time).  Otherwise (a log
    file, a pipe, ``mpiexec``'s forwarded output): :class:`LineProgress`, one line per phase.
    Takes tqdm's ``total``, ``initial`` and ``desc``.
    """
    if comm.rank != 0:
        return _Silent(iterable, **kwargs)
    stream = kwargs.get("file") or sys.stderr
    if hasattr(stream, "isatty") and stream.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, dynamic_ncols=True, **kwargs)
    return LineProgress(iterable, **kwargs)
