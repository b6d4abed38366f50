"""What a prior's fit returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from dolfinx_nn.training import History


@dataclass
class PriorResult:
    """A recovered coefficient and how it was obtained.

    Attributes:
        prior: ``"network"`` or ``"tikhonov"``.
        coefficient: owned dofs of the recovered ``q`` (P1 on the inversion mesh).
        history: training history of the (selected) run.
        errors: relative errors (see :meth:`InverseProblem.errors`).
        iterations: optimizer steps taken in total.
        wall_time_s: wall-clock time of the fit.
        details: prior-specific information (network size, regularisation runs, ...).
    """

    prior: str
    coefficient: torch.Tensor
    history: History
    errors: dict[str, float]
    iterations: int
    wall_time_s: float
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary: errors, iterations, time, details and the loss history."""
        return {
            **self.errors,
            "iterations": self.iterations,
            "wall_time_s": self.wall_time_s,
            "final_loss": self.history.losses[-1] if self.history.losses else None,
            "stopped_because": self.history.stopped_because,
            **({"checkpoint_error": self.history.checkpoint_error}
               if self.history.checkpoint_error else {}),
            **self.details,
            "loss_history": list(self.history.losses),
        }
