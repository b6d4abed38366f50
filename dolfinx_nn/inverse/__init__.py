"""Coefficient estimation in ``-div(q grad u) = f`` with a network prior.

The method of Berg & Nystrom ("Neural network augmented inverse problems for PDEs"): ``q`` is a
small neural network of the coordinates, the forward problem a DOLFINx solve, and the gradient
of the data misfit with respect to the weights one FEM adjoint solve followed by
backpropagation.  The classical baseline, a P1 coefficient with Tikhonov regularisation chosen
by the discrepancy principle, is solved on the same data with the same adjoint gradient.

The problem itself (forward model, observations, synthetic and file data, the problem from a
spec) is shared with other modules and lives in :mod:`dolfinx_nn.models`; ``ProblemSpec``,
``InverseProblem`` and ``build_problem`` are re-exported here. Modules: :mod:`.network_prior`,
:mod:`.tikhonov`, :mod:`.laplace`, :mod:`.posterior`, :mod:`.newton`, :mod:`.experiment`,
:mod:`.plots`, :mod:`.cli` and :mod:`.bench`.

Example::

    problem = build_problem(ProblemSpec(dim=2, resolution=16, noise=0.01))
    result = fit_network_prior(problem)
    result.errors["coefficient_rel_l2_error"]
"""

from __future__ import annotations

from dolfinx_nn.inverse.network_prior import NetworkConfig, fit_network_prior
from dolfinx_nn.inverse.result import PriorResult
from dolfinx_nn.inverse.tikhonov import TikhonovConfig, fit_tikhonov
from dolfinx_nn.models.inverse_problem import InverseProblem, ProblemSpec, build_problem

__all__ = [
    "InverseProblem",
    "NetworkConfig",
    "PriorResult",
    "ProblemSpec",
    "TikhonovConfig",
    "build_problem",
    "fit_network_prior",
    "fit_tikhonov",
]
