"""Weak-form regression: integrals of the data against compactly supported test functions.

After weak SINDy (Messenger & Bortz, *J. Comput. Phys.* 443, 2021; *Multiscale Model. Simul.*
19, 2021): with test functions ``psi(x, t)`` that vanish, with their derivatives, on the
boundary of their support, ``u_t = sum_k c_k d^a_k (u^p_k)`` becomes

    - int u psi_t  =  sum_k c_k (-1)^|a_k| int u^p_k d^a_k psi,

which needs *values* of ``u`` only: every derivative sits on the known test function.  The
library therefore holds derivatives of powers, ``d^a (u^p)`` (:func:`weak_library`), named
``u``, ``u_xx``, ``(u**2)_x``, ...; a selected weak model is expanded into the strong terms of
:mod:`~dolfinx_nn.discovery.library` by the product rule (:func:`expand`), e.g.
``(u**2)_x = 2 u*u_x``, so both formulations report the same kind of equation.

The values come from the fitted surrogate (its values, not its derivatives, which is where
noise does the damage).  Test functions are ``psi = (1 - r^2)^q (1 - s^2)^q`` with
``r = |x - c| / R`` and ``s = (t - t_c) / H``, centred at stations farther than ``R`` from the
boundary of the domain (measured on its DOLFINx mesh, so any geometry with holes works, and
no boundary term appears); ``q`` exceeds the highest derivative order.  Each support is a ball
inside the domain, integrated by a polar product rule (:func:`ball_quadrature`); the centres
are divided among the MPI ranks.  The radius ``R`` and half-width ``H`` are chosen from the data
(:func:`test_function_scales`).

Everything is computed in the surrogate's normalised variables, so the raw coefficients
convert to data units exactly like those of the strong form.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

from mpi4py import MPI

import numpy as np
import torch

from dolfinx_nn.discovery.library import Term, term_name
from dolfinx_nn.discovery.surrogate import SurrogateBase

__all__ = [
    "WeakTerm",
    "WeakSystem",
    "ball_quadrature",
    "expand",
    "weak_library",
    "weak_name",
    "weak_system",
]

_AXES = "xyz"

#: A weak term ``d^axes (u^power)``: (power, sorted axes).
WeakTerm = tuple[int, tuple[int, ...]]


def weak_name(term: WeakTerm) -> str:
    """``u``, ``u**2``, ``u_xx``, ``(u**2)_x``, ``1`` (power 0)."""
    power, axes = term
    if power == 0:
        return "1"
    base = "u" if power == 1 else f"u**{power}"
    if not axes:
        return base
    suffix = "".join(_AXES[a] for a in axes)
    return f"u_{suffix}" if power == 1 else f"({base})_{suffix}"


def weak_library(dim: int, order: int, degree: int, constant: bool = False) -> list[WeakTerm]:
    """All ``d^a (u^p)`` with ``1 <= p <= degree`` and ``|a| <= order`` (and ``1``).

    Args:
        dim: spatial dimension.
        order: highest derivative order.
        degree: highest power of ``u``.
        constant: include the constant term.
    """
    if order < 0 or degree < 1:
        raise ValueError(f"need order >= 0 and degree >= 1, got order={order}, degree={degree}")
    terms: list[WeakTerm] = [(0, ())] if constant else []
    for k in range(order + 1):
        for axes in itertools.combinations_with_replacement(range(dim), k):
            terms.extend((p, axes) for p in range(1, degree + 1))
    return terms


def expand(term: WeakTerm) -> dict[Term, float]:
    """``d^a (u^p)`` as a sum of strong terms (product rule), e.g. ``(u**2)_x -> 2 u*u_x``."""
    power, axes = term
    current: dict[Term, float] = {tuple([()] * power): 1.0}
    for axis in axes:
        nxt: dict[Term, float] = {}
        for factors, c in current.items():
            for i, f in enumerate(factors):
                new = list(factors)
                new[i] = tuple(sorted(f + (axis,)))
                key = tuple(sorted(new, key=lambda g: (len(g), g)))
                nxt[key] = nxt.get(key, 0.0) + c
        current = nxt
    return current


def strong_coefficients(weak: dict[WeakTerm, float]) -> dict[str, float]:
    """Weak coefficients -> strong term name -> coefficient (terms that cancel are dropped)."""
    out: dict[Term, float] = {}
    for term, c in weak.items():
        for strong, m in expand(term).items():
            out[strong] = out.get(strong, 0.0) + c * m
    return {term_name(t): v for t, v in out.items() if v != 0.0}


def ball_quadrature(dim: int, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature on the unit ball in ``dim`` dimensions (polar product rule).

    Gauss-Legendre in the radius (with the Jacobian ``r^(d-1)``), the periodic trapezoidal
    rule in the angle and Gauss-Legendre in ``cos(theta)`` (3D).  Test functions that are
    polynomials in ``r^2`` times smooth data are integrated to spectral accuracy.

    Args:
        dim: 1, 2 or 3.
        nodes: radial nodes (angles: twice as many).

    Returns:
        Points of shape (n, dim) and weights of shape (n,).
    """
    r, wr = np.polynomial.legendre.leggauss(nodes)
    if dim == 1:
        return r[:, None], wr
    r, wr = 0.5 * (r + 1.0), 0.5 * wr  # on [0, 1]
    if dim == 2:
        theta = 2.0 * np.pi * np.arange(2 * nodes) / (2 * nodes)
        wt = np.full(theta.size, 2.0 * np.pi / theta.size)
        rr, tt = np.meshgrid(r, theta, indexing="ij")
        points = np.stack([rr * np.cos(tt), rr * np.sin(tt)], -1).reshape(-1, 2)
        return points, (np.outer(wr * r, wt)).reshape(-1)
    if dim != 3:
        raise ValueError(f"dim must be 1, 2 or 3, got {dim}")
    mu, wm = np.polynomial.legendre.leggauss(nodes)  # cos(theta)
    phi = 2.0 * np.pi * np.arange(2 * nodes) / (2 * nodes)
    wp = np.full(phi.size, 2.0 * np.pi / phi.size)
    r3, mm, pp = np.meshgrid(r, mu, phi, indexing="ij")
    ss = np.sqrt(1.0 - mm**2)
    points = np.stack([r3 * ss * np.cos(pp), r3 * ss * np.sin(pp), r3 * mm], -1).reshape(-1, 3)
    weights = (wr * r**2)[:, None, None] * wm[None, :, None] * wp[None, None, :]
    return points, weights.reshape(-1)


