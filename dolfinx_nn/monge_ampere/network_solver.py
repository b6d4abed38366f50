"""Train an ICNN or FFNN on the Monge-Ampere Dirichlet problem and measure its error.

The network is fitted on fixed collocation points (Adam, then L-BFGS) and evaluated on
independent uniform test points: relative L2 and max errors against the exact solution, and
the fraction of test points where the smallest Hessian eigenvalue is negative (lack of
convexity).  Under MPI the points are split over the ranks, the network is replicated and
gradients are summed (:func:`dolfinx_nn.sync_gradients`), so every rank trains the same
network.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mpi4py import MPI

import numpy as np
import torch

from dolfinx_nn.monge_ampere.cases import Case, check_data, noisy
from dolfinx_nn.monge_ampere.domains import as_sequence
from dolfinx_nn.monge_ampere.hessian import min_eigenvalues
from dolfinx_nn.monge_ampere.loss import MongeAmpereLoss
from dolfinx_nn.monge_ampere.networks import (
    ICNN,
    PowerOfTwoUnits,
    length_exponent,
    make_network,
)
from dolfinx_nn.networks.pointwise import hessian
from dolfinx_nn.training import History, TrainingConfig, train

#: Default optimizer settings of :class:`NetworkConfig`; the training does not reseed the
#: global generators (:func:`solve_network` seeds the initial weights with ``config.seed``).
DEFAULT_TRAINING = TrainingConfig(adam_steps=300, adam_lr=1e-2, lbfgs_steps=200, patience=200,
                          seed=None, log_every=10)


@dataclass
class NetworkConfig:
    """Settings of one network solve.

    Attributes:
        ansatz: ``"icnn"`` (convex by construction) or ``"ffnn"`` (convexity penalty).
        width, depth, activation: network shape (activation ``None``: the ansatz default).
        n_interior, n_boundary: global numbers of collocation points.
        boundary_weight: weight of the boundary mismatch.
        convexity_weight: weight of the convexity penalty (FFNN only; ignored for the ICNN).
        training: the optimizer settings (:data:`DEFAULT_TRAINING`: 300 Adam steps at learning rate
            1e-2, then 200 L-BFGS steps with strong Wolfe line search, stopping after 200
            steps without improvement).
        n_test: global number of test points (errors and convexity check).
        convexity_tol: a test point violates convexity if ``lambda_min(D^2 u) < -convexity_tol``.
        noise: relative noise level in f (see :func:`~dolfinx_nn.monge_ampere.cases.noisy`).
        seed: seeds the network initialisation (same on every rank) and the point samplers.
        device: torch device of the network.
    """

    ansatz: str = "icnn"
    width: int = 32
    depth: int = 3
    activation: str | None = None
    n_interior: int = 1000
    n_boundary: int = 400
    boundary_weight: float = 10.0
    convexity_weight: float = 1.0
    training: TrainingConfig = DEFAULT_TRAINING
    n_test: int = 10_000
    convexity_tol: float = 1e-8
    noise: float = 0.0
    seed: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        for name in ("n_interior", "n_boundary", "n_test", "width", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not isinstance(self.training, TrainingConfig):
            raise TypeError(
                f"training must be a TrainingConfig, got {type(self.training).__name__}"
            )


@dataclass
class NetworkResult:
    """Outcome of :func:`solve_network` (errors are global over all ranks)."""

    net: torch.nn.Module
    rel_l2_error: float | None
    max_error: float | None
    convexity_violation_fraction: float
    min_hessian_eigenvalue: float
    relative_residual: float
    wall_time_s: float
    final_loss: float
    history: list[float] = field(default_factory=list)
    stopped_because: str = "completed"
    loss_scales: dict[str, float | str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The numbers reported in ``results.json`` (errors ``None`` without exact solution)."""
        return {
            "rel_l2_error": self.rel_l2_error,
            "max_error": self.max_error,
            "relative_residual": self.relative_residual,
            "convexity_violation_fraction": self.convexity_violation_fraction,
            "min_hessian_eigenvalue": self.min_hessian_eigenvalue,
            "wall_time_s": self.wall_time_s,
            "final_loss": self.final_loss,
            "training_steps": len(self.history),
            "stopped_because": self.stopped_because,
            "loss_scales": self.loss_scales,
        }


