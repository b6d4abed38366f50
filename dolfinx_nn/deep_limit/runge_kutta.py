"""Explicit Runge–Kutta integration of autonomous systems ``dy/dt = F(y)``.

The state ``y`` is a tuple of tensors (the adjoint pass integrates the state, its adjoint and
the parameter gradients together).  Fixed-step schemes take ``steps`` equal steps over the
time span; embedded pairs (Dormand–Prince 5(4)) choose their steps from ``rtol``/``atol`` with
the standard controller of Hairer, Nørsett & Wanner (Solving ODEs I, §II.4).  Everything is
plain torch arithmetic, so autograd can differentiate straight through the steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

State = tuple[torch.Tensor, ...]
RHS = Callable[[State], State]


@dataclass(frozen=True)
class ButcherTableau:
    """Coefficients of an explicit Runge–Kutta scheme.

    Attributes:
        name: registry name.
        order: order of the propagated solution.
        a: strictly lower-triangular stage coefficients, row ``i`` has ``i`` entries.
        b: weights of the propagated solution.
        b_error: ``b - b_hat`` of an embedded pair (``None`` for fixed-step schemes).
        error_order: order of the embedded solution (sets the step-size exponent).
    """

    name: str
    order: int
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_error: tuple[float, ...] | None = None
    error_order: int | None = None
    stages: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", len(self.b))

    @property
    def adaptive(self) -> bool:
        """True for an embedded pair with error control."""
        return self.b_error is not None


_DOPRI_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DOPRI_B_HAT = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)

#: name -> tableau
TABLEAUS: dict[str, ButcherTableau] = {
    "euler": ButcherTableau("euler", 1, ((),), (1.0,)),
    "midpoint": ButcherTableau("midpoint", 2, ((), (0.5,)), (0.0, 1.0)),
    "rk4": ButcherTableau(
        "rk4", 4, ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), (1 / 6, 1 / 3, 1 / 3, 1 / 6)
    ),
    "dopri5": ButcherTableau(
        "dopri5",
        5,
        (
            (),
            (1 / 5,),
            (3 / 40, 9 / 40),
            (44 / 45, -56 / 15, 32 / 9),
            (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
            (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
            (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
        ),
        _DOPRI_B,
        tuple(b - bh for b, bh in zip(_DOPRI_B, _DOPRI_B_HAT, strict=True)),
        error_order=4,
    ),
}


def get_tableau(method: str) -> ButcherTableau:
    """Look up a scheme by name.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    if method not in TABLEAUS:
        raise ValueError(
            f"unknown Runge-Kutta method {method!r}; choose one of: {', '.join(TABLEAUS)}"
        )
    return TABLEAUS[method]


def _axpy(y: State, h: float, coeffs: tuple[float, ...], ks: list[State]) -> State:
    """``y + h * sum_j coeffs[j] * ks[j]`` componentwise (zero coefficients skipped)."""
    out = []
    for i, yi in enumerate(y):
        acc = yi
        for c, k in zip(coeffs, ks, strict=False):
            if c != 0.0:
                acc = acc + (h * c) * k[i]
        out.append(acc)
    return tuple(out)


def rk_step(rhs: RHS, y: State, h: float, tableau: ButcherTableau) -> tuple[State, State | None]:
    """One step of size ``h`` (may be negative).

    Returns:
        The new state and, for embedded pairs, the local error estimate (else ``None``).
    """
    ks: list[State] = []
    for row in tableau.a:
        ks.append(rhs(_axpy(y, h, row, ks) if row else y))
    y_new = _axpy(y, h, tableau.b, ks)
    if tableau.b_error is None:
        return y_new, None
    zero = tuple(torch.zeros_like(yi) for yi in y)
    return y_new, _axpy(zero, h, tableau.b_error, ks)


@dataclass
class IntegrationStats:
    """What an integration did: accepted and rejected steps, right-hand-side evaluations."""

    accepted: int = 0
    rejected: int = 0
    evaluations: int = 0


