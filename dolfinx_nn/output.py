"""Rank-aware output helpers: result folders, JSON, printing and progress bars."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable
from typing import Any

from mpi4py import MPI

import numpy as np


def is_root(comm: MPI.Comm = MPI.COMM_WORLD) -> bool:
    """True on rank 0 of ``comm``."""
    return comm.rank == 0


def print0(*args: Any, comm: MPI.Comm = MPI.COMM_WORLD, **kwargs: Any) -> None:
    """``print`` on rank 0 only."""
    if comm.rank == 0:
        print(*args, **kwargs, flush=True)


def prepare_output_dir(path: str | pathlib.Path, comm: MPI.Comm = MPI.COMM_WORLD) -> pathlib.Path:
    """Create ``path`` (on rank 0) and return it once every rank can see it."""
    path = pathlib.Path(path)
    if comm.rank == 0:
        path.mkdir(parents=True, exist_ok=True)
    comm.Barrier()
    return path


def _to_builtin(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_builtin(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_builtin(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "item") and hasattr(obj, "numel") and obj.numel() == 1:  # 0-dim tensor
        return obj.item()
    return obj


def write_json(path: str | pathlib.Path, data: dict, comm: MPI.Comm = MPI.COMM_WORLD) -> None:
    """Write ``data`` as indented JSON on rank 0 (numpy and torch scalars are converted)."""
    if comm.rank == 0:
        pathlib.Path(path).write_text(json.dumps(_to_builtin(data), indent=2) + "\n")
    comm.Barrier()


def progress(iterable: Iterable, *, comm: MPI.Comm = MPI.COMM_WORLD, **kwargs: Any):
    """A tqdm progress bar shown on rank 0 only (other ranks iterate silently)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=comm.rank != 0, dynamic_ncols=True, **kwargs)
