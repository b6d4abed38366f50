"""Observation operators: which values of the state ``u`` are measured, and the data misfit.

Every observation offers ``misfit(u_t)``, the *relative* least-squares misfit

    J(u) = 1/2 ||B u - d||^2 / ||d||^2,

as a differentiable torch scalar with the same global value on every rank, and
``residual(u_t)``, the relative residual ``||B u - d|| / ||d||`` that the discrepancy
principle compares with the relative noise level :attr:`noise_norm`.

- :class:`FieldObservation`: ``u`` measured on the whole domain or on a subdomain, as a
  Lagrange function ``d`` on the inversion mesh; ``||.||`` is the L2 norm over the observed
  region (an indicator function).
- :class:`ScatteredObservation`: ``u`` measured at scattered points; ``||.||`` is the Euclidean
  norm.
"""

from __future__ import annotations

from mpi4py import MPI

import dolfinx
import dolfinx.fem.petsc
import numpy as np
import torch
import ufl

from dolfinx_nn.conversion import num_owned
from dolfinx_nn.expressions import ParsedExpression
from dolfinx_nn.fem_functional import fem_functional
from dolfinx_nn.petsc_problems import PetscOwner
from dolfinx_nn.point_evaluation import PointObservation


def region_indicator(
    mesh: dolfinx.mesh.Mesh, region: ParsedExpression | None
) -> dolfinx.fem.Function:
    """DG0 indicator of the cells whose midpoint satisfies ``region > 0`` (all cells if None)."""
    W = dolfinx.fem.functionspace(mesh, ("DG", 0))
    chi = dolfinx.fem.Function(W, name="observed")
    if region is None:
        chi.x.array[:] = 1.0
        return chi
    chi.interpolate(lambda x: (region.numpy(x) > 0.0).astype(np.float64))
    observed = mesh.comm.allreduce(float(chi.x.array[: num_owned(W)].sum()), op=MPI.SUM)
    if observed == 0:
        raise ValueError(f"the observed region {region.text!r} > 0 contains no cell of the mesh.")
    return chi


class FieldObservation:
    """``u`` observed in the region ``chi = 1`` as the function ``data`` (same space as ``u``).

    Args:
        u: the state function of the forward model (its space carries the data).
        data: measured values, a function on ``u``'s space.
        indicator: DG0 indicator of the observed region (see :func:`region_indicator`).
        noise_norm: expected relative noise norm ``||noise|| / ||d||`` (0 for exact data).
    """

    def __init__(
        self,
        u: dolfinx.fem.Function,
        data: dolfinx.fem.Function,
        indicator: dolfinx.fem.Function,
        noise_norm: float = 0.0,
    ) -> None:
        self.u = u
        self.data = data
        self.indicator = indicator
        self.noise_norm = float(noise_norm)
        comm = u.function_space.mesh.comm
        data_norm2 = comm.allreduce(
            dolfinx.fem.assemble_scalar(dolfinx.fem.form(indicator * data**2 * ufl.dx)), op=MPI.SUM
        )
        if data_norm2 <= 0.0:
            raise ValueError("the observed data vanish on the observed region; cannot normalise.")
        self.data_norm = float(np.sqrt(data_norm2))
        scale = 0.5 / data_norm2
        self._misfit = fem_functional(scale * indicator * (u - data) ** 2 * ufl.dx, controls=[u])

    def misfit(self, u_t: torch.Tensor) -> torch.Tensor:
        """``1/2 ||u - d||^2 / ||d||^2`` over the observed region (differentiable)."""
        return self._misfit(u_t)

    def residual(self, u_t: torch.Tensor) -> float:
        """Relative residual ``||u - d|| / ||d||`` over the observed region."""
        return float(np.sqrt(2.0 * float(self._misfit(u_t.detach()))))


def expected_noise_norm(
    V: dolfinx.fem.FunctionSpace, indicator: dolfinx.fem.Function, sigma: float
) -> float:
    """Expected L2 norm over the region of a Lagrange function with i.i.d. N(0, sigma^2) dofs.

    ``E ||sum_i xi_i phi_i||^2 = sigma^2 sum_i M_ii`` with ``M`` the mass matrix weighted by the
    indicator.
    """
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    M = dolfinx.fem.petsc.assemble_matrix(dolfinx.fem.form(indicator * u * v * ufl.dx))
    M.assemble()
    diagonal = M.getDiagonal()
    trace = diagonal.sum()
    diagonal.destroy()
    M.destroy()
    return float(sigma * np.sqrt(trace))


class ScatteredObservation(PetscOwner):
    """``u`` observed at scattered points (DOLFINx geometry search, one owner rank per point).

    Owns its :class:`~dolfinx_nn.point_evaluation.PointObservation`: :meth:`destroy` or a
    ``with`` block frees it on every rank.

    Args:
        u: the state function of the forward model.
        points: ``(m, gdim)`` coordinates, the same array on every rank.
        values: ``(m,)`` measured values, the same array on every rank.
        noise_norm: expected relative noise norm ``||noise|| / ||d||``.
    """

    def __init__(
        self,
        u: dolfinx.fem.Function,
        points: np.ndarray,
        values: np.ndarray,
        noise_norm: float = 0.0,
    ) -> None:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.shape[0] != np.asarray(points).shape[0]:
            raise ValueError(
                f"got {np.asarray(points).shape[0]} points but {values.shape[0]} values."
            )
        if not np.isfinite(values).all():
            raise ValueError("the measured values contain NaN or Inf.")
        self.u = u
        self.comm: MPI.Comm = u.function_space.mesh.comm
        self.operator = PointObservation(u.function_space, points)
        self.points = np.asarray(points, dtype=np.float64)
        self.values = values
        self._local = torch.from_numpy(self.operator.owned(values).astype(np.float64))
        data_norm2 = float(np.sum(values**2))
        if data_norm2 <= 0.0:
            raise ValueError("the measured values are all zero; cannot normalise the misfit.")
        self.data_norm = float(np.sqrt(data_norm2))
        self.noise_norm = float(noise_norm)

    def _owned_petsc(self) -> tuple[PointObservation]:
        return (self.operator,)

    def misfit(self, u_t: torch.Tensor) -> torch.Tensor:
        """``1/2 sum_k (u(x_k) - d_k)^2 / sum_k d_k^2`` (global value, differentiable)."""
        from dolfinx_nn.parallel import global_sum

        r = self.operator(u_t) - self._local
        return global_sum(0.5 * (r**2).sum() / self.data_norm**2, self.comm)

    def residual(self, u_t: torch.Tensor) -> float:
        """Relative residual ``||u(x) - d|| / ||d||``."""
        return float(np.sqrt(2.0 * float(self.misfit(u_t.detach()))))
