"""The training loop: the optimizer phases of a :class:`TrainingConfig` in order, MPI-aware
and resumable.

Under MPI every rank holds the same parameters.  ``loss_fn()`` returns the *global* loss
(identical on every rank) and its backward pass gives the rank's *share* of the gradient
(see :mod:`dolfinx_nn.parallel`); :func:`train` sums the shares with
:func:`~dolfinx_nn.parallel.sync_gradients` before every optimizer step, including inside the
L-BFGS closure.  All decisions (early stopping, non-finite losses) are taken identically on
every rank, so no rank is left waiting in a collective call.
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
import random
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from mpi4py import MPI

import numpy as np
import torch

from dolfinx_nn.output import OutputError, describe_error, print0, progress
from dolfinx_nn.parallel import replicated, sync_gradients
from dolfinx_nn.training import checkpoint as ckpt
from dolfinx_nn.training.config import TrainingConfig
from dolfinx_nn.training.history import History
from dolfinx_nn.training.phases import get_phase, make_optimizer

__all__ = ["Params", "train"]

Params = torch.nn.Module | Iterable[torch.Tensor]


def train(
    loss_fn: Callable[[], torch.Tensor],
    params: Params,
    config: TrainingConfig | None = None,
    *,
    comm: MPI.Comm = MPI.COMM_WORLD,
    checkpoint: str | os.PathLike | None = None,
    resume: bool | Literal["auto"] = False,
    desc: str | None = "training",
    callback: Callable[[int, float], bool | None] | None = None,
    regularizer: Callable[[], torch.Tensor] | None = None,
    problem: dict[str, Any] | None = None,
) -> History:
    """Minimise ``loss_fn()`` with the optimizer phases of ``config`` (Adam, then L-BFGS).

    Args:
        loss_fn: returns the loss as a 0-dim tensor, the same global value on every rank,
            with the rank's share of the gradient (see :mod:`dolfinx_nn.parallel`).  Code
            that draws random numbers should use the global torch/NumPy/``random``
            generators, whose states are checkpointed.
        params: a ``torch.nn.Module`` (its trainable parameters) or a list of leaf tensors
            with ``requires_grad=True``, identical on every rank; on any device.
        config: the settings (defaults: ``TrainingConfig()``).
        comm: communicator of the ranks that train together.
        checkpoint: file written by rank 0 every ``config.checkpoint_every`` steps, at the
            end and on Ctrl-C; None writes nothing.
        resume: True continues from ``checkpoint`` (error if it does not exist); ``"auto"``
            continues if it exists and starts afresh otherwise.  The configuration may
            differ from the checkpoint's only in ``checkpoint_every``, ``log_every`` and in
            step counts that extend the run.
        desc: label of the progress bar (shown on rank 0); None shows none.
        callback: called on every rank after each step as ``callback(steps_done, loss)``;
            training stops when it returns True on any rank.  It is also the per-step hook
            of code that watches the optimizer (recording the iterates, say).
        regularizer: a term every rank computes identically from replicated data (weight
            decay of the network's parameters, say), added to ``loss_fn()`` once: through
            :func:`~dolfinx_nn.parallel.replicated`, so that summing the ranks' gradient
            shares does not count it once per rank.  Adding such a term inside ``loss_fn``
            without ``replicated`` would make the gradient grow with the number of ranks.
        problem: a JSON-like description of the problem (mesh, data, formulas, options that
            change the problem), stored in the checkpoint; resuming with a different one is
            refused with the differences listed.  Floats compare up to
            :data:`~dolfinx_nn.training.checkpoint.RESUME_RTOL`.

    Returns:
        The :class:`History` (also when resuming: it includes the earlier steps).

    Raises:
        FloatingPointError: the loss or a gradient is NaN or infinite (on every rank).
        ValueError: invalid arguments, a loss that differs between ranks, or a checkpoint
            that does not fit ``params``, ``config`` or ``problem``.
        FileNotFoundError: ``resume=True`` and ``checkpoint`` does not exist.
        OutputError: a checkpoint during training could not be written (on every rank).
    """
    cfg = TrainingConfig() if config is None else config
    if not isinstance(cfg, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig, got {type(cfg).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if regularizer is not None and not callable(regularizer):
        raise TypeError(f"regularizer must be callable, got {type(regularizer).__name__}")
    if resume not in (False, True, "auto"):
        raise ValueError(f"resume must be False, True or 'auto', got {resume!r}")
    path = None if checkpoint is None else pathlib.Path(checkpoint)
    if resume and path is None:
        raise ValueError("resume needs a checkpoint path (checkpoint=...)")
    run = _Run(loss_fn, params, cfg, comm, path, regularizer, problem)
    if resume == "auto" and path is not None:
        resume = bool(comm.bcast(path.is_file() if comm.rank == 0 else None, root=0))
    if resume:
        run.resume()
        if run.history.stopped_because in ("tolerance", "patience", "stationary"):
            return run.history
    elif cfg.seed is not None:
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)  # noqa: NPY002 (the legacy global generator)
        random.seed(cfg.seed)
    return run.run(desc, callback)


def _parameter_list(params: Params) -> list[torch.Tensor]:
    plist: list[torch.Tensor]
    if isinstance(params, torch.nn.Module):
        plist = [p for p in params.parameters() if p.requires_grad]
    elif isinstance(params, torch.Tensor):
        raise TypeError("pass a list of tensors (e.g. [w]) or a torch.nn.Module, not one tensor")
    elif isinstance(params, Iterable):
        plist = list(params)
        for i, p in enumerate(plist):
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"parameter {i} is a {type(p).__name__}, not a torch.Tensor")
            if not (p.is_leaf and p.requires_grad):
                raise ValueError(
                    f"parameter {i} (shape {tuple(p.shape)}) must be a leaf tensor with "
                    "requires_grad=True"
                )
    else:
        raise TypeError(
            f"params must be a torch.nn.Module or a list of tensors, got {type(params).__name__}"
        )
    if not plist:
        raise ValueError("there are no trainable parameters (requires_grad=True) to train")
    return plist


@dataclass
class _Snapshot:
    """The state after ``step`` completed steps, kept in memory to survive a partial step."""

    step: int
    rng: dict[str, Any]
    params: list[torch.Tensor] | None = None
    optimizer: dict | None = None


class _ToleranceReached(Exception):
    """Raised inside the closure to stop before the update."""


class _NoProgress:
    """The progress bar's interface, showing nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_description(self, desc: str, refresh: bool = True) -> None:
        pass

    def set_postfix(self, refresh: bool = True, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


class _Run:
    """The state of one call of :func:`train`: parameters, optimizer, step, history."""

    def __init__(
        self,
        loss_fn: Callable[[], torch.Tensor],
        params: Params,
        cfg: TrainingConfig,
        comm: MPI.Comm,
        path: pathlib.Path | None,
        regularizer: Callable[[], torch.Tensor] | None,
        problem: dict[str, Any] | None,
    ) -> None:
        self.plist = _parameter_list(params)
        self.params: torch.nn.Module | list[torch.Tensor] = (
            params if isinstance(params, torch.nn.Module) else self.plist
        )
        self.loss_fn, self.cfg, self.comm, self.path = loss_fn, cfg, comm, path
        self.regularizer, self.problem = regularizer, problem
        self.history = History()
        self.step = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self.opt_phase: str | None = None
        self.elapsed_before = 0.0
        self.start = time.perf_counter()

    def resume(self) -> None:
        """Load the checkpoint at ``self.path`` (collective), after checking that it fits."""
        assert self.path is not None
        payload = ckpt.read_checkpoint(self.path, self.comm)
        self.step, self.opt_phase = int(payload["step"]), payload["phase"]
        ckpt.check_problem(payload.get("problem"), self.problem)
        ckpt.check_resumable(payload["config"], self.cfg, self.step, self.opt_phase)
        ckpt.load_params_state(self.params, self.plist, payload["params"])
        self.history = History.from_dict(payload["history"])
        ckpt.set_rng_state(payload["rng"])
        if self.opt_phase is not None and self.opt_phase == self.cfg.phase_of(self.step):
            self.optimizer = make_optimizer(self.opt_phase, self.plist, self.cfg)
            self.optimizer.load_state_dict(payload["optimizer"])

    def save(self, stopped_because: str, collective: bool = True, final: bool = False) -> None:
        """Rank 0 writes the checkpoint; with ``collective``, every rank learns the outcome.

        A failure raises :class:`OutputError` on every rank, except for the ``final``
        checkpoint, whose failure is recorded in ``history.checkpoint_error`` (the training
        result is complete and must not be lost to it).
        """
        self.history.stopped_because = stopped_because
        if self.path is None:
            return
        comm, error = self.comm, None
        if comm.rank == 0:
            payload = {
                "format": ckpt.CHECKPOINT_FORMAT,
                "step": self.step,
                "phase": self.opt_phase,
                "params": ckpt.params_state(self.params, self.plist),
                "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
                "history": self.history.as_dict(),
                "rng": ckpt.rng_state(),
                "config": self.cfg.as_dict(),
                "comm_size": comm.size,
                "problem": self.problem,
            }
            try:
                ckpt.write_checkpoint(self.path, payload)
            except Exception as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (
                    describe_error(exc))
                error = f"cannot write the checkpoint {self.path}: {reason}"
        if not collective:
            if error is not None:
                print(error, flush=True)
            return
        if comm.size > 1:
            error = comm.bcast(error, root=0)
        if error is None:
            return
        if not final:
            raise OutputError(error)
        self.history.checkpoint_error = error
        print0(f"warning: {error}; the result of the training is kept", comm=comm)

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start

    def record(self, value: float, phase: str) -> None:
        self.history.losses.append(value)
        self.history.phases.append(phase)
        self.history.times.append(self.elapsed())
        self.step += 1

    def roll_back(self, snapshot: _Snapshot) -> None:
        """Return to the state after the last completed step (if one is in progress)."""
        if snapshot.step != self.step:
            return
        ckpt.set_rng_state(snapshot.rng)
        if snapshot.params is not None:
            assert self.optimizer is not None
            with torch.no_grad():
                for p, saved in zip(self.plist, snapshot.params, strict=True):
                    p.copy_(saved)
            self.optimizer.state[self.plist[0]] = snapshot.optimizer

    def closure(self, phase: str, evaluations: list[float]) -> Callable[[], Any]:
        """Evaluate, check, differentiate and sync; stop before the update on tolerance.

        The closure returns the loss as a float64 tensor (what ``LBFGS.step`` expects).
        """
        optimizer, comm, tolerance = self.optimizer, self.comm, self.cfg.tolerance
        assert optimizer is not None

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = self.loss_fn()
            if self.regularizer is not None:
                loss = loss + replicated(self.regularizer(), comm)
            value = _loss_value(loss, comm, phase, self.step)
            evaluations.append(value)
            if len(evaluations) == 1 and tolerance is not None and value <= tolerance:
                raise _ToleranceReached
            loss.backward()
            sync_gradients(self.plist, comm)
            _check_gradients(self.plist, phase, self.step)
            return torch.tensor(value, dtype=torch.float64)

        return closure

    def take_step(self, phase: str, snapshot: _Snapshot) -> str | None:
        """One optimizer step of ``phase``; why training must stop (None: it goes on)."""
        assert self.optimizer is not None
        evaluations: list[float] = []
        closure = self.closure(phase, evaluations)
        try:
            if snapshot.params is None:
                closure()
                with _deferred_interrupt():
                    self.optimizer.step()
                    self.record(evaluations[0], phase)
                return None
            self.optimizer.step(closure)
            unchanged = all(
                torch.equal(p, q) for p, q in zip(self.plist, snapshot.params, strict=True)
            )
            with _deferred_interrupt():
                self.record(evaluations[0], phase)
            return "stationary" if unchanged else None
        except _ToleranceReached:
            with _deferred_interrupt():
                self.record(evaluations[0], phase)
            return "tolerance"

    def run(self, desc: str | None, callback: Callable[[int, float], bool | None] | None
            ) -> History:
        """The loop from ``self.step`` to the end of the last phase or an early stop."""
        cfg, comm, history = self.cfg, self.comm, self.history
        self.elapsed_before, self.start = history.wall_time_s, time.perf_counter()
        patience = _Patience(cfg)
        for value in history.losses:
            patience.update(value)
        bar = _NoProgress() if desc is None else progress(
            None, comm=comm, total=cfg.total_steps, initial=self.step, desc=desc)
        snapshot = _Snapshot(self.step, ckpt.rng_state())
        stopped: str | None = None
        try:
            while self.step < cfg.total_steps:
                phase = cfg.phase_of(self.step)
                if phase != self.opt_phase:
                    self.optimizer = make_optimizer(phase, self.plist, cfg)
                    self.opt_phase = phase
                assert self.optimizer is not None
                bar.set_description(f"{desc} [{phase}]", refresh=False)
                snapshot = _Snapshot(self.step, ckpt.rng_state())
                if get_phase(phase).line_search:  # it moves the parameters: keep a copy
                    snapshot.params = [p.detach().clone() for p in self.plist]
                    snapshot.optimizer = ckpt.copy_optimizer_state(
                        self.optimizer.state[self.plist[0]])
                stopped = self.take_step(phase, snapshot)
                bar.update(1)
                if self.step % cfg.log_every == 0 or stopped == "tolerance":
                    bar.set_postfix(loss=f"{history.losses[-1]:.3e}")
                if stopped is None and patience.update(history.losses[-1]):
                    stopped = "patience"
                if stopped is None and callback is not None:
                    wants_stop = bool(callback(self.step, history.losses[-1]))
                    if comm.allreduce(wants_stop, op=MPI.LOR):
                        stopped = "callback"
                if stopped is not None:
                    break
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    history.wall_time_s = self.elapsed()
                    self.save("running")
        except KeyboardInterrupt:
            bar.close()
            self.roll_back(snapshot)
            history.wall_time_s = self.elapsed()
            # No collective call here: another rank may already be gone.  Parameters and
            # optimizer state are replicated, so rank 0 alone can write them.
            self.save("interrupted", collective=False)
            raise
        except BaseException:
            bar.close()
            self.roll_back(snapshot)  # the last completed step, not a line-search trial
            raise
        bar.close()
        history.wall_time_s = self.elapsed()
        self.save(stopped or "completed", final=True)
        return history


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C back while the block runs (an optimizer update is applied in place)."""
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _loss_value(loss: Any, comm: MPI.Comm, phase: str, step: int) -> float:
    """The loss as a float, checked finite and equal on every rank (collective).

    Reductions may round differently on different ranks, so the value returned is the
    maximum over the ranks: bitwise the same everywhere, which keeps every decision taken
    from it (stopping, the L-BFGS line search) identical on all ranks.
    """
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError(
            f"loss_fn must return a 0-dim torch.Tensor, got {type(loss).__name__}"
            + (f" of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else "")
        )
    value = float(loss.detach())
    finite = math.isfinite(value)
    if comm.size > 1:
        local = np.array([value, -value, 0.0]) if finite else np.array([0.0, 0.0, 1.0])
        extremes = np.empty(3)
        comm.Allreduce(local, extremes, op=MPI.MAX)
        finite = extremes[2] == 0.0
        high, low = extremes[0], -extremes[1]
        if finite and high - low > 1e-10 * max(abs(high), abs(low), 1e-300):
            raise ValueError(
                f"loss_fn returned different values on different ranks (from {low!r} to "
                f"{high!r}) at step {step}: the loss must be the global value on every rank; "
                "sum rank-local terms with dolfinx_nn.global_sum."
            )
        value = float(high) if finite else value
    if not finite:
        raise FloatingPointError(
            f"the loss is not finite (value {value!r} on rank {comm.rank}) at step {step} "
            f"({phase} phase); training stopped. Lower the learning rate or check loss_fn."
        )
    if loss.grad_fn is None:
        raise ValueError("loss_fn returned a tensor that does not depend on the parameters")
    return value


def _check_gradients(plist: list[torch.Tensor], phase: str, step: int) -> None:
    for i, p in enumerate(plist):
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            raise FloatingPointError(
                f"the gradient of parameter {i} (shape {tuple(p.shape)}) is not finite at step "
                f"{step} ({phase} phase); training stopped."
            )


class _Patience:
    """Counts steps without a relative improvement of the best loss by more than min_delta."""

    def __init__(self, cfg: TrainingConfig):
        self.patience = cfg.patience
        self.min_delta = cfg.min_delta
        self.best = math.inf
        self.waited = 0

    def update(self, value: float) -> bool:
        """Account for one more loss; True when patience is exhausted."""
        if math.isinf(self.best) or value < self.best - self.min_delta * abs(self.best):
            self.best, self.waited = value, 0
        else:
            self.waited += 1
        return self.patience is not None and self.waited >= self.patience
