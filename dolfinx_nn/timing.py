"""Wall-clock timing of (collective) calls, shared by the benchmarks of every module."""

from __future__ import annotations

import time
from collections.abc import Callable

from mpi4py import MPI

import numpy as np


def median_wall_time(fn: Callable[[], object], comm: MPI.Comm | None, repeats: int) -> float:
    """Median over ``repeats`` calls of ``fn`` of its wall time in seconds.

    With a communicator every call starts and ends at a barrier and counts the slowest rank,
    so a collective operation is timed as a whole; with ``None`` each rank times its own calls.
    """
    times = []
    for _ in range(repeats):
        if comm is not None:
            comm.Barrier()
        start = time.perf_counter()
        fn()
        if comm is None:
            times.append(time.perf_counter() - start)
        else:
            comm.Barrier()
            times.append(comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
    return float(np.median(times))
