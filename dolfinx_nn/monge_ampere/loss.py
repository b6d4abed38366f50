"""The collocation loss of the Monge-Ampere Dirichlet problem, in any dimension.

For a network ``u`` the loss is

    L(u) = mean_i (det D^2 u(x_i) - f_i)^2 / mean_i f_i^2
         + w_b mean_j (u(y_j) - g_j)^2 / mean_j g_j^2
         + w_c mean_i min(lambda_min(D^2 u(x_i)), 0)^2 / mean_i f_i^(2/d)

with interior points ``x_i`` and boundary points ``y_j``.  The scalings make the terms
dimensionless (``f^(1/d)`` is the size of a Hessian eigenvalue).  The last term penalizes
lack of convexity and is used with networks that are not convex by construction.  Sums run
over the points of every rank (:func:`dolfinx_nn.global_sum`), so the value is global and
each rank's gradient is its share.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mpi4py import MPI

import torch

from dolfinx_nn.monge_ampere.hessian import batched_det, min_eigenvalues
from dolfinx_nn.networks.pointwise import hessian
from dolfinx_nn.parallel import global_sum


def _global_mean(values: torch.Tensor, comm: MPI.Comm) -> float:
    total = comm.allreduce(float(values.sum()), op=MPI.SUM)
    count = comm.allreduce(int(values.numel()), op=MPI.SUM)
    return total / count


@dataclass
class MongeAmpereLoss:
    """Residual + boundary (+ convexity) loss on fixed collocation points.

    Args:
        interior: this rank's interior points ``(n_i, d)``.
        f: source values at ``interior`` ``(n_i,)`` (possibly noisy; must be finite).
        boundary: this rank's boundary points ``(n_b, d)``.
        g: Dirichlet data at ``boundary`` ``(n_b,)``.
        boundary_weight: ``w_b``.
        convexity_weight: ``w_c`` (0 disables the eigenvalue computation).
        comm: communicator the points are split over.
    """

    interior: torch.Tensor
    f: torch.Tensor
    boundary: torch.Tensor
    g: torch.Tensor
    boundary_weight: float = 10.0
    convexity_weight: float = 0.0
    comm: MPI.Comm = field(default_factory=lambda: MPI.COMM_WORLD)

    def __post_init__(self) -> None:
        for name in ("f", "g"):
            t = getattr(self, name)
            bad = int(self.comm.allreduce(int((~torch.isfinite(t)).sum()), op=MPI.SUM))
            if bad:
                raise ValueError(f"{bad} non-finite values in {name!r}; check the case and domain")
        if self.boundary_weight < 0 or self.convexity_weight < 0:
            raise ValueError(
                f"weights must be >= 0, got boundary_weight={self.boundary_weight}, "
                f"convexity_weight={self.convexity_weight}"
            )
        d = self.interior.shape[1]
        self.n_interior = self.comm.allreduce(self.interior.shape[0], op=MPI.SUM)
        self.n_boundary = self.comm.allreduce(self.boundary.shape[0], op=MPI.SUM)
        self.f_scale = max(_global_mean(self.f**2, self.comm), 1e-300)
        self.g_scale = max(_global_mean(self.g**2, self.comm), 1e-300)
        self.h_scale = max(_global_mean(self.f.abs() ** (2.0 / d), self.comm), 1e-300)

    def terms(self, net: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The loss terms (global values; each rank's gradient is its share)."""
        _, _, hess = hessian(net, self.interior)
        residual = batched_det(hess) - self.f
        out = {
            "residual": global_sum((residual**2).sum(), self.comm)
            / (self.n_interior * self.f_scale),
            "boundary": global_sum(((net(self.boundary) - self.g) ** 2).sum(), self.comm)
            / (self.n_boundary * self.g_scale),
        }
        if self.convexity_weight > 0:
            negative = torch.relu(-min_eigenvalues(hess))
            out["convexity"] = global_sum((negative**2).sum(), self.comm) / (
                self.n_interior * self.h_scale
            )
        return out

    def __call__(self, net: torch.nn.Module) -> torch.Tensor:
        t = self.terms(net)
        loss = t["residual"] + self.boundary_weight * t["boundary"]
        if "convexity" in t:
            loss = loss + self.convexity_weight * t["convexity"]
        return loss
