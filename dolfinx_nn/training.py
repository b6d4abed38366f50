"""The training loop shared by every experiment: Adam, then L-BFGS, MPI-aware and resumable.

:func:`train` minimises ``loss_fn()`` over the parameters of a module (or a list of tensors)
with ``torch.optim.Adam`` for ``adam_steps`` steps, then ``torch.optim.LBFGS`` (strong Wolfe
line search, one iteration per step) for ``lbfgs_steps`` steps.

Under MPI every rank holds the same parameters.  ``loss_fn()`` returns the *global* loss
(identical on every rank) and its backward pass gives the rank's *share* of the gradient
(see :mod:`dolfinx_nn.parallel`); :func:`train` sums the shares with
:func:`~dolfinx_nn.parallel.sync_gradients` before every optimizer step, including inside the
L-BFGS closure.  All decisions (early stopping, non-finite losses) are taken identically on
every rank, so no rank is left waiting in a collective call.

Checkpoints (rank 0 writes them atomically) hold the parameters, optimizer state, step,
history, RNG states, configuration and, optionally, a description of the problem being solved
(``problem=``: mesh, data, formulas, options); ``resume=True`` continues a run exactly where it
stopped, to the last bit, and refuses a checkpoint of another problem or configuration,
listing the differences.  Ctrl-C writes a checkpoint of the last completed step first.  A
checkpoint that cannot be written (full disk, read-only folder) raises
:class:`~dolfinx_nn.output.OutputError` on every rank; at the end of training the result is
kept instead and the failure recorded in :attr:`History.checkpoint_error`.

Example:
    >>> cfg = TrainingConfig(adam_steps=500, lbfgs_steps=50, tolerance=1e-8)
    >>> history = train(lambda: ((net(x) - y) ** 2).mean(), net, cfg)  # doctest: +SKIP
    >>> history.losses[-1], history.stopped_because  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import pathlib
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from mpi4py import MPI

import numpy as np
import torch

from dolfinx_nn.output import OutputError, atomic_write, describe_error, print0, progress
from dolfinx_nn.parallel import replicated, sync_gradients

__all__ = ["History", "TrainingConfig", "train"]

#: Version of the checkpoint layout written by :func:`train`.
CHECKPOINT_FORMAT = 1

#: Function evaluations allowed in one L-BFGS line search.
LBFGS_MAX_LINE_SEARCH = 25

#: Relative tolerance of the comparison of float settings on resume: a tolerance derived from
#: a global sum (e.g. the discrepancy principle's noise norm) may differ in its last bits
#: between runs on different numbers of ranks.
RESUME_RTOL = 1e-9

#: Configuration fields that change the trajectory: resuming with other values is refused.
RESULT_FIELDS = (
    "adam_lr",
    "lbfgs_lr",
    "lbfgs_history",
    "tolerance",
    "patience",
    "min_delta",
    "seed",
)

Params = torch.nn.Module | Iterable[torch.Tensor]


@dataclass(frozen=True)
class TrainingConfig:
    """Settings of :func:`train`.

    Attributes:
        adam_steps: Adam steps (first phase); 0 skips the phase.
        adam_lr: Adam learning rate.
        lbfgs_steps: L-BFGS steps (second phase), each one ``LBFGS.step(closure)`` with
            ``max_iter=1`` (one direction and one strong Wolfe line search of at most
            ``LBFGS_MAX_LINE_SEARCH`` evaluations); 0 skips the phase.
        lbfgs_lr: L-BFGS initial step length.
        lbfgs_history: number of L-BFGS correction pairs kept.
        tolerance: stop as soon as an evaluated loss is ``<= tolerance`` (the parameters are
            left as they produced that loss); None disables it.
        patience: stop after this many consecutive steps without a relative improvement of
            the best loss by more than ``min_delta``; None disables it.
        min_delta: relative improvement that resets the patience counter.
        checkpoint_every: write a checkpoint every this many steps (0: only at the end and
            on Ctrl-C); used only when :func:`train` gets a checkpoint path.
        log_every: refresh the loss shown in the progress bar every this many steps.
        seed: seed of the torch, NumPy and ``random`` global generators at the start of a
            fresh run (the same on every rank); None leaves them alone.
    """

    adam_steps: int = 2000
    adam_lr: float = 1e-3
    lbfgs_steps: int = 300
    lbfgs_lr: float = 1.0
    lbfgs_history: int = 50
    tolerance: float | None = None
    patience: int | None = None
    min_delta: float = 1e-8
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int | None = 0

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, expected: str) -> None:
            if not ok:
                value = getattr(self, name)
                raise ValueError(f"TrainingConfig.{name} must be {expected}, got {value!r}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int | np.integer) and not isinstance(v, bool)

        def is_real(v: Any) -> bool:
            return isinstance(v, int | float | np.number) and not isinstance(v, bool)

        for name in ("adam_steps", "lbfgs_steps", "checkpoint_every"):
            check(name, is_int(getattr(self, name)) and getattr(self, name) >= 0, "an int >= 0")
        for name in ("lbfgs_history", "log_every"):
            check(name, is_int(getattr(self, name)) and getattr(self, name) >= 1, "an int >= 1")
        for name in ("adam_lr", "lbfgs_lr"):
            v = getattr(self, name)
            check(name, is_real(v) and math.isfinite(v) and v > 0, "a finite float > 0")
        tol = self.tolerance
        check("tolerance", tol is None or (is_real(tol) and tol >= 0), "None or a float >= 0")
        pat = self.patience
        check("patience", pat is None or (is_int(pat) and pat >= 1), "None or an int >= 1")
        md = self.min_delta
        check("min_delta", is_real(md) and math.isfinite(md) and md >= 0, "a float >= 0")
        check("seed", self.seed is None or is_int(self.seed), "None or an int")

    @property
    def total_steps(self) -> int:
        """``adam_steps + lbfgs_steps``."""
        return self.adam_steps + self.lbfgs_steps

    def phase_of(self, step: int) -> Literal["adam", "lbfgs"]:
        """The phase that runs step ``step`` (0-based)."""
        return "adam" if step < self.adam_steps else "lbfgs"

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return dataclasses.asdict(self)


@dataclass
class History:
    """What :func:`train` did.

    Attributes:
        losses: the loss evaluated at each step, before that step's update (both phases).
            When training stops on ``tolerance``, the last entry is the evaluation that met
            it, and no update followed.
        phases: ``"adam"`` or ``"lbfgs"`` for each entry of ``losses``.
        times: wall-clock seconds since the start of training at the end of each step
            (across resumed sessions).
        wall_time_s: total wall-clock seconds of training (across resumed sessions).
        stopped_because: ``"completed"`` (all steps done), ``"tolerance"``, ``"patience"``,
            ``"stationary"`` (an L-BFGS step left the parameters unchanged: zero gradient,
            no descent direction or no acceptable step length),
            ``"callback"`` (the callback asked to stop), ``"interrupted"`` (Ctrl-C), or
            ``"running"`` (in a checkpoint written during training).
        checkpoint_error: why the final checkpoint could not be written (None: it was, or
            no checkpoint was asked for); the training result itself is complete.
    """

    losses: list[float] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    wall_time_s: float = 0.0
    stopped_because: str = "running"
    checkpoint_error: str | None = None

    @property
    def steps(self) -> int:
        """Number of steps taken (``len(losses)``)."""
        return len(self.losses)

    @property
    def best_loss(self) -> float:
        """Smallest loss seen (inf before the first step)."""
        return min(self.losses, default=math.inf)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (see :func:`dolfinx_nn.output.write_json`)."""
        return {
            "losses": list(self.losses),
            "phases": list(self.phases),
            "times": list(self.times),
            "steps": self.steps,
            "best_loss": self.best_loss,
            "wall_time_s": self.wall_time_s,
            "stopped_because": self.stopped_because,
            "checkpoint_error": self.checkpoint_error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """Inverse of :meth:`as_dict`."""
        return cls(
            losses=[float(v) for v in data["losses"]],
            phases=[str(v) for v in data["phases"]],
            times=[float(v) for v in data["times"]],
            wall_time_s=float(data["wall_time_s"]),
            stopped_because=str(data["stopped_because"]),
        )


# --------------------------------------------------------------------------------------------
# Parameters, RNG and optimizer state
# --------------------------------------------------------------------------------------------


def _parameter_list(params: Params) -> list[torch.Tensor]:
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


def _params_state(params: Params, plist: list[torch.Tensor]) -> Any:
    if isinstance(params, torch.nn.Module):
        return {k: v.detach().cpu().clone() for k, v in params.state_dict().items()}
    return [p.detach().cpu().clone() for p in plist]


def _load_params_state(params: Params, plist: list[torch.Tensor], state: Any) -> None:
    if isinstance(params, torch.nn.Module):
        if not isinstance(state, dict):
            raise ValueError("the checkpoint holds a list of tensors, but a module was given")
        try:
            params.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"the checkpoint does not fit the module: {err}") from None
        return
    if not isinstance(state, list):
        raise ValueError("the checkpoint holds a module state, but a list of tensors was given")
    shapes = [tuple(p.shape) for p in plist]
    saved = [tuple(s.shape) for s in state]
    if shapes != saved:
        raise ValueError(f"the checkpoint holds parameters of shapes {saved}, not {shapes}")
    with torch.no_grad():
        for p, s in zip(plist, state, strict=True):
            p.copy_(s)


