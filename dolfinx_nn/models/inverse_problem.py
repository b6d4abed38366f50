"""The inverse problem: mesh, forward model, data and error measures, built from one spec.

:class:`ProblemSpec` collects what a user chooses (geometry, formulas, observation, noise);
:func:`build_problem` turns it into an :class:`InverseProblem` whose :meth:`~InverseProblem.loss`
maps coefficient dofs to the relative data misfit (differentiable: FEM adjoint) and whose
:meth:`~InverseProblem.errors` measures a recovered coefficient against the truth.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mpi4py import MPI

import dolfinx
import numpy as np
import torch
import ufl

from dolfinx_nn.expressions import ParsedExpression, parse_expression
from dolfinx_nn.meshes import create_mesh
from dolfinx_nn.models.data import (
    FieldData,
    PointData,
    read_point_data,
    reference_solution,
    synthetic_field_data,
    synthetic_point_data,
)
from dolfinx_nn.models.observations import ScatteredObservation, region_indicator
from dolfinx_nn.models.poisson import PoissonModel

#: Default mesh of each dimension.
MESHES_BY_DIM: dict[int, str] = {1: "interval", 2: "square", 3: "cube"}

#: Default true coefficient of each dimension (smooth, between 0.5 and 1.5).
COEFFICIENTS_BY_DIM: dict[int, str] = {
    1: "1 + 0.5*sin(2*pi*x[0])",
    2: "1 + 0.5*sin(pi*x[0])*sin(2*pi*x[1])",
    3: "1 + 0.5*sin(pi*x[0])*sin(2*pi*x[1])*sin(pi*x[2])",
}

#: Observation kinds.
OBSERVE_CHOICES = ("all", "subdomain", "points")


@dataclass(frozen=True)
class ProblemSpec:
    """What defines an inverse problem.

    Attributes:
        dim: spatial dimension (1, 2 or 3): chooses the default mesh (interval, square,
            cube) and is checked against a given mesh; None: the mesh's (2 for the default).
        mesh: a built-in mesh name or a mesh file (default: interval/square/cube by ``dim``).
        resolution: cells per unit length of built-in meshes.
        coefficient: formula of the true ``q`` (default by dimension; ``COEFFICIENTS_BY_DIM``).
        source: formula of ``f``.
        boundary: formula of the Dirichlet data ``g``.
        observe: ``"all"``, ``"subdomain"`` or ``"points"``.
        subdomain: formula; the observed region is where it is > 0 (``observe="subdomain"``).
        num_points: number of random observation points (``observe="points"``).
        data_file: measurements (CSV or a meshio file) to use instead of synthetic data.
        noise: relative noise level of the synthetic data.
        seed: seed of the noise and of the observation points.
        refinements: uniform refinements of the mesh that computes synthetic data.
        degree: Lagrange degree of the state on the inversion mesh (the coefficient is P1;
            the synthetic data come from degree ``degree + 1`` on the refined mesh).
        coefficient_degree: Lagrange degree of the coefficient space on the inversion mesh
            (the network prior is evaluated at its dofs; Tikhonov optimises its dofs).
    """

    dim: int | None = None
    mesh: str | None = None
    resolution: int = 16
    coefficient: str | None = None
    source: str = "1"
    boundary: str = "0"
    observe: str = "all"
    subdomain: str = "where(x[0] <= 0.5, 1, 0)"
    num_points: int = 300
    data_file: str | None = None
    noise: float = 0.0
    seed: int = 0
    refinements: int = 1
    degree: int = 1
    coefficient_degree: int = 1

    def __post_init__(self) -> None:
        if self.dim is not None and self.dim not in MESHES_BY_DIM:
            raise ValueError(f"dim must be one of {sorted(MESHES_BY_DIM)}, got {self.dim!r}.")
        if self.observe not in OBSERVE_CHOICES:
            raise ValueError(f"observe must be one of {OBSERVE_CHOICES}, got {self.observe!r}.")
        for name in ("degree", "coefficient_degree"):
            if getattr(self, name) not in (1, 2, 3):
                raise ValueError(f"{name} must be 1, 2 or 3, got {getattr(self, name)!r}.")
        if not (np.isfinite(self.noise) and self.noise >= 0):
            raise ValueError(
                f"noise must be a relative level >= 0 (e.g. 0.01), got {self.noise!r}."
            )

    @property
    def mesh_name(self) -> str:
        """The mesh actually used."""
        return self.mesh or MESHES_BY_DIM[self.dim or 2]

    def coefficient_text(self, gdim: int) -> str:
        """The true coefficient's formula (default chosen by the mesh's dimension)."""
        return self.coefficient or COEFFICIENTS_BY_DIM[gdim]

    def resolved(self, gdim: int) -> dict[str, object]:
        """The fields with what was actually used: the mesh, its dimension, the true
        coefficient's formula (None with file data); what ``results.json`` records."""
        data = dataclasses.asdict(self)
        data.update(dim=gdim, mesh=self.mesh_name)
        data["coefficient"] = None if self.data_file else self.coefficient_text(gdim)
        return data


