"""PETSc options of the bridge's solvers: defaults only where the user set nothing.

The user sets options in two places: the ``petsc_options`` dictionary, and PETSc's options
database (``PETSC_OPTIONS="-poisson_ksp_type cg"``, ``-poisson_ksp_monitor`` on the command
line).  A default is pushed only for an option that neither sets; where both set an option,
the dictionary wins (as in DOLFINx's problem classes).  An option pushed onto the database is
removed again after ``setFromOptions``, and a database value it covered is put back, so nothing
the user put there is lost.

The adjoint solve gets options of its own under ``f"{prefix}adjoint_"``.  It inherits the
forward solver's *method* (KSP type, preconditioner, factorization package), never its
*tolerances*: an inexact-Newton setting such as ``ksp_rtol=0.3`` is fine for the forward
solve, whose accuracy the SNES controls, but would make the gradient inexact.  The adjoint
tolerances default to :data:`ADJOINT_TOLERANCES` unless set under the adjoint prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from petsc4py import PETSc

#: Direct solve, used unless the user chooses a KSP type or a preconditioner.
DIRECT_SOLVER: dict[str, object] = {
    "ksp_type": "preonly",
    "pc_type": "lu",
    "pc_factor_mat_solver_type": "mumps",
}
#: Relative tolerance of a Krylov solve of a *linear* forward problem when the user chose a
#: Krylov method without a tolerance: the gradient is that of the exact solve, so the solve
#: must be close to exact (PETSc's own default, 1e-5, gives gradients correct to ~1e-5 only).
LINEAR_KRYLOV_RTOL = 1e-10
#: Newton's defaults.  Plain Newton (as DOLFINx's own NewtonSolver), with a backtracking line
#: search as the fallback when it diverges; a relative tolerance tight enough for exact
#: gradients, and an absolute tolerance that cannot stop at the start (the residual's scale is
#: the user's).  Where 1e-12 lies below round-off, the stopping test of
#: :mod:`dolfinx_nn._convergence` stops at the residual's round-off floor instead.
NEWTON: dict[str, object] = {
    "snes_type": "newtonls",
    "snes_linesearch_type": "basic",
}
#: Tolerances of every SNES (Newton's or another type the user chose).
SNES_TOLERANCES: dict[str, object] = {
    "snes_rtol": 1e-12,
    "snes_atol": 1e-50,
    "snes_stol": 0.0,
    "snes_max_it": 50,
}
#: Iteration limit of SNES types other than Newton's line search (quasi-Newton, trust region).
OTHER_SNES_MAX_IT = 1000
#: SNES types that do not solve the nonlinear problem (one linear solve): refused.
NOT_SOLVING = ("ksponly", "ksptransposeonly")
#: Line search tried when plain Newton diverges and the user chose none.
FALLBACK_LINE_SEARCH = "bt"
#: Tolerances of the adjoint solve unless set under the adjoint prefix.
ADJOINT_TOLERANCES: dict[str, object] = {"ksp_rtol": 1e-12, "ksp_atol": 1e-50, "ksp_max_it": 10000}
#: Options that set how accurately a Krylov solve is done (never inherited by the adjoint).
TOLERANCE_OPTIONS = ("ksp_rtol", "ksp_atol", "ksp_divtol", "ksp_max_it")
#: Options of the nonlinear solver, which the adjoint (a linear solve) does not inherit; every
#: other forward option configures the linear solver (``ksp_``, ``pc_``, ``mat_``, and the
#: prefixes of sub-solvers created at set-up: ``telescope_``, ``fieldsplit_``, ``mg_levels_``)
#: and is inherited, tolerances excepted.
NONLINEAR_OPTION_PREFIXES = ("snes_",)
ADJOINT_PREFIX = "adjoint_"
_DIRECT_PCS = ("lu", "cholesky")


def database_options(prefix: str) -> dict[str, object]:
    """Options in PETSc's database under ``prefix``, keys without the prefix."""
    return {
        k[len(prefix) :]: v for k, v in PETSc.Options().getAll().items() if k.startswith(prefix)
    }


@dataclass
class SolverOptions:
    """The options pushed on the forward and adjoint solvers, and what they imply.

    Attributes:
        forward: options pushed under the forward prefix (defaults and the user's dict, minus
            what the database already sets).
        adjoint: options pushed under the adjoint prefix.
        effective: the forward options in force (database included), for decisions.
        adjoint_effective: the adjoint options in force.
        direct: the forward linear solve is a factorization (``preonly`` + LU/Cholesky).
        adjoint_tolerances_set: the user set the adjoint's tolerances (then an inaccurate
            adjoint solve warns instead of raising).
        line_search_set: the user chose the SNES line search or a SNES type other than Newton
            (then no fallback is tried).
        convergence_test_set: the user chose the SNES convergence test (then it is kept).
    """

    forward: dict[str, object]
    adjoint: dict[str, object]
    effective: dict[str, object] = field(default_factory=dict)
    adjoint_effective: dict[str, object] = field(default_factory=dict)
    direct: bool = True
    adjoint_tolerances_set: bool = False
    line_search_set: bool = False
    convergence_test_set: bool = False


def _is_direct(options: dict[str, object]) -> bool:
    return options.get("ksp_type") == "preonly" and options.get("pc_type") in _DIRECT_PCS


