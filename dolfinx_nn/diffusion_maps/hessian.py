"""Hessian spectra of training losses: top eigenvalues by Lanczos, density by SLQ.

The Hessian of a loss with respect to the parameters of a module is never formed; it is
applied to vectors:

- ``"autodiff"``: forward-over-reverse with :mod:`torch.func` (``jvp`` of ``grad``), the
  loss closure being evaluated through :func:`torch.func.functional_call`;
- ``"double-backward"``: reverse-over-reverse with :func:`torch.autograd.grad`, for losses
  containing operations without forward-mode rules;
- ``"retained-graph"``: reverse-over-reverse on a graph built once: the loss and its gradient
  are evaluated at the first product (``create_graph=True``) and kept, so that each product
  only differentiates that gradient again.  For PDE-constrained losses through the bridge
  (the inverse-problem prior) a product is then one tangent-linear and one second adjoint
  solve with the forward factorization, with no forward or adjoint solve;
- ``"finite-difference"``: ``(g(theta + h v) - g(theta - h v)) / 2h`` with the ordinary
  gradient ``g``, for losses whose backward pass is not differentiable (two gradients per
  product, each a forward and an adjoint solve for a bridge loss, and an ``O(h^2)`` error).

Bridge losses (:func:`dolfinx_nn.fem_operator`, :func:`dolfinx_nn.fem_functional`) have exact
second derivatives in all three exact modes (see ``docs/bridge_exactness.md``), except with a
``NeuralOperator`` in the form, which refuses them: use ``"finite-difference"`` there.

Under MPI a loss that follows the package convention (same value on every rank, each rank's
gradient its share) gives shares of ``H v``; pass ``comm`` to sum them.

The largest eigenvalues come from ARPACK's implicitly restarted Lanczos
(:func:`scipy.sparse.linalg.eigsh`) on a :class:`scipy.sparse.linalg.LinearOperator`.
The spectral density is estimated by stochastic Lanczos quadrature (Ubaru, Chen & Saad
2017; Ghorbani, Krishnan & Xiao 2019): for Rademacher probes ``v``, ``m`` Lanczos steps give
the Gauss quadrature nodes ``theta_i`` (Ritz values) and weights ``tau_i^2`` (squared first
components of the Ritz vectors) with ``v^T f(H) v / |v|^2 ~ sum_i tau_i^2 f(theta_i)``; the
density is the probe average of ``sum_i tau_i^2 delta(x - theta_i)`` smoothed by a Gaussian.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mpi4py import MPI

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
import torch


def flat_parameters(module: torch.nn.Module) -> torch.Tensor:
    """The trainable parameters of ``module`` as one detached vector."""
    return torch.cat([p.detach().reshape(-1) for p in module.parameters() if p.requires_grad])


class _Closure(torch.nn.Module):
    """Wraps a loss closure so that ``functional_call`` can swap the parameters it uses."""

    def __init__(self, module: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]):
        super().__init__()
        self.module = module
        self.loss_fn = loss_fn

    def forward(self) -> torch.Tensor:
        return self.loss_fn()


class HessianOperator(scipy.sparse.linalg.LinearOperator):
    """The Hessian of ``loss_fn()`` with respect to the trainable parameters of ``module``.

    Args:
        module: the network; its current parameters are the point of evaluation.
        loss_fn: closure returning the 0-dim loss, computed from ``module``.
        mode: ``"autodiff"``, ``"double-backward"``, ``"retained-graph"`` or
            ``"finite-difference"``.
        comm: sum Hessian-vector shares over this communicator (losses following the
            package's MPI convention); ``None`` for losses replicated on every rank.
        fd_step: step ``h`` relative to ``|theta|`` for ``"finite-difference"``.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        loss_fn: Callable[[], torch.Tensor],
        mode: str = "autodiff",
        comm: MPI.Comm | None = None,
        fd_step: float = 1e-4,
    ):
        if mode not in HVP_MODES:
            valid = ", ".join(HVP_MODES)
            raise ValueError(f"unknown Hessian-vector mode {mode!r}; choose one of: {valid}")
        self.module = module
        self.loss_fn = loss_fn
        self.mode = mode
        self.comm = comm
        self.fd_step = fd_step
        self.names = [n for n, p in module.named_parameters() if p.requires_grad]
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.theta = flat_parameters(module)
        self.n_products = 0
        self._graph: list[torch.Tensor] | None = None  # the kept gradient ("retained-graph")
        n = self.theta.numel()
        super().__init__(dtype=np.float64, shape=(n, n))

    # -- helpers ---------------------------------------------------------------------
    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, offset = {}, 0
        for name, p in zip(self.names, self.params, strict=True):
            out[f"module.{name}"] = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        return out

    def _assign(self, flat: torch.Tensor) -> None:
        torch.nn.utils.vector_to_parameters(flat, self.params)

    def gradient(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """Gradient (this rank's share) at ``theta`` (default: the point of evaluation)."""
        with torch.no_grad():
            self._assign(self.theta if theta is None else theta)
        try:
            grads = torch.autograd.grad(self.loss_fn(), self.params, allow_unused=True)
        finally:
            with torch.no_grad():
                self._assign(self.theta)
        return torch.cat(
            [
                (g if g is not None else torch.zeros_like(p)).reshape(-1)
                for g, p in zip(grads, self.params, strict=True)
            ]
        )

    # -- Hessian-vector products -------------------------------------------------------
    def _hvp_autodiff(self, v: torch.Tensor) -> torch.Tensor:
        wrapper = _Closure(self.module, self.loss_fn)

        def loss(flat: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(wrapper, self._unflatten(flat), ())

        return torch.func.jvp(torch.func.grad(loss), (self.theta,), (v,))[1]

    def _hvp_double_backward(self, v: torch.Tensor) -> torch.Tensor:
        grads = torch.autograd.grad(self.loss_fn(), self.params, create_graph=True)
        flat = torch.cat([g.reshape(-1) for g in grads])
        hv = torch.autograd.grad(flat @ v, self.params, allow_unused=True)
        return torch.cat(
            [
                (h if h is not None else torch.zeros_like(p)).reshape(-1)
                for h, p in zip(hv, self.params, strict=True)
            ]
        ).detach()

    def _hvp_retained_graph(self, v: torch.Tensor) -> torch.Tensor:
        if self._graph is None:
            grads = torch.autograd.grad(self.loss_fn(), self.params, create_graph=True,
                                        allow_unused=True)
            self._graph = [torch.zeros_like(p) if g is None else g
                           for g, p in zip(grads, self.params, strict=True)]
        live = [(g, p) for g, p in zip(self._graph, self.params, strict=True)
                if g.requires_grad]
        if not live:
            return torch.zeros_like(v)
        pieces = torch.split(v, [p.numel() for p in self.params])
        weights = {id(p): w.view_as(p) for p, w in zip(self.params, pieces, strict=True)}
        hv = torch.autograd.grad([g for g, _ in live], self.params,
                                 [weights[id(p)] for _, p in live], retain_graph=True,
                                 allow_unused=True)
        return torch.cat(
            [
                (h if h is not None else torch.zeros_like(p)).reshape(-1)
                for h, p in zip(hv, self.params, strict=True)
            ]
        ).detach()

    def _hvp_finite_difference(self, v: torch.Tensor) -> torch.Tensor:
        vnorm = float(v.norm())
        if vnorm == 0.0:
            return torch.zeros_like(v)
        h = self.fd_step * max(1.0, float(self.theta.norm())) / vnorm
        return (self.gradient(self.theta + h * v) - self.gradient(self.theta - h * v)) / (2 * h)

    def hvp(self, v: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``H v`` as a torch vector (summed over ``comm`` when given)."""
        v = torch.as_tensor(np.asarray(v).ravel() if not isinstance(v, torch.Tensor) else v)
        v = v.to(dtype=self.theta.dtype, device=self.theta.device)
        if not torch.all(torch.isfinite(v)):
            raise ValueError("Hessian-vector product requested for a vector with NaN/inf")
        hv = HVP_MODES[self.mode](self, v).detach()
        self.n_products += 1
        if self.comm is not None and self.comm.size > 1:
            buf = hv.to("cpu", torch.float64).numpy().copy()
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            hv = torch.from_numpy(buf).to(self.theta)
        return hv

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self.hvp(x).to("cpu", torch.float64).numpy()

    def _rmatvec(self, x: np.ndarray) -> np.ndarray:
        return self._matvec(x)

    def dense(self) -> np.ndarray:
        """The full Hessian, column by column (small networks only)."""
        eye = np.eye(self.shape[0])
        H = np.stack([self._matvec(eye[:, i]) for i in range(self.shape[0])], axis=1)
        return 0.5 * (H + H.T)


#: mode name -> Hessian-vector product
HVP_MODES: dict[str, Callable[[HessianOperator, torch.Tensor], torch.Tensor]] = {
    "autodiff": HessianOperator._hvp_autodiff,
    "double-backward": HessianOperator._hvp_double_backward,
    "finite-difference": HessianOperator._hvp_finite_difference,
    "retained-graph": HessianOperator._hvp_retained_graph,
}


def top_eigenpairs(
    H: scipy.sparse.linalg.LinearOperator,
    k: int = 10,
    which: str = "LA",
    tol: float = 1e-10,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` extreme eigenpairs of a symmetric operator by (ARPACK) Lanczos.

    Args:
        H: symmetric operator, e.g. a :class:`HessianOperator`.
        k: number of eigenpairs (< dimension).
        which: ``"LA"`` largest algebraic (default), ``"LM"`` largest magnitude,
            ``"SA"`` smallest algebraic.
        tol: relative accuracy of the eigenvalues.
        seed: seed of the start vector (the same on every rank, so runs agree).

    Returns:
        (eigenvalues in descending order, eigenvectors as columns).
    """
    n = H.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be between 1 and {n - 1} (the dimension minus one); got {k}")
    valid = ("LA", "LM", "SA")
    if which not in valid:
        raise ValueError(f"which must be one of {', '.join(valid)}; got {which!r}")
    v0 = np.random.default_rng(seed).standard_normal(n)
    lam, V = scipy.sparse.linalg.eigsh(H, k=k, which=which, tol=tol, v0=v0)
    order = np.argsort(lam)[::-1]
    return lam[order], V[:, order]


def lanczos(
    matvec: Callable[[np.ndarray], np.ndarray], v0: np.ndarray, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` Lanczos iterations with full reorthogonalisation.

    Returns:
        (diagonal, off-diagonal) of the tridiagonal matrix T; stops early on breakdown.
    """
    n = v0.size
    steps = min(steps, n)
    Q = np.zeros((steps, n))
    a, b = np.zeros(steps), np.zeros(max(steps - 1, 0))
    q = v0 / np.linalg.norm(v0)
    for j in range(steps):
        Q[j] = q
        w = matvec(q)
        a[j] = q @ w
        w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
        w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)  # twice is enough
        if j == steps - 1:
            break
        beta = np.linalg.norm(w)
        if beta < 1e-12 * max(1.0, np.abs(a[: j + 1]).max()):
            return a[: j + 1], b[:j]
        b[j] = beta
        q = w / beta
    return a, b


@dataclass
class SpectralDensity:
    """Stochastic Lanczos quadrature of a symmetric operator.

    Attributes:
        nodes: Ritz values per probe (list of arrays).
        weights: quadrature weights per probe (each sums to 1).
    """

    nodes: list[np.ndarray]
    weights: list[np.ndarray]

    def quadrature(self, f: Callable[[np.ndarray], np.ndarray]) -> float:
        """Estimate of ``tr f(H) / n``: probe average of ``sum_i w_i f(theta_i)``."""
        return float(np.mean([w @ f(x) for x, w in zip(self.nodes, self.weights, strict=True)]))

    def density(self, grid: np.ndarray, sigma: float) -> np.ndarray:
        """Gaussian-smoothed density on ``grid`` (integrates to 1 over the real line)."""
        out = np.zeros_like(grid, dtype=np.float64)
        for x, w in zip(self.nodes, self.weights, strict=True):
            out += (w[None, :] * np.exp(-((grid[:, None] - x[None, :]) ** 2) / (2 * sigma**2))).sum(
                axis=1
            )
        return out / (len(self.nodes) * sigma * np.sqrt(2 * np.pi))


def spectral_density(
    H: scipy.sparse.linalg.LinearOperator, n_probes: int = 4, steps: int = 60, seed: int = 0
) -> SpectralDensity:
    """Stochastic Lanczos quadrature with Rademacher probes (same seed -> same probes).

    Args:
        H: symmetric operator.
        n_probes: number of random probe vectors.
        steps: Lanczos steps per probe (quadrature nodes).
        seed: random seed.
    """
    if n_probes < 1 or steps < 1:
        raise ValueError(f"n_probes and steps must be positive; got {n_probes}, {steps}")
    rng = np.random.default_rng(seed)
    nodes, weights = [], []
    for _ in range(n_probes):
        v = rng.choice([-1.0, 1.0], size=H.shape[0])
        a, b = lanczos(H.matvec, v, steps)
        theta, U = scipy.linalg.eigh_tridiagonal(a, b) if len(a) > 1 else (a, np.ones((1, 1)))
        nodes.append(theta)
        weights.append(U[0] ** 2)
    return SpectralDensity(nodes, weights)
