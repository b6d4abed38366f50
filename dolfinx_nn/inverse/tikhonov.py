"""The classical baseline: ``q`` as a P1 finite element function with Tikhonov regularisation.

For each ``alpha`` of a grid (largest first, each run warm-started from the previous one) we
minimise

    J_alpha(q) = 1/2 ||B u(q) - d||^2 / ||d||^2 + alpha/2 R(q) / |Omega|,
    R(q) = ||grad q||^2 ("h1")   or   ||q - q_ref||^2 ("l2"),

with L-BFGS on the same adjoint gradient as the network prior (or, with
``optimizer="newton-cg"``, by trust-region Newton-CG on exact Hessian-vector products,
:mod:`.newton`), with positivity built in through ``q = q_min + softplus(m)``.  ``alpha`` is
then chosen by Morozov's discrepancy principle: the largest ``alpha`` whose relative residual
is at most ``tau`` times the relative noise level (the smallest ``alpha`` for exact data).

Under MPI the optimisation variable ``m`` is the *global* dof vector, replicated on every rank
(each rank reads its owned slice, the training loop sums the gradient shares), so L-BFGS's inner
products are global and the iterates are the same on any number of ranks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mpi4py import MPI

import dolfinx
import numpy as np
import torch
import ufl

from dolfinx_nn.fem_functional import fem_functional
from dolfinx_nn.inverse.newton import newton_history
from dolfinx_nn.inverse.result import PriorResult
from dolfinx_nn.models.inverse_problem import InverseProblem
from dolfinx_nn.training import TrainingConfig, train


def _h1(q: dolfinx.fem.Function, q_ref: float) -> ufl.Form:
    return ufl.inner(ufl.grad(q), ufl.grad(q)) * ufl.dx


def _l2(q: dolfinx.fem.Function, q_ref: float) -> ufl.Form:
    return (q - q_ref) ** 2 * ufl.dx


#: regularisation name -> R(q, q_ref) as a UFL form.
REGULARIZATIONS: dict[str, Callable[[dolfinx.fem.Function, float], ufl.Form]] = {
    "h1": _h1,
    "l2": _l2,
}

#: Default grid of regularisation parameters (relative to the normalised misfit).
DEFAULT_ALPHAS: tuple[float, ...] = (1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)

#: Optimizers of each Tikhonov run.
OPTIMIZERS = ("lbfgs", "newton-cg")

#: Default optimizer settings of each Tikhonov run (L-BFGS only).
DEFAULT_TRAINING = TrainingConfig(adam_steps=0, lbfgs_steps=150, patience=20, min_delta=1e-7)


@dataclass(frozen=True)
class TikhonovConfig:
    """Settings of the Tikhonov baseline.

    Attributes:
        regularization: ``"h1"`` or ``"l2"`` (see :data:`REGULARIZATIONS`).
        alphas: grid of regularisation parameters.
        tau: safety factor of the discrepancy principle (>= 1).
        q_min: positive floor of ``q``.
        q_ref: initial value of ``q`` and reference of the L2 regularisation.
        optimizer: ``"lbfgs"`` (the training loop's L-BFGS) or ``"newton-cg"``
            (:func:`dolfinx_nn.inverse.newton.minimize_newton_cg`).
    """

    regularization: str = "h1"
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    tau: float = 1.1
    q_min: float = 0.05
    q_ref: float = 1.0
    optimizer: str = "lbfgs"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; choose one of {list(OPTIMIZERS)}."
            )
        if self.regularization not in REGULARIZATIONS:
            raise ValueError(
                f"unknown regularization {self.regularization!r}; choose one of "
                f"{sorted(REGULARIZATIONS)}."
            )
        if not self.alphas or any(not (a > 0 and math.isfinite(a)) for a in self.alphas):
            raise ValueError(f"alphas must be positive finite numbers, got {self.alphas!r}.")
        if not self.tau >= 1.0:
            raise ValueError(f"tau must be >= 1, got {self.tau!r}.")
        if not 0 < self.q_min < self.q_ref:
            raise ValueError(f"need 0 < q_min < q_ref, got {self.q_min}, {self.q_ref}.")


class _GlobalCoefficient:
    """``q = q_min + softplus(m)`` with ``m`` the replicated global dof vector."""

    def __init__(self, problem: InverseProblem, q_min: float, q_init: float) -> None:
        imap = problem.model.Q.dofmap.index_map
        self.start, self.stop = (int(i) for i in imap.local_range)
        self.q_min = q_min
        value = math.log(math.expm1(q_init - q_min))
        self.m = torch.full((imap.size_global,), value, dtype=torch.float64, requires_grad=True)

    def __call__(self) -> torch.Tensor:
        return self.of(self.m)

    def of(self, m: torch.Tensor) -> torch.Tensor:
        """The rank's owned dofs of ``q`` for the replicated vector ``m``."""
        return self.q_min + torch.nn.functional.softplus(m[self.start : self.stop])


def select_by_discrepancy(residuals: Sequence[float], noise_norm: float, tau: float) -> int:
    """Index of the largest alpha (runs ordered largest first) with residual <= tau * noise.

    Falls back to the run with the smallest residual when none satisfies it (e.g. exact data).
    """
    target = tau * noise_norm
    for i, r in enumerate(residuals):
        if noise_norm > 0 and r <= target:
            return i
    return int(np.argmin(residuals))


def fit_tikhonov(
    problem: InverseProblem,
    config: TikhonovConfig = TikhonovConfig(),
    training: TrainingConfig = DEFAULT_TRAINING,
) -> PriorResult:
    """Tikhonov-regularised recovery with the parameter chosen by the discrepancy principle.

    Every run of the grid is reported in ``details["runs"]`` (alpha, residual, errors), and the
    run with the smallest coefficient error (known only for synthetic data) in
    ``details["best_alpha"]``, for comparison.
    """
    start = time.perf_counter()
    model = problem.model
    comm: MPI.Comm = problem.comm
    coefficient = _GlobalCoefficient(problem, config.q_min, config.q_ref)
    volume = comm.allreduce(
        dolfinx.fem.assemble_scalar(dolfinx.fem.form(1.0 * ufl.dx(domain=model.mesh))), op=MPI.SUM
    )
    regularizer = fem_functional(
        (0.5 / volume) * REGULARIZATIONS[config.regularization](model.q, config.q_ref),
        controls=[model.q],
    )
    alpha_value = torch.zeros((), dtype=torch.float64)

    def loss_at(m: torch.Tensor) -> torch.Tensor:
        q = coefficient.of(m)
        return problem.loss(q) + alpha_value * regularizer(q)

    def loss() -> torch.Tensor:
        return loss_at(coefficient.m)

    runs, states, histories = [], [], []
    iterations = 0
    for alpha in sorted(config.alphas, reverse=True):
        alpha_value.fill_(alpha)
        extra: dict[str, Any] = {}  # the Newton-CG run's counters, reported beside the errors
        if config.optimizer == "newton-cg":
            history, newton = newton_history(loss_at, coefficient.m, comm)
            extra = {"hessian_products": newton.hessian_products,
                     "wall_time_s": newton.wall_time_s, "stopped_because": newton.stopped_because}
        else:
            history = train(loss, [coefficient.m], training, comm=comm,
                            desc=f"tikhonov alpha={alpha:.0e}")
        iterations += history.steps
        with torch.no_grad():
            q = coefficient().clone()
        errors = problem.errors(q)
        runs.append({"alpha": alpha, "iterations": history.steps, **extra, **errors})
        states.append(q)
        histories.append(history)
    residuals = [r["data_residual"] for r in runs]
    chosen = select_by_discrepancy(residuals, problem.noise_norm, config.tau)
    details = {
        "regularization": config.regularization,
        "optimizer": config.optimizer,
        "alpha": runs[chosen]["alpha"],
        "tau": config.tau,
        "noise_norm": problem.noise_norm,
        "runs": runs,
    }
    if "coefficient_rel_l2_error" in runs[0]:
        best = int(np.argmin([r["coefficient_rel_l2_error"] for r in runs]))
        details["best_alpha"] = runs[best]["alpha"]
        details["best_coefficient_rel_l2_error"] = runs[best]["coefficient_rel_l2_error"]
    q = states[chosen]
    return PriorResult(
        prior="tikhonov",
        coefficient=q,
        history=histories[chosen],
        errors=problem.errors(q),
        iterations=iterations,
        wall_time_s=time.perf_counter() - start,
        details=details,
    )
