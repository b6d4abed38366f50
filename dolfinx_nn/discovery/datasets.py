"""Built-in data sets: DOLFINx simulations observed at scattered points, with noise.

==================== =============================================== ===================
name                 equation                                        initial state
==================== =============================================== ===================
heat                 u_t = D lap u,  D = 0.05                        two Gaussian bumps
advection-diffusion  u_t = D lap u - a . grad u,  D = 0.01,          Gaussian bump
                     a = (0.5, 0.25, 0.1)
fisher-kpp           u_t = D lap u + r u (1 - u),  D = 0.01, r = 2    a front
nonlinear-diffusion  u_t = div(D u grad u),  D = 0.1                  bump on a plateau
diffusion-reaction   u_t = D lap u - k u,  D = 0.05, k = 0.5          two Gaussian bumps
==================== =============================================== ===================

The solution is prescribed on the boundary (its initial value, held in time) and the
equations are integrated with :func:`~dolfinx_nn.discovery.simulation.integrate` (P2,
Crank-Nicolson), on any mesh of :func:`dolfinx_nn.meshes.create_mesh` (e.g.
``square-with-hole`` or a gmsh file).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import dolfinx
import numpy as np

from dolfinx_nn.discovery.data import SpaceTimeData, with_noise
from dolfinx_nn.discovery.simulation import PointEvaluator, integrate, random_points_in_mesh

__all__ = ["PROBLEMS", "SimulatedProblem", "burgers_pdefind", "simulate_dataset"]

_AXES = "xyz"


def _gauss(x: np.ndarray, center: tuple[float, ...], width: float, dim: int) -> np.ndarray:
    r2 = sum((x[i] - center[i]) ** 2 for i in range(dim))
    return np.exp(-r2 / (2.0 * width**2))


@dataclasses.dataclass(frozen=True)
class SimulatedProblem:
    """A built-in equation: true coefficients (per dimension), initial state, final time."""

    coefficients: Callable[[int], dict[str, float]]
    initial: Callable[[np.ndarray, int], np.ndarray]  # x of shape (3, n), dim
    final_time: float


def _laplacian(d: float, dim: int) -> dict[str, float]:
    return {f"u_{a}{a}": d for a in _AXES[:dim]}


def _heat(dim: int) -> dict[str, float]:
    return _laplacian(0.05, dim)


def _advection_diffusion(dim: int) -> dict[str, float]:
    velocity = (0.5, 0.25, 0.1)
    return {**{f"u_{a}": -velocity[i] for i, a in enumerate(_AXES[:dim])}, **_laplacian(0.01, dim)}


def _fisher_kpp(dim: int) -> dict[str, float]:
    return {"u": 2.0, "u**2": -2.0, **_laplacian(0.01, dim)}


def _diffusion_reaction(dim: int) -> dict[str, float]:
    return {"u": -0.5, **_laplacian(0.05, dim)}


def _nonlinear_diffusion(dim: int) -> dict[str, float]:
    terms = {f"u*u_{a}{a}": 0.1 for a in _AXES[:dim]}
    return {**{f"u_{a}**2": 0.1 for a in _AXES[:dim]}, **terms}


#: name -> problem (see the module docstring).
PROBLEMS: dict[str, SimulatedProblem] = {
    "heat": SimulatedProblem(
        _heat,
        lambda x, d: _gauss(x, (0.35, 0.25, 0.3), 0.15, d)
        + 0.5 * _gauss(x, (0.7, 0.75, 0.6), 0.12, d),
        1.0,
    ),
    "advection-diffusion": SimulatedProblem(
        _advection_diffusion, lambda x, d: _gauss(x, (0.3, 0.2, 0.3), 0.12, d), 0.6
    ),
    "fisher-kpp": SimulatedProblem(
        _fisher_kpp, lambda x, d: 0.5 * (1.0 - np.tanh((x[0] - 0.25) / 0.08)), 1.0
    ),
    "diffusion-reaction": SimulatedProblem(
        _diffusion_reaction,
        lambda x, d: _gauss(x, (0.35, 0.25, 0.3), 0.15, d)
        + 0.5 * _gauss(x, (0.7, 0.75, 0.6), 0.12, d),
        1.0,
    ),
    "nonlinear-diffusion": SimulatedProblem(
        _nonlinear_diffusion,
        lambda x, d: 0.2 + 0.8 * _gauss(x, (0.3, 0.25, 0.3), 0.12, d),
        1.0,
    ),
}


def get_problem(name: str) -> SimulatedProblem:
    """The built-in problem ``name``; the error lists the valid names."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown data set {name!r}; choose one of: {', '.join(PROBLEMS)}")
    return PROBLEMS[name]


