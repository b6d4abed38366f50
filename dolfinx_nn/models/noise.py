"""Measurement noise that does not depend on how the mesh is partitioned.

A rank-local random generator would give different noise on 1 and on 2 ranks, because the
ranks own different points.  Here the standard normal variate attached to a measurement is a
deterministic function of the point's coordinates and of a seed: the coordinates, rounded to
1e-9, are hashed with SplitMix64 into two uniform numbers that the Box-Muller transform turns
into one Gaussian.  The same point always gets the same noise, whichever rank owns it.
"""

from __future__ import annotations

import numpy as np

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """One round of the SplitMix64 finaliser (a bijective 64-bit mixer), vectorised."""
    with np.errstate(over="ignore"):
        z = (z + np.uint64(0x9E3779B97F4A7C15)) & _MASK
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
        return z ^ (z >> np.uint64(31))


def _uniform(key: np.ndarray) -> np.ndarray:
    """Uniform numbers in (0, 1) from 64-bit keys (53 random bits each)."""
    bits = _splitmix64(key) >> np.uint64(11)
    return (bits.astype(np.float64) + 0.5) / float(2**53)


def point_keys(points: np.ndarray, seed: int) -> np.ndarray:
    """64-bit hash keys of points ``(n, d)``, identical for identical coordinates and seed."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2:
        raise ValueError(f"points must have shape (n, d), got {points.shape}")
    quantised = np.rint(points * 1e9).astype(np.int64).view(np.uint64)
    key = np.full(points.shape[0], np.uint64(seed) & _MASK, dtype=np.uint64)
    for j in range(points.shape[1]):
        key = _splitmix64(key ^ quantised[:, j])
    return key


def standard_normal_at(points: np.ndarray, seed: int) -> np.ndarray:
    """Independent N(0, 1) variates, one per point, that depend only on the point and the seed.

    Args:
        points: coordinates ``(n, d)``.
        seed: any integer; different seeds give independent noise.

    Returns:
        Float64 array ``(n,)``.
    """
    key = point_keys(points, seed)
    u1 = _uniform(key)
    u2 = _uniform(key ^ np.uint64(0x5851F42D4C957F2D))
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
