"""The collocation loss of the Monge-Ampere Dirichlet problem, in any dimension.

For a network ``u`` the loss is

    L(u) = mean_i (det D^2 u(x_i) - f_i)^2 / F^2
         + w_b mean_j (u(y_j) - g_j)^2 / U^2
         + w_c mean_i min(lambda_min(D^2 u(x_i)), 0)^2 / H^2

with interior points ``x_i`` and boundary points ``y_j``.  The last term penalizes lack of
convexity and is used with networks that are not convex by construction.  Sums run over the
points of every rank (:func:`dolfinx_nn.global_sum`), so the value is global and each rank's
gradient is its share.

**Scales** (dimensional analysis of ``det D^2 u = f``: with ``[u] = U`` and lengths ``L``,
``[D^2 u] = U / L^2`` and ``[f] = (U / L^2)^d``).  ``L`` is the diameter of the boundary
points, ``f_rms = sqrt(mean f_i^2)`` and ``osc g = max g_j - min g_j``:

* ``U = max(f_rms^(1/d) L^2 / 8, osc g)``, the size of the solution's variation: the first
  is the oscillation of the paraboloid ``f_rms^(1/d) |x - c|^2 / 2`` (``det D^2 = f_rms``)
  over a ball of diameter ``L``, the second the variation the data impose;
* ``H = max(f_rms^(1/d), osc g / L^2)``, the size of a Hessian eigenvalue; the second part is
  only a floor (an affine ``g`` varies without curvature), for sources that vanish;
* ``F = H^d``, the size of ``det D^2 u`` (``= f_rms`` unless ``f`` is small against the
  data's variation, so the residual term is then the relative one).

None of them changes when ``g`` is shifted by a constant (the loss of ``u + c`` for ``g + c``
equals that of ``u`` for ``g``), and they vanish only if ``f = 0`` and ``g`` is constant
(then the solution is that constant; ``U = max|g|``, or 1 if ``g = 0``, and ``F, H`` follow
from ``U``).  Earlier versions divided by ``mean g^2`` and ``mean f^2`` (floored at 1e-300):
``g = 0`` or ``f = 0`` made a term 1e300 times too heavy, and shifting ``g`` changed the
balance of the terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mpi4py import MPI

import numpy as np
import torch
from scipy.spatial.distance import pdist

from dolfinx_nn.monge_ampere.hessian import batched_det, min_eigenvalues
from dolfinx_nn.networks.pointwise import hessian
from dolfinx_nn.parallel import global_sum


def _global_mean(values: torch.Tensor, comm: MPI.Comm) -> float:
    total = comm.allreduce(float(values.sum()), op=MPI.SUM)
    count = comm.allreduce(int(values.numel()), op=MPI.SUM)
    return total / count


#: at most this many boundary points enter the diameter (every k-th point beyond)
DIAMETER_POINTS = 2000


def point_diameter(points: torch.Tensor, comm: MPI.Comm) -> float:
    """Largest distance between two of the points of all ranks (``points``: ``(n, d)``).

    Beyond :data:`DIAMETER_POINTS` points, every k-th of them is used (a slight underestimate).
    """
    everything = np.concatenate(comm.allgather(points.detach().cpu().numpy()), axis=0)
    step = max(1, -(-len(everything) // DIAMETER_POINTS))
    sample = everything[::step]
    return float(pdist(sample).max()) if len(sample) > 1 else 0.0


def loss_scales(f: torch.Tensor, boundary: torch.Tensor, g: torch.Tensor,
                comm: MPI.Comm) -> dict[str, float | str]:
    """The scales ``L, U, H, F`` of :class:`MongeAmpereLoss` (module docstring), global.

    Args:
        f: source values at this rank's interior points ``(n_i,)``.
        boundary: this rank's boundary points ``(n_b, d)``.
        g: Dirichlet data there ``(n_b,)``.
        comm: communicator the points are split over.

    Returns:
        ``length`` (``L``), ``solution_scale`` (``U``), ``hessian_scale`` (``H``),
        ``residual_scale`` (``F``), ``residual_floor`` (the part of ``F`` due to ``g``),
        ``f_rms``, ``g_oscillation`` and ``set_by`` (``"f"``,
        ``"g"``: which one gives ``U``, or ``"constant g"`` when both vanish).
    """
    d = boundary.shape[1]
    length = point_diameter(boundary, comm)
    if not length > 0:
        raise ValueError("the boundary points must not all coincide (diameter 0)")
    f_rms = float(np.sqrt(_global_mean(f**2, comm)))
    local = g.detach().cpu().numpy()
    g_max = comm.allreduce(float(local.max()) if local.size else -np.inf, op=MPI.MAX)
    g_min = comm.allreduce(float(local.min()) if local.size else np.inf, op=MPI.MIN)
    oscillation = g_max - g_min
    u_f = f_rms ** (1.0 / d) * length**2 / 8.0
    solution, set_by = (u_f, "f") if u_f >= oscillation else (oscillation, "g")
    hessian_scale = max(f_rms ** (1.0 / d), oscillation / length**2)
    if not solution > 0:  # f = 0 and g constant: the solution is that constant
        solution = max(abs(g_max), abs(g_min)) or 1.0
        hessian_scale, set_by = solution / length**2, "constant g"
    floor = (hessian_scale if set_by == "constant g" else oscillation / length**2) ** d
    return {"length": length, "solution_scale": solution, "hessian_scale": hessian_scale,
            "residual_scale": hessian_scale**d, "residual_floor": floor, "f_rms": f_rms,
            "g_oscillation": oscillation, "set_by": set_by}


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
        self.n_interior = self.comm.allreduce(self.interior.shape[0], op=MPI.SUM)
        self.n_boundary = self.comm.allreduce(self.boundary.shape[0], op=MPI.SUM)
        #: the scales of the terms (module docstring), reported in results.json
        self.scales = loss_scales(self.f, self.boundary, self.g, self.comm)
        self.residual_scale = float(self.scales["residual_scale"])
        self.solution_scale = float(self.scales["solution_scale"])
        self.hessian_scale = float(self.scales["hessian_scale"])

    def terms(self, net: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The loss terms (global values; each rank's gradient is its share)."""
        _, _, hess = hessian(net, self.interior)
        residual = batched_det(hess) - self.f
        out = {
            "residual": global_sum((residual**2).sum(), self.comm)
            / (self.n_interior * self.residual_scale**2),
            "boundary": global_sum(((net(self.boundary) - self.g) ** 2).sum(), self.comm)
            / (self.n_boundary * self.solution_scale**2),
        }
        if self.convexity_weight > 0:
            negative = torch.relu(-min_eigenvalues(hess))
            out["convexity"] = global_sum((negative**2).sum(), self.comm) / (
                self.n_interior * self.hessian_scale**2
            )
        return out

    def __call__(self, net: torch.nn.Module) -> torch.Tensor:
        t = self.terms(net)
        loss = t["residual"] + self.boundary_weight * t["boundary"]
        if "convexity" in t:
            loss = loss + self.convexity_weight * t["convexity"]
        return loss