class InverseProblem:
    """Recover ``q`` in ``-div(q grad u) = f``, ``u = g`` on the boundary, from data of ``u``.

    Attributes:
        model: the forward model on the inversion mesh (P1 state and coefficient).
        observation: the data and their misfit (field or scattered points).
        true_coefficient: the true ``q`` as a formula (None for file data).
        exact_state: the true state on the inversion mesh (None for file data).
        observed: DG0 indicator of the observed region (all ones unless a subdomain is observed).
    """

    def __init__(
        self,
        model: PoissonModel,
        observation,
        *,
        true_coefficient: ParsedExpression | None,
        exact_state: dolfinx.fem.Function | None,
        observed: dolfinx.fem.Function,
    ) -> None:
        self.model = model
        self.observation = observation
        self.true_coefficient = true_coefficient
        self.exact_state = exact_state
        self.observed = observed
        self.comm: MPI.Comm = model.comm
        x = model.x
        self._forms: dict[str, tuple[dolfinx.fem.Form, dolfinx.fem.Form]] = {}
        if true_coefficient is not None:
            qe = true_coefficient.ufl(x)
            self._forms["coefficient"] = self._relative_forms(model.q, qe, 1.0)
            self._forms["coefficient_observed"] = self._relative_forms(model.q, qe, observed)
        if exact_state is not None:
            self._forms["state"] = self._relative_forms(model.u, exact_state, 1.0)

    @staticmethod
    def _relative_forms(f, exact, weight):
        return (
            dolfinx.fem.form(weight * (f - exact) ** 2 * ufl.dx),
            dolfinx.fem.form(weight * exact**2 * ufl.dx),
        )

    def _relative(self, name: str) -> float:
        error, norm = (
            self.comm.allreduce(dolfinx.fem.assemble_scalar(f), op=MPI.SUM)
            for f in self._forms[name]
        )
        return float(np.sqrt(error / norm))

    @property
    def num_coefficient_dofs(self) -> int:
        """Owned dofs of the coefficient space on this rank."""
        return self.model.num_owned_coefficient

    def loss(self, q_t: torch.Tensor) -> torch.Tensor:
        """Relative data misfit ``1/2 ||B u(q) - d||^2 / ||d||^2`` (global, differentiable)."""
        return self.observation.misfit(self.model.solve(q_t))

    def errors(self, q_t: torch.Tensor) -> dict[str, float]:
        """Relative L2 errors of ``q`` and of ``u(q)`` and the relative data residual."""
        with torch.no_grad():
            u_t = self.model.solve(q_t)  # also leaves q_t in model.q
            out = {"data_residual": self.observation.residual(u_t)}
        if "coefficient" in self._forms:
            out["coefficient_rel_l2_error"] = self._relative("coefficient")
            out["coefficient_rel_l2_error_observed"] = self._relative("coefficient_observed")
        if "state" in self._forms:
            out["state_rel_l2_error"] = self._relative("state")
        return out

    @property
    def noise_norm(self) -> float:
        """Expected relative noise norm of the data (the discrepancy principle's target)."""
        return self.observation.noise_norm


def build_problem(
    spec: ProblemSpec, comm: MPI.Comm = MPI.COMM_WORLD, *, solver: str = "reproducible"
) -> InverseProblem:
    """Mesh, forward model and (synthetic or file) data for ``spec`` (collective).

    ``solver`` is the LU solver of every forward solve (see
    :func:`dolfinx_nn.models.poisson.solver_options`).
    """
    mesh = create_mesh(comm, spec.mesh_name, spec.resolution)
    gdim = mesh.geometry.dim
    if spec.dim is not None and spec.dim != gdim:
        raise ValueError(
            f"dim {spec.dim} (--dim) does not match the mesh {spec.mesh_name!r}, which is "
            f"{gdim}-dimensional; leave --dim out to use the mesh's dimension."
        )
    source = parse_expression(spec.source)
    boundary = parse_expression(spec.boundary)
    model = PoissonModel(mesh, source, boundary, degree=spec.degree,
                         coefficient_degree=spec.coefficient_degree, solver=solver)
    if spec.data_file is not None:
        points, values = read_point_data(spec.data_file, comm)
        points = _fit_dimension(points, gdim)
        observation = ScatteredObservation(model.u, points, values)
        return InverseProblem(
            model, observation, true_coefficient=None, exact_state=None,
            observed=region_indicator(mesh, None),
        )
    coefficient = parse_expression(spec.coefficient_text(gdim))
    reference = reference_solution(mesh, coefficient, source, boundary,
                                   refinements=spec.refinements, degree=spec.degree + 1,
                                   solver=solver)
    data: PointData | FieldData
    if spec.observe == "points":
        data = synthetic_point_data(model, reference, num_points=spec.num_points,
                                    noise=spec.noise, seed=spec.seed)
        observed = region_indicator(mesh, None)
    else:
        region = parse_expression(spec.subdomain) if spec.observe == "subdomain" else None
        data = synthetic_field_data(model, reference, noise=spec.noise, seed=spec.seed,
                                    region=region)
        observed = data.indicator
    return InverseProblem(
        model, data.observation, true_coefficient=coefficient, exact_state=data.exact_state,
        observed=observed,
    )


def _fit_dimension(points: np.ndarray, gdim: int) -> np.ndarray:
    """Drop trailing zero coordinates (meshio stores 3) so points match the mesh dimension."""
    if points.shape[1] == gdim:
        return points
    if points.shape[1] > gdim and np.allclose(points[:, gdim:], 0.0):
        return np.ascontiguousarray(points[:, :gdim])
    raise ValueError(
        f"the measurement points have {points.shape[1]} coordinates but the mesh has {gdim}."
    )
