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
from dataclasses import dataclass, field

from mpi4py import MPI

import numpy as np
import torch

from dolfinx_nn.monge_ampere.cases import Case, noisy
from dolfinx_nn.monge_ampere.domains import as_sequence
from dolfinx_nn.monge_ampere.hessian import hessians, min_eigenvalues
from dolfinx_nn.monge_ampere.loss import MongeAmpereLoss
from dolfinx_nn.monge_ampere.networks import make_network
from dolfinx_nn.output import progress
from dolfinx_nn.parallel import sync_gradients


@dataclass
class NetworkConfig:
    """Settings of one network solve.

    Attributes:
        ansatz: ``"icnn"`` (convex by construction) or ``"ffnn"`` (convexity penalty).
        width, depth, activation: network shape (activation ``None``: the ansatz default).
        n_interior, n_boundary: global numbers of collocation points.
        boundary_weight: weight of the boundary mismatch.
        convexity_weight: weight of the convexity penalty (FFNN only; ignored for the ICNN).
        adam_steps, adam_lr: first phase (cosine-decayed learning rate).
        lbfgs_steps: second phase (L-BFGS iterations with strong Wolfe line search).
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
    n_interior: int = 2000
    n_boundary: int = 400
    boundary_weight: float = 10.0
    convexity_weight: float = 1.0
    adam_steps: int = 1000
    adam_lr: float = 1e-2
    lbfgs_steps: int = 500
    n_test: int = 10_000
    convexity_tol: float = 1e-8
    noise: float = 0.0
    seed: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        for name in ("n_interior", "n_boundary", "n_test", "width", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("adam_steps", "lbfgs_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class NetworkResult:
    """Outcome of :func:`solve_network` (errors are global over all ranks)."""

    net: torch.nn.Module
    rel_l2_error: float
    max_error: float
    convexity_violation_fraction: float
    min_hessian_eigenvalue: float
    wall_time_s: float
    final_loss: float
    history: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """The numbers reported in ``results.json``."""
        return {
            "rel_l2_error": self.rel_l2_error,
            "max_error": self.max_error,
            "convexity_violation_fraction": self.convexity_violation_fraction,
            "min_hessian_eigenvalue": self.min_hessian_eigenvalue,
            "wall_time_s": self.wall_time_s,
            "final_loss": self.final_loss,
        }


def _rank_rng(seed: int, comm: MPI.Comm, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream]).spawn(comm.size)[comm.rank])


def _broadcast_parameters(net: torch.nn.Module, comm: MPI.Comm) -> None:
    with torch.no_grad():
        for t in list(net.parameters()) + list(net.buffers()):
            t.copy_(torch.as_tensor(comm.bcast(t.detach().cpu().numpy(), root=0)))


def build_loss(case: Case, domain, config: NetworkConfig, comm: MPI.Comm, dtype, device):
    """Collocation points, (noisy) source and boundary data -> :class:`MongeAmpereLoss`."""
    center = as_sequence(domain.center)
    rng = _rank_rng(config.seed, comm, 1)
    xi = torch.as_tensor(domain.sample_interior(config.n_interior, rng, comm), dtype=dtype)
    xb = torch.as_tensor(domain.sample_boundary(config.n_boundary, rng, comm), dtype=dtype)
    f = noisy(case.f_torch(xi, center), config.noise, _rank_rng(config.seed, comm, 2))
    g = case.u_torch(xb, center)
    weight = config.convexity_weight if config.ansatz != "icnn" else 0.0
    return MongeAmpereLoss(
        xi.to(device), f.to(device), xb.to(device), g.to(device),
        boundary_weight=config.boundary_weight, convexity_weight=weight, comm=comm,
    )


def _check_finite(loss: torch.Tensor, step: int) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"loss became {loss.item()} at step {step}; lower adam_lr or check the case data"
        )


def fit(net: torch.nn.Module, loss_fn, config: NetworkConfig, comm: MPI.Comm) -> list[float]:
    """Adam, then L-BFGS, on a global loss; gradients are summed over ranks.

    Returns the loss history (one value per Adam step and per L-BFGS iteration).
    """
    history: list[float] = []
    params = [p for p in net.parameters() if p.requires_grad]
    if config.adam_steps:
        opt = torch.optim.Adam(params, lr=config.adam_lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=config.adam_steps, eta_min=0.01 * config.adam_lr
        )
        bar = progress(range(config.adam_steps), comm=comm, desc=f"{config.ansatz} adam")
        for step in bar:
            opt.zero_grad()
            loss = loss_fn(net)
            _check_finite(loss, step)
            loss.backward()
            sync_gradients(params, comm)
            opt.step()
            sched.step()
            history.append(loss.item())
            if step % 50 == 0 and comm.rank == 0:
                bar.set_postfix(loss=f"{history[-1]:.3e}")
    if config.lbfgs_steps:
        opt = torch.optim.LBFGS(
            params, lr=1.0, max_iter=20, history_size=50, line_search_fn="strong_wolfe",
            tolerance_grad=1e-14, tolerance_change=1e-16,
        )

        def closure():
            opt.zero_grad()
            loss = loss_fn(net)
            loss.backward()
            sync_gradients(params, comm)
            return loss

        chunks = -(-config.lbfgs_steps // 20)
        bar = progress(range(chunks), comm=comm, desc=f"{config.ansatz} l-bfgs")
        for chunk in bar:
            before = opt.state[opt._params[0]].get("n_iter", 0)
            loss = opt.step(closure)
            _check_finite(loss, config.adam_steps + 20 * chunk)
            history.append(loss.item())
            if comm.rank == 0:
                bar.set_postfix(loss=f"{history[-1]:.3e}")
            if opt.state[opt._params[0]].get("n_iter", 0) - before < 20:
                break  # converged to L-BFGS tolerances
    return history


def evaluate(
    net: torch.nn.Module,
    case: Case,
    domain,
    n_test: int,
    convexity_tol: float,
    comm: MPI.Comm,
    seed: int = 0,
    chunk: int = 4096,
) -> dict[str, float]:
    """Errors and convexity of ``net`` at ``n_test`` uniform points of ``domain`` (global)."""
    param = next(net.parameters())
    x_all = torch.as_tensor(
        domain.sample_interior(n_test, _rank_rng(seed, comm, 3), comm), dtype=param.dtype
    ).to(param.device)
    center = as_sequence(domain.center)
    err2 = ref2 = max_err = 0.0
    violations = 0
    lam_min = np.inf
    for start in range(0, x_all.shape[0], chunk):
        x = x_all[start : start + chunk]
        values, hess = hessians(net, x, create_graph=False)
        exact = case.u_torch(x, center)
        err = (values - exact).abs()
        err2 += float((err**2).sum())
        ref2 += float((exact**2).sum())
        max_err = max(max_err, float(err.max()))
        lam = min_eigenvalues(hess)
        violations += int((lam < -convexity_tol).sum())
        lam_min = min(lam_min, float(lam.min()))
    err2, ref2, violations = (comm.allreduce(v, op=MPI.SUM) for v in (err2, ref2, violations))
    return {
        "rel_l2_error": float(np.sqrt(err2 / ref2)),
        "max_error": comm.allreduce(max_err, op=MPI.MAX),
        "convexity_violation_fraction": violations / n_test,
        "min_hessian_eigenvalue": comm.allreduce(lam_min, op=MPI.MIN),
    }


def solve_network(
    case: Case, domain, config: NetworkConfig | None = None, comm: MPI.Comm = MPI.COMM_WORLD
) -> NetworkResult:
    """Fit a network to the Monge-Ampere problem of ``case`` on ``domain`` and evaluate it.

    Args:
        case: test case (exact solution and source).
        domain: a :class:`~dolfinx_nn.monge_ampere.domains.Box`, ``Ball`` or ``MeshDomain``.
        config: settings (defaults: :class:`NetworkConfig`).
        comm: communicator the collocation and test points are split over.
    """
    config = config or NetworkConfig()
    case.check_dim(domain.dim)
    dtype = torch.float64
    torch.manual_seed(config.seed)
    lower, upper = domain.bounds
    net = make_network(
        config.ansatz, domain.dim, width=config.width, depth=config.depth,
        activation=config.activation, lower=lower, upper=upper, dtype=dtype, device=config.device,
    )
    _broadcast_parameters(net, comm)
    loss_fn = build_loss(case, domain, config, comm, dtype, config.device)
    comm.Barrier()
    start = time.perf_counter()
    history = fit(net, loss_fn, config, comm)
    wall = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    metrics = evaluate(net, case, domain, config.n_test, config.convexity_tol, comm, config.seed)
    return NetworkResult(net=net, wall_time_s=wall, final_loss=history[-1] if history else
                         float(loss_fn(net)), history=history, **metrics)
