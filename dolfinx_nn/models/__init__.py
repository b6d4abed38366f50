"""Models that several modules solve: the Poisson coefficient problem and its observations.

The forward model ``-div(q grad u) = f`` (:mod:`.poisson`), the observation operators and
their misfits (:mod:`.observations`), synthetic measurements without inverse crime and
measurement files (:mod:`.data`, with the partition-independent noise of :mod:`.noise`), and
the inverse problem built from one spec (:mod:`.inverse_problem`). The coefficient estimation
methods (network prior, Tikhonov, Laplace posterior) are in :mod:`dolfinx_nn.inverse`; the
deep-limit and diffusion-map studies build their problems from the same pieces.

Example::

    problem = build_problem(ProblemSpec(dim=2, resolution=16, noise=0.01))
    q = problem.model.interpolate_coefficient(parse_expression("1"))
    problem.loss(q)            # relative data misfit, differentiable (FEM adjoint)
"""

from __future__ import annotations

from dolfinx_nn.models.inverse_problem import InverseProblem, ProblemSpec, build_problem
from dolfinx_nn.models.observations import (
    FieldObservation,
    ScatteredObservation,
    expected_noise_norm,
    region_indicator,
)
from dolfinx_nn.models.poisson import SOLVERS, PoissonModel, solver_options

__all__ = [
    "SOLVERS",
    "FieldObservation",
    "InverseProblem",
    "PoissonModel",
    "ProblemSpec",
    "ScatteredObservation",
    "build_problem",
    "expected_noise_norm",
    "region_indicator",
    "solver_options",
]
