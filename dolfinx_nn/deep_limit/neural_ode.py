"""The neural ODE ``dx/dt = f(x; theta)`` on ``[0, 1]`` as a torch module."""

from __future__ import annotations

import torch
from torch import nn

from dolfinx_nn.deep_limit.adjoint import odeint_adjoint
from dolfinx_nn.deep_limit.runge_kutta import IntegrationStats, get_tableau, integrate

#: how gradients are computed: through the solver's operations, or by the adjoint ODE
GRADIENT_MODES = ("direct", "adjoint")


class NeuralODE(nn.Module):
    """Time-one flow map of ``dx/dt = f(x)``: the deep limit of :class:`ConstantWeightResNet`.

    Args:
        f: any module mapping ``(..., d)`` to ``(..., d)``; shared with the ResNets it is
            compared with.
        method: ``"euler"``, ``"midpoint"``, ``"rk4"`` (fixed steps) or ``"dopri5"``
            (adaptive Dormand–Prince 5(4)).
        steps: number of equal steps; required for fixed-step methods, optional for
            ``"dopri5"`` (then error control is off).
        rtol, atol: tolerances of the adaptive method.
        gradient: ``"direct"`` (autograd through the solver steps; exact gradient of the
            discrete flow) or ``"adjoint"`` (continuous adjoint; memory independent of steps).

    Example:
        >>> f = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> flow = NeuralODE(f, method="dopri5", rtol=1e-8, atol=1e-10, gradient="adjoint")
        >>> y = flow(torch.randn(5, 2))
    """

    def __init__(
        self,
        f: nn.Module,
        method: str = "dopri5",
        *,
        steps: int | None = None,
        rtol: float = 1e-6,
        atol: float = 1e-8,
        gradient: str = "direct",
        max_steps: int = 100_000,
    ) -> None:
        super().__init__()
        if not isinstance(f, nn.Module):
            raise TypeError(f"f must be a torch.nn.Module, got {type(f).__name__}")
        tableau = get_tableau(method)
        if gradient not in GRADIENT_MODES:
            raise ValueError(f"unknown gradient {gradient!r}; choose one of: {GRADIENT_MODES}")
        if steps is None and not tableau.adaptive:
            raise ValueError(f"method {method!r} is a fixed-step scheme: give steps=N")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                                  or steps < 1):
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be positive, got rtol={rtol}, atol={atol}")
        self.f = f
        self.method = method
        self.steps = steps
        self.rtol = rtol
        self.atol = atol
        self.gradient = gradient
        self.max_steps = max_steps
        #: statistics of the last forward (and, with the adjoint, backward) integration
        self.stats: list[IntegrationStats] = []

    def _options(self) -> dict:
        return {
            "method": self.method,
            "steps": self.steps,
            "rtol": self.rtol,
            "atol": self.atol,
            "max_steps": self.max_steps,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x(1)`` for ``x(0) = x`` (rows are independent samples)."""
        if not torch.is_tensor(x):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not torch.isfinite(x).all():
            raise ValueError("NeuralODE input contains NaN or Inf")
        if self.gradient == "adjoint" and torch.is_grad_enabled():
            params = tuple(p for p in self.f.parameters() if p.requires_grad)
            x1, self.stats = odeint_adjoint(self.f, x, params, self._options())
            return x1
        (x1,), stats = integrate(lambda y: (self.f(y[0]),), (x,), **self._options())
        self.stats = [stats]
        return x1

    def extra_repr(self) -> str:
        steps = f"steps={self.steps}" if self.steps else f"rtol={self.rtol}, atol={self.atol}"
        return f"method={self.method!r}, {steps}, gradient={self.gradient!r}"
