"""Training losses of the ansatz: strong-form residual and Ritz energy.

Both follow the convention of :mod:`dolfinx_nn.parallel`: the value is global (the same on
every rank), the gradient is the rank's share, and :func:`~dolfinx_nn.training.train` sums
the shares.
"""

from __future__ import annotations

import warnings

from mpi4py import MPI

import basix.ufl
import dolfinx
import numpy as np
import torch
import ufl

from dolfinx_nn.ansatz.ansatz import DirichletAnsatz
from dolfinx_nn.ansatz.equations import PDES
from dolfinx_nn.ansatz.pdes import Problem
from dolfinx_nn.fem_functional import fem_functional
from dolfinx_nn.meshes import refine
from dolfinx_nn.neural_function import NeuralFunction
from dolfinx_nn.parallel import global_sum


class StrongResidualLoss:
    """Mean squared strong residual over collocation points held by the ranks.

    ``loss = sum_ranks sum_i (r(x_i) / scale)^2 / n_global``: with the same global point set the
    value is the same on any number of ranks (up to round-off in the sum).  ``scale`` makes the
    loss dimensionless (:mod:`~dolfinx_nn.ansatz.scaling`: the residual scale ``S``).

    Args:
        problem: the PDE.
        ansatz: the trainable field, maps ``(n, input_dim)`` to ``(n,)``.
        points: this rank's collocation points ``(n_local, input_dim)``.
        comm: communicator of the ranks that share the points.
        scale: the residual scale (unit of the source ``f``); 1 leaves the loss in the
            user's units.
    """

    def __init__(
        self, problem: Problem, ansatz: torch.nn.Module, points: np.ndarray | torch.Tensor,
        comm: MPI.Comm = MPI.COMM_WORLD, scale: float = 1.0,
    ) -> None:
        if not (np.isfinite(scale) and scale > 0.0):
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        x = torch.as_tensor(np.asarray(points, dtype=np.float64))
        if x.ndim != 2 or x.shape[1] != problem.input_dim:
            raise ValueError(
                f"points must have shape (n, {problem.input_dim}), got {tuple(x.shape)}"
            )
        if not torch.isfinite(x).all():
            raise ValueError("collocation points contain NaN or Inf")
        self.problem, self.ansatz, self.comm = problem, ansatz, comm
        self.scale = float(scale)
        self.points = x
        self.source = problem.source_torch(x).detach()
        self.fixed = (
            ansatz.fixed_derivatives(x, problem.gdim) if isinstance(ansatz, DirichletAnsatz)
            else None
        )
        self.total = comm.allreduce(int(x.shape[0]), op=MPI.SUM)
        if self.total == 0:
            raise ValueError("no collocation points on any rank")

    def residual(self) -> torch.Tensor:
        """Strong residual at this rank's points."""
        if self.fixed is None:
            return self.problem.residual(self.ansatz, self.points, self.source)
        assert isinstance(self.ansatz, DirichletAnsatz)  # fixed derivatives come from one
        u, grad, lap = self.ansatz.derivatives_at(self.fixed)
        return self.problem.apply(self.points, u, grad, lap) - self.source

    def __call__(self) -> torch.Tensor:
        r = self.residual() / self.scale
        return global_sum((r**2).sum(), self.comm) / self.total


class _ValueAndGradient(torch.nn.Module):
    """``x -> (u, grad u)`` of a scalar field, for a vector quadrature space."""

    def __init__(self, field: torch.nn.Module) -> None:
        super().__init__()
        self.field = field

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        u = self.field(x)
        (grad,) = torch.autograd.grad(u.sum(), x, create_graph=True)
        return torch.cat([u[:, None], grad], dim=1)


#: :meth:`RitzLoss.held_out` raises the quadrature degree by this much (and refines once).
HELD_OUT_DEGREE_INCREASE = 4

#: :meth:`RitzLoss.held_out` warns when the two energies differ by more than this (relative
#: to ``max(1, |E|)``; the energies are dimensionless, of order 1).
HELD_OUT_TOLERANCE = 1e-3


