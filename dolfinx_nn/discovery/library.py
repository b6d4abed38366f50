"""Candidate terms of a discovered PDE ``u_t = sum_k c_k T_k``.

A term is a product of *factors*; a factor is ``u`` or one of its spatial derivatives, named by
the differentiation variables: ``u_x``, ``u_y``, ``u_xx``, ``u_xy``, ``u_yy``, ...  Terms are
written as products with powers, ``u``, ``u_xx``, ``u*u_x``, ``u**2``, and ``1`` is the
constant term.  Internally a factor is the sorted tuple of the axes it differentiates along
(``u_xy`` is ``(0, 1)``) and a term is the sorted tuple of its factors.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

__all__ = [
    "LIBRARY_PRESETS",
    "Term",
    "default_library",
    "parse_library",
    "pde_find_library",
    "term_name",
    "term_scale",
]

Factor = tuple[int, ...]
Term = tuple[Factor, ...]

_AXES = "xyz"


def _factor_name(factor: Factor) -> str:
    return "u" if not factor else "u_" + "".join(_AXES[i] for i in factor)


def term_name(term: Term) -> str:
    """Readable name of a term, e.g. ``u*u_x``, ``u**2``, ``1``."""
    if not term:
        return "1"
    parts = []
    for factor, group in itertools.groupby(term):
        power = len(list(group))
        name = _factor_name(factor)
        parts.append(name if power == 1 else f"{name}**{power}")
    return "*".join(parts)


def base_factors(dim: int, order: int) -> list[Factor]:
    """``u`` and its derivatives up to ``order`` in ``dim`` space dimensions."""
    factors: list[Factor] = [()]
    for k in range(1, order + 1):
        factors.extend(itertools.combinations_with_replacement(range(dim), k))
    return factors


def default_library(
    dim: int, order: int = 2, degree: int = 2, constant: bool = False
) -> list[Term]:
    """All products of at most ``degree`` factors from :func:`base_factors`.

    Args:
        dim: spatial dimension.
        order: highest derivative order of a factor.
        degree: highest number of factors in a term.
        constant: include the constant term ``1``.
    """
    if order < 0 or degree < 1:
        raise ValueError(f"need order >= 0 and degree >= 1, got order={order}, degree={degree}")
    factors = base_factors(dim, order)
    terms: list[Term] = [()] if constant else []
    for k in range(1, degree + 1):
        terms.extend(itertools.combinations_with_replacement(factors, k))
    return terms


def pde_find_library(
    dim: int, order: int = 4, power: int = 2, constant: bool = True
) -> list[Term]:
    """PDE-FIND's library: ``u^p`` times at most one derivative ``d^a u``.

    ``u^p d^a u`` with ``0 <= p <= power`` and ``1 <= |a| <= order``, and ``u^p`` alone
    (Rudy, Brunton, Proctor & Kutz, *Sci. Adv.* 3, e1602614, 2017; in 1D with ``order=4``,
    ``power=2``: ``u, u**2, u_x, u*u_x, u**2*u_x, ..., u**2*u_xxxx``, and ``1``).

    Args:
        dim: spatial dimension (in 2D and 3D every mixed derivative counts).
        order: highest derivative order.
        power: highest power of ``u`` multiplying it.
        constant: include the constant term ``1``.
    """
    if order < 0 or power < 0:
        raise ValueError(f"need order >= 0 and power >= 0, got order={order}, power={power}")
    derivatives = [f for f in base_factors(dim, order) if f]
    terms: list[Term] = [()] if constant else []
    for p in range(power + 1):
        powers: Term = tuple([()] * p)
        if p > 0:
            terms.append(powers)
        terms.extend(powers + (d,) for d in derivatives)
    return terms


def _parse_factor(text: str, dim: int) -> Factor:
    text = text.strip()
    if text == "u":
        return ()
    if text.startswith("u_") and len(text) > 2 and all(c in _AXES[:dim] for c in text[2:]):
        return tuple(sorted(_AXES.index(c) for c in text[2:]))
    raise ValueError(
        f"unknown factor {text!r} in {dim}D; factors are u and its derivatives "
        f"u_<axes> with axes from {_AXES[:dim]!r} (e.g. u_{_AXES[0]}, u_{_AXES[0] * 2})"
    )


def parse_term(text: str, dim: int) -> Term:
    """Parse a term name such as ``u*u_x``, ``u**2`` or ``1``."""
    text = text.strip()
    if text == "1":
        return ()
    factors: list[Factor] = []
    for part in text.split("*"):
        if not part.strip():
            continue
        if part.strip().isdigit() and factors:  # the exponent of "a**k"
            factors.extend([factors[-1]] * (int(part) - 1))
            continue
        factors.append(_parse_factor(part, dim))
    if not factors:
        raise ValueError(f"empty term {text!r}")
    return tuple(sorted(factors, key=lambda f: (len(f), f)))


#: Presets for ``--library``: name -> (kind, derivative order, degree or power, constant).
#: ``products``: all products of at most ``degree`` factors (:func:`default_library`);
#: ``pde-find``: ``u^p`` times at most one derivative, ``p <= power``
#: (:func:`pde_find_library`).
LIBRARY_PRESETS: dict[str, tuple[str, int, int, bool]] = {
    "linear": ("products", 2, 1, False),
    "quadratic": ("products", 2, 2, False),
    "quadratic+1": ("products", 2, 2, True),
    "cubic": ("products", 2, 3, False),
    "pde-find": ("pde-find", 4, 2, True),
    "pde-find3": ("pde-find", 3, 2, True),
}


def parse_library(spec: str | Sequence[str], dim: int) -> list[Term]:
    """Terms from a preset name (see :data:`LIBRARY_PRESETS`) or a comma-separated list.

    Args:
        spec: e.g. ``"quadratic"`` or ``"u,u_x,u_xx,u*u_x"`` (or a list of term names).
        dim: spatial dimension of the data.
    """
    if isinstance(spec, str):
        if spec in LIBRARY_PRESETS:
            kind, order, degree, constant = LIBRARY_PRESETS[spec]
            if kind == "pde-find":
                return pde_find_library(dim, order, degree, constant)
            return default_library(dim, order, degree, constant)
        names = [s for s in spec.split(",") if s.strip()]
        if len(names) == 1 and not names[0].strip().startswith(("u", "1")):
            raise ValueError(
                f"unknown library {spec!r}; choose a preset ({', '.join(LIBRARY_PRESETS)}) "
                "or list terms separated by commas, e.g. 'u,u_xx,u*u_x'"
            )
    else:
        names = list(spec)
    terms = [parse_term(name, dim) for name in names]
    if len(set(terms)) != len(terms):
        raise ValueError(f"library {spec!r} names a term twice")
    return sorted(terms, key=lambda t: (len(t), sum(len(f) for f in t), t))


def term_scale(term: Term, x_scale: np.ndarray, u_scale: float) -> float:
    """Factor F with ``T(u) = F T(v)`` when ``u = u_scale v`` and ``x = c + x_scale xi``."""
    scale = u_scale ** len(term)
    for factor in term:
        for axis in factor:
            scale /= float(x_scale[axis])
    return scale


def max_order(terms: Sequence[Term]) -> int:
    """Highest derivative order among the factors of ``terms``."""
    return max((len(f) for term in terms for f in term), default=0)
