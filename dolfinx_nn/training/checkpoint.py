"""Checkpoints of :func:`~dolfinx_nn.training.train`: what they hold, how they are written,
read and checked before a run resumes from one.

A checkpoint (a ``torch.save`` file, written by rank 0 atomically) holds the parameters, the
optimizer state, the step, the history, the RNG states, the configuration and, optionally,
a description of the problem being solved.  Resuming refuses a checkpoint of another
problem or of a configuration that changes the result, listing the differences.
"""

from __future__ import annotations

import dataclasses
import io
import math
import pathlib
import random
from typing import Any

from mpi4py import MPI

import numpy as np
import torch

from dolfinx_nn.output import atomic_write
from dolfinx_nn.parallel import raise_on_all_ranks
from dolfinx_nn.training.config import TrainingConfig
from dolfinx_nn.training.phases import PHASES, get_phase

__all__ = [
    "CHECKPOINT_FORMAT",
    "RESULT_FIELDS",
    "RESUME_RTOL",
    "check_problem",
    "check_resumable",
    "read_checkpoint",
    "write_checkpoint",
]

#: Version of the checkpoint layout written by :func:`~dolfinx_nn.training.train`.
CHECKPOINT_FORMAT = 1

#: Relative tolerance of the comparison of float settings on resume: a tolerance derived from
#: a global sum (e.g. the discrepancy principle's noise norm) may differ in its last bits
#: between runs on different numbers of ranks.
RESUME_RTOL = 1e-9

#: Configuration fields that change the trajectory: resuming with other values is refused.
RESULT_FIELDS = (
    *(name for phase in PHASES.values() for name in phase.settings),
    "phases",
    "tolerance",
    "patience",
    "min_delta",
    "seed",
)

#: The phase order of checkpoints written before ``TrainingConfig.phases`` existed.
_FIRST_PHASES = ("adam", "lbfgs")


def _with_added_fields(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's configuration completed by the fields added to ``TrainingConfig`` since
    it was written, with the values that reproduce its run: a phase it did not know ran 0
    steps (``<phase>_steps = 0``), its other settings take today's defaults (they cannot
    have acted), and ``phases`` is Adam then L-BFGS (the only order before it was a field).
    So adding an optimizer to the registry leaves every earlier checkpoint resumable."""
    completed = dict(saved)
    for field in dataclasses.fields(TrainingConfig):
        if field.name in completed:
            continue
        if field.name == "phases":
            completed["phases"] = _FIRST_PHASES
        elif field.name.endswith("_steps"):
            completed[field.name] = 0
        else:
            completed[field.name] = getattr(TrainingConfig(), field.name)
    return completed


# --------------------------------------------------------------------------------------------
# Parameters, RNG and optimizer state
# --------------------------------------------------------------------------------------------


def params_state(params: torch.nn.Module | list[torch.Tensor], plist: list[torch.Tensor]) -> Any:
    """A CPU copy of the parameters: the module's state dict, or the list of tensors."""
    if isinstance(params, torch.nn.Module):
        return {k: v.detach().cpu().clone() for k, v in params.state_dict().items()}
    return [p.detach().cpu().clone() for p in plist]


def load_params_state(
    params: torch.nn.Module | list[torch.Tensor], plist: list[torch.Tensor], state: Any
) -> None:
    """Copy a :func:`params_state` into the parameters.

    Raises:
        ValueError: the state does not fit (a module state for tensors, other shapes, ...).
    """
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


