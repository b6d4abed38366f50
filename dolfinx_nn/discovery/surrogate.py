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

from mpi4py import MPI

import numpy as np
import torch

from dolfinx_nn.discovery.data import SpaceTimeData
from dolfinx_nn.discovery.library import Term
from dolfinx_nn.parallel import global_sum
from dolfinx_nn.training import TrainingConfig, train

__all__ = [
    "SURROGATE_KINDS",
    "FitReport",
    "Normalisation",
    "SeparableSurrogate",
    "Surrogate",
    "SurrogateBase",
    "SurrogateConfig",
    "fit_surrogate",
    "legendre",
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


_ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "tanh": torch.nn.Tanh,
    "sin": None,  # type: ignore[dict-item]  # filled below
    "gelu": torch.nn.GELU,
    "softplus": torch.nn.Softplus,
}


class _Sin(torch.nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sin(z)


_ACTIVATIONS["sin"] = _Sin


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


def _first_layer(dim: int, width: int, input_scale: float) -> torch.nn.Linear:
    layer = torch.nn.Linear(dim, width, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.normal_(0.0, input_scale)
        layer.bias.uniform_(-input_scale, input_scale)
    return layer


def _check_network(activation: str, width: int, depth: int, input_scale: float) -> None:
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; choose one of: {', '.join(_ACTIVATIONS)}"
        )
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
        activation: one of ``tanh``, ``sin``, ``gelu``, ``softplus`` (smooth, so that
            derivatives of the surrogate exist).
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
        layers: list[torch.nn.Module] = []
        sizes = [dim + 1] + [width] * depth
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [torch.nn.Linear(a, b, dtype=torch.float64), _ACTIVATIONS[activation]()]
        with torch.no_grad():
            layers[0].weight.normal_(0.0, input_scale)
            layers[0].bias.uniform_(-input_scale, input_scale)
        self.features = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(width, 1, dtype=torch.float64)

    def raw(self, xi: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(torch.cat([xi, tau[:, None]], dim=1)))[:, 0]


def legendre(tau: torch.Tensor, count: int) -> torch.Tensor:
    """Legendre polynomials ``P_0 .. P_{count-1}`` at ``tau``, shape (n, count) (differentiable)."""
    polys = [torch.ones_like(tau), tau]
    for n in range(1, count - 1):
        polys.append(((2 * n + 1) * tau * polys[n] - n * polys[n - 1]) / (n + 1))
    return torch.stack(polys[:count], dim=1)


class SeparableSurrogate(SurrogateBase):
    """``v(xi, tau) = sum_jk C_jk phi_j(xi) P_k(tau)``: random spatial features, Legendre in time.

    ``phi`` is one random hidden layer (plus a constant feature); ``C`` is fitted by
    :func:`fit_surrogate` (``kind="separable"``).

    Args:
        normalisation: maps between data units and network variables.
        width: number of random spatial features.
        time_degree: highest Legendre degree in time.
        activation: smooth activation of the spatial features (see :class:`Surrogate`).
        input_scale: standard deviation of the spatial weights and half-range of the biases.
    """

    def __init__(
        self,
        normalisation: Normalisation,
        width: int = 800,
        time_degree: int = 12,
        activation: str = "tanh",
        input_scale: float = 2.0,
    ):
        super().__init__()
        _check_network(activation, width, 1, input_scale)
        if time_degree < 1:
            raise ValueError(f"time_degree must be >= 1, got {time_degree}")
        self.normalisation = normalisation
        self.spatial = torch.nn.Sequential(
            _first_layer(normalisation.x_center.size, width, input_scale),
            _ACTIVATIONS[activation](),
        )
        self.coefficients = torch.nn.Parameter(
            torch.zeros(width + 1, time_degree + 1, dtype=torch.float64)
        )

    def space_features(self, xi: torch.Tensor) -> torch.Tensor:
        """``phi(xi)`` with a trailing constant feature, shape (n, width + 1)."""
        h = self.spatial(xi)
        return torch.cat([h, torch.ones_like(h[:, :1])], dim=1)

    def time_features(self, tau: torch.Tensor) -> torch.Tensor:
        """``P_k(tau)``, shape (n, time_degree + 1)."""
        return legendre(tau, self.coefficients.shape[1])

    def raw(self, xi: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        phi = self.space_features(xi)
        return torch.einsum("nj,jk,nk->n", phi, self.coefficients, self.time_features(tau))


@dataclasses.dataclass
class SurrogateConfig:
    """Network and fit of :func:`fit_surrogate`.

    The hidden layers start random (``input_scale``) and are trained for ``adam_steps`` Adam
    steps (0: a random-feature network); the linear head is then the ridge-regression solution
    with the Tikhonov parameter from ``ridge_grid`` that minimises the k-fold cross-validation
    error.  The exact head makes the fit fast and its derivatives accurate.

    ``kind="separable"`` fits a :class:`SeparableSurrogate` (``width`` spatial features,
    Legendre polynomials up to ``time_degree``; ``depth``, ``adam_steps``, ``folds`` and
    ``batch`` do not apply): the Tikhonov parameter from ``ridge_grid`` minimises the
    generalised cross-validation error.  It needs every station observed at every snapshot.
    """

    kind: str = "space-time"
    width: int = 400
    depth: int = 1
    time_degree: int = 12
    activation: str = "tanh"
    input_scale: float = 2.0
    adam_steps: int = 0
    learning_rate: float = 1e-3
    ridge_grid: tuple[float, ...] = (1e-10, 1e-8, 1e-6, 1e-4, 1e-2)
    folds: int = 5
    seed: int = 0
    device: str = "cpu"
    batch: int = 32768


@dataclasses.dataclass(frozen=True)
class FitReport:
    """How the surrogate fits its data."""

    ridge: float  # selected Tikhonov parameter
    cv_rmse: float  # (generalised) cross-validation RMS error of the normalised values there
    train_rmse: float  # RMS error of the normalised values
    losses: list[float]  # Adam history (empty without training)


def _rank_share(n: int, comm: MPI.Comm) -> slice:
    return slice(comm.rank, n, comm.size)


def _allreduce(a: np.ndarray, comm: MPI.Comm) -> np.ndarray:
    out = np.empty_like(a)
    comm.Allreduce(np.ascontiguousarray(a), out, op=MPI.SUM)
    return out


def _solve_head(
    model: Surrogate, xi: torch.Tensor, tau: torch.Tensor, v: torch.Tensor, fold: np.ndarray,
    config: SurrogateConfig, comm: MPI.Comm,
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
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(w[:-1][None, :]))
        model.head.bias.copy_(torch.as_tensor(w[-1:]))
    n = count.sum()
    return ridge, float(np.sqrt(max(cv_err, 0.0) / n)), float(np.sqrt(max(train, 0.0) / n))


#: Kinds of surrogate (see the module docstring).
SURROGATE_KINDS = ("space-time", "separable")


def fit_surrogate(
    data: SpaceTimeData,
    config: SurrogateConfig | None = None,
    normalisation: Normalisation | None = None,
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> tuple[SurrogateBase, FitReport]:
    """Fit a surrogate to the observed values by least squares.

    Args:
        data: observations (replicated on every rank).  ``space-time``: each rank works on
            every ``comm.size``-th observation and the normal equations are summed over ranks;
            ``separable``: rank 0 fits and broadcasts the coefficients.
        config: network and fit; defaults to :class:`SurrogateConfig`.
        normalisation: defaults to :meth:`Normalisation.from_data`.
        comm: communicator of the fit.

    Returns:
        The surrogate (identical on every rank) and a :class:`FitReport`.
    """
    config = config or SurrogateConfig()
    normalisation = normalisation or Normalisation.from_data(data)
    if config.kind not in SURROGATE_KINDS:
        raise ValueError(
            f"unknown surrogate kind {config.kind!r}; choose one of: {', '.join(SURROGATE_KINDS)}"
        )
    if not config.ridge_grid or min(config.ridge_grid) < 0:
        raise ValueError(f"ridge_grid must hold values >= 0, got {config.ridge_grid}")
    if config.kind == "separable":
        return _fit_separable(data, config, normalisation, comm)
    if config.folds < 2:
        raise ValueError(f"folds must be >= 2, got {config.folds}")
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    model = Surrogate(
        normalisation, config.width, config.depth, config.activation, config.input_scale
    ).to(device)
    x, t, u = data.samples()
    share = _rank_share(u.size, comm)
    fold = np.random.default_rng(config.seed).permutation(u.size)[share] % config.folds

    def as_tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a[share], dtype=torch.float64, device=device)

    xi, tau = as_tensor(normalisation.xi(x)), as_tensor(normalisation.tau(t))
    v = as_tensor(u / normalisation.u_scale)
    total = float(u.size)
    losses: list[float] = []
    if config.adam_steps > 0:
        _solve_head(model, xi, tau, v, fold, config, comm)
        history = train(
            lambda: global_sum(torch.sum((model.raw(xi, tau) - v) ** 2), comm) / total,
            model,
            TrainingConfig(
                adam_steps=config.adam_steps, adam_lr=config.learning_rate, lbfgs_steps=0,
                seed=None,
            ),
            comm=comm,
            desc="surrogate",
        )
        losses = history.losses
    ridge, cv_rmse, train_rmse = _solve_head(model, xi, tau, v, fold, config, comm)
    return model, FitReport(ridge, cv_rmse, train_rmse, losses)


def _fit_separable(
    data: SpaceTimeData, config: SurrogateConfig, normalisation: Normalisation, comm: MPI.Comm
) -> tuple[SeparableSurrogate, FitReport]:
    """Kronecker ridge regression ``min ||Phi C Psi^T - V||^2 + lambda ||C||^2`` with GCV.

    With ``Phi^T Phi = A diag(a) A^T`` and ``Psi^T Psi = B diag(b) B^T`` the solution is
    ``C = A [(A^T Phi^T V Psi B) / (a_i b_k + lambda)] B^T`` and the hat matrix has the
    eigenvalues ``a_i b_k / (a_i b_k + lambda)``, so every ``lambda`` costs one division.
    """
    if np.isnan(data.u).any():
        raise ValueError(
            "the separable surrogate needs every station observed at every snapshot; this data "
            "set has missing values (use SurrogateConfig(kind='space-time'))"
        )
    torch.manual_seed(config.seed)
    model = SeparableSurrogate(
        normalisation, config.width, config.time_degree, config.activation, config.input_scale
    )
    result = None
    if comm.rank == 0:
        with torch.no_grad():
            phi = model.space_features(torch.as_tensor(normalisation.xi(data.x))).numpy()
            psi = model.time_features(torch.as_tensor(normalisation.tau(data.t))).numpy()
        v = data.u.T / normalisation.u_scale  # (stations, snapshots)
        a, basis_x = np.linalg.eigh(phi.T @ phi)
        b, basis_t = np.linalg.eigh(psi.T @ psi)
        a, b = np.clip(a, 0.0, None), np.clip(b, 0.0, None)
        projected = basis_x.T @ (phi.T @ v @ psi) @ basis_t
        ab = np.outer(a, b)
        scale = a.mean() * b.mean()  # ridge values are relative to the mean eigenvalue
        n = v.size
        best = (np.inf, 0.0, 0.0)
        for ridge in config.ridge_grid:
            coef = basis_x @ (projected / (ab + ridge * scale)) @ basis_t.T
            sse = float(np.sum((phi @ coef @ psi.T - v) ** 2))
            dof = float(np.sum(ab / (ab + ridge * scale)))
            gcv = sse / n / max(1.0 - dof / n, 1e-12) ** 2
            best = min(best, (gcv, ridge, sse))
        gcv, ridge, sse = best
        coef = basis_x @ (projected / (ab + ridge * scale)) @ basis_t.T
        result = (coef, FitReport(ridge, float(np.sqrt(gcv)), float(np.sqrt(sse / n)), []))
    coef, report = comm.bcast(result, root=0)
    with torch.no_grad():
        model.coefficients.copy_(torch.as_tensor(coef))
    return model.to(torch.device(config.device)), report


def _derivative(values: torch.Tensor, wrt: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(values.sum(), wrt, create_graph=True)
    return grad


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
    needed = sorted({f for term in terms for f in term}, key=lambda f: (len(f), f))
    thetas, targets = [], []
    for s in range(0, x.shape[0], batch):
        xi = torch.as_tensor(nrm.xi(x[s : s + batch]), dtype=torch.float64, device=device)
        tau = torch.as_tensor(nrm.tau(t[s : s + batch]), dtype=torch.float64, device=device)
        xi.requires_grad_(True)
        tau.requires_grad_(True)
        v = model.raw(xi, tau)
        factors: dict[tuple[int, ...], torch.Tensor] = {(): v}
        for factor in needed:
            for k in range(1, len(factor) + 1):
                if factor[:k] not in factors:
                    grad = _derivative(factors[factor[: k - 1]], xi)
                    factors[factor[:k]] = grad[:, factor[k - 1]]
        v_tau = _derivative(v, tau)
        columns = []
        for term in terms:
            col = torch.ones_like(v)
            for factor in term:
                col = col * factors[factor]
            columns.append(col.detach())
        block = torch.stack(columns, dim=1).cpu().numpy() if columns else np.zeros((len(v), 0))
        thetas.append(block)
        targets.append(v_tau.detach().cpu().numpy())
    return np.concatenate(thetas), np.concatenate(targets)
