"""Moving values between torch tensors (owned dofs) and DOLFINx/PETSc objects (owned + ghosts)."""

from __future__ import annotations

from typing import cast

from mpi4py import MPI
from petsc4py import PETSc

import dolfinx
import numpy as np
import torch


def owned_size(V: dolfinx.fem.FunctionSpace) -> int:
    """Number of owned dofs of ``V`` on this rank, block size flattened."""
    return V.dofmap.index_map.size_local * V.dofmap.index_map_bs


def check_finite(values: np.ndarray, comm: MPI.Comm, what: str) -> None:
    """Raise ``ValueError`` on every rank if any rank holds a NaN or Inf in ``values``."""
    bad = ~np.isfinite(values)
    nbad = comm.allreduce(int(bad.sum()), op=MPI.SUM)
    if nbad:
        first = int(np.flatnonzero(bad)[0]) if bad.any() else -1
        where = f" (first on rank {comm.rank} at local index {first})" if first >= 0 else ""
        raise ValueError(
            f"{what} contains {nbad} NaN/Inf value(s){where}; refusing to pass it to PETSc."
        )


def tensor_to_numpy(
    t: torch.Tensor, n: int, what: str, block_size: int = 1, rank: int | None = None
) -> np.ndarray:
    """Validate ``t`` as ``n`` owned values and return a float64 numpy copy.

    Accepted layouts: flat ``(n,)``, a column ``(n, 1)``, and for a blocked space of block
    size ``bs`` the ``(n / bs, bs)`` of nodes by components (DOLFINx's own order). Other shapes
    with ``n`` values, such as ``(bs, n / bs)`` (the layout of ``interpolate``'s callbacks), are
    refused rather than read in the wrong order; so are complex tensors.
    """
    rank = MPI.COMM_WORLD.rank if rank is None else rank
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(t).__name__}.")
    if t.is_complex():
        raise TypeError(f"{what} is complex ({t.dtype}); the bridge works with real values.")
    if t.numel() != n:
        raise ValueError(
            f"{what} has {t.numel()} values (shape {tuple(t.shape)}) but its space has {n} owned "
            f"dofs on rank {rank} (block size flattened)."
        )
    shape = tuple(t.shape)
    layouts = {(n,), (n, 1), (n // block_size, block_size)}
    if t.dim() > 1 and shape not in layouts:
        raise ValueError(
            f"{what} has shape {shape} on rank {rank}; pass the owned dofs flat, ({n},), or as "
            f"(nodes, components) = {(n // block_size, block_size)} (DOLFINx's order)."
        )
    return t.detach().to("cpu", torch.float64).reshape(-1).numpy()


def assign_owned(f: dolfinx.fem.Function, values: np.ndarray) -> None:
    """Write owned values into ``f`` and update its ghosts."""
    n = values.size
    f.x.array[:n] = values
    f.x.scatter_forward()


def ghost_add(vec: PETSc.Vec) -> None:
    """Accumulate ghost contributions into owners (after assembly)."""
    vec.ghostUpdate(addv=cast(PETSc.InsertMode, PETSc.InsertMode.ADD),  # stub: members int
                    mode=cast(PETSc.ScatterMode, PETSc.ScatterMode.REVERSE))


def ghost_insert(vec: PETSc.Vec) -> None:
    """Copy owned values to ghosts (after a solve)."""
    vec.ghostUpdate(addv=cast(PETSc.InsertMode, PETSc.InsertMode.INSERT),
                    mode=cast(PETSc.ScatterMode, PETSc.ScatterMode.FORWARD))