def rng_state() -> dict[str, Any]:
    """The states of the global torch (and CUDA), NumPy and ``random`` generators."""
    keys, pos, has_gauss, gauss = np.random.get_state()[1:]  # noqa: NPY002 (checkpointed)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore an :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    keys, pos, has_gauss, gauss = state["numpy"]
    mt_state = ("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss)
    np.random.set_state(mt_state)  # noqa: NPY002
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def copy_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    """Copy one parameter's optimizer state so that the next step cannot alter the copy.

    Tensors are cloned (L-BFGS updates ``prev_flat_grad`` in place); lists are copied
    shallowly: L-BFGS appends and pops its correction pairs but never modifies one in place,
    so the copy costs O(n), not O(history * n).
    """
    return {
        k: v.clone() if isinstance(v, torch.Tensor) else list(v) if isinstance(v, list) else v
        for k, v in state.items()
    }


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def write_checkpoint(path: pathlib.Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (temporary file, then rename).

    The payload is serialised in memory first, so a failing disk raises a plain ``OSError``
    (not torch's zip-writer error) and no partial or temporary file is left behind.
    """
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buffer.getvalue())


def read_checkpoint(path: pathlib.Path, comm: MPI.Comm) -> dict[str, Any]:
    """Read on rank 0 and broadcast, so the ranks need not share a file system (collective).

    Raises:
        FileNotFoundError: there is no file ``path`` (on every rank).
        ValueError: the file is not a checkpoint of this format (on every rank).
    """
    payload: Any = None
    error: Exception | None = None
    if comm.rank == 0:
        if not path.is_file():
            error = FileNotFoundError(
                f"cannot resume: no checkpoint file {str(path)!r}. Start without resume=True "
                "(or use resume='auto' to resume only when the file exists)."
            )
        else:
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # any unreadable file: report it on every rank
                payload = err
            if not (isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT):
                reason = f" ({payload})" if isinstance(payload, Exception) else ""
                error = ValueError(f"{str(path)!r} is not a dolfinx_nn training checkpoint{reason}")
                payload = None
    raise_on_all_ranks(error, comm)
    return comm.bcast(payload, root=0) if comm.size > 1 else payload


# --------------------------------------------------------------------------------------------
# Checks before resuming
# --------------------------------------------------------------------------------------------


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
    return bool(a == b)


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


def check_problem(saved: dict[str, Any] | None, current: dict[str, Any] | None) -> None:
    """Refuse to resume a checkpoint of another problem (``problem`` of ``train``).

    Raises:
        ValueError: the descriptions differ (listed), or the checkpoint has none.
    """
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


def check_resumable(
    saved: dict[str, Any], cfg: TrainingConfig, step: int, phase: str | None
) -> None:
    """Refuse to resume with a configuration that would change the result.

    Allowed changes: ``checkpoint_every``, ``log_every``, and the step count of a phase
    that has not ended yet, as long as the checkpoint's step stays within it (the last
    phase: within the total).

    Args:
        saved: the checkpoint's configuration (``TrainingConfig.as_dict()``).
        cfg: the configuration now.
        step: the checkpoint's step; phase: its optimizer's phase (None before any step).

    Raises:
        ValueError: naming the field, both values and what may change.
    """
    saved = _with_added_fields(saved)
    current = cfg.as_dict()
    for name in RESULT_FIELDS:
        if not _same(saved[name], current[name]):
            raise ValueError(
                f"cannot resume: TrainingConfig.{name} is {current[name]!r} but the checkpoint "
                f"was written with {saved[name]!r}; this changes the result. Resume with the "
                f"same value or start a new run."
            )
    started = cfg.phases.index(phase) if phase in cfg.phases else -1
    for i, (name, end) in enumerate(cfg.phase_ends()[:-1]):
        field = f"{name}_steps"
        if current[field] != saved[field] and (started > i or step > end):
            raise ValueError(
                f"cannot resume: TrainingConfig.{field} is {current[field]} but the checkpoint "
                f"(step {step}, {phase} phase) was written with {field}={saved[field]}; "
                f"{field} may only change while the checkpoint is still within the "
                f"{get_phase(name).label} phase."
            )
    if step > cfg.total_steps:
        last = cfg.phases[-1]
        raise ValueError(
            f"cannot resume: the checkpoint is at step {step}, beyond "
            + " + ".join(f"{p}_steps" for p in cfg.phases)
            + f" = {cfg.total_steps} (TrainingConfig.{last}_steps is {cfg.steps_of(last)})."
        )