def _bump_derivatives(
    z: torch.Tensor, radius: float, q: int, orders: Sequence[tuple[int, ...]]
) -> dict[tuple[int, ...], torch.Tensor]:
    """``d^a phi`` for ``phi(z) = (1 - |z|^2 / R^2)^q`` (0 outside) at z of shape (..., d)."""
    z = z.detach().clone().requires_grad_(True)
    r2 = (z * z).sum(-1) / radius**2
    phi = torch.clamp(1.0 - r2, min=0.0) ** q
    out: dict[tuple[int, ...], torch.Tensor] = {(): phi}
    for axes in sorted(set(orders), key=len):
        for k in range(1, len(axes) + 1):
            if axes[:k] not in out:
                (grad,) = torch.autograd.grad(out[axes[: k - 1]].sum(), z, create_graph=True)
                out[axes[:k]] = grad[..., axes[k - 1]]
    return {a: out[a].detach() for a in orders}


#: Quadrature points evaluated together (memory: this times the time nodes, in doubles).
CHUNK_POINTS = 8192


@dataclasses.dataclass(frozen=True)
class WeakSystem:
    """The weak-form regression problem ``b = G c`` (one row per test function)."""

    terms: list[WeakTerm]
    matrix: np.ndarray  # G, shape (rows, len(terms))
    target: np.ndarray  # b = -int v psi_tau, shape (rows,)
    groups: np.ndarray  # time block of each row (for block cross-validation)
    scales: dict  # radius, half_width (normalised and data units), q, counts


def test_function_scales(
    distance: np.ndarray, x_scale: float, t_span: float, snapshots: int
) -> tuple[float, float]:
    """Radius ``R`` and half-width ``H`` of the test functions, from the data's geometry.

    ``R`` is the median distance of the stations to the boundary (half the typical depth of
    the domain; :func:`~dolfinx_nn.discovery.pipeline.regress_weak` tries multiples of it and
    keeps the one whose selected model has the smallest cross-validation error); ``H`` is a
    quarter of the time window, but at least two snapshot intervals.  Both are returned in
    normalised units.

    Args:
        distance: distance of each station to the boundary (data units).
        x_scale: the surrogate's length scale.
        t_span: the fitted time window in normalised units (2 for the whole window).
        snapshots: number of snapshots in the window.
    """
    radius = float(np.median(distance)) / x_scale
    half = max(t_span / 4.0, 2.0 * t_span / max(snapshots - 1, 1))
    return radius, half


