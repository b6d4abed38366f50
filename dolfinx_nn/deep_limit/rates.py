"""Observed convergence orders from errors measured at doubling resolutions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def successive_ratios(errors: Sequence[float]) -> list[float]:
    """``e_i / e_{i+1}`` (about ``2**p`` for order ``p`` when the resolution doubles)."""
    e = np.asarray(errors, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (e[:-1] / e[1:]).tolist()


def successive_orders(sizes: Sequence[float], errors: Sequence[float]) -> list[float]:
    """``log(e_i / e_{i+1}) / log(n_{i+1} / n_i)`` for each consecutive pair."""
    n = np.asarray(sizes, dtype=float)
    e = np.asarray(errors, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.log(e[:-1] / e[1:]) / np.log(n[1:] / n[:-1])).tolist()


def fitted_order(sizes: Sequence[float], errors: Sequence[float]) -> float:
    """Least-squares slope ``p`` of ``log e = c - p log n`` (NaN with fewer than two points).

    Args:
        sizes: resolutions ``n`` (e.g. depths ``N``).
        errors: positive errors ``e(n)``.
    """
    n = np.asarray(sizes, dtype=float)
    e = np.asarray(errors, dtype=float)
    keep = (n > 0) & (e > 0) & np.isfinite(e)
    if keep.sum() < 2:
        return float("nan")
    slope = np.polyfit(np.log(n[keep]), np.log(e[keep]), 1)[0]
    return float(-slope)
