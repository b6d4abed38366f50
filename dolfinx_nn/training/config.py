"""The one settings object of :func:`~dolfinx_nn.training.train`: :class:`TrainingConfig`.

Every solver that trains a network takes its training settings as a :class:`TrainingConfig`
(a field of the solver's own configuration), and every command line builds one from its
options.  The optimizer phases run in the order of :attr:`TrainingConfig.phases`; phase
``name`` takes ``name_steps`` steps with the settings its entry in
:data:`~dolfinx_nn.training.phases.PHASES` reads (``name_lr``, ...).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dolfinx_nn.training.phases import PHASES, get_phase

__all__ = ["TrainingConfig"]


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, int | float | np.number) and not isinstance(v, bool)


@dataclass(frozen=True)
class TrainingConfig:
    """Settings of :func:`~dolfinx_nn.training.train`.

    Attributes:
        adam_steps: Adam steps; 0 skips the phase.
        adam_lr: Adam learning rate.
        lbfgs_steps: L-BFGS steps, each one ``LBFGS.step(closure)`` with ``max_iter=1`` (one
            direction and one strong Wolfe line search of at most
            :data:`~dolfinx_nn.training.phases.LBFGS_MAX_LINE_SEARCH` evaluations); 0 skips
            the phase.
        lbfgs_lr: L-BFGS initial step length.
        lbfgs_history: number of L-BFGS correction pairs kept.
        tolerance: stop as soon as an evaluated loss is ``<= tolerance`` (the parameters are
            left as they produced that loss); None disables it.
        patience: stop after this many consecutive steps without a relative improvement of
            the best loss by more than ``min_delta``; None disables it.
        min_delta: relative improvement that resets the patience counter.
        checkpoint_every: write a checkpoint every this many steps (0: only at the end and
            on Ctrl-C); used only when :func:`~dolfinx_nn.training.train` gets a checkpoint
            path.
        log_every: refresh the loss shown in the progress bar every this many steps.
        seed: seed of the torch, NumPy and ``random`` global generators at the start of a
            fresh run (the same on every rank); None leaves them alone.
        sgd_steps: plain (stochastic) gradient descent steps, ``torch.optim.SGD``; 0 skips
            the phase.
        sgd_lr: SGD step size.
        sgd_momentum: SGD momentum (heavy ball; 0: none).
        phases: names of the optimizer phases in the order they run (each from
            :data:`~dolfinx_nn.training.phases.PHASES`, at most once); a phase with steps
            must be listed.  Default: Adam, then L-BFGS.
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
    sgd_steps: int = 0
    sgd_lr: float = 1e-3
    sgd_momentum: float = 0.0
    phases: tuple[str, ...] = ("adam", "lbfgs")

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, expected: str) -> None:
            if not ok:
                value = getattr(self, name)
                raise ValueError(f"TrainingConfig.{name} must be {expected}, got {value!r}")

        if isinstance(self.phases, list):  # a list from JSON or a command line
            object.__setattr__(self, "phases", tuple(self.phases))
        phases = self.phases
        check("phases", isinstance(phases, tuple) and bool(phases)
              and all(isinstance(p, str) for p in phases), "a non-empty tuple of phase names")
        for name in phases:
            get_phase(name)  # an unknown name: ValueError listing the valid ones
        check("phases", len(set(phases)) == len(phases), "a tuple of distinct phase names")
        for name in ("checkpoint_every", *(f"{p}_steps" for p in PHASES)):
            check(name, _is_int(getattr(self, name)) and getattr(self, name) >= 0, "an int >= 0")
        for name in PHASES:
            steps = getattr(self, f"{name}_steps")
            if steps and name not in phases:
                raise ValueError(
                    f"TrainingConfig.{name}_steps is {steps} but {name!r} is not in "
                    f"TrainingConfig.phases {phases!r}; add it there or set {name}_steps=0"
                )
        for name in ("lbfgs_history", "log_every"):
            check(name, _is_int(getattr(self, name)) and getattr(self, name) >= 1, "an int >= 1")
        for name in ("adam_lr", "lbfgs_lr", "sgd_lr"):
            v = getattr(self, name)
            check(name, _is_real(v) and math.isfinite(v) and v > 0, "a finite float > 0")
        mom = self.sgd_momentum
        check("sgd_momentum", _is_real(mom) and math.isfinite(mom) and mom >= 0, "a float >= 0")
        tol = self.tolerance
        check("tolerance", tol is None or (_is_real(tol) and tol >= 0), "None or a float >= 0")
        pat = self.patience
        check("patience", pat is None or (_is_int(pat) and pat >= 1), "None or an int >= 1")
        md = self.min_delta
        check("min_delta", _is_real(md) and math.isfinite(md) and md >= 0, "a float >= 0")
        check("seed", self.seed is None or _is_int(self.seed), "None or an int")

    def steps_of(self, phase: str) -> int:
        """Steps of phase ``phase`` (``<phase>_steps``)."""
        return int(getattr(self, f"{get_phase(phase).name}_steps"))

    @property
    def total_steps(self) -> int:
        """Steps of all phases (``adam_steps + lbfgs_steps`` by default)."""
        return sum(self.steps_of(p) for p in self.phases)

    def phase_ends(self) -> list[tuple[str, int]]:
        """``(phase, step after its last)`` for each phase, in order."""
        ends, end = [], 0
        for name in self.phases:
            end += self.steps_of(name)
            ends.append((name, end))
        return ends

    def phase_of(self, step: int) -> str:
        """The phase that runs step ``step`` (0-based; the last phase from the end on)."""
        for name, end in self.phase_ends():
            if step < end:
                return name
        return self.phases[-1]

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return dataclasses.asdict(self)