def weak_system(
    surrogate: SurrogateBase,
    terms: Sequence[WeakTerm],
    centers: np.ndarray,
    radius: float,
    time_window: tuple[float, float],
    half_width: float,
    time_centers: int = 8,
    time_points: int = 32,
    radial_points: int = 16,
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> WeakSystem:
    """Assemble ``G`` and ``b`` for the space centres ``centers`` and ``time_centers`` times.

    Every test function's support is a ball inside the domain (the caller picks centres
    farther than the radius from the boundary), so the space integrals use
    :func:`ball_quadrature` around each centre; the centres are divided among the ranks and
    the rows gathered.

    Args:
        surrogate: gives ``v`` at quadrature points (values only, :meth:`values`).
        terms: weak library.
        centers: space centres in data units, shape (c, d).
        radius: test-function radius in normalised units.
        time_window: fitted window ``(t_first, t_last)`` in data units.
        half_width: test-function half-width in time, normalised units.
        time_centers: number of time centres, spread evenly over the window.
        time_points: Gauss-Legendre points per test function in time.
        radial_points: radial quadrature nodes of the balls.
        comm: ranks that share the centres.
    """
    nrm = surrogate.normalisation
    dim = centers.shape[1]
    order = max((len(a) for _, a in terms), default=0)
    q = order + 2  # psi and its derivatives up to the library's order vanish on the support's edge
    c_xi = nrm.xi(centers)
    tau0, tau1 = (float(v) for v in nrm.tau(np.array(time_window, dtype=float)))
    half_width = min(half_width, 0.5 * (tau1 - tau0) * (1.0 - 1e-9))
    s_centers = np.linspace(tau0 + half_width, tau1 - half_width, time_centers)
    ref, w_ref = ball_quadrature(dim, radial_points)
    axes_needed = sorted({a for _, a in terms} | {()}, key=lambda a: (len(a), a))
    phis = _bump_derivatives(torch.as_tensor(ref[None]), 1.0, q, axes_needed)
    # d^a psi in xi = R^-|a| (d^a phi)(z); d(xi) = R^d dz
    weighted = {
        a: (phis[a][0].numpy() * w_ref * radius ** (dim - len(a))) for a in axes_needed
    }
    s, w_s = np.polynomial.legendre.leggauss(time_points)
    chi = (1.0 - s**2) ** q * w_s * half_width  # int dtau = H int ds
    chi_t = -2.0 * q * s * (1.0 - s**2) ** (q - 1) * w_s  # psi_tau = (d/ds) / H
    mine = np.arange(comm.rank, len(c_xi), comm.size)
    device = next(surrogate.parameters()).device
    rows_g = np.zeros((len(mine), len(s_centers), len(terms)))
    rows_b = np.zeros((len(mine), len(s_centers)))
    taus = (s_centers[:, None] + half_width * s[None, :]).reshape(-1)  # (centres * m,)
    chunk = max(1, CHUNK_POINTS // len(ref))
    for start in range(0, mine.size, chunk):
        rows = slice(start, start + chunk)
        points = (c_xi[mine[rows], None, :] + radius * ref[None]).reshape(-1, dim)
        v = surrogate.values(
            torch.as_tensor(points, device=device), torch.as_tensor(taus, device=device)
        ).cpu().numpy()
        v = v.reshape(-1, len(ref), len(s_centers), len(s))  # (c, n, j, m)
        rows_b[rows] = -np.einsum("cnjm,m,n->cj", v, chi_t, weighted[()])
        for k, (power, axes) in enumerate(terms):
            f = np.ones_like(v) if power == 0 else v**power
            sign = (-1.0) ** len(axes)
            rows_g[rows, :, k] = sign * np.einsum("cnjm,m,n->cj", f, chi, weighted[axes])
    g = np.zeros((len(c_xi), len(s_centers), len(terms)))
    b = np.zeros((len(c_xi), len(s_centers)))
    for part, idx in zip(comm.allgather((rows_g, rows_b)), comm.allgather(mine), strict=True):
        g[idx], b[idx] = part
    groups = np.broadcast_to(np.arange(len(s_centers))[None, :], b.shape)
    scales = {
        "radius": radius * float(nrm.x_scale[0]), "half_width": half_width * nrm.t_scale,
        "power": q, "space_centers": len(c_xi), "time_centers": len(s_centers),
        "quadrature_points": int(len(ref) * time_points),
    }
    return WeakSystem(
        list(terms), g.reshape(-1, len(terms)), b.reshape(-1), groups.reshape(-1).copy(), scales
    )