def _rng_state() -> dict[str, Any]:
    keys, pos, has_gauss, gauss = np.random.get_state()[1:]  # noqa: NPY002 (checkpointed)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    keys, pos, has_gauss, gauss = state["numpy"]
    mt_state = ("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss)
    np.random.set_state(mt_state)  # noqa: NPY002
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _copy_state(state: dict[str, Any]) -> dict[str, Any]:
    """Copy one parameter's optimizer state so that the next step cannot alter the copy.

    Tensors are cloned (L-BFGS updates ``prev_flat_grad`` in place); lists are copied
    shallowly: L-BFGS appends and pops its correction pairs but never modifies one in place,
    so the copy costs O(n), not O(history * n).
    """
    return {
        k: v.clone() if isinstance(v, torch.Tensor) else list(v) if isinstance(v, list) else v
        for k, v in state.items()
    }


def _make_optimizer(phase: str, plist: list[torch.Tensor], cfg: TrainingConfig):
    if phase == "adam":
        return torch.optim.Adam(plist, lr=cfg.adam_lr)
    return torch.optim.LBFGS(
        plist,
        lr=cfg.lbfgs_lr,
        max_iter=1,
        max_eval=1 + LBFGS_MAX_LINE_SEARCH,
        history_size=cfg.lbfgs_history,
        line_search_fn="strong_wolfe",
        # Absolute thresholds would stall losses of small magnitude; a step that cannot
        # move the parameters ends the run as "stationary" instead.
        tolerance_grad=0.0,
        tolerance_change=0.0,
    )


@dataclass
class _Snapshot:
    """The state after ``step`` completed steps, kept in memory to survive a partial step."""

    step: int
    rng: dict[str, Any]
    params: list[torch.Tensor] | None = None
    optimizer: dict | None = None


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C back while the block runs (an optimizer update is applied in place)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


class _ToleranceReached(Exception):
    """Raised inside the L-BFGS closure to stop before the update."""


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def _write_checkpoint(path: pathlib.Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (temporary file, then rename).

    The payload is serialised in memory first, so a failing disk raises a plain ``OSError``
    (not torch's zip-writer error) and no partial or temporary file is left behind.
    """
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buffer.getvalue())


def _read_checkpoint(path: pathlib.Path, comm: MPI.Comm) -> dict[str, Any]:
    """Read on rank 0 and broadcast, so the ranks need not share a file system.

    Every rank raises the same error if the file is missing or unreadable.
    """
    payload, error = None, None
    if comm.rank == 0:
        if not path.is_file():
            error = (
                "missing",
                f"cannot resume: no checkpoint file {str(path)!r}. Start without resume=True "
                "(or use resume='auto' to resume only when the file exists).",
            )
        else:
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # any unreadable file: report it on every rank
                payload = err
            if not (isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT):
                reason = f" ({payload})" if isinstance(payload, Exception) else ""
                error = (
                    "invalid",
                    f"{str(path)!r} is not a dolfinx_nn training checkpoint{reason}",
                )
                payload = None
    if comm.size > 1:
        error = comm.bcast(error, root=0)
    if error is not None:
        kind, message = error
        raise FileNotFoundError(message) if kind == "missing" else ValueError(message)
    return comm.bcast(payload, root=0) if comm.size > 1 else payload


def _same(a: Any, b: Any) -> bool:
    """Equal, floats up to :data:`RESUME_RTOL` (recursively in dicts and lists)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float | int) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=RESUME_RTOL) or (math.isnan(a) and math.isnan(b))
    if isinstance(b, float) and isinstance(a, int) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=RESUME_RTOL)
    return a == b


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """``"name: A in the checkpoint, B now"`` for each entry that differs."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in [*saved, *(k for k in current if k not in saved)]:
            name = f"{prefix}{key}"
            if key not in current:
                out.append(f"{name}: {saved[key]!r} in the checkpoint, absent now")
            elif key not in saved:
                out.append(f"{name}: absent in the checkpoint, {current[key]!r} now")
            else:
                out += _differences(saved[key], current[key], f"{name}.")
        return out
    if _same(saved, current):
        return []
    return [f"{prefix.rstrip('.')}: {saved!r} in the checkpoint, {current!r} now"]


def _check_problem(saved: dict[str, Any] | None, current: dict[str, Any] | None) -> None:
    if current is None:
        return
    if saved is None:
        raise ValueError(
            "cannot resume: the checkpoint does not record which problem it belongs to "
            "(written by an older version); start a new run."
        )
    differences = _differences(saved, current)
    if differences:
        raise ValueError(
            "cannot resume: the checkpoint belongs to another problem (" + "; ".join(differences)
            + "). Resume with the checkpoint's settings, or start a new run."
        )


def _check_resumable(saved: dict[str, Any], cfg: TrainingConfig, step: int, phase: str) -> None:
    current = cfg.as_dict()
    for name in RESULT_FIELDS:
        if not _same(saved[name], current[name]):
            raise ValueError(
                f"cannot resume: TrainingConfig.{name} is {current[name]!r} but the checkpoint "
                f"was written with {saved[name]!r}; this changes the result. Resume with the "
                f"same value or start a new run."
            )
    if cfg.adam_steps != saved["adam_steps"] and (phase == "lbfgs" or step > cfg.adam_steps):
        raise ValueError(
            f"cannot resume: TrainingConfig.adam_steps is {cfg.adam_steps} but the checkpoint "
            f"(step {step}, {phase} phase) was written with adam_steps={saved['adam_steps']}; "
            "adam_steps may only change while the checkpoint is still within the Adam phase."
        )
    if step > cfg.total_steps:
        raise ValueError(
            f"cannot resume: the checkpoint is at step {step}, beyond adam_steps + lbfgs_steps "
            f"= {cfg.total_steps} (TrainingConfig.lbfgs_steps is {cfg.lbfgs_steps})."
        )


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


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
    if not finite:
        raise FloatingPointError(
            f"the loss is not finite (value {value!r} on rank {comm.rank}) at step {step} "
            f"({phase} phase); training stopped. Lower the learning rate or check loss_fn."
        )
    if loss.grad_fn is None:
        raise ValueError("loss_fn returned a tensor that does not depend on the parameters")
    return float(high) if comm.size > 1 else value


def _check_gradients(plist: list[torch.Tensor], phase: str, step: int) -> None:
    for i, p in enumerate(plist):
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            raise FloatingPointError(
                f"the gradient of parameter {i} (shape {tuple(p.shape)}) is not finite at step "
                f"{step} ({phase} phase); training stopped."
            )


def train(
    loss_fn: Callable[[], torch.Tensor],
    params: Params,
    config: TrainingConfig | None = None,
    *,
    comm: MPI.Comm = MPI.COMM_WORLD,
    checkpoint: str | os.PathLike | None = None,
    resume: bool | Literal["auto"] = False,
    desc: str = "training",
    callback: Callable[[int, float], bool | None] | None = None,
    regularizer: Callable[[], torch.Tensor] | None = None,
    problem: dict[str, Any] | None = None,
) -> History:
    """Minimise ``loss_fn()`` with Adam, then L-BFGS.

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
        desc: label of the progress bar (shown on rank 0).
        callback: called on every rank after each step as ``callback(steps_done, loss)``;
            training stops when it returns True on any rank.
        regularizer: a term every rank computes identically from replicated data (weight
            decay of the network's parameters, say), added to ``loss_fn()`` once: through
            :func:`~dolfinx_nn.parallel.replicated`, so that summing the ranks' gradient
            shares does not count it once per rank.  Adding such a term inside ``loss_fn``
            without ``replicated`` would make the gradient grow with the number of ranks.
        problem: a JSON-like description of the problem (mesh, data, formulas, options that
            change the problem), stored in the checkpoint; resuming with a different one is
            refused with the differences listed.  Floats compare up to :data:`RESUME_RTOL`.

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
    plist = _parameter_list(params)

    history = History()
    step, optimizer, opt_phase = 0, None, None
    if resume == "auto":
        exists = comm.bcast(path.is_file() if comm.rank == 0 else None, root=0)
        resume = bool(exists)
    if resume:
        payload = _read_checkpoint(path, comm)
        step, opt_phase = int(payload["step"]), payload["phase"]
        _check_problem(payload.get("problem"), problem)
        _check_resumable(payload["config"], cfg, step, opt_phase)
        _load_params_state(params, plist, payload["params"])
        history = History.from_dict(payload["history"])
        _set_rng_state(payload["rng"])
        if opt_phase is not None and opt_phase == cfg.phase_of(step):
            optimizer = _make_optimizer(opt_phase, plist, cfg)
            optimizer.load_state_dict(payload["optimizer"])
        if history.stopped_because in ("tolerance", "patience", "stationary"):
            return history
    elif cfg.seed is not None:
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)  # noqa: NPY002 (the legacy global generator)
        random.seed(cfg.seed)

    def save(stopped_because: str, collective: bool = True, final: bool = False) -> None:
        """Rank 0 writes the checkpoint; with ``collective``, every rank learns the outcome.

        A failure raises :class:`OutputError` on every rank, except for the ``final``
        checkpoint, whose failure is recorded in ``history.checkpoint_error`` (the training
        result is complete and must not be lost to it).
        """
        history.stopped_because = stopped_because
        if path is None:
            return
        error = None
        if comm.rank == 0:
            payload = {
                "format": CHECKPOINT_FORMAT,
                "step": step,
                "phase": opt_phase,
                "params": _params_state(params, plist),
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "history": history.as_dict(),
                "rng": _rng_state(),
                "config": cfg.as_dict(),
                "comm_size": comm.size,
                "problem": problem,
            }
            try:
                _write_checkpoint(path, payload)
            except Exception as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (
                    describe_error(exc))
                error = f"cannot write the checkpoint {path}: {reason}"
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
        history.checkpoint_error = error
        print0(f"warning: {error}; the result of the training is kept", comm=comm)

    elapsed_before = history.wall_time_s
    start = time.perf_counter()
    patience = _Patience(cfg)
    for value in history.losses:
        patience.update(value)
    bar = progress(None, comm=comm, total=cfg.total_steps, initial=step, desc=desc)
    snapshot = _Snapshot(step, _rng_state())

    def record(value: float, phase: str) -> None:
        nonlocal step
        history.losses.append(value)
        history.phases.append(phase)
        history.times.append(elapsed_before + time.perf_counter() - start)
        step += 1

    def roll_back() -> None:
        """Return to the state after the last completed step (if one is in progress)."""
        if snapshot.step != step:
            return
        _set_rng_state(snapshot.rng)
        if snapshot.params is not None:
            with torch.no_grad():
                for p, saved in zip(plist, snapshot.params, strict=True):
                    p.copy_(saved)
            optimizer.state[plist[0]] = snapshot.optimizer

    def make_closure(optimizer, phase: str, evaluations: list[float]):
        """Evaluate, check, differentiate and sync; stop before the update on tolerance."""

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = loss_fn()
            if regularizer is not None:
                loss = loss + replicated(regularizer(), comm)
            value = _loss_value(loss, comm, phase, step)
            evaluations.append(value)
            if len(evaluations) == 1 and cfg.tolerance is not None and value <= cfg.tolerance:
                raise _ToleranceReached
            loss.backward()
            sync_gradients(plist, comm)
            _check_gradients(plist, phase, step)
            return torch.tensor(value, dtype=torch.float64)

        return closure

    stopped = "completed"
    try:
        while step < cfg.total_steps:
            phase = cfg.phase_of(step)
            if phase != opt_phase:
                optimizer, opt_phase = _make_optimizer(phase, plist, cfg), phase
            bar.set_description(f"{desc} [{phase}]", refresh=False)
            snapshot = _Snapshot(step, _rng_state())
            if phase == "lbfgs":  # the line search moves the parameters: keep a copy
                snapshot.params = [p.detach().clone() for p in plist]
                snapshot.optimizer = _copy_state(optimizer.state[plist[0]])
            evaluations: list[float] = []
            closure = make_closure(optimizer, phase, evaluations)

            stationary = False
            try:
                if phase == "adam":
                    closure()
                    with _deferred_interrupt():
                        optimizer.step()
                        record(evaluations[0], phase)
                else:
                    optimizer.step(closure)
                    stationary = all(
                        torch.equal(p, q) for p, q in zip(plist, snapshot.params, strict=True)
                    )
                    with _deferred_interrupt():
                        record(evaluations[0], phase)
            except _ToleranceReached:
                with _deferred_interrupt():
                    record(evaluations[0], phase)
                stopped = "tolerance"
            bar.update(1)
            if step % cfg.log_every == 0 or stopped != "completed":
                bar.set_postfix(loss=f"{history.losses[-1]:.3e}")

            if stopped == "tolerance":
                break
            if stationary:
                stopped = "stationary"
                break
            if patience.update(history.losses[-1]):
                stopped = "patience"
                break
            if callback is not None:
                wants_stop = bool(callback(step, history.losses[-1]))
                if comm.allreduce(wants_stop, op=MPI.LOR):
                    stopped = "callback"
                    break
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                history.wall_time_s = elapsed_before + time.perf_counter() - start
                save("running")
    except KeyboardInterrupt:
        bar.close()
        roll_back()
        history.wall_time_s = elapsed_before + time.perf_counter() - start
        # No collective call here: another rank may already be gone.  Parameters and
        # optimizer state are replicated, so rank 0 alone can write them.
        save("interrupted", collective=False)
        raise
    except BaseException:
        bar.close()
        roll_back()  # leave the parameters of the last completed step, not a line-search trial
        raise
    bar.close()
    history.wall_time_s = elapsed_before + time.perf_counter() - start
    save(stopped, final=True)
    return history


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
