"""A network surrogate ``u_theta(x, t)`` of scattered space-time data, and its derivatives.

The network works in normalised variables

    xi = (x - x_center) / x_scale,   tau = (t - t_center) / t_scale,   v = u / u_scale,

so that training is well conditioned whatever the data's units.  ``u`` is scaled but not
shifted: each product of ``u`` and its derivatives then maps to a multiple of the same product
of ``v`` (see :func:`~dolfinx_nn.discovery.library.term_scale`), which lets
:mod:`~dolfinx_nn.discovery.regression` undo the normalisation exactly.

Two kinds of surrogate (``SurrogateConfig.kind``):

- ``space-time``: one network of ``(xi, tau)`` (:class:`Surrogate`).  The fit is data parallel:
  each rank holds its share of the observations; normal equations of the linear head are summed
  over ranks, and the optional Adam phase (:func:`~dolfinx_nn.training.train`) sums the loss
  with :func:`~dolfinx_nn.parallel.global_sum` and the gradients over the ranks, so every rank
  holds the same network.
- ``separable``: ``v = sum_jk C_jk phi_j(xi) P_k(tau)`` with random spatial features ``phi_j``
  and Legendre polynomials ``P_k`` in time (:class:`SeparableSurrogate`).  For stations observed
  at every snapshot the least-squares problem is a Kronecker product, so the ridge solution and
  its generalised cross-validation error are exact and cheap for every Tikhonov parameter; the
  spatial features only have to resolve a function of ``d`` variables, which makes second
  derivatives accurate in 2D and 3D where ``space-time`` features underfit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from mpi4py import MPI

import numpy as np
import torch

from dolfinx_nn.discovery.data import SpaceTimeData
from dolfinx_nn.discovery.library import Factor, Term
from dolfinx_nn.discovery.scale_search import RIDGE_GRID, RidgeChoice, pattern_search, ridge_gcv
from dolfinx_nn.networks.activations import SMOOTH
from dolfinx_nn.networks.activations import activation as activation_class
from dolfinx_nn.networks.mlp import mlp
from dolfinx_nn.networks.pointwise import partial_derivatives
from dolfinx_nn.parallel import global_sum
from dolfinx_nn.training import TrainingConfig, train

__all__ = [
    "DEFAULT_WIDTH",
    "SCALE_GRID",
    "SURROGATE_KINDS",
    "FitReport",
    "KernelSurrogate",
    "Normalisation",
    "SeparableSurrogate",
    "DEFAULT_TRAINING",
    "Surrogate",
    "SurrogateBase",
    "SurrogateConfig",
    "fit_surrogate",
    "legendre",
    "resolve_kind",
    "snapshot_rms",
    "term_features",
]


@dataclasses.dataclass(frozen=True)
class Normalisation:
    """Affine maps between the data's units and the network's variables."""

    x_center: np.ndarray
    x_scale: np.ndarray
    t_center: float
    t_scale: float
    u_scale: float

    @classmethod
    def from_data(cls, data: SpaceTimeData, isotropic: bool = True) -> Normalisation:
        """Centre of the bounding box and half its size; ``u_scale = max |u|``.

        Args:
            data: the data set.
            isotropic: one length scale for all axes (keeps the Laplacian isotropic).
        """
        lo, hi = data.x.min(axis=0), data.x.max(axis=0)
        half = 0.5 * (hi - lo)
        half = np.full_like(half, half.max()) if isotropic else half
        if np.any(half <= 0):
            raise ValueError("the observation points span no length along some axis")
        u_scale = float(np.nanmax(np.abs(data.u)))
        return cls(
            x_center=0.5 * (lo + hi),
            x_scale=half,
            t_center=0.5 * float(data.t[0] + data.t[-1]),
            t_scale=0.5 * float(data.t[-1] - data.t[0]),
            u_scale=u_scale if u_scale > 0 else 1.0,
        )

    def scaled(self, x: float = 1.0, t: float = 1.0, u: float = 1.0) -> Normalisation:
        """The same centres with the length, time and value scales multiplied by factors."""
        return Normalisation(
            self.x_center, self.x_scale * x, self.t_center, self.t_scale * t, self.u_scale * u
        )

    def xi(self, x: np.ndarray) -> np.ndarray:
        return (x - self.x_center) / self.x_scale

    def tau(self, t: np.ndarray) -> np.ndarray:
        return (t - self.t_center) / self.t_scale


class SurrogateBase(torch.nn.Module):
    """A network ``v(xi, tau)`` in normalised variables together with its normalisation.

    Subclasses implement :meth:`raw`; :meth:`forward` and :meth:`predict` work in data units.
    """

    normalisation: Normalisation

    @property
    def dim(self) -> int:
        return self.normalisation.x_center.size

    def raw(self, xi: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """``v(xi, tau)`` for xi of shape (n, d) and tau of shape (n,)."""
        raise NotImplementedError

    def values(self, xi: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """``v`` on the tensor grid of points xi (n, d) and times tau (m,), shape (n, m)."""
        with torch.no_grad():
            return torch.stack(
                [self.raw(xi, torch.full((xi.shape[0],), float(t), dtype=xi.dtype)) for t in tau],
                dim=1,
            )

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """``u(x, t)`` in data units for x of shape (n, d) and t of shape (n,) or a number."""
        nrm = self.normalisation
        center = torch.as_tensor(nrm.x_center, dtype=x.dtype, device=x.device)
        scale = torch.as_tensor(nrm.x_scale, dtype=x.dtype, device=x.device)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        tau = (t - nrm.t_center) / nrm.t_scale
        return nrm.u_scale * self.raw((x - center) / scale, tau)

    def predict(self, x: np.ndarray, t: float, batch: int = 65536) -> np.ndarray:
        """``u(x, t)`` as a numpy array for points x of shape (n, d) (no gradients)."""
        device = next(self.parameters()).device
        out = []
        with torch.no_grad():
            for s in range(0, x.shape[0], batch):
                xb = torch.as_tensor(x[s : s + batch], dtype=torch.float64, device=device)
                out.append(self(xb, t).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)


def _features(sizes: list[int], activation: str, input_scale: float) -> torch.nn.Sequential:
    """Dense layers each followed by ``activation``; the first layer's weights are normal with
    standard deviation ``input_scale`` and its biases uniform in ``+-input_scale``."""
    layers = mlp(sizes, activation, output_activation=activation, dtype=torch.float64)
    first = layers[0]
    assert isinstance(first, torch.nn.Linear)
    with torch.no_grad():
        first.weight.normal_(0.0, input_scale)
        first.bias.uniform_(-input_scale, input_scale)
    return layers


def _check_network(activation: str, width: int, depth: int, input_scale: float) -> None:
    activation_class(activation, allowed=SMOOTH)
    if width < 1 or depth < 1 or not input_scale > 0:
        raise ValueError(
            f"need width >= 1, depth >= 1, input_scale > 0; got {width}, {depth}, {input_scale}"
        )


class Surrogate(SurrogateBase):
    """A network ``v(xi, tau) = head(features(xi, tau))`` with the normalisation of its data.

    ``features`` is a stack of fully connected layers with a smooth activation; ``head`` is
    linear and is fitted exactly by ridge regression (see :func:`fit_surrogate`).

    Args:
        normalisation: maps between data units and network variables.
        width: neurons per hidden layer.
        depth: number of hidden layers.
        activation: a smooth activation (:data:`~dolfinx_nn.networks.activations.SMOOTH`),
            so that derivatives of the surrogate exist.
        input_scale: standard deviation of the first layer's weights and half-range of its
            biases (sets the resolved frequencies in the normalised variables).
    """

    def __init__(
        self,
        normalisation: Normalisation,
        width: int = 400,
        depth: int = 1,
        activation: str = "tanh",
        input_scale: float = 2.0,
    ):
        super().__init__()
        _check_network(activation, width, depth, input_scale)
        self.normalisation = normalisation
        dim = normalisation.x_center.size
        self.features = _features([dim + 1] + [width] * depth, activation, input_scale)
        self.head = torch.nn.Linear(width, 1, dtype=torch.float64)

    def raw(self, xi: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(torch.cat([xi, tau[:, None]], dim=1)))[:, 0]


def legendre(tau: torch.Tensor, count: int) -> torch.Tensor:
    """Legendre polynomials ``P_0 .. P_{count-1}`` at ``tau``, shape (n, count) (differentiable)."""
    polys = [torch.ones_like(tau), tau]
    for n in range(1, count - 1):
        polys.append(((2 * n + 1) * tau * polys[n] - n * polys[n - 1]) / (n + 1))
    return torch.stack(polys[:count], dim=1)


def cubic_bsplines(tau: torch.Tensor, intervals: int) -> torch.Tensor:
    """Uniform cubic B-splines on ``[-1, 1]`` with ``intervals`` knot intervals.

    ``B_j(tau) = B((tau - c_j) / h)`` with ``h = 2 / intervals``, centres
    ``c_j = -1 + (j - 1) h`` (``j = 0 .. intervals + 2``) and the cardinal cubic B-spline
    ``B(r) = (4 - 6 r^2 + 3 |r|^3) / 6`` for ``|r| < 1``, ``(2 - |r|)^3 / 6`` for
    ``1 <= |r| < 2`` (de Boor, *A Practical Guide to Splines*, 1978): a basis of the C2 cubic
    splines on the knots, with compact support, so a local defect of the data (e.g. a jump at
    the first snapshot) stays local.  Differentiable; shape (n, intervals + 3).
    """
    h = 2.0 / intervals
    centers = -1.0 + h * (torch.arange(intervals + 3, dtype=tau.dtype, device=tau.device) - 1)
    r = torch.abs((tau[:, None] - centers[None, :]) / h)
    inner = (4.0 - 6.0 * r**2 + 3.0 * r**3) / 6.0
    outer = torch.clamp(2.0 - r, min=0.0) ** 3 / 6.0
    return torch.where(r < 1.0, inner, outer)


#: Bases in time of :class:`SeparableSurrogate`: name -> (features(tau, size), count(size)).
TIME_BASES = {
    "legendre": (legendre, lambda size: size + 1),  # size: degree
    "spline": (cubic_bsplines, lambda size: size + 3),  # size: knot intervals
}


class SeparableSurrogate(SurrogateBase):
    """``v(xi, tau) = sum_jk C_jk phi_j(xi) T_k(tau)``: random spatial features times a basis
    in time (Legendre polynomials or cubic B-splines).

    ``phi`` is one random hidden layer (plus a constant feature); ``C`` is fitted by
    :func:`fit_surrogate` (``kind="separable"``).

    Args:
        normalisation: maps between data units and network variables.
        width: number of random spatial features.
        time_degree: highest Legendre degree, or number of spline knot intervals, in time.
        activation: smooth activation of the spatial features (see :class:`Surrogate`).
        input_scale: standard deviation of the spatial weights and half-range of the biases.
        time_basis: a key of :data:`TIME_BASES`.
    """

    def __init__(
        self,
        normalisation: Normalisation,
        width: int = 800,
        time_degree: int = 12,
        activation: str = "tanh",
        input_scale: float = 2.0,
        time_basis: str = "legendre",
    ):
        super().__init__()
        _check_network(activation, width, 1, input_scale)
        if time_degree < 1:
            raise ValueError(f"time_degree must be >= 1, got {time_degree}")
        if time_basis not in TIME_BASES:
            raise ValueError(
                f"unknown time basis {time_basis!r}; choose one of: {', '.join(TIME_BASES)}"
            )
        self.normalisation = normalisation
        self.time_basis = time_basis
        self.time_size = time_degree
        self.spatial = _features([normalisation.x_center.size, width], activation, input_scale)
        self.coefficients = torch.nn.Parameter(
            torch.zeros(width + 1, TIME_BASES[time_basis][1](time_degree), dtype=torch.float64)
        )

    def space_features(self, xi: torch.Tensor) -> torch.Tensor:
        """``phi(xi)`` with a trailing constant feature, shape (n, width + 1)."""
        h = self.spatial(xi)
        return torch.cat([h, torch.ones_like(h[:, :1])], dim=1)

    def time_features(self, tau: torch.Tensor) -> torch.Tensor:
        """``T_k(tau)``, shape (n, number of time functions)."""
        if self.time_basis == "legendre":
            return legendre(tau, self.coefficients.shape[1])
        return cubic_bsplines(tau, self.time_size)

    def raw(self, xi: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        phi = self.space_features(xi)
        return torch.einsum("nj,jk,nk->n", phi, self.coefficients, self.time_features(tau))

    def values(self, xi: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.space_features(xi) @ self.coefficients @ self.time_features(tau).T


class KernelSurrogate(SurrogateBase):
    """``v(xi, tau) = w_0 + sum_j w_j exp(-|S (z - c_j)|^2 / 2)``: Gaussian kernels at data points.

    ``z = (xi, tau)``; the centres ``c_j`` are observation points; ``S = diag(s_x, .., s_x,
    s_t)`` holds the inverse length scales in space (one for all axes, like the normalisation)
    and in time.  With the weights fitted by ridge regression this is kernel ridge regression
    with a Nystroem basis (Williams & Seeger, NIPS 2001); it needs no grid and tolerates
    missing values, so it is the surrogate for scattered observations.

    Args:
        normalisation: maps between data units and network variables.
        centers: kernel centres in normalised variables, shape (m, d + 1).
        space_scale: inverse length scale ``s_x`` in space.
        time_scale: inverse length scale ``s_t`` in time.
    """

    def __init__(
        self, normalisation: Normalisation, centers: np.ndarray, space_scale: float,
        time_scale: float,
    ):
        super().__init__()
        self.scaled_centers: torch.Tensor
        self.inverse_lengths: torch.Tensor
        if not (space_scale > 0 and time_scale > 0):
            raise ValueError(f"scales must be > 0, got {space_scale}, {time_scale}")
        self.normalisation = normalisation
        dim = normalisation.x_center.size
        inverse = np.array([space_scale] * dim + [time_scale])
        self.register_buffer("scaled_centers", torch.as_tensor(centers * inverse))
        self.register_buffer("inverse_lengths", torch.as_tensor(inverse))
        self.weights = torch.nn.Parameter(torch.zeros(centers.shape[0] + 1, dtype=torch.float64))

    #: points per autograd pass of :func:`term_features` (the features are dense (n, m)).
    feature_batch = 2048

    def kernel_features(self, z: torch.Tensor) -> torch.Tensor:
        """Kernel values and a trailing constant, shape (n, m + 1), for z of shape (n, d + 1)."""
        zs = z * self.inverse_lengths
        c = self.scaled_centers
        d2 = (zs * zs).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2.0 * zs @ c.T
        k = torch.exp(-0.5 * d2)
        return torch.cat([k, torch.ones_like(k[:, :1])], dim=1)

    def raw(self, xi: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        return self.kernel_features(torch.cat([xi, tau[:, None]], dim=1)) @ self.weights

    def values(self, xi: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        # the Gaussian factorises: k((x, t), c) = k_x(x, c_x) k_t(t, c_t)
        with torch.no_grad():
            inv, c = self.inverse_lengths, self.scaled_centers
            xs, ts = xi * inv[:-1], tau[:, None] * inv[-1:]
            kx = torch.exp(-0.5 * torch.cdist(xs, c[:, :-1]) ** 2)
            kt = torch.exp(-0.5 * torch.cdist(ts, c[:, -1:]) ** 2)
            return (kx * self.weights[:-1]) @ kt.T + self.weights[-1]


#: Kinds of surrogate (see the module docstring); ``auto`` picks ``separable`` for complete
#: station data and ``kernel`` otherwise.
SURROGATE_KINDS = ("auto", "separable", "kernel", "space-time")

#: Input scales (inverse feature lengths in normalised variables) searched by default:
#: 1 .. 64 in factors of sqrt(2).
SCALE_GRID: tuple[float, ...] = tuple(float(2.0 ** (k / 2)) for k in range(13))

#: Legendre degrees in time searched by default (at most half the number of snapshots).
DEGREE_GRID: tuple[int, ...] = (2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64)

#: Default number of features (``width``) per kind.
DEFAULT_WIDTH = {"separable": 800, "kernel": 1000, "space-time": 400}


#: Default optimizer settings of :class:`SurrogateConfig` (no training steps; Adam at learning
#: rate 1e-3 once ``adam_steps`` is set; the generators are not reseeded).
DEFAULT_TRAINING = TrainingConfig(adam_steps=0, adam_lr=1e-3, lbfgs_steps=0, seed=None)


@dataclasses.dataclass
class SurrogateConfig:
    """Surrogate and fit of :func:`fit_surrogate`.

    Every scale left at ``None`` is chosen from the data (and reported in
    :attr:`FitReport.scales`): the input scale (and, per kind, the Legendre degree or the
    kernels' time scale) by a pattern search over ``scale_grid`` / :data:`DEGREE_GRID`
    (:func:`~dolfinx_nn.discovery.scale_search.pattern_search`), and the Tikhonov parameter
    over ``ridge_grid`` at each of them, all by generalised cross-validation (``separable``,
    ``kernel``) or ``folds``-fold cross-validation (``space-time``).

    Kinds: ``separable`` (:class:`SeparableSurrogate`, every station observed at every
    snapshot), ``kernel`` (:class:`KernelSurrogate`, any scattered data), ``space-time``
    (:class:`Surrogate`, a network of ``(xi, tau)`` whose hidden layers may be trained by
    :func:`~dolfinx_nn.training.train` with the settings ``training``), ``auto``
    (``separable`` when no value is missing, else ``kernel``).

    Attributes:
        width: features (``separable``: spatial features; ``kernel``: centres; ``space-time``:
            neurons per layer); ``None``: :data:`DEFAULT_WIDTH`.
        input_scale: inverse feature length in space (``space-time``: in space-time).
        time_scale: inverse kernel length in time (``kernel``).
        time_degree: Legendre degree or number of spline knot intervals in time
            (``separable``; at most half as many time functions as snapshots are searched).
        time_basis: ``legendre`` or ``spline`` (``separable``; see :data:`TIME_BASES`).
        max_fit_points: most observations the ``kernel`` fit uses (a random subset).
        screen_edges: drop the first (last) snapshot while it alone carries most of the
            cross-validation error (:data:`EDGE_FACTOR`), e.g. an initial state that jumps at
            a boundary, which no smooth surrogate can follow; at most a quarter of the
            snapshots are dropped and the fitted window is reported.
        training: optimizer settings of the ``space-time`` hidden layers (default
            :data:`DEFAULT_TRAINING`: no steps, so the random features stay as drawn; e.g.
            ``dataclasses.replace(DEFAULT_TRAINING, adam_steps=30)`` for 30 Adam steps).
    """

    kind: str = "auto"
    width: int | None = None
    depth: int = 1
    time_degree: int | None = None
    time_basis: str | None = None
    activation: str = "tanh"
    input_scale: float | None = None
    time_scale: float | None = None
    scale_grid: tuple[float, ...] = SCALE_GRID
    training: TrainingConfig = DEFAULT_TRAINING
    ridge_grid: tuple[float, ...] = RIDGE_GRID
    folds: int = 5
    max_fit_points: int = 20_000
    screen_edges: bool = True
    seed: int = 0
    device: str = "cpu"
    batch: int = 32768


@dataclasses.dataclass(frozen=True)
class FitReport:
    """How the surrogate fits its data and which scales were chosen."""

    ridge: float  # selected Tikhonov parameter (relative)
    cv_rmse: float  # (generalised) cross-validation RMS error of the normalised values there
    train_rmse: float  # RMS error of the normalised values
    losses: list[float]  # training history (empty without training)
    kind: str = ""  # the kind of surrogate fitted
    scales: dict[str, Any] = dataclasses.field(default_factory=dict)  # chosen scales
    search: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # scored cells

    def as_dict(self) -> dict:
        """JSON-ready summary (without the training history)."""
        return {
            "kind": self.kind, "ridge": self.ridge, "cv_rmse": self.cv_rmse,
            "train_rmse": self.train_rmse, "scales": self.scales, "search": self.search,
        }


def _rank_share(n: int, comm: MPI.Comm) -> slice:
    return slice(comm.rank, n, comm.size)


def _allreduce(a: np.ndarray, comm: MPI.Comm) -> np.ndarray:
    out = np.empty_like(a)
    comm.Allreduce(np.ascontiguousarray(a), out, op=MPI.SUM)
    return out


def _solve_head(
    model: Surrogate, xi: torch.Tensor, tau: torch.Tensor, v: torch.Tensor, fold: np.ndarray,
    config: SurrogateConfig, comm: MPI.Comm, assign: bool = True,
) -> tuple[float, float, float]:
    """Ridge head with cross-validated parameter; Gram matrices are summed over ranks."""
    width = model.head.in_features
    folds = config.folds
    gram = np.zeros((folds, width + 1, width + 1))
    rhs = np.zeros((folds, width + 1))
    vv = np.zeros(folds)
    count = np.zeros(folds)
    with torch.no_grad():
        for s in range(0, v.shape[0], config.batch):
            chunk = slice(s, s + config.batch)
            h = model.features(torch.cat([xi[chunk], tau[chunk, None]], 1))
            h = torch.cat([h, torch.ones_like(h[:, :1])], 1).cpu().numpy()
            vb = v[s : s + config.batch].cpu().numpy()
            fb = fold[s : s + config.batch]
            for k in range(folds):
                sel = fb == k
                gram[k] += h[sel].T @ h[sel]
                rhs[k] += h[sel].T @ vb[sel]
                vv[k] += vb[sel] @ vb[sel]
                count[k] += sel.sum()
    gram, rhs, vv, count = (_allreduce(a, comm) for a in (gram, rhs, vv, count))
    total_gram, total_rhs = gram.sum(0), rhs.sum(0)
    scale = np.trace(total_gram) / (width + 1)
    eye = np.eye(width + 1)

    def sse(w: np.ndarray, k: int) -> float:  # squared error of fold k
        return float(w @ gram[k] @ w - 2 * w @ rhs[k] + vv[k])

    best = (np.inf, 0.0)
    for ridge in config.ridge_grid:
        err = 0.0
        for k in range(folds):
            a = total_gram - gram[k] + ridge * scale * eye
            w = np.linalg.solve(a, total_rhs - rhs[k])
            err += sse(w, k)
        best = min(best, (err, ridge))
    cv_err, ridge = best
    w = np.linalg.solve(total_gram + ridge * scale * eye, total_rhs)
    train = sum(sse(w, k) for k in range(folds))
    if assign:
        with torch.no_grad():
            model.head.weight.copy_(torch.as_tensor(w[:-1][None, :]))
            model.head.bias.copy_(torch.as_tensor(w[-1:]))
    n = count.sum()
    return ridge, float(np.sqrt(max(cv_err, 0.0) / n)), float(np.sqrt(max(train, 0.0) / n))


def _grid(value: float | None, grid: tuple[float, ...], name: str) -> tuple[float, ...]:
    if value is not None:
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
        return (float(value),)
    if not grid or min(grid) <= 0:
        raise ValueError(f"scale_grid must hold values > 0, got {grid}")
    return tuple(sorted(float(g) for g in grid))


def _middle(grid: tuple, target: float) -> int:
    return int(np.argmin([abs(np.log(g / target)) for g in grid]))


def resolve_kind(data: SpaceTimeData, kind: str) -> str:
    """The kind ``auto`` stands for on ``data``: ``separable`` if complete, else ``kernel``."""
    if kind not in SURROGATE_KINDS:
        raise ValueError(
            f"unknown surrogate kind {kind!r}; choose one of: {', '.join(SURROGATE_KINDS)}"
        )
    if kind != "auto":
        return kind
    return "kernel" if np.isnan(data.u).any() else "separable"


def fit_surrogate(
    data: SpaceTimeData,
    config: SurrogateConfig | None = None,
    normalisation: Normalisation | None = None,
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> tuple[SurrogateBase, FitReport]:
    """Fit a surrogate to the observed values, with its scales chosen from the data.

    Args:
        data: observations (replicated on every rank).  ``space-time``: each rank works on
            every ``comm.size``-th observation and the normal equations are summed over ranks;
            ``separable`` and ``kernel``: the candidate scales are scored in parallel over the
            ranks and rank 0 fits the chosen one and broadcasts it.
        config: surrogate and fit; defaults to :class:`SurrogateConfig`.
        normalisation: defaults to :meth:`Normalisation.from_data`.
        comm: communicator of the fit.

    Returns:
        The surrogate (identical on every rank) and a :class:`FitReport`.

    Raises:
        ValueError: unknown kind, bad grids, or missing values for ``separable``.
    """
    config = config or SurrogateConfig()
    kind = resolve_kind(data, config.kind)
    if not config.ridge_grid or min(config.ridge_grid) < 0:
        raise ValueError(f"ridge_grid must hold values >= 0, got {config.ridge_grid}")
    width = DEFAULT_WIDTH[kind] if config.width is None else config.width
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    first, last = 0, data.t.size  # the snapshots fitted: data.t[first:last]
    most = data.t.size // 4 if config.screen_edges else 0

    cache: dict = {}  # the separable fit's spatial SVDs (they do not depend on the window)

    def fit_window(
        first: int, last: int, cfg: SurrogateConfig
    ) -> tuple[SurrogateBase, FitReport]:
        window = data.window(first, last)
        nrm = normalisation or Normalisation.from_data(window)
        if kind == "separable":
            return _fit_separable(window, cfg, width, nrm, comm, cache)
        if kind == "kernel":
            return _fit_kernel(window, cfg, width, nrm, comm)
        return _fit_space_time(window, cfg, width, nrm, comm)

    model, report = fit_window(first, last, config)
    while first + data.t.size - last < most:
        fixed = _fixed_scales(config, report)
        trials = [
            (fit_window(lo, hi, fixed)[1].cv_rmse, lo, hi)
            for lo, hi in ((first + 1, last), (first, last - 1))
        ]
        error, lo, hi = min(trials)
        if not error < report.cv_rmse / EDGE_FACTOR:
            break
        first, last = lo, hi
        model, report = fit_window(first, last, config)
    scales = {**report.scales, "first_time": float(data.t[first]),
              "last_time": float(data.t[last - 1]),
              "dropped_times": [float(t) for t in np.r_[data.t[:first], data.t[last:]]]}
    return model, dataclasses.replace(report, scales=scales)


#: An edge snapshot is dropped when the (generalised) cross-validation RMS error of the fit
#: without it, at the same scales, is below 1 / EDGE_FACTOR of the error with it: that one
#: snapshot then carries more than 99 % of the mean squared prediction error.
EDGE_FACTOR = 10.0


def _fixed_scales(config: SurrogateConfig, report: FitReport) -> SurrogateConfig:
    """``config`` with the scales chosen in ``report`` fixed (only the ridge is searched)."""
    chosen = report.scales
    return dataclasses.replace(
        config,
        input_scale=chosen.get("input_scale"),
        time_scale=chosen.get("time_scale"),
        time_degree=chosen.get("time_size"),
        time_basis=chosen.get("time_basis"),
    )


def snapshot_rms(model: SurrogateBase, data: SpaceTimeData) -> np.ndarray:
    """RMS residual of the surrogate at the observed values of each snapshot, shape (M,)."""
    out = np.zeros(data.t.size)
    for k, t in enumerate(data.t):
        seen = ~np.isnan(data.u[k])
        if seen.any():
            residual = model.predict(data.x[seen], float(t)) - data.u[k, seen]
            out[k] = np.sqrt(np.mean(residual**2))
    return out


def _fit_space_time(
    data: SpaceTimeData, config: SurrogateConfig, width: int, normalisation: Normalisation,
    comm: MPI.Comm,
) -> tuple[Surrogate, FitReport]:
    if config.folds < 2:
        raise ValueError(f"folds must be >= 2, got {config.folds}")
    scales = _grid(config.input_scale, config.scale_grid, "input_scale")
    device = torch.device(config.device)
    x, t, u = data.samples()
    share = _rank_share(u.size, comm)
    fold = np.random.default_rng(config.seed).permutation(u.size)[share] % config.folds

    def as_tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a[share], dtype=torch.float64, device=device)

    xi, tau = as_tensor(normalisation.xi(x)), as_tensor(normalisation.tau(t))
    v = as_tensor(u / normalisation.u_scale)

    def network(scale: float) -> Surrogate:
        torch.manual_seed(config.seed)
        return Surrogate(normalisation, width, config.depth, config.activation, scale).to(device)

    def score(cell: tuple[int, ...]) -> float:
        return _solve_head(network(scales[cell[0]]), xi, tau, v, fold, config, comm, False)[1]

    # every rank scores every cell (the normal equations are summed over the ranks)
    (best,), scored = pattern_search(
        (len(scales),), score, (_middle(scales, 4.0),), MPI.COMM_SELF
    )
    model = network(scales[best])
    total = float(u.size)
    losses: list[float] = []
    if config.training.total_steps > 0:
        _solve_head(model, xi, tau, v, fold, config, comm)
        history = train(
            lambda: global_sum(torch.sum((model.raw(xi, tau) - v) ** 2), comm) / total,
            model,
            config.training,
            comm=comm,
            desc="surrogate",
        )
        losses = history.losses
    ridge, cv_rmse, train_rmse = _solve_head(model, xi, tau, v, fold, config, comm)
    search = [{"input_scale": scales[c[0]], "cv_rmse": e} for c, e in sorted(scored.items())]
    return model, FitReport(
        ridge, cv_rmse, train_rmse, losses, "space-time",
        {"input_scale": scales[best], "width": width}, search,
    )


def _thin_svd(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    return u, s, vt


def _fit_separable(
    data: SpaceTimeData, config: SurrogateConfig, width: int, normalisation: Normalisation,
    comm: MPI.Comm, space: dict | None = None,
) -> tuple[SeparableSurrogate, FitReport]:
    """Kronecker ridge regression ``min ||Phi C Psi^T - V||^2 + lambda ||C||^2`` with GCV.

    With the thin SVDs ``Phi = A diag(a) A'^T`` and ``Psi = B diag(b) B'^T`` and
    ``P = A^T V B``, the solution is ``C = A' [a b P / (a^2 b^2 + lambda)] B'^T`` and the hat
    matrix has the eigenvalues ``a_i^2 b_k^2 / (a_i^2 b_k^2 + lambda)``, so every
    ``lambda`` costs one pass over ``P`` (:func:`~.scale_search.ridge_gcv`); the input scale
    and the Legendre degree are chosen on their grids by pattern search.
    """
    if np.isnan(data.u).any():
        raise ValueError(
            "the separable surrogate needs every station observed at every snapshot; this data "
            "set has missing values (use SurrogateConfig(kind='kernel'))"
        )
    _check_network(config.activation, width, 1, config.input_scale or 1.0)
    if config.time_degree is not None and config.time_degree < 1:
        raise ValueError(f"time_degree must be >= 1, got {config.time_degree}")
    scales = _grid(config.input_scale, config.scale_grid, "input_scale")
    if config.time_basis is not None and config.time_basis not in TIME_BASES:
        raise ValueError(
            f"unknown time basis {config.time_basis!r}; choose one of: {', '.join(TIME_BASES)}"
        )
    bases = (config.time_basis,) if config.time_basis else tuple(TIME_BASES)
    half = data.t.size // 2  # at most half as many functions in time as snapshots
    sizes = (
        (int(config.time_degree),) if config.time_degree is not None
        else tuple(p for p in DEGREE_GRID if p + 1 <= half) or (1,)
    )
    v = data.u.T / normalisation.u_scale  # (stations, snapshots)
    total = float(np.sum(v * v))
    xi = torch.as_tensor(normalisation.xi(data.x))
    tau = torch.as_tensor(normalisation.tau(data.t))

    def model(scale: float, size: int, basis: str) -> SeparableSurrogate:
        torch.manual_seed(config.seed)
        return SeparableSurrogate(normalisation, width, size, config.activation, scale, basis)

    space = {} if space is None else space  # SVDs of the spatial features per input scale
    time: dict[tuple[int, str], tuple] = {}

    def spectra(cell: tuple[int, ...]) -> tuple[tuple, tuple]:
        scale, size, basis = scales[cell[0]], sizes[cell[1]], bases[cell[2]]
        if scale not in space:
            with torch.no_grad():
                space[scale] = _thin_svd(model(scale, 1, "legendre").space_features(xi).numpy())
        if (size, basis) not in time:
            with torch.no_grad():
                time[size, basis] = _thin_svd(model(1.0, size, basis).time_features(tau).numpy())
        return space[scale], time[size, basis]

    def choose(cell: tuple[int, ...]) -> RidgeChoice:
        (a, sa, _), (b, sb, _) = spectra(cell)
        p = a.T @ v @ b
        return ridge_gcv(np.outer(sa**2, sb**2), p * p, total, v.size, config.ridge_grid)

    start = (_middle(scales, 4.0), _middle(sizes, 8.0), 0)
    best, scored = pattern_search(
        (len(scales), len(sizes), len(bases)), lambda c: choose(c).gcv, start, comm
    )
    scale, size, basis = scales[best[0]], sizes[best[1]], bases[best[2]]
    result = None
    if comm.rank == 0:
        choice = choose(best)
        (a, sa, at), (b, sb, bt) = spectra(best)
        sigma2 = np.outer(sa**2, sb**2)
        lam = choice.ridge * float(np.mean(sigma2))
        coef = at.T @ (np.outer(sa, sb) * (a.T @ v @ b) / (sigma2 + lam)) @ bt
        result = (coef, choice)
    coef, choice = comm.bcast(result, root=0)
    surrogate = model(scale, size, basis)
    with torch.no_grad():
        surrogate.coefficients.copy_(torch.as_tensor(coef))
    search = [
        {"input_scale": scales[c[0]], "time_size": sizes[c[1]], "time_basis": bases[c[2]],
         "gcv_rmse": float(np.sqrt(e))}
        for c, e in sorted(scored.items())
    ]
    report = FitReport(
        choice.ridge, float(np.sqrt(choice.gcv)), float(np.sqrt(choice.sse / v.size)), [],
        "separable", {"input_scale": scale, "time_basis": basis, "time_size": size,
                      "width": width, "dof": choice.dof}, search,
    )
    return surrogate.to(torch.device(config.device)), report


def _fit_kernel(
    data: SpaceTimeData, config: SurrogateConfig, width: int, normalisation: Normalisation,
    comm: MPI.Comm,
) -> tuple[KernelSurrogate, FitReport]:
    """Nystroem kernel ridge regression with GCV; length scales chosen by pattern search.

    The weights solve ``min ||H w - v||^2 + lambda ||w||^2`` with ``H`` the kernel features
    at the fit points; from the eigendecomposition ``H^T H = Q diag(e) Q^T`` every
    ``lambda`` costs one pass over the spectrum (:func:`~.scale_search.ridge_gcv`).
    """
    if config.max_fit_points < 2:
        raise ValueError(f"max_fit_points must be >= 2, got {config.max_fit_points}")
    space_scales = _grid(config.input_scale, config.scale_grid, "input_scale")
    time_scales = _grid(config.time_scale, config.scale_grid, "time_scale")
    x, t, u = data.samples()
    rng = np.random.default_rng(config.seed)
    if u.size > config.max_fit_points:
        keep = np.sort(rng.choice(u.size, config.max_fit_points, replace=False))
        x, t, u = x[keep], t[keep], u[keep]
    z = np.concatenate([normalisation.xi(x), normalisation.tau(t)[:, None]], axis=1)
    centers = z[rng.choice(z.shape[0], min(width, z.shape[0]), replace=False)]
    v = u / normalisation.u_scale
    total = float(v @ v)
    zt = torch.as_tensor(z)

    def model(space_scale: float, time_scale: float, c: np.ndarray = centers) -> KernelSurrogate:
        return KernelSurrogate(normalisation, c, space_scale, time_scale)

    def spectrum(cell: tuple[int, ...], c: np.ndarray) -> tuple:
        with torch.no_grad():
            h = model(space_scales[cell[0]], time_scales[cell[1]], c).kernel_features(zt).numpy()
        e, q = np.linalg.eigh(h.T @ h)
        e = np.clip(e, 0.0, None)
        return e, q, q.T @ (h.T @ v)

    def choose(e: np.ndarray, b: np.ndarray) -> RidgeChoice:
        proj2 = np.where(e > 0, b * b / np.where(e > 0, e, 1.0), 0.0)
        return ridge_gcv(e, proj2, total, v.size, config.ridge_grid)

    spectra: dict[tuple[int, ...], tuple] = {}  # the best cell scored on this rank

    def score(cell: tuple[int, ...]) -> float:
        e, q, b = spectrum(cell, centers)
        gcv = choose(e, b).gcv
        if not spectra or gcv < min(spectra.values(), key=lambda s: s[3])[3]:
            spectra.clear()
            spectra[cell] = (e, q, b, gcv)
        return gcv

    start = (_middle(space_scales, 8.0), _middle(time_scales, 8.0))
    best, scored = pattern_search((len(space_scales), len(time_scales)), score, start, comm)
    result = None
    if comm.rank == 0:
        e, q, b = spectra[best][:3] if best in spectra else spectrum(best, centers)
        choice = choose(e, b)
        weights = q @ (b / (e + choice.ridge * float(np.mean(e))))
        result = (weights, choice)
    weights, choice = comm.bcast(result, root=0)
    surrogate = model(space_scales[best[0]], time_scales[best[1]])
    with torch.no_grad():
        surrogate.weights.copy_(torch.as_tensor(weights))
    search = [
        {"input_scale": space_scales[c[0]], "time_scale": time_scales[c[1]],
         "gcv_rmse": float(np.sqrt(e))}
        for c, e in sorted(scored.items())
    ]
    report = FitReport(
        choice.ridge, float(np.sqrt(choice.gcv)), float(np.sqrt(choice.sse / v.size)), [],
        "kernel",
        {"input_scale": space_scales[best[0]], "time_scale": time_scales[best[1]],
         "width": int(centers.shape[0]), "fit_points": int(v.size), "dof": choice.dof},
        search,
    )
    return surrogate.to(torch.device(config.device)), report


def term_features(
    model: SurrogateBase,
    x: np.ndarray,
    t: np.ndarray,
    terms: Sequence[Term],
    batch: int = 32768,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw features: ``v_tau`` and the terms of ``v`` in network variables at points (x, t).

    Args:
        model: the surrogate.
        x: points, shape (n, d), in data units.
        t: times, shape (n,), in data units.
        terms: library terms.
        batch: points per autograd pass.

    Returns:
        ``(theta, v_tau)`` of shapes (n, len(terms)) and (n,).
    """
    nrm = model.normalisation
    device = next(model.parameters()).device
    batch = min(batch, getattr(model, "feature_batch", batch))
    time: Factor = (model.dim,)  # tau is the coordinate after the d of xi
    needed = [time, *{f for term in terms for f in term}]
    thetas, targets = [], []
    for s in range(0, x.shape[0], batch):
        xi = torch.as_tensor(nrm.xi(x[s : s + batch]), dtype=torch.float64, device=device)
        tau = torch.as_tensor(nrm.tau(t[s : s + batch]), dtype=torch.float64, device=device)
        # space and time as separate blocks: a spatial pass skips the time functions
        factors = partial_derivatives(model.raw, (xi, tau), needed, create_graph=False)
        columns = []
        for term in terms:
            col = torch.ones_like(factors[time])
            for factor in term:
                col = col * factors[factor]
            columns.append(col)
        n = xi.shape[0]
        thetas.append(torch.stack(columns, dim=1).cpu().numpy() if columns else np.zeros((n, 0)))
        targets.append(factors[time].cpu().numpy())
    return np.concatenate(thetas), np.concatenate(targets)