def solver_options(user: dict[str, object], prefix: str, linear: bool) -> SolverOptions:
    """Forward and adjoint options from the user's dict, the database and the defaults.

    Args:
        user: the ``petsc_options`` dictionary; keys starting with ``"adjoint_"`` go to the
            adjoint solve.
        prefix: the forward solver's options prefix.
        linear: a KSP solve (True) or a SNES solve (False).
    """
    user_forward = {k: v for k, v in user.items() if not k.startswith(ADJOINT_PREFIX)}
    user_adjoint = {
        k[len(ADJOINT_PREFIX) :]: v for k, v in user.items() if k.startswith(ADJOINT_PREFIX)
    }
    adjoint_prefix = f"{prefix}{ADJOINT_PREFIX}"
    db_adjoint = database_options(adjoint_prefix)
    db_forward = {
        k: v for k, v in database_options(prefix).items() if not k.startswith(ADJOINT_PREFIX)
    }
    chosen = {**db_forward, **user_forward}  # what the user set (the dictionary wins)

    defaults: dict[str, object] = {}
    if "ksp_type" not in chosen and "pc_type" not in chosen:
        defaults.update(DIRECT_SOLVER)
    elif chosen.get("pc_type") in _DIRECT_PCS and "pc_factor_mat_solver_type" not in chosen:
        defaults["pc_factor_mat_solver_type"] = DIRECT_SOLVER["pc_factor_mat_solver_type"]
    if linear:
        if not _is_direct({**defaults, **chosen}) and "ksp_rtol" not in chosen:
            defaults["ksp_rtol"] = LINEAR_KRYLOV_RTOL
    else:
        defaults.update(SNES_TOLERANCES)
        if chosen.get("snes_type", "newtonls") == "newtonls":
            defaults.update(NEWTON)
        else:  # quasi-Newton, trust region, ...: more, cheaper steps to the same tolerance
            defaults["snes_max_it"] = OTHER_SNES_MAX_IT
        if chosen.get("snes_type") in NOT_SOLVING:
            raise ValueError(
                f"snes_type {chosen['snes_type']!r} does one linear solve and does not solve the "
                "nonlinear problem; the gradient would be that of a solution it did not reach. "
                "Use Newton (the default, snes_type newtonls) or another solving SNES type."
            )
    forward = {**{k: v for k, v in defaults.items() if k not in db_forward}, **user_forward}
    effective = {**defaults, **chosen}

    # The adjoint: the forward's method, its own tolerances, then the user's adjoint options.
    inherited = {
        k: v for k, v in effective.items()
        if not k.startswith(NONLINEAR_OPTION_PREFIXES) and k not in TOLERANCE_OPTIONS
    }
    adjoint_chosen = {**db_adjoint, **user_adjoint}
    adjoint_all = {**inherited, **ADJOINT_TOLERANCES, **user_adjoint}
    adjoint_pushed = {k for k in adjoint_all if k not in db_adjoint} | set(user_adjoint)
    if ("ksp_type" not in adjoint_chosen and adjoint_all.get("ksp_type") == "preonly"
            and {**adjoint_all, **db_adjoint}.get("pc_type") not in _DIRECT_PCS):
        # An adjoint preconditioner chosen without a KSP type (-p_adjoint_pc_type sor) over an
        # inherited direct solve: preonly would apply it once. Use a Krylov method.
        adjoint_all["ksp_type"] = "gmres"
    adjoint = {k: v for k, v in adjoint_all.items() if k in adjoint_pushed}
    return SolverOptions(
        forward=forward,
        adjoint=adjoint,
        effective=effective,
        adjoint_effective={**adjoint_all, **db_adjoint, **user_adjoint},
        direct=_is_direct(effective),
        adjoint_tolerances_set=any(k in adjoint_chosen for k in TOLERANCE_OPTIONS),
        line_search_set="snes_linesearch_type" in chosen
        or chosen.get("snes_type", "newtonls") != "newtonls",
        convergence_test_set="snes_convergence_test" in chosen,
    )


class PushedOptions:
    """Options pushed onto PETSc's database for one solver, removed again by :meth:`tidy`.

    Sub-solvers that a preconditioner creates at its set-up (``PCTELESCOPE``'s, a field
    split's, the levels of multigrid) read their options then, at the first solve, not at
    ``setFromOptions``: the options stay in the database until :meth:`tidy` is called after
    that first solve. A value the database held before is put back.
    """

    def __init__(self, prefix: str, options: Mapping[str, object], before: Mapping[str, object]):
        self._names = [f"{prefix}{k}" for k in options]
        self._before = before

    def tidy(self) -> None:
        opts = PETSc.Options()
        for name in self._names:  # PETSc's clear ignores a pushed prefix: use the full name
            if name in self._before:
                value = self._before[name]
                _set_value(opts, name, value if value is not None else "")
            elif opts.hasName(name):
                opts.delValue(name)  # what ``del opts[name]`` calls
        self._names = []


def set_options(
    obj: PETSc.KSP | PETSc.SNES, prefix: str, options: dict[str, object]
) -> PushedOptions:
    """Push ``options`` under ``prefix`` and call ``setFromOptions``; the database is tidied by
    the returned object's ``tidy()`` (after the solver's first solve)."""
    obj.setOptionsPrefix(prefix)
    opts = PETSc.Options()
    before = opts.getAll()
    opts.prefixPush(prefix)
    for k, v in options.items():
        _set_value(opts, k, v)
    obj.setFromOptions()
    opts.prefixPop()
    return PushedOptions(prefix, options, before)


def _set_value(opts: PETSc.Options, name: str, value: object) -> None:
    """``opts[name] = value``: petsc4py stores ``str(value)`` (a bool in lower case) for a value
    of any type, where its stubs name a few types and no item assignment."""
    opts.setValue(name, value)  # type: ignore[arg-type]  # any value: see above
