"""A discovered equation ``u_t = sum_k c_k T_k``: readable formula and UFL right-hand side."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import ufl

from dolfinx_nn.discovery.library import Term, parse_term, term_name

if TYPE_CHECKING:
    import dolfinx.fem

#: A coefficient of a form: a number, or a ``dolfinx.fem.Constant`` holding it.
type Coefficient = float | dolfinx.fem.Constant

__all__ = ["format_equation", "hessian_pairs", "weak_rhs", "weak_rhs_mixed"]


def format_equation(coefficients: Mapping[str, float], digits: int = 4) -> str:
    """``u_t = 0.1*u_xx - 0.5*u_x`` from term name -> coefficient (data units)."""
    if not coefficients:
        return "u_t = 0"
    parts = []
    for i, (name, c) in enumerate(coefficients.items()):
        mag = f"{abs(c):.{digits}g}"
        body = mag if name == "1" else f"{mag}*{name}"
        sign = ("-" if c < 0 else "") if i == 0 else (" - " if c < 0 else " + ")
        parts.append(sign + body)
    return "u_t = " + "".join(parts)


def _coefficient(c):
    """A number as a float; a ``dolfinx.fem.Constant`` (or other UFL object) as it is."""
    return float(c) if isinstance(c, int | float) else c


def _factor_ufl(u: ufl.core.expr.Expr, factor: tuple[int, ...]) -> ufl.core.expr.Expr:
    out = u
    for axis in factor:
        out = out.dx(axis)
    return out


def _term_weak(u, v, term: Term, degree: int):
    """``(T(u), v)`` as a UFL integrand; one second-order factor is integrated by parts.

    ``g u_ij v -> -u_j (g v)_i``: the boundary term ``g u_j n_i v`` vanishes where ``v = 0``
    (Dirichlet boundaries), which is where the simulations of this package prescribe ``u``.
    """
    second = [f for f in term if len(f) == 2]
    if any(len(f) > 2 for f in term) or len(second) > 1:
        order = max(len(f) for f in term)
        if degree < order:
            raise ValueError(
                f"term {term_name(term)} needs Lagrange degree >= {order} (got {degree})"
            )
        g = 1.0
        for f in term:
            g = g * _factor_ufl(u, f)
        return g * v
    g = 1.0
    for f in term:
        if len(f) < 2:
            g = g * _factor_ufl(u, f)
    if not second:
        return g * v
    i, j = second[0]
    return -u.dx(j) * (g * v).dx(i)


def weak_rhs(coefficients: Mapping[str, Coefficient], u, v, dim: int, degree: int = 1):
    """UFL integrand of ``(sum_k c_k T_k(u), v)`` (multiply by ``dx``).

    Args:
        coefficients: term name -> coefficient (a number or a ``dolfinx.fem.Constant``, which
            keeps the compiled form independent of the values), in the mesh's units.
        u: the unknown (a ``dolfinx.fem.Function``).
        v: the test function.
        dim: geometric dimension.
        degree: Lagrange degree of ``u`` (terms beyond it are refused).
    """
    total = 0
    for name, c in coefficients.items():
        total = total + _coefficient(c) * _term_weak(u, v, parse_term(name, dim), degree)
    return total


def hessian_pairs(dim: int) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i <= j``, of the second derivatives in ``dim`` dimensions."""
    return [(i, j) for i in range(dim) for j in range(i, dim)]


def _term_weak_mixed(u, hessian: dict, v, term: Term):
    """``(T(u), v)`` with the second derivatives ``W_ij = u_ij`` as separate fields.

    A factor of order 0 or 1 is ``u`` or ``u_i``; order 2 is ``W_ij``; order 3 is
    ``W_ij,k``; order 4 is ``W_ij,kl``, integrated by parts once when it is the only factor of
    order 4 (``g W_ij,kl v -> -W_ij,k (g v)_l``, the boundary term vanishing with ``v``).
    """

    def factor(f: tuple[int, ...]):
        if len(f) <= 1:
            return _factor_ufl(u, f)
        out = hessian[f[0], f[1]]
        for axis in f[2:]:
            out = out.dx(axis)
        return out

    fourth = [f for f in term if len(f) == 4]
    if any(len(f) > 4 for f in term):
        raise ValueError(f"term {term_name(term)}: derivatives above order 4 are not supported")
    g = 1.0
    if len(fourth) == 1:
        rest = list(term)
        rest.remove(fourth[0])
        for f in rest:
            g = g * factor(f)
        i, j, k, m = fourth[0]
        return -hessian[i, j].dx(k) * (g * v).dx(m)
    for f in term:
        g = g * factor(f)
    return g * v


def weak_rhs_mixed(coefficients: Mapping[str, Coefficient], u, hessian: dict, v, dim: int):
    """UFL integrand of ``(sum_k c_k T_k(u), v)`` with the Hessian fields ``hessian[i, j]``.

    Args:
        coefficients: term name -> coefficient.
        u: the unknown.
        hessian: ``(i, j) -> W_ij`` for the pairs of :func:`hessian_pairs` (both orders).
        v: the test function of ``u``'s equation.
        dim: geometric dimension.
    """
    full = {**hessian, **{(j, i): w for (i, j), w in hessian.items()}}
    total = 0
    for name, c in coefficients.items():
        total = total + _coefficient(c) * _term_weak_mixed(u, full, v, parse_term(name, dim))
    return total