def _rank_rng(seed: int, comm: MPI.Comm, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream]).spawn(comm.size)[comm.rank])


def _broadcast_parameters(net: torch.nn.Module, comm: MPI.Comm) -> None:
    with torch.no_grad():
        for t in list(net.parameters()) + list(net.buffers()):
            t.copy_(torch.as_tensor(comm.bcast(t.detach().cpu().numpy(), root=0)))


def build_loss(case: Case, domain, config: NetworkConfig, comm: MPI.Comm, dtype, device):
    """Collocation points, (noisy) source and boundary data -> :class:`MongeAmpereLoss`.

    Raises:
        ValueError: on every rank, if ``f`` is negative or not finite at a collocation point,
            or ``g`` is not finite at one (the value and the point are named).
    """
    center = as_sequence(domain.center)
    rng = _rank_rng(config.seed, comm, 1)
    xi = torch.as_tensor(domain.sample_interior(config.n_interior, rng, comm), dtype=dtype)
    xb = torch.as_tensor(domain.sample_boundary(config.n_boundary, rng, comm), dtype=dtype)
    f = case.f_torch(xi, center)
    g = case.g_torch(xb, center)
    # the data themselves, before noise (noise may make a small f negative)
    check_data("f", xi.numpy(), f.detach().numpy(), comm, nonnegative=True,
               where="interior collocation point")
    check_data("g", xb.numpy(), g.detach().numpy(), comm, where="boundary collocation point")
    f = noisy(f, config.noise, _rank_rng(config.seed, comm, 2))
    weight = config.convexity_weight if config.ansatz != "icnn" else 0.0
    return MongeAmpereLoss(
        xi.to(device), f.to(device), xb.to(device), g.to(device),
        boundary_weight=config.boundary_weight, convexity_weight=weight, comm=comm,
    )


def fit(
    net: torch.nn.Module,
    loss_fn: MongeAmpereLoss,
    config: NetworkConfig,
    comm: MPI.Comm,
    callback: Callable[[int, float], bool | None] | None = None,
) -> History:
    """Adam, then L-BFGS (:func:`dolfinx_nn.training.train`) on the global loss.

    Args:
        net: the network (identical on every rank).
        loss_fn: the collocation loss.
        config: its ``training`` holds the optimizer settings.
        comm: communicator the points are split over.
        callback: ``callback(steps_done, loss)``; training stops when it returns True.
    """
    return train(lambda: loss_fn(net), net, config.training, comm=comm, desc=config.ansatz,
                 callback=callback)


def evaluate(
    net: torch.nn.Module,
    case: Case,
    domain,
    n_test: int,
    convexity_tol: float,
    comm: MPI.Comm,
    seed: int = 0,
    chunk: int = 4096,
    residual_floor: float = 0.0,
) -> dict[str, float]:
    """Errors, residual and convexity of ``net`` at ``n_test`` uniform points (global).

    Always: ``relative_residual`` (``|det D^2 u - f|_2 / max(|f|_2, sqrt(n_test) F)`` at the
    test points, ``F = residual_floor``: the part of the loss's residual scale due to ``g``,
    which keeps the ratio finite where ``f`` vanishes),
    ``convexity_violation_fraction`` and ``min_hessian_eigenvalue``; with an exact solution
    also ``rel_l2_error`` and ``max_error``.
    """
    param = next(net.parameters())
    x_all = torch.as_tensor(
        domain.sample_interior(n_test, _rank_rng(seed, comm, 3), comm), dtype=param.dtype
    ).to(param.device)
    center = as_sequence(domain.center)
    err2 = ref2 = max_err = res2 = f2 = 0.0
    violations = 0
    lam_min = np.inf
    for start in range(0, x_all.shape[0], chunk):
        x = x_all[start : start + chunk]
        values, _, hess = hessian(net, x, create_graph=False)
        f = case.f_torch(x, center)
        res2 += float(((torch.linalg.det(hess) - f) ** 2).sum())
        f2 += float((f**2).sum())
        if case.has_exact:
            exact = case.u_torch(x, center)
            err = (values - exact).abs()
            err2 += float((err**2).sum())
            ref2 += float((exact**2).sum())
            max_err = max(max_err, float(err.max()))
        lam = min_eigenvalues(hess)
        violations += int((lam < -convexity_tol).sum())
        lam_min = min(lam_min, float(lam.min()))
    err2, ref2, res2, f2, violations = (
        comm.allreduce(v, op=MPI.SUM) for v in (err2, ref2, res2, f2, violations)
    )
    out = {
        "relative_residual": float(np.sqrt(res2 / max(f2, n_test * residual_floor**2))),
        "convexity_violation_fraction": violations / n_test,
        "min_hessian_eigenvalue": comm.allreduce(lam_min, op=MPI.MIN),
    }
    if case.has_exact:
        out["rel_l2_error"] = float(np.sqrt(err2 / ref2))
        out["max_error"] = comm.allreduce(max_err, op=MPI.MAX)
    return out


