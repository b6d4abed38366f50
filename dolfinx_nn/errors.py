"""Exceptions raised by dolfinx_nn."""

from __future__ import annotations


class SolverError(RuntimeError):
    """A PETSc KSP or SNES solve did not converge.

    Attributes:
        reason: PETSc's converged reason (negative when diverged).
        reason_name: its symbolic name, e.g. ``"DIVERGED_ITS"``.
        iterations: iterations performed.
    """

    def __init__(self, solver: str, reason: int, reason_name: str, iterations: int, prefix: str):
        self.reason = reason
        self.reason_name = reason_name
        self.iterations = iterations
        super().__init__(
            f"{solver} solve with options prefix {prefix!r} did not converge: "
            f"reason {reason_name} ({reason}) after {iterations} iterations. "
            f"Adjust the {solver} options (e.g. -{prefix}{solver.lower()}_monitor to inspect)."
        )


class GradientAccuracyError(RuntimeError):
    """A gradient could not be computed to the accuracy the bridge promises.

    Raised by the backward pass when the adjoint solve stopped far from the solution of the
    adjoint system (its true relative residual is in the message): the gradient would be
    silently wrong.  Tighten the adjoint's tolerances (options under ``{prefix}adjoint_``) or
    choose a stronger preconditioner.
    """
