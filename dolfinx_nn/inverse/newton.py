"""Newton-CG for the Tikhonov baseline, with exact Hessian-vector products.

The Tikhonov functional ``J_alpha(m)`` (see :mod:`.tikhonov`) is minimised by the
trust-region Newton-CG method of Steihaug (``scipy.optimize.minimize(method="trust-ncg")``;
Nocedal & Wright, *Numerical Optimization*, 2nd ed., algorithm 7.2): each outer iteration
evaluates ``J``, its gradient and keeps the autograd graph (one forward and one adjoint solve,
:class:`dolfinx_nn.hessian.ReducedHessian`), then conjugate gradients on the Newton system use
Hessian-vector products, each one tangent-linear and one second adjoint solve with the forward
factorization.  The inner tolerance ``min(0.5, sqrt(|g|)) |g|`` makes the outer iteration
superlinear; negative curvature ends CG on the trust-region boundary.

The optimisation vector is replicated on every rank (as for L-BFGS in :mod:`.tikhonov`), the
values, gradients and products are summed over the ranks and broadcast from rank 0, so every
rank runs the same iterations.  :func:`minimize_lbfgs` runs scipy's L-BFGS-B on the same
function to the same gradient tolerance, as the reference the Newton iteration counts are
compared with.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mpi4py import MPI

import numpy as np
import scipy.optimize
import torch

from dolfinx_nn.hessian import ReducedHessian
from dolfinx_nn.training import History

#: Relative gradient tolerance ``|g| <= GTOL |g(m0)|`` of the Newton iteration: eight orders
#: of magnitude, about where a float64 gradient assembled from a solve stops improving.
GTOL = 1e-8
#: Newton iterations at most (a quadratic model converges in far fewer).
MAX_ITERATIONS = 100


@dataclass
class NewtonResult:
    """What a minimisation did.

    Attributes:
        x: the minimiser (global vector, the same on every rank).
        iterations: outer iterations (Newton steps, or L-BFGS iterations).
        hessian_products: Hessian-vector products (CG iterations) in all.
        evaluations: evaluations of ``J`` with its gradient.
        losses: ``J`` at each outer iterate.
        times: seconds since the start at each outer iterate.
        gradient_norm: ``|g|`` at the minimiser.
        stopped_because: ``"converged"`` or scipy's message.
        wall_time_s: total seconds.
    """

    x: np.ndarray
    iterations: int
    hessian_products: int
    evaluations: int
    losses: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    gradient_norm: float = float("nan")
    stopped_because: str = ""
    wall_time_s: float = 0.0


class _Objective:
    """``J``, its gradient and its Hessian at the last point, for scipy (collective)."""

    def __init__(self, loss: Callable[[torch.Tensor], torch.Tensor], comm: MPI.Comm,
                 dtype: torch.dtype) -> None:
        self.loss = loss
        self.comm = comm
        self.dtype = dtype
        self._key: bytes | None = None
        self.hessian: ReducedHessian | None = None
        self.evaluations = 0
        self.products = 0

    def at(self, x: np.ndarray) -> ReducedHessian:
        key = np.asarray(x, dtype=np.float64).tobytes()
        if self.hessian is None or key != self._key:
            m = torch.from_numpy(np.array(x, dtype=np.float64)).to(self.dtype)
            self.hessian = ReducedHessian(lambda ms: self.loss(ms[0]), [m], comm=self.comm,
                                          replicated=[True])
            self._key = key
            self.evaluations += 1
        return self.hessian

    def fun(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        H = self.at(x)
        value = self.comm.bcast(H.value, root=0)
        return value, H.global_gradient()

    def hessp(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        self.products += 1
        return self.at(x).apply_global(p)


def minimize_newton_cg(
    loss: Callable[[torch.Tensor], torch.Tensor],
    m0: torch.Tensor,
    comm: MPI.Comm,
    *,
    gtol: float = GTOL,
    max_iterations: int = MAX_ITERATIONS,
) -> NewtonResult:
    """Minimise ``loss(m)`` over a replicated vector ``m`` by trust-region Newton-CG.

    Args:
        loss: maps ``m`` (the same on every rank) to the 0-dim global loss (bridge ops inside).
        m0: the start (1-D tensor, the same on every rank).
        comm: the communicator of the bridge ops.
        gtol: stop when ``|g| <= gtol |g(m0)|``.
        max_iterations: Newton iterations at most.
    """
    return _minimize(loss, m0, comm, "trust-ncg", gtol, max_iterations)


def minimize_lbfgs(
    loss: Callable[[torch.Tensor], torch.Tensor],
    m0: torch.Tensor,
    comm: MPI.Comm,
    *,
    gtol: float = GTOL,
    max_iterations: int = 20000,
    history: int = 50,
) -> NewtonResult:
    """The same minimisation by L-BFGS (scipy's L-BFGS-B, ``history`` correction pairs).

    It stops when the largest gradient entry is below ``gtol |g(m0)|_inf`` (L-BFGS-B's
    projected-gradient test) and reports its iterations as :func:`minimize_newton_cg` does.
    """
    return _minimize(loss, m0, comm, "L-BFGS-B", gtol, max_iterations, history)


def _minimize(loss, m0, comm, method, gtol, max_iterations, history=50) -> NewtonResult:
    if not (gtol > 0 and np.isfinite(gtol)):
        raise ValueError(f"gtol must be a positive number, got {gtol!r}.")
    start = time.perf_counter()
    objective = _Objective(loss, comm, m0.dtype)
    x0 = m0.detach().to("cpu", torch.float64).numpy().copy()
    comm.Bcast(x0, root=0)
    value0, g0 = objective.fun(x0)
    losses, times = [value0], [time.perf_counter() - start]

    def record(x, *args) -> None:
        losses.append(objective.fun(x)[0])
        times.append(time.perf_counter() - start)

    if method == "trust-ncg":
        options = {"gtol": gtol * float(np.linalg.norm(g0)), "maxiter": max_iterations}
        result = scipy.optimize.minimize(objective.fun, x0, jac=True, hessp=objective.hessp,
                                         method=method, options=options, callback=record)
    else:
        options = {"gtol": gtol * float(np.abs(g0).max()), "ftol": 0.0,
                   "maxiter": max_iterations, "maxcor": history, "maxfun": 10 * max_iterations}
        result = scipy.optimize.minimize(objective.fun, x0, jac=True, method=method,
                                         options=options, callback=record)
    _, g = objective.fun(result.x)
    return NewtonResult(
        x=np.asarray(result.x), iterations=int(result.nit),
        hessian_products=objective.products, evaluations=objective.evaluations,
        losses=losses, times=times, gradient_norm=float(np.linalg.norm(g)),
        stopped_because="converged" if result.success else str(result.message),
        wall_time_s=time.perf_counter() - start,
    )


def newton_history(
    loss: Callable[[torch.Tensor], torch.Tensor], m: torch.Tensor, comm: MPI.Comm,
    *, gtol: float = GTOL, max_iterations: int = MAX_ITERATIONS,
) -> tuple[History, NewtonResult]:
    """Run :func:`minimize_newton_cg` from ``m``'s value and write the minimiser into ``m``.

    Returns the run as a :class:`dolfinx_nn.training.History` (one entry per Newton
    iteration, phase ``"newton-cg"``) for code written for :func:`dolfinx_nn.training.train`,
    and the full :class:`NewtonResult`.
    """
    result = minimize_newton_cg(loss, m.detach(), comm, gtol=gtol,
                                max_iterations=max_iterations)
    with torch.no_grad():
        m.copy_(torch.from_numpy(result.x).to(m.dtype))
    history = History(
        losses=list(result.losses[1:]) or list(result.losses),
        phases=["newton-cg"] * max(1, len(result.losses) - 1),
        times=list(result.times[1:]) or list(result.times),
        wall_time_s=result.wall_time_s,
        stopped_because=result.stopped_because,
    )
    return history, result
