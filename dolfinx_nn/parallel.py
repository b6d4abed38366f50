"""Data-parallel training under MPI.

Convention: a loss used for training has the same (global) *value* on every rank, while the
*gradient* each rank computes is that rank's share.  :func:`sync_gradients` sums the shares,
after which every rank holds the serial gradient.  Each kind of loss term has one way in:

- bridge ops (:func:`~dolfinx_nn.fem_functional`, :func:`~dolfinx_nn.fem_operator`) already
  return the global value with the rank's share of the gradient: use them as they are;
- a term assembled from rank-local torch data (collocation points, observations held by the
  rank): wrap the rank's part in :func:`global_sum`;
- a term every rank computes identically from replicated data (weight decay
  ``lam * sum(p**2)`` of the network's parameters, a penalty on a replicated scalar): wrap it
  in :func:`replicated`, which keeps the value and gives each rank ``1/size`` of the gradient,
  so that summing the shares counts the term once.

:func:`raise_on_all_ranks` turns a check made on one rank into an error on every rank, so a
bad input never leaves the other ranks waiting in a collective call.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable

from mpi4py import MPI

import numpy as np
import torch


class _GlobalSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, local: torch.Tensor, comm: MPI.Comm, recording: bool) -> torch.Tensor:
        values = local.detach().to("cpu", torch.float64).reshape(-1).numpy()
        # One Allreduce for the values and for how many ranks record a graph.
        buf = np.append(values, float(recording))
        total = np.empty_like(buf)
        comm.Allreduce(buf, total, op=MPI.SUM)
        ranks = int(round(total[-1]))
        if 0 < ranks < comm.size:
            raise ValueError(
                f"global_sum: the term requires a gradient on {ranks} of {comm.size} ranks "
                f"(on rank {comm.rank}: {recording}); every rank's term must depend on the same "
                "graph, or the ranks that record one wait forever in the backward pass's "
                "collective solves. On a rank without data, sum an empty selection of the same "
                "tensor (e.g. u_t[empty_index].sum()) instead of a constant zero."
            )
        out = torch.from_numpy(total[:-1].reshape(tuple(local.shape)))
        return out.to(device=local.device, dtype=local.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


def global_sum(local: torch.Tensor, comm: MPI.Comm = MPI.COMM_WORLD) -> torch.Tensor:
    """Sum a rank-local tensor over ``comm``; the gradient stays the rank's own share.

    Args:
        local: this rank's contribution (any shape; typically a 0-dim loss term).
        comm: communicator to sum over.

    Returns:
        The sum over ranks, identical on every rank.

    Raises:
        ValueError: on every rank, if the term requires a gradient on some ranks only (the
            others would never join the backward pass's collective operations).
    """
    recording = bool(torch.is_grad_enabled() and local.requires_grad)
    return _GlobalSum.apply(local, comm, recording)


class _Replicated(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value: torch.Tensor, size: int) -> torch.Tensor:
        ctx.size = size
        return value.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad / ctx.size, None


def replicated(value: torch.Tensor, comm: MPI.Comm = MPI.COMM_WORLD) -> torch.Tensor:
    """Mark a term that every rank computes identically, e.g. weight decay.

    The value is unchanged; the gradient is divided by the number of ranks, so that
    :func:`sync_gradients` (which sums the ranks' shares) counts the term once, and 1 and N
    ranks give the same gradient.  Do not pass it to :func:`global_sum` as well: that would
    count the value N times.

    Args:
        value: a tensor with the same value on every rank of ``comm``.
        comm: communicator of the ranks that train together.

    Returns:
        ``value``, with its gradient shared out over the ranks.

    Example:
        >>> decay = sum((p**2).sum() for p in net.parameters())
        >>> loss = J(solve(q_t), q_t) + replicated(lam * decay)
    """
    return _Replicated.apply(value, comm.size)


def raise_on_all_ranks(error: BaseException | None, comm: MPI.Comm = MPI.COMM_WORLD) -> None:
    """Raise on every rank of ``comm`` if any rank holds an error (collective).

    Checks of rank-local data (a tensor's length, a network's output on the rank's points)
    can fail on some ranks only; raising there alone would leave the others waiting in the
    next collective call.  Every rank calls this with its own result (``None`` if fine).  A
    rank with an error raises it; the others raise an exception of the same built-in type
    (``RuntimeError`` for other types) whose message is the first failing rank's, with its
    number.

    Args:
        error: this rank's error, or ``None``.
        comm: the communicator whose ranks must agree.
    """
    if not comm.allreduce(error is not None, op=MPI.LOR):
        return
    report = None if error is None else (type(error).__name__, str(error))
    reports = comm.allgather(report)
    if error is not None:
        raise error
    rank = next(r for r, rep in enumerate(reports) if rep is not None)
    name, message = reports[rank]
    kind = getattr(builtins, name, None)
    if not (isinstance(kind, type) and issubclass(kind, Exception)):
        kind = RuntimeError
    raise kind(f"{message} [raised on rank {rank}]")


def recording_anchor(tensors: Iterable[object], comm: MPI.Comm) -> list[torch.Tensor]:
    """Make a bridge op record a graph on every rank of ``comm``, or on none (collective).

    A bridge op's backward pass is collective. If its inputs require a gradient on some ranks
    only (a tensor detached on one rank), the others would not run the backward pass and the
    first would wait for them forever. Returns ``[]`` where nothing needs to change, or a
    dummy leaf requiring a gradient for the op to take as an extra input on a rank whose own
    inputs do not, so that its output is part of the graph there too.

    Raises:
        ValueError: on every rank, if some ranks record a graph and others run under
            ``torch.no_grad()`` (no input can make the latter record one).
    """
    enabled = torch.is_grad_enabled()
    requires = enabled and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)
    flags = comm.allgather((enabled, requires))
    if not any(r for _, r in flags):
        return []
    off = [rank for rank, (e, _) in enumerate(flags) if not e]
    if off:
        on = [rank for rank, (_, r) in enumerate(flags) if r]
        raise ValueError(
            f"a bridge op records a graph on ranks {on} but runs under torch.no_grad() on "
            f"ranks {off}; its backward pass is collective, so every rank must record it (or "
            "none)."
        )
    return [] if requires else [torch.zeros((), dtype=torch.float64, requires_grad=True)]


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


def check_device(device: torch.device | str, comm: MPI.Comm) -> torch.device:
    """``torch.device(device)``, refused on every rank if invalid or unavailable on a rank."""
    error: Exception | None = None
    parsed = torch.device("cpu")
    try:
        parsed = torch.device(device)
        if parsed.type == "cuda" and not torch.cuda.is_available():
            error = ValueError(
                f"device {str(device)!r}: CUDA is not available to torch on rank {comm.rank} "
                "(no GPU or no driver); use device='cpu'."
            )
        elif parsed.type == "cuda" and parsed.index is not None and \
                parsed.index >= torch.cuda.device_count():
            error = ValueError(
                f"device {str(device)!r}: rank {comm.rank} sees only "
                f"{torch.cuda.device_count()} CUDA device(s)."
            )
    except (RuntimeError, TypeError) as e:
        error = ValueError(f"device {device!r} is not a torch device ({e}).")
    raise_on_all_ranks(error, comm)
    return parsed
