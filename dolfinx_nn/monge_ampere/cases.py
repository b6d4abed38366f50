"""Monge-Ampere problems: built-in test cases with known convex solutions, and user formulas.

Each built-in case gives the exact solution ``u`` (also the Dirichlet data ``g = u`` on the
boundary) and the source ``f = det D^2 u``.  :func:`formula_case` builds a problem from
formulas typed by a user (``f``, ``g`` and optionally the exact solution), parsed by the safe
expression parser :mod:`dolfinx_nn.expressions`.  The built-in formulas are written once,
against a small table of elementary functions, and evaluated with NumPy (errors,
interpolation), PyTorch (collocation losses) or UFL (finite element forms).  Coordinates are
passed as a list of components ``[x_0, ..., x_{d-1}]``: columns of an ``(n, d)`` tensor,
rows of a ``(d, n)`` array, or the components of ``ufl.SpatialCoordinate``.

Cases (``r = |x|``, ``r_0 = |x - x_0|`` with ``x_0`` the centre of the domain):

========== ====================================== =========================================
name       u                                      f = det D^2 u
========== ====================================== =========================================
smooth     exp(r^2 / 2)                           (1 + r^2) exp(d r^2 / 2)
brenner    20 exp(x^6 / 6 + y)          (d = 2)   2000 x^4 exp(x^6 / 3 + 2 y)
singular   -sqrt(2 - r^2)               (d = 2)   2 / (2 - r^2)^2   (blows up at (1, 1))
degenerate max(r_0 - 0.2, 0)^2 / 2                (max(r_0 - 0.2, 0) / r_0)^(d - 1)
========== ====================================== =========================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import ufl

#: Radius of the flat disk of the ``degenerate`` case.
DEGENERATE_RADIUS = 0.2


@dataclass(frozen=True)
class Ops:
    """The elementary functions a formula may use, for one backend."""

    exp: Callable[[Any], Any]
    sqrt: Callable[[Any], Any]
    positive_part: Callable[[Any], Any]


OPS: dict[str, Ops] = {
    "numpy": Ops(np.exp, np.sqrt, lambda a: np.maximum(a, 0.0)),
    "torch": Ops(torch.exp, torch.sqrt, torch.relu),
    "ufl": Ops(ufl.exp, ufl.sqrt, lambda a: ufl.max_value(a, 0.0)),
}

Formula = Callable[[Sequence[Any], Ops, Sequence[float]], Any]


def _sum_sq(x: Sequence[Any]) -> Any:
    total = x[0] * x[0]
    for xi in x[1:]:
        total = total + xi * xi
    return total


def _dist(x: Sequence[Any], center: Sequence[float], ops: Ops) -> Any:
    return ops.sqrt(_sum_sq([xi - ci for xi, ci in zip(x, center, strict=True)]))


def _smooth_u(x, ops, center):
    return ops.exp(0.5 * _sum_sq(x))


def _smooth_f(x, ops, center):
    r2 = _sum_sq(x)
    return (1.0 + r2) * ops.exp(0.5 * len(x) * r2)


def _brenner_u(x, ops, center):
    return 20.0 * ops.exp(x[0] ** 6 / 6.0 + x[1])


def _brenner_f(x, ops, center):
    return 2000.0 * x[0] ** 4 * ops.exp(x[0] ** 6 / 3.0 + 2.0 * x[1])


def _singular_u(x, ops, center):
    return -ops.sqrt(2.0 - _sum_sq(x))


def _singular_f(x, ops, center):
    s = 2.0 - _sum_sq(x)
    return 2.0 / (s * s)


def _degenerate_u(x, ops, center):
    t = ops.positive_part(_dist(x, center, ops) - DEGENERATE_RADIUS)
    return 0.5 * t * t


def _degenerate_f(x, ops, center):
    r = _dist(x, center, ops)
    ratio = ops.positive_part(r - DEGENERATE_RADIUS) / (r + 1e-300)
    return ratio ** (len(x) - 1)


@dataclass(frozen=True)
class Case:
    """One problem: source, boundary data, exact solution if known, and its dimensions.

    Attributes:
        name: registry key (or ``"formula"`` for user formulas).
        description: one line for help texts and reports.
        u_formula: exact solution (``None`` if unknown); the Dirichlet data unless
            ``g_formula`` is given.
        f_formula: the source, ``det D^2 u``.
        dims: dimensions the case is defined in (``None``: any ``d >= 2``).
        g_formula: Dirichlet data, if it is not the exact solution's restriction.
    """

    name: str
    description: str
    u_formula: Formula | None
    f_formula: Formula
    dims: tuple[int, ...] | None = None
    g_formula: Formula | None = None

    def __post_init__(self) -> None:
        if self.u_formula is None and self.g_formula is None:
            raise ValueError(f"case {self.name!r} needs boundary data g or an exact solution u")

    @property
    def has_exact(self) -> bool:
        """Whether the exact solution is known (errors can be measured)."""
        return self.u_formula is not None

    def check_dim(self, dim: int) -> None:
        """Raise ``ValueError`` if the case is not defined in ``dim`` dimensions."""
        allowed = self.dims if self.dims is not None else tuple(range(2, 100))
        if dim not in allowed or dim < 2:
            valid = ", ".join(map(str, self.dims)) if self.dims else "any d >= 2"
            raise ValueError(f"case {self.name!r} is not defined for d = {dim}; valid: {valid}")

    def u(self, x: Sequence[Any], backend: str, center: Sequence[float]) -> Any:
        """Exact solution at the coordinate components ``x`` with the given backend.

        Raises:
            ValueError: the exact solution is not known.
        """
        if self.u_formula is None:
            raise ValueError(f"case {self.name!r} has no exact solution")
        return self.u_formula(x, _ops(backend), center)

    def g(self, x: Sequence[Any], backend: str, center: Sequence[float]) -> Any:
        """Dirichlet data at the coordinate components ``x`` (the exact solution by default)."""
        formula = self.g_formula if self.g_formula is not None else self.u_formula
        if formula is None:  # construction requires g or u; checked again for the reader
            raise ValueError(f"case {self.name!r} has neither Dirichlet data nor exact solution")
        return formula(x, _ops(backend), center)

    def f(self, x: Sequence[Any], backend: str, center: Sequence[float]) -> Any:
        """Source ``det D^2 u`` at the coordinate components ``x``."""
        return self.f_formula(x, _ops(backend), center)

    def u_torch(self, points: torch.Tensor, center: Sequence[float]) -> torch.Tensor:
        """Exact solution at points shaped ``(n, d)``."""
        return self.u(list(points.unbind(-1)), "torch", center)

    def f_torch(self, points: torch.Tensor, center: Sequence[float]) -> torch.Tensor:
        """Source at points shaped ``(n, d)``."""
        return self.f(list(points.unbind(-1)), "torch", center)

    def g_torch(self, points: torch.Tensor, center: Sequence[float]) -> torch.Tensor:
        """Dirichlet data at points shaped ``(n, d)``."""
        return self.g(list(points.unbind(-1)), "torch", center)


def _ops(backend: str) -> Ops:
    try:
        return OPS[backend]
    except KeyError:
        raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(OPS)}") from None


CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case("smooth", "u = exp(|x|^2/2), any dimension", _smooth_u, _smooth_f),
        Case("brenner", "u = 20 exp(x^6/6 + y), f vanishes on x = 0", _brenner_u, _brenner_f, (2,)),
        Case("singular", "u = -sqrt(2 - |x|^2), f unbounded at (1, 1)", _singular_u, _singular_f,
             (2,)),
        Case("degenerate", "u = max(|x - x0| - 0.2, 0)^2 / 2, f = 0 on a disk", _degenerate_u,
             _degenerate_f),
    )
}


def get_case(name: str) -> Case:
    """The case called ``name``, or a ``ValueError`` listing the valid names."""
    try:
        return CASES[name]
    except KeyError:
        raise ValueError(f"unknown case {name!r}; choose one of: {', '.join(CASES)}") from None


def noisy(f_values: np.ndarray | torch.Tensor, level: float, rng: np.random.Generator):
    """Multiplicative Gaussian noise: ``f (1 + level * xi)``, ``xi ~ N(0, 1)`` per value.

    Args:
        f_values: source values (array or tensor).
        level: relative noise level, ``>= 0``.
        rng: random generator (one per rank).
    """
    if not np.isfinite(level) or level < 0:
        raise ValueError(f"noise level must be a finite number >= 0, got {level!r}")
    if level == 0:
        return f_values
    xi = rng.standard_normal(tuple(f_values.shape))
    if isinstance(f_values, torch.Tensor):
        return f_values * (1.0 + level * torch.as_tensor(xi, dtype=f_values.dtype,
                                                         device=f_values.device))
    return f_values * (1.0 + level * xi)


def _stack(x: Sequence[Any], backend: str) -> Any:
    """Coordinate components -> the layout :class:`~dolfinx_nn.expressions.ParsedExpression`
    evaluates: a UFL vector, a ``(d, n)`` array, or an ``(n, d)`` tensor."""
    if backend == "ufl":
        return ufl.as_vector(list(x))
    if backend == "numpy":
        return np.stack([np.asarray(xi, dtype=float) for xi in x])
    return torch.stack(list(x), dim=-1)


def _from_expression(expr) -> Formula:
    def formula(x, ops, center):
        backend = next(name for name, o in OPS.items() if o is ops)
        value = getattr(expr, backend)(_stack(x, backend))
        if backend == "ufl" and expr.max_coordinate < 0:  # a constant: give it the domain
            value = value + (x[0] - x[0])
        return value

    return formula


def formula_case(f: str, g: str, exact: str | None = None, dim: int | None = None) -> Case:
    """A problem from formulas in ``x[0], ..., x[d-1]`` (see :mod:`dolfinx_nn.expressions`).

    Args:
        f: the source, e.g. ``"(1 + x[0]**2 + x[1]**2)*exp(x[0]**2 + x[1]**2)"``; must be
            ``>= 0`` (checked where it is sampled).
        g: the Dirichlet data.
        exact: the exact solution, if known (then errors are reported).
        dim: the space dimension, if known: formulas using ``x[i]``, ``i >= dim``, are
            rejected here.

    Raises:
        ValueError: a formula outside the grammar, naming the bad piece and what is allowed.
    """
    from dolfinx_nn.expressions import parse_expression

    parsed = {}
    for name, text in (("f", f), ("g", g), ("exact", exact)):
        if text is None:
            continue
        try:
            parsed[name] = parse_expression(text, dim=dim)
        except ValueError as err:
            raise ValueError(f"--{name}: {err}") from None
        if parsed[name].uses_time:
            raise ValueError(f"--{name}: the Monge-Ampere problem is stationary; {text!r} uses t")
    used = max(p.max_coordinate for p in parsed.values()) + 1
    dims = None if dim is None else (dim,)
    description = f"f = {f}, g = {g}" + (f", exact u = {exact}" if exact else "")
    return Case(
        "formula", description,
        _from_expression(parsed["exact"]) if "exact" in parsed else None,
        _from_expression(parsed["f"]), dims or (tuple(range(max(used, 2), 100))),
        g_formula=_from_expression(parsed["g"]),
    )


def check_data(name: str, points: np.ndarray, values: np.ndarray, comm, *,
               nonnegative: bool = False, where: str = "") -> None:
    """Refuse data that are not finite (or negative) at the points they are evaluated at.

    Collective: every rank raises the same error, naming the first bad value of the lowest
    rank that has one, its point, and how many points are bad in all.

    Args:
        name: the datum, e.g. ``"f"`` or ``"g"``.
        points: this rank's points ``(n, d)`` (or ``(n, 3)``; the first ``d`` columns count).
        values: the datum there ``(n,)``.
        comm: communicator the points are split over.
        nonnegative: also refuse values ``< 0`` (the source of ``det D^2 u = f``).
        where: what the points are, for the message (e.g. ``"collocation points"``).

    Raises:
        ValueError: on every rank, if any value is bad.
    """
    values = np.asarray(values, dtype=float).ravel()
    points = np.asarray(points, dtype=float)
    if points.ndim != 2:  # explicit width: a rank may hold no points, and (0, -1) is ambiguous
        points = points.reshape(len(values), points.size // len(values) if len(values) else 0)
    bad = ~np.isfinite(values)
    if nonnegative:
        bad |= values < 0
    first = None
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        first = (float(values[i]), [float(c) for c in points[i]])
    count = comm.allreduce(int(bad.sum()))
    if count == 0:
        return
    value, point = next(item for item in comm.allgather(first) if item is not None)
    wanted = "finite and >= 0" if nonnegative else "finite"
    at = ", ".join(f"{c:.6g}" for c in point)
    raise ValueError(f"{name} must be {wanted}: {name} = {value:.6g} at x = ({at})"
                     f"{' (' + where + ')' if where else ''}; {count} such point(s)")