def _error_norm(err: State, y0: State, y1: State, rtol: float, atol: float) -> float:
    """RMS norm of the error scaled by ``atol + rtol * max(|y0|, |y1|)`` over all components."""
    total, count = 0.0, 0
    for e, a, b in zip(err, y0, y1, strict=True):
        scale = atol + rtol * torch.maximum(a.detach().abs(), b.detach().abs())
        total += float(((e.detach() / scale) ** 2).sum())
        count += e.numel()
    return math.sqrt(total / max(count, 1))


def _initial_step(rhs: RHS, y0: State, f0: State, span: float, order: int, rtol, atol) -> float:
    """Starting step size of Hairer, Nørsett & Wanner (II.4), capped by the span."""
    d0 = _error_norm(y0, y0, y0, rtol, atol)
    d1 = _error_norm(f0, y0, y0, rtol, atol)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, abs(span))
    y1 = tuple(a + math.copysign(h0, span) * b for a, b in zip(y0, f0, strict=True))
    f1 = rhs(y1)
    diff = tuple(a - b for a, b in zip(f1, f0, strict=True))
    d2 = _error_norm(diff, y0, y0, rtol, atol) / h0
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (order + 1))
    return min(100 * h0, h1, abs(span))


def integrate(
    rhs: RHS,
    y0: State,
    method: str | ButcherTableau = "rk4",
    *,
    span: float = 1.0,
    steps: int | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    max_steps: int = 100_000,
) -> tuple[State, IntegrationStats]:
    """Integrate ``dy/dt = rhs(y)`` from ``t = 0`` to ``t = span`` (``span < 0``: backwards).

    Args:
        rhs: right-hand side, tuple of tensors -> tuple of tensors of the same shapes.
        y0: initial state.
        method: a name from :data:`TABLEAUS` or a tableau.
        span: length of the time interval, signed.
        steps: number of equal steps (fixed-step schemes; for embedded pairs it fixes the
            steps too and switches error control off).
        rtol, atol: tolerances of the error control (embedded pairs).
        max_steps: guard against stiff or blown-up problems.

    Returns:
        The state at ``t = span`` and the :class:`IntegrationStats`.

    Raises:
        ValueError: a fixed-step scheme without ``steps``, or bad tolerances.
        RuntimeError: the step size underflowed or ``max_steps`` was exceeded.
    """
    tableau = get_tableau(method) if isinstance(method, str) else method
    stats = IntegrationStats()
    if steps is not None:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        h = span / steps
        y = y0
        for _ in range(steps):
            y, _ = rk_step(rhs, y, h, tableau)
        stats.accepted = steps
        stats.evaluations = steps * tableau.stages
        return y, stats
    order = tableau.error_order
    if not tableau.adaptive or order is None:
        raise ValueError(
            f"method {tableau.name!r} is a fixed-step scheme: give steps=N "
            f"(adaptive methods: {', '.join(k for k, t in TABLEAUS.items() if t.adaptive)})"
        )
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be positive, got rtol={rtol!r}, atol={atol!r}")
    exponent = 1.0 / (order + 1)
    f0 = rhs(y0)
    stats.evaluations += 1
    h = _initial_step(rhs, y0, f0, span, order, rtol, atol)
    stats.evaluations += 1
    direction = 1.0 if span > 0 else -1.0
    t, y = 0.0, y0
    while abs(span) - t > 1e-14 * max(1.0, abs(span)):
        if stats.accepted + stats.rejected >= max_steps:
            raise RuntimeError(f"ODE integration exceeded max_steps={max_steps} at t={t:.3g}")
        h = min(h, abs(span) - t)
        if h < 1e-14 * max(1.0, abs(span)):
            raise RuntimeError(f"ODE step size underflow at t={t:.3g} (stiff or non-finite)")
        y_new, err = rk_step(rhs, y, direction * h, tableau)
        stats.evaluations += tableau.stages
        assert err is not None  # an embedded pair (checked above) gives the error estimate
        norm = _error_norm(err, y, y_new, rtol, atol)
        if not math.isfinite(norm):
            stats.rejected += 1
            h *= 0.2
            continue
        if norm <= 1.0:
            t += h
            y = y_new
            stats.accepted += 1
            h *= min(5.0, max(0.2, 0.9 * (norm + 1e-16) ** -exponent))
        else:
            stats.rejected += 1
            h *= max(0.2, 0.9 * norm**-exponent)
    return y, stats
