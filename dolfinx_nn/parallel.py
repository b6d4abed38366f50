"""Data-parallel training under MPI.

Convention: a loss used for training has the same (global) *value* on every rank, while the
*gradient* each rank computes is that rank's share.  Bridge ops already behave this way
(:func:`~dolfinx_nn.fem_functional` returns the global value; its backward pass touches only
the rank's owned dofs).  For losses assembled from rank-local torch terms, wrap the local
contribution in :func:`global_sum`.  :func:`sync_gradients` then sums the shares, after which
every rank holds the serial gradient.
"""

from __future__ import annotations

from collections.abc import Iterable

from mpi4py import MPI

import numpy as np
import torch


class _GlobalSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local: torch.Tensor, comm: MPI.Comm) -> torch.Tensor:
        buf = local.detach().to("cpu", torch.float64).numpy().copy()
        total = np.empty_like(buf)
        comm.Allreduce(buf, total, op=MPI.SUM)
        return torch.from_numpy(total).to(device=local.device, dtype=local.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def global_sum(local: torch.Tensor, comm: MPI.Comm = MPI.COMM_WORLD) -> torch.Tensor:
    """Sum a rank-local tensor over ``comm``; the gradient stays the rank's own share.

    Args:
        local: this rank's contribution (any shape; typically a 0-dim loss term).
        comm: communicator to sum over.

    Returns:
        The sum over ranks, identical on every rank.
    """
    return _GlobalSum.apply(local, comm)


def _parameters(params: torch.nn.Module | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(params, torch.nn.Module):
        return [p for p in params.parameters() if p.requires_grad]
    return [p for p in params if p.requires_grad]


def sync_gradients(
    params: torch.nn.Module | Iterable[torch.Tensor], comm: MPI.Comm = MPI.COMM_WORLD
) -> None:
    """Sum parameter gradients over the ranks of ``comm``, in place.

    Call it after ``loss.backward()`` and before ``optimizer.step()``.  All gradients travel
    in one buffer (one ``Allreduce``).  Parameters without a gradient count as zero.

    Args:
        params: a module or an iterable of parameters (replicated on every rank).
        comm: communicator to sum over.
    """
    plist = _parameters(params)
    if comm.size == 1 or not plist:
        return
    flat = [
        (p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1)
        for p in plist
    ]
    local = torch.cat([g.to("cpu", torch.float64) for g in flat]).numpy()
    total = np.empty_like(local)
    comm.Allreduce(local, total, op=MPI.SUM)
    offset = 0
    for p in plist:
        n = p.numel()
        chunk = torch.from_numpy(total[offset : offset + n]).reshape(p.shape)
        p.grad = chunk.to(device=p.device, dtype=p.dtype)
        offset += n
