"""Record the parameter vectors visited by an optimizer, streamed to disk.

A :class:`TrajectoryRecorder` stores every ``every``-th parameter vector of a module,
optionally multiplied by a Gaussian random projection ``R / sqrt(p)`` (Johnson-Lindenstrauss)
so that huge models give manageable point clouds.  The projection matrix is never stored:
its rows are regenerated block by block from the seed, so memory stays at one block.  Rows
are buffered and appended to a raw float64 file (``trajectory.bin``) with a small JSON header
(``trajectory.json``); :func:`load_trajectory` maps the file back with ``numpy.memmap``.

It works with any torch optimizer loop: call :meth:`~TrajectoryRecorder.record` after each
``optimizer.step()``, or let :meth:`~TrajectoryRecorder.attach` register a post-step hook on
the optimizer (which also covers loops that are not yours, such as
``dolfinx_nn.training.train``).  Under MPI, parameters are replicated; rank 0 writes.
"""

from __future__ import annotations

import json
import pathlib

from mpi4py import MPI

import numpy as np
import torch

from dolfinx_nn.diffusion_maps.hessian import flat_parameters

BLOCK_ROWS = 1 << 15


def projection_block(seed: int, block: int, rows: int, dim: int) -> torch.Tensor:
    """Rows ``block * BLOCK_ROWS ...`` of the Gaussian projection matrix, scaled by 1/sqrt(dim)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + block)
    return torch.randn(rows, dim, generator=g, dtype=torch.float64) / np.sqrt(dim)


def project(vector: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """``R^T vector`` for the seeded Gaussian matrix ``R`` (n_params x dim) / sqrt(dim)."""
    v = vector.detach().to("cpu", torch.float64).reshape(-1)
    out = torch.zeros(dim, dtype=torch.float64)
    for block, start in enumerate(range(0, v.numel(), BLOCK_ROWS)):
        chunk = v[start : start + BLOCK_ROWS]
        out += chunk @ projection_block(seed, block, chunk.numel(), dim)
    return out


def project_columns(vectors: np.ndarray, dim: int | None, seed: int) -> np.ndarray:
    """Apply :func:`project` to each column of ``vectors`` (identity when ``dim`` is None)."""
    V = np.asarray(vectors, dtype=np.float64)
    V = V.reshape(V.shape[0], -1)
    if dim is None:
        return V
    columns = [project(torch.from_numpy(V[:, j].copy()), dim, seed) for j in range(V.shape[1])]
    return torch.stack(columns, dim=1).numpy()


class TrajectoryRecorder:
    """Streams every ``every``-th parameter vector of ``module`` to ``directory``.

    Args:
        module: the network being trained.
        directory: output folder (created on rank 0).
        every: record every ``every`` calls of :meth:`record`.
        projection_dim: project onto this many random directions (``None``: store all).
        seed: seed of the projection.
        buffer_rows: rows kept in memory before they are appended to disk.
        comm: communicator; rank 0 writes.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        directory: str | pathlib.Path,
        every: int = 1,
        projection_dim: int | None = None,
        seed: int = 0,
        buffer_rows: int = 256,
        comm: MPI.Comm = MPI.COMM_WORLD,
    ):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer; got {every!r}")
        if projection_dim is not None and projection_dim < 1:
            raise ValueError(f"projection_dim must be positive or None; got {projection_dim!r}")
        self.module = module
        self.directory = pathlib.Path(directory)
        self.every = every
        self.n_params = flat_parameters(module).numel()
        if projection_dim is not None and projection_dim >= self.n_params:
            # a random projection onto as many directions as parameters or more keeps nothing
            # out and costs a (parameters x projection_dim) matrix per recorded step
            raise ValueError(
                f"projection_dim must be smaller than the network's {self.n_params} parameters "
                f"(or None: record them all); got {projection_dim!r}")
        self.projection_dim = projection_dim
        self.dim = projection_dim or self.n_params
        self.seed = seed
        self.buffer_rows = buffer_rows
        self.comm = comm
        self.calls = 0
        self.rows = 0
        self._buffer: list[np.ndarray] = []
        self._steps: list[int] = []
        if comm.rank == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / "trajectory.bin").write_bytes(b"")
            (self.directory / "steps.txt").write_text("")
        comm.Barrier()

    def record(self, step: int | None = None) -> None:
        """Count one optimizer step; store the parameters on every ``every``-th call."""
        step = self.calls if step is None else step
        self.calls += 1
        if (self.calls - 1) % self.every:
            return
        theta = flat_parameters(self.module)
        if not torch.all(torch.isfinite(theta)):
            raise ValueError(f"non-finite parameters at step {step}; the optimizer diverged")
        if self.projection_dim is not None:
            theta = project(theta, self.projection_dim, self.seed)
        self._buffer.append(theta.to("cpu", torch.float64).numpy())
        self._steps.append(int(step))
        self.rows += 1
        if len(self._buffer) >= self.buffer_rows:
            self.flush()

    def attach(self, optimizer: torch.optim.Optimizer):
        """Record after every ``optimizer.step()``; returns the hook handle (``.remove()``)."""
        return optimizer.register_step_post_hook(lambda *_: self.record())

    def flush(self) -> None:
        """Append buffered rows to ``trajectory.bin`` and update ``trajectory.json``."""
        if self.comm.rank == 0:
            if self._buffer:
                with open(self.directory / "trajectory.bin", "ab") as fh:
                    np.stack(self._buffer).astype(np.float64).tofile(fh)
            header = {
                "rows": self.rows,
                "dim": self.dim,
                "n_params": self.n_params,
                "every": self.every,
                "projection_dim": self.projection_dim,
                "seed": self.seed,
            }
            steps_file = self.directory / "steps.txt"
            with open(steps_file, "a") as fh:
                fh.writelines(f"{s}\n" for s in self._steps)
            (self.directory / "trajectory.json").write_text(json.dumps(header, indent=2))
        self._buffer.clear()
        self._steps.clear()

    def close(self) -> None:
        """Flush and wait for rank 0 (call on every rank)."""
        self.flush()
        self.comm.Barrier()

    def __enter__(self) -> TrajectoryRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """Map parameter-space vectors (columns) into the recorded space."""
        return project_columns(vectors, self.projection_dim, self.seed)


def load_trajectory(directory: str | pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """Memory-mapped trajectory (rows, dim) and the step of each row."""
    directory = pathlib.Path(directory)
    header_file = directory / "trajectory.json"
    if not header_file.exists():
        raise FileNotFoundError(f"no recorded trajectory in {directory} (missing trajectory.json)")
    header = json.loads(header_file.read_text())
    X = np.memmap(
        directory / "trajectory.bin",
        dtype=np.float64,
        mode="r",
        shape=(header["rows"], header["dim"]),
    )
    steps = np.loadtxt(directory / "steps.txt", dtype=np.int64, ndmin=1)
    return X, steps
