"""Spread independent runs (depths, seeds) over the ranks of a communicator."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mpi4py import MPI


def map_over_ranks[T, R](
    fn: Callable[[T], R], items: Sequence[T], comm: MPI.Comm = MPI.COMM_WORLD
) -> list[R]:
    """``[fn(item) for item in items]``, with item ``i`` computed on rank ``i % size``.

    Every rank returns the full list.  ``fn`` must be deterministic and need no
    communication.  An exception on any rank is raised on every rank (no deadlock).
    """
    mine: list[tuple[int, Any]] = []
    failure: BaseException | None = None
    for i in range(comm.rank, len(items), comm.size):
        try:
            mine.append((i, fn(items[i])))
        except Exception as exc:  # re-raised collectively below
            failure = exc
            break
    failures = comm.allgather(None if failure is None else repr(failure))
    if failure is not None:
        raise failure
    if any(failures):
        first = next(f for f in failures if f)
        raise RuntimeError(f"a run on another rank failed: {first}")
    results: list[Any] = [None] * len(items)
    for chunk in comm.allgather(mine):
        for i, value in chunk:
            results[i] = value
    return results
