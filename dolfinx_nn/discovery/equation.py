"""A discovered equation ``u_t = sum_k c_k T_k``: readable formula and UFL right-hand side."""

from __future__ import annotations

from collections.abc import Mapping

import ufl

from dolfinx_nn.discovery.library import Term, parse_term, term_name

__all__ = ["format_equation", "weak_rhs"]


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


def weak_rhs(coefficients: Mapping[str, float], u, v, dim: int, degree: int = 1):
    """UFL integrand of ``(sum_k c_k T_k(u), v)`` (multiply by ``dx``).

    Args:
        coefficients: term name -> coefficient, in the mesh's units.
        u: the unknown (a ``dolfinx.fem.Function``).
        v: the test function.
        dim: geometric dimension.
        degree: Lagrange degree of ``u`` (terms beyond it are refused).
    """
    total = 0
    for name, c in coefficients.items():
        total = total + float(c) * _term_weak(u, v, parse_term(name, dim), degree)
    return total