def solve_network(
    case: Case,
    domain,
    config: NetworkConfig | None = None,
    comm: MPI.Comm = MPI.COMM_WORLD,
    callback: Callable[[int, float], bool | None] | None = None,
    net: torch.nn.Module | None = None,
) -> NetworkResult:
    """Fit a network to the Monge-Ampere problem of ``case`` on ``domain`` and evaluate it.

    Args:
        case: test case (exact solution and source).
        domain: a :class:`~dolfinx_nn.monge_ampere.domains.Box`, ``Ball`` or ``MeshDomain``.
        config: settings (defaults: :class:`NetworkConfig`).
        comm: communicator the collocation and test points are split over.
        callback: ``callback(steps_done, loss)`` after each step; True stops training.
        net: a network to train instead of a new one built from ``config`` (float64).  A new
            one sees the domain in units of ``2^k`` (:class:`PowerOfTwoUnits`,
            :func:`length_exponent`; none for volumes 1 to ``2^d``), so that the result does not
            depend on the user's unit of length; ``result.net`` takes the user's coordinates.
    """
    config = config or NetworkConfig()
    case.check_dim(domain.dim)
    dtype = torch.float64
    torch.manual_seed(config.seed)
    lower, upper = domain.bounds
    if net is None:
        # the network sees the domain in units of 2^k, of volume 1 to 2^d (PowerOfTwoUnits)
        k = length_exponent(domain.volume, domain.dim)
        net = make_network(
            config.ansatz, domain.dim, width=config.width, depth=config.depth,
            activation=config.activation, lower=np.asarray(lower) * 2.0**-k,
            upper=np.asarray(upper) * 2.0**-k, dtype=dtype, device=config.device,
        )
        if k:
            net = PowerOfTwoUnits(net, k)
    loss_fn = build_loss(case, domain, config, comm, dtype, config.device)
    inner = net.network if isinstance(net, PowerOfTwoUnits) else net
    if isinstance(inner, ICNN):
        # D^2 u in the user's units is D^2 w in the network's
        inner.set_curvature(loss_fn.hessian_scale)
    _broadcast_parameters(net, comm)
    comm.Barrier()
    start = time.perf_counter()
    history = fit(net, loss_fn, config, comm, callback)
    wall = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    metrics: dict[str, Any] = evaluate(
        net, case, domain, config.n_test, config.convexity_tol, comm, config.seed,
        residual_floor=float(loss_fn.scales["residual_floor"]),
    )
    losses = list(history.losses)
    final = losses[-1] if losses else float(loss_fn(net))
    metrics.setdefault("rel_l2_error", None)
    metrics.setdefault("max_error", None)
    return NetworkResult(net=net, wall_time_s=wall, final_loss=final, history=losses,
                         stopped_because=history.stopped_because,
                         loss_scales=dict(loss_fn.scales), **metrics)
