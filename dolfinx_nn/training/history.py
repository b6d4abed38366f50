"""What a training run did: :class:`History` (losses, phases, times, why it stopped)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["History"]


@dataclass
class History:
    """What :func:`~dolfinx_nn.training.train` did.

    Attributes:
        losses: the loss evaluated at each step, before that step's update (every phase).
            When training stops on ``tolerance``, the last entry is the evaluation that met
            it, and no update followed.
        phases: the phase (``"adam"``, ``"lbfgs"``, ...) of each entry of ``losses``.
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
