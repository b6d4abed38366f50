"""Newton's stopping test: PETSc's default, plus a stop at the residual's round-off floor.

PETSc's default test (``SNESConvergedDefault``) stops when ``|F| < atol``, ``|F| <= rtol |F_0|``
or ``|dx| < stol |x|``.  Tolerances tight enough for exact gradients (``rtol = 1e-12``) can lie
below what floating point can resolve: the residual of a stiff problem (neo-Hookean elasticity
with a shear modulus of 1e3, say) stagnates at its round-off floor and Newton then ends with
``DIVERGED_MAX_IT`` although it converged.  :class:`RoundoffAwareTest` keeps PETSc's test and
adds one more way to converge, when all of three things hold: Newton has stopped making
progress (the residual is no less than half the smallest one so far), its last step was tiny
(``|dx| <= 1e-6 |x|``), and the residual is below the bound of its rounding errors,

    |F|_2 <= c * sqrt(N) * eps * |J|_inf * |x|_inf,

the size of the rounding errors of ``N`` residual entries each summing terms of size up to
``|J|_inf |x|_inf`` (the constant ``c = 10`` is a safety factor).  Each condition alone is not
enough: the bound is loose (a converging Newton iterate below it still gains accuracy with
the next step), stagnation may have other causes, and an iterate that runs off to infinity
(Newton on a saturating law such as ``atan``) has a huge round-off bound but takes huge steps.
The stop is reported as ``CONVERGED_FNORM_ABS``; :attr:`RoundoffAwareTest.at_roundoff` tells
it apart.
"""

from __future__ import annotations

import math

from petsc4py import PETSc

import numpy as np

from dolfinx_nn.petsc_problems import norm

#: Safety factor of the round-off bound.
FLOOR_FACTOR = 10.0
#: A step that does not bring the residual below this fraction of its smallest value so far
#: makes no progress.
STAGNATION = 0.5
#: A Newton step at the round-off floor is below this fraction of the solution.
TINY_STEP = 1e-6


class RoundoffAwareTest:
    """A ``SNES.setConvergenceTest`` callback (collective): PETSc's test plus the floor.

    Attributes:
        at_roundoff: whether the last solve stopped at the round-off floor.
        floor: the last floor estimate (absolute, in the residual's 2-norm).
        initial_norm: the residual norm at the start of the last solve.
    """

    def __init__(self) -> None:
        self.at_roundoff = False
        self.floor = 0.0
        self._target = 0.0
        self._fnorm0 = 0.0
        self._smallest = math.inf

    def __call__(self, snes: PETSc.SNES, it: int, norms: tuple[float, float, float]) -> int:
        xnorm, ynorm, fnorm = norms
        R = PETSc.SNES.ConvergedReason
        rtol, atol, stol, _ = snes.getTolerances()
        if it == 0:
            self.at_roundoff = False
            self._fnorm0 = fnorm
            self._target = fnorm * rtol
            self._smallest = fnorm
        if math.isnan(fnorm) or math.isinf(fnorm):
            return R.DIVERGED_FUNCTION_NANORINF
        if fnorm < atol:
            return R.CONVERGED_FNORM_ABS
        if it == 0:
            return R.ITERATING
        if fnorm <= self._target:
            return R.CONVERGED_FNORM_RELATIVE
        if ynorm < stol * xnorm:
            return R.CONVERGED_SNORM_RELATIVE
        divtol = snes.getDivergenceTolerance()
        if divtol > 0 and fnorm > divtol * self._fnorm0:
            return R.DIVERGED_DTOL
        stagnated = fnorm >= STAGNATION * self._smallest
        self._smallest = min(self._smallest, fnorm)
        if stagnated and ynorm <= TINY_STEP * xnorm:
            self.floor = self._roundoff_floor(snes)
            if fnorm <= self.floor:
                self.at_roundoff = True
                return R.CONVERGED_FNORM_ABS
        return R.ITERATING

    @property
    def initial_norm(self) -> float:
        return self._fnorm0

    @staticmethod
    def _roundoff_floor(snes: PETSc.SNES) -> float:
        A = snes.getJacobian()[0]
        x = snes.getSolution()
        try:
            a_norm = norm(A, PETSc.NormType.INFINITY)
        except PETSc.Error:  # a matrix-free Jacobian: no floor
            return 0.0
        n = x.getSize()
        eps = float(np.finfo(np.float64).eps)
        return FLOOR_FACTOR * math.sqrt(n) * eps * a_norm * norm(x, PETSc.NormType.INFINITY)