class RitzLoss:
    """Ritz energy ``int e(u, grad u, f) dx`` by DOLFINx quadrature (symmetric equations only).

    ``e`` is the equation's :meth:`~dolfinx_nn.ansatz.equations.PDE.energy_density`; for
    Poisson ``k/2 |grad u|^2 - f u``.

    The ansatz and its gradient are evaluated at the quadrature points through a
    :class:`~dolfinx_nn.NeuralFunction` on a basix quadrature space, and the energy is
    assembled by :func:`~dolfinx_nn.fem_functional`, so its backward pass is one vector
    assembly.  The minimiser over the ansatz class is the Galerkin (Ritz) solution.

    Args:
        problem: a problem whose equation is symmetric (``poisson``).
        ansatz: the trainable field.
        mesh: the mesh whose cells carry the quadrature.
        degree: quadrature degree.
        scale: the energy is divided by it (:attr:`~dolfinx_nn.ansatz.scaling.Scales.energy`
            makes it dimensionless); 1 leaves it in the user's units.
    """

    def __init__(
        self, problem: Problem, ansatz: torch.nn.Module, mesh: dolfinx.mesh.Mesh, degree: int = 6,
        scale: float = 1.0,
    ) -> None:
        if not (np.isfinite(scale) and scale > 0.0):
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        equation = problem.equation
        if not equation.symmetric:
            symmetric = sorted(name for name, pde in PDES.items() if pde.symmetric)
            raise ValueError(
                f"the Ritz energy needs a symmetric problem: pde must be one of {symmetric}, "
                f"got {problem.pde!r}; use the strong residual loss instead"
            )
        self.problem, self.ansatz, self.mesh = problem, ansatz, mesh
        self.degree, self.scale = degree, float(scale)
        gdim = mesh.geometry.dim
        element = basix.ufl.quadrature_element(
            mesh.basix_cell(), value_shape=(gdim + 1,), degree=degree
        )
        Q = dolfinx.fem.functionspace(mesh, element)
        self.field = NeuralFunction(_ValueAndGradient(ansatz), Q, name="u_and_grad")
        w = self.field.function
        x = ufl.SpatialCoordinate(mesh)
        f = problem.source_ufl(x)
        density = equation.energy_density(problem, w[0], [w[i] for i in range(1, gdim + 1)], f)
        dx = ufl.dx(metadata={"quadrature_degree": degree, "quadrature_rule": "default"})
        energy = density / float(scale) * dx
        self.functional = fem_functional(energy, controls=[w])
        #: Global number of quadrature points.
        self.points = Q.dofmap.index_map.size_global

    def __call__(self) -> torch.Tensor:
        return self.functional(self.field())

    def held_out(self) -> dict[str, float]:
        """The energy of the current ansatz by the training rule and by one it was not trained
        on (collective).

        The second rule: the mesh refined once and the degree raised by
        :data:`HELD_OUT_DEGREE_INCREASE`.  A network can lower the energy at the training
        rule's points below the minimum (it "fools" the rule) when they are few; then the two
        values part.  Warns on rank 0 (the values are global: once per run, not once per
        rank) when they differ by more than :data:`HELD_OUT_TOLERANCE`.

        Returns:
            ``{"energy": E_train, "held_out_energy": E, "held_out_gap": |E - E_train|}``
            (dimensionless, like the loss), both at the current parameters.
        """
        finer = RitzLoss(self.problem, self.ansatz, refine(self.mesh),
                         self.degree + HELD_OUT_DEGREE_INCREASE, self.scale)
        trained = float(self().detach())  # grad u needs autograd: no torch.no_grad
        energy = float(finer().detach())
        gap = abs(energy - trained)
        if gap > HELD_OUT_TOLERANCE * max(1.0, abs(energy)) and self.mesh.comm.rank == 0:
            warnings.warn(
                f"the Ritz energy of the trained network is {trained:.4g} by the training "
                f"quadrature ({self.points} points) but {energy:.4g} by a finer one: the "
                f"network exploits the rule; raise the quadrature degree or refine the mesh",
                RuntimeWarning, stacklevel=2)
        return {"energy": trained, "held_out_energy": energy, "held_out_gap": gap}