def simulate_dataset(
    name: str,
    mesh: dolfinx.mesh.Mesh,
    num_points: int = 200,
    num_times: int = 41,
    noise: float = 0.0,
    seed: int = 0,
    degree: int = 2,
    steps_per_interval: int = 4,
    points: np.ndarray | None = None,
) -> tuple[SpaceTimeData, dict[str, float]]:
    """Simulate a built-in problem and observe it at random points of the mesh.

    Args:
        name: a key of :data:`PROBLEMS`.
        mesh: the domain (distributed; the data set is returned on every rank).
        num_points: number of scattered observation points.
        num_times: number of snapshots in ``[0, final_time]``.
        noise: relative noise level (see :func:`~dolfinx_nn.discovery.data.with_noise`).
        seed: seed of the points and the noise (the same on every rank).
        degree: Lagrange degree of the simulation.
        steps_per_interval: time steps between snapshots.
        points: observation points, shape (n, gdim) (e.g. a grid); by default ``num_points``
            random points inside the mesh.

    Returns:
        ``(data, true_coefficients)``.
    """
    problem = get_problem(name)
    if num_points < 1 or num_times < 3:
        raise ValueError(f"need num_points >= 1 and num_times >= 3, got {num_points}, {num_times}")
    dim = mesh.geometry.dim
    rng = np.random.default_rng(seed)
    if points is None:
        points = random_points_in_mesh(mesh, num_points, rng)
    elif points.ndim != 2 or points.shape[1] != dim:
        raise ValueError(f"points must have shape (n, {dim}), got {points.shape}")
    times = np.linspace(0.0, problem.final_time, num_times)
    coefficients = problem.coefficients(dim)
    evaluate = PointEvaluator(mesh, points)
    values = np.empty((num_times, points.shape[0]))

    def initial(u: dolfinx.fem.Function) -> None:
        u.interpolate(lambda x: problem.initial(x, dim))

    filled: list[bool] = []

    def boundary(g: dolfinx.fem.Function, t: float) -> None:  # the initial values, held
        if not filled:
            g.interpolate(lambda x: problem.initial(x, dim))
            filled.append(True)

    def observe(u: dolfinx.fem.Function, k: int) -> None:
        values[k] = evaluate(u)

    integrate(
        mesh, coefficients, initial, boundary, times, observe, degree, steps_per_interval,
        prefix=f"discovery_{name.replace('-', '_')}_",
    )
    data = SpaceTimeData(points, times, values)
    if noise > 0:
        data = with_noise(data, noise, rng)
    return data, coefficients


def burgers_pdefind(nodes: int = 200) -> SpaceTimeData:
    """PDE-FIND's Burgers data set, regenerated from the exact solution.

    ``u_t = -u u_x + 0.1 u_xx`` on the periodic interval ``[-8, 8)`` (256 points), ``t`` in
    ``[0, 10]`` (101 snapshots), ``u(x, 0) = exp(-(x + 2)^2)`` (Rudy et al., *Sci. Adv.* 2017,
    file ``Datasets/burgers.mat``, computed there with a spectral method).  The Cole-Hopf
    transform ``u = -2 nu (log phi)_x`` turns it into the heat equation for ``phi``; with
    ``F(y) = int_{-8}^y u0`` continued quasi-periodically (``F(y + 16) = F(y) + int u0``),

        u(x, t) = E[u0(Y) exp(-F(Y) / 2 nu)] / E[exp(-F(Y) / 2 nu)],  Y ~ N(x, 2 nu t),

    evaluated by Gauss-Hermite quadrature with ``nodes`` nodes (200 reproduce the published
    file to about 2e-8).

    Returns:
        ``x`` (256, 1), ``t`` (101,), ``u`` (101, 256).
    """
    import scipy.special

    nu, period, left = 0.1, 16.0, -8.0
    x = left + period * np.arange(256) / 256
    t = np.linspace(0.0, 10.0, 101)
    half_root_pi = 0.5 * np.sqrt(np.pi)
    mass = half_root_pi * (scipy.special.erf(10.0) - scipy.special.erf(-6.0))  # int u0

    def wrap(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        turns = np.floor((y - left) / period)
        return y - turns * period, turns

    def potential(y: np.ndarray) -> np.ndarray:
        base, turns = wrap(y)
        return half_root_pi * (scipy.special.erf(base + 2.0) - scipy.special.erf(-6.0)) + (
            turns * mass
        )

    def initial(y: np.ndarray) -> np.ndarray:
        return np.exp(-((wrap(y)[0] + 2.0) ** 2))

    s, w = scipy.special.roots_hermite(nodes)
    u = np.empty((t.size, x.size))
    u[0] = initial(x)
    for k in range(1, t.size):
        y = x[:, None] + np.sqrt(4.0 * nu * t[k]) * s[None, :]
        exponent = -potential(y) / (2.0 * nu)
        g = w * np.exp(exponent - exponent.max(axis=1, keepdims=True))
        u[k] = (g * initial(y)).sum(axis=1) / g.sum(axis=1)
    return SpaceTimeData(x[:, None], t, u)
