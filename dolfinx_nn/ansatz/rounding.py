"""Rounding to a grid coarser than round-off, so that data equal up to round-off become equal.

Two computations of one quantity by different routes (in other units, or by a parallel direct
solver whose summation order varies between calls) differ in the last bits.  Rounded to a grid
of ``2^-bits`` of their magnitude they become the same number, unless the two values straddle a
rounding boundary (the midpoint between two grid values), which happens with probability
about ``1e-16 / 2^-bits`` per value.

Two grids:

- :func:`grid`, dyadic (a power of two): rounding to it commutes with scaling by powers of
  two, and 1, 1/2, ... are grid values.  For coordinates and scalars.
- :func:`data_grid`, a power of two times the irrational :data:`DATA_GRID_FACTOR`: for values
  of functions.  Values of a polynomial at points of a dyadic grid are dyadic rationals with
  few bits, which on a dyadic grid would sit *exactly* on a midpoint (``x/2`` at ``x = 2^-23``
  is a midpoint of the grid ``2^-23``), where any round-off decides the direction: the
  rounding would then make equal data unequal by a whole grid step.  No dyadic rational is a
  midpoint of the irrational grid.

Used by :mod:`~dolfinx_nn.ansatz.units` (the canonical data of the network side) and
:mod:`~dolfinx_nn.ansatz.fitted_fields` (the FEM fields that ``G`` and ``D`` fit).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

#: Bits of the grids, relative to the magnitude of the data.
GRID_BITS = 24

#: Factor of :func:`data_grid`: the golden ratio's conjugate ``(sqrt(5) - 1) / 2``, which is
#: irrational (and the hardest number to approximate by rationals).
DATA_GRID_FACTOR = (math.sqrt(5.0) - 1.0) / 2.0


def grid(magnitude: float, bits: int = GRID_BITS) -> float:
    """Spacing ``2^(e - bits)`` of the dyadic grid of data of magnitude ``m``.

    ``2^e`` is the power of two with ``2^(e-1) <= sqrt(2) m < 2^e``, so magnitudes that differ
    by round-off give the same grid unless ``sqrt(2) m`` is within round-off of a power of two:
    magnitudes that are themselves powers of two (``max |u| = 1``, a mesh of ``2^k`` cells) are
    the common case and sit safely between two of these.  0 for a zero or non-finite
    magnitude (no rounding).
    """
    if not (np.isfinite(magnitude) and magnitude > 0.0):
        return 0.0
    return math.ldexp(1.0, math.frexp(math.sqrt(2.0) * float(magnitude))[1] - bits)


def data_grid(magnitude: float, bits: int = GRID_BITS) -> float:
    """Spacing of the grid of function values of magnitude ``m``: :func:`grid` times
    :data:`DATA_GRID_FACTOR` (no dyadic rational is a midpoint of it); 0 where :func:`grid`
    is 0."""
    return DATA_GRID_FACTOR * grid(magnitude, bits)


def round_to_grid(values: Any, spacing: float) -> Any:
    """``values`` rounded to multiples of ``spacing``; a NumPy array or torch tensor, returned
    as the same type.  ``spacing = 0`` returns ``values``."""
    if spacing == 0.0:
        return values
    if isinstance(values, torch.Tensor):
        return torch.round(values / spacing) * spacing
    return np.round(np.asarray(values) / spacing) * spacing


def round_scalar(value: float, bits: int = GRID_BITS) -> float:
    """``value`` rounded to ``bits`` bits relative to itself (dyadic grid)."""
    return float(round_to_grid(np.float64(value), grid(abs(value), bits)))
