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
import sys
import time
from collections.abc import Iterable, Sequence

from mpi4py import MPI

import numpy as np
import torch


def _allreduce(local: torch.Tensor, comm: MPI.Comm, recording: float) -> tuple[torch.Tensor, int]:
    """The sum over ``comm`` of a tensor, and of ``recording`` (one Allreduce for both)."""
    values = local.detach().to("cpu", torch.float64).reshape(-1).numpy()
    buf = np.append(values, recording)
    total = np.empty_like(buf)
    comm.Allreduce(buf, total, op=MPI.SUM)
    out = torch.from_numpy(total[:-1].reshape(tuple(local.shape)))
    return out.to(device=local.device, dtype=local.dtype), int(round(total[-1]))


class _GlobalSum(torch.autograd.Function):
    @staticmethod
    def forward(local: torch.Tensor, comm: MPI.Comm, recording: bool) -> torch.Tensor:
        out, ranks = _allreduce(local, comm, float(recording))
        if 0 < ranks < comm.size:
            raise ValueError(
                f"global_sum: the term requires a gradient on {ranks} of {comm.size} ranks "
                f"(on rank {comm.rank}: {recording}); every rank's term must depend on the same "
                "graph, or the ranks that record one wait forever in the backward pass's "
                "collective solves. On a rank without data, sum an empty selection of the same "
                "tensor (e.g. u_t[empty_index].sum()) instead of a constant zero."
            )
        return out

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.comm = inputs[1]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None

    @staticmethod
    def jvp(ctx, d_local: torch.Tensor, _comm, _recording):
        # Forward mode (torch.func.jvp, Hessian-vector products forward over reverse): the
        # tangent of a sum over the ranks is the sum of the ranks' tangents (collective).
        return _GlobalSum.apply(d_local, ctx.comm, False)  # an op: torch.func unwraps it


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
    def forward(value: torch.Tensor, size: int) -> torch.Tensor:
        return value.clone()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.size = inputs[1]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad / ctx.size, None

    @staticmethod
    def jvp(ctx, d_value: torch.Tensor, _size):
        return d_value.clone()


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

    The one rule of the package for checks of rank-local data (a tensor's length, a
    network's output on the rank's points, a file read on rank 0): they can fail on some
    ranks only, and raising there alone would leave the others waiting in the next collective
    call.  Every rank calls this with its own result (``None`` if fine).  A rank with an error
    raises it; the others raise an exception of the same type (a built-in or a
    ``dolfinx_nn`` exception that takes a message; ``RuntimeError`` otherwise) whose message
    is the first failing rank's, with its number.  Costs one ``allreduce`` when no rank fails.

    Args:
        error: this rank's error, or ``None``.
        comm: the communicator whose ranks must agree.
    """
    if comm.size == 1:
        if error is not None:
            raise error
        return
    if not comm.allreduce(error is not None, op=MPI.LOR):
        return
    report = None if error is None else (
        type(error).__module__, type(error).__qualname__, str(error))
    reports = comm.allgather(report)
    if error is not None:
        raise error
    rank = next(r for r, rep in enumerate(reports) if rep is not None)
    module, name, message = reports[rank]
    raise _same_kind(module, name, f"{message} [raised on rank {rank}]")


def _same_kind(module: str, name: str, message: str) -> Exception:
    """An exception of the named type with ``message`` (``RuntimeError`` if none fits)."""
    kind: object = None
    if module == "builtins":
        kind = getattr(builtins, name, None)
    elif module.split(".")[0] == "dolfinx_nn" and "." not in name:
        kind = getattr(sys.modules.get(module), name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            return kind(message)
        except TypeError:  # a constructor that takes more than a message
            pass
    return RuntimeError(message)


#: Seconds a failed rank waits for the others at an agreement point (:func:`agree_max`)
#: before it concludes that they are stuck in a collective call it will never join.
AGREE_TIMEOUT_S = 10.0


def agree_max(values: Sequence[int], guard: MPI.Comm, *, failed: bool,
              timeout: float = AGREE_TIMEOUT_S) -> np.ndarray | None:
    """Entry-wise maximum of ``values`` over the ranks of ``guard``, or ``None`` (collective).

    For the agreement after work that may have failed on some ranks only: a rank that did
    not fail (``failed=False``) reached the agreement point with the others and waits for
    them without limit.  A rank that failed may have left the others inside a collective
    call of the work, which it will never join: it waits at most ``timeout`` seconds and
    then returns ``None``, and the caller must end the run (raise to the command, which
    aborts it with the error) instead of waiting forever.

    Args:
        values: this rank's integers (e.g. a failure flag).
        guard: a duplicate of the working communicator made *before* the work
            (``comm.Dup()``), so that the non-blocking reduction here cannot match a
            collective call the other ranks are stuck in.
        failed: whether this rank failed.
        timeout: seconds a failed rank waits.

    Returns:
        The maxima (shape ``(len(values),)``), or ``None`` on a failed rank that the others
        did not join within ``timeout``.
    """
    local = np.asarray(values, dtype=np.int64)
    total = np.empty_like(local)
    request = guard.Iallreduce(local, total, op=MPI.MAX)
    if not failed:
        request.Wait()
        return total
    deadline = time.monotonic() + timeout
    while not request.Test():
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)
    return total


def agree_any(flags: Sequence[bool], comm: MPI.Comm) -> list[bool]:
    """Per-entry logical OR of ``flags`` over the ranks of ``comm`` (collective).

    For flags that decide which collective operations run (which inputs of a bridge op need
    a gradient): every rank must run the same ones.
    """
    values = np.asarray(flags, dtype=np.int32)
    if comm.size > 1:
        comm.Allreduce(MPI.IN_PLACE, values, op=MPI.MAX)
    return [bool(x) for x in values]


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
