"""Discover ``u_t = F(u, grad u, D^2 u)`` from scattered data: surrogate, features, regression."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from mpi4py import MPI

import numpy as np

from dolfinx_nn.discovery.data import SpaceTimeData
from dolfinx_nn.discovery.equation import format_equation
from dolfinx_nn.discovery.library import Term, max_order, parse_library, term_name
from dolfinx_nn.discovery.regression import (
    Candidate,
    RegressionResult,
    block_folds,
    collinearity,
    physical_coefficients,
    score_support,
    sparse_regression,
)
from dolfinx_nn.discovery.surrogate import (
    FitReport,
    Normalisation,
    SurrogateBase,
    SurrogateConfig,
    fit_surrogate,
    term_features,
)
from dolfinx_nn.discovery.weak import (
    WeakSystem,
    strong_coefficients,
    test_function_scales,
    weak_library,
    weak_name,
    weak_system,
)

__all__ = ["FORMULATIONS", "Discovery", "DiscoveryConfig", "discover", "regress", "regress_weak"]

#: Regression formulations: derivatives of the surrogate (``strong``), integrals against test
#: functions (``weak``, needs a mesh; :mod:`~dolfinx_nn.discovery.weak`).
FORMULATIONS = ("strong", "weak")


@dataclasses.dataclass
class DiscoveryConfig:
    """Settings of :func:`discover`.

    Attributes:
        library: preset name or comma-separated term names
            (see :func:`~dolfinx_nn.discovery.library.parse_library`).
        criterion: model selection, a key of
            :data:`~dolfinx_nn.discovery.regression.SELECTION_CRITERIA`.
        tolerance: relative slack of the ``cv`` criterion.
        folds: cross-validation folds of the regression (contiguous time blocks).
        trim: fraction of the time span dropped at each end when evaluating features (the
            surrogate's time derivative is least accurate there).
        max_feature_points: most data points used for the regression (a random subset).
        weak_centers: most space centres of weak-form test functions (a random subset of the
            stations deep enough inside the domain).
        surrogate: network and fit.
        seed: seed of the subsets.
    """

    library: str | Sequence[str] = "quadratic"
    criterion: str = "cv-1se"
    tolerance: float = 0.2
    folds: int = 5
    trim: float = 0.1
    max_feature_points: int = 20_000
    weak_centers: int = 64
    surrogate: SurrogateConfig = dataclasses.field(default_factory=SurrogateConfig)
    seed: int = 0


@dataclasses.dataclass
class Discovery:
    """A discovered equation and how it was found."""

    terms: list[Term]
    surrogate: SurrogateBase
    fit: FitReport
    regression: RegressionResult
    raw_coefficients: dict[str, float]  # in the surrogate's normalised variables
    coefficients: dict[str, float]  # in the data's units
    timings: dict[str, float]
    collinearity: dict = dataclasses.field(default_factory=dict)  # see regression.collinearity
    formulation: str = "strong"  # or "weak" (see dolfinx_nn.discovery.weak)
    details: dict = dataclasses.field(default_factory=dict)  # e.g. the weak test functions
    weak_terms: list = dataclasses.field(default_factory=list)  # the weak library

    @property
    def equation(self) -> str:
        """The equation as a readable formula in the data's units."""
        return format_equation(self.coefficients)

    def candidate_coefficients(self, candidate: Candidate) -> dict[str, float]:
        """A candidate's coefficients as strong terms in the data's units."""
        raw = self.regression.names(candidate)
        if self.formulation == "weak":
            by_name = {weak_name(t): t for t in self.weak_terms}
            raw = strong_coefficients({by_name[n]: c for n, c in raw.items()})
        return physical_coefficients(raw, None, self.surrogate.normalisation)

    def pareto_front(self) -> list[dict]:
        """Complexity, errors and physical coefficients of each model on the Pareto front."""
        return [
            {
                "complexity": c.complexity,
                "train_error": c.train_error,
                "cv_error": c.cv_error,
                "cv_standard_error": c.cv_se,
                "terms": list(self.regression.names(c)),
                "coefficients": self.candidate_coefficients(c),
            }
            for c in self.regression.front
        ]


def _feature_points(
    data: SpaceTimeData, trim: float, limit: int, seed: int, stations: np.ndarray | None,
    window: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim must lie in [0, 0.5), got {trim}")
    k, i = np.nonzero(~np.isnan(data.u))
    x, t = data.x[i], data.t[k]
    start, end = window or (data.t[0], data.t[-1])
    span = end - start
    inside = (t >= start + trim * span) & (t <= end - trim * span)
    if stations is not None:
        stations = np.asarray(stations)
        if stations.shape != (data.x.shape[0],) or stations.dtype != bool:
            raise ValueError(
                f"stations must be a boolean mask of shape ({data.x.shape[0]},), got "
                f"{stations.dtype} of shape {stations.shape}"
            )
        inside &= stations[i]
    keep = np.flatnonzero(inside)
    if keep.size == 0:
        raise ValueError(
            f"trim={trim} and the station mask leave no data points for the regression"
        )
    if keep.size > limit:
        keep = np.sort(np.random.default_rng(seed).choice(keep, limit, replace=False))
    return x[keep], t[keep], i[keep]


def regress(
    surrogate: SurrogateBase,
    fit: FitReport,
    data: SpaceTimeData,
    config: DiscoveryConfig,
    stations: np.ndarray | None = None,
    distance: np.ndarray | None = None,
) -> Discovery:
    """Features of a fitted surrogate, sparse regression and conversion to data units.

    ``stations`` (boolean, one per station) restricts the regression to some stations, e.g.
    those away from the boundary, where the surrogate's derivatives are one-sided.  Without
    it, and given ``distance`` (of each station to the domain boundary), the regression is
    repeated at the stations farther than 0 and multiples of the median distance
    (:data:`RADIUS_FACTORS`) from the boundary, and the margin whose selected model has the
    smallest cross-validation error is kept (reported in ``details["margin_search"]``).
    """
    terms = parse_library(config.library, data.dim)
    start = time.perf_counter()
    window = None
    if "first_time" in fit.scales:  # the snapshots the surrogate was fitted to
        window = (fit.scales["first_time"], fit.scales["last_time"])
    x, t, index = _feature_points(
        data, config.trim, config.max_feature_points, config.seed, stations, window
    )
    theta, v_tau = term_features(surrogate, x, t, terms)
    features_s = time.perf_counter() - start
    start = time.perf_counter()
    margins = [0.0]
    if stations is None and distance is not None:
        margins += [float(np.median(distance)) * f for f in RADIUS_FACTORS]
    tried: list[dict[str, Any]] = []
    results: list[_Scale[np.ndarray]] = []
    for margin in margins:
        rows = (
            distance[index] > margin if distance is not None and margin > 0
            else np.ones(t.size, dtype=bool)
        )
        if rows.sum() < max(MIN_POINTS_PER_TERM * len(terms), 2 * config.folds):
            tried.append({"margin": margin, "points": int(rows.sum()), "cv_error": None})
            continue
        result = sparse_regression(
            theta[rows], v_tau[rows], terms, config.criterion, config.tolerance,
            folds=config.folds, groups=block_folds(t[rows], config.folds),
        )
        tried.append({"margin": margin, "points": int(rows.sum()),
                      "cv_error": result.selected.cv_error,
                      "selected": list(result.raw_coefficients())})
        results.append(_Scale(result, theta[rows], v_tau[rows], block_folds(t[rows], config.folds),
                              rows))
    chosen, frequencies = _select_across(results, config.criterion)
    result, rows = results[chosen].result, results[chosen].extra
    tried[[i for i, r in enumerate(tried) if r["cv_error"] is not None][chosen]]["chosen"] = True
    regression_s = time.perf_counter() - start
    raw = result.raw_coefficients()
    return Discovery(
        terms=terms,
        surrogate=surrogate,
        fit=fit,
        regression=result,
        raw_coefficients=raw,
        coefficients=physical_coefficients(raw, terms, surrogate.normalisation),
        timings={"features_s": features_s, "regression_s": regression_s},
        collinearity=collinearity(theta[rows], terms),
        details=(
            {"margin_search": tried, "term_frequencies": frequencies} if len(margins) > 1 else {}
        ),
    )


#: Test-function radii tried, as multiples of the median distance of the stations to the
#: boundary; the radius whose selected model has the smallest cross-validation error wins.
RADIUS_FACTORS = (0.5, 0.71, 1.0, 1.41, 2.0, 2.83)

#: Fewest regression points per library term for a margin of the strong form to be tried.
MIN_POINTS_PER_TERM = 10

#: Time centres of the weak-form test functions.
TIME_CENTERS = 8


@dataclasses.dataclass
class _Scale[E]:
    """One regression of the library at one nuisance scale (a margin or a radius), with what
    the caller needs of it again (``extra``: the rows used, the weak system)."""

    result: RegressionResult
    matrix: np.ndarray
    target: np.ndarray
    groups: np.ndarray
    extra: E


def _select_across[E](scales: list[_Scale[E]], criterion: str) -> tuple[int, dict[str, float]]:
    """One model from regressions of the same library at several nuisance scales.

    With ``cv-1se``: an ensemble vote (bagging over the scales, in the spirit of stability
    selection, Meinshausen & Buehlmann, *J. R. Stat. Soc. B* 72, 2010, and ensemble SINDy,
    Fasel et al., *Proc. R. Soc. A* 478, 2022): a term is kept when the models selected at
    more than half of the scales hold it; the kept support is refitted at every scale and the
    scale with the smallest cross-validation error gives the coefficients.  Terms that only
    fit the surrogate's errors at one scale drop out.  Other criteria (or an empty vote): the
    scale whose selected model has the smallest cross-validation error.  The chosen
    regression's ``selected`` model is replaced (in place).

    Returns:
        The chosen scale's index and each term's selection frequency.
    """
    names = scales[0].result.terms
    counts = np.zeros(len(names))
    for scale in scales:
        counts[list(scale.result.selected.support)] += 1
    frequency = counts / len(scales)
    label = [t if isinstance(t, str) else term_name(t) for t in names]
    frequencies = {label[i]: float(f) for i, f in enumerate(frequency) if f > 0}
    support = tuple(int(i) for i in np.flatnonzero(frequency > 0.5))
    if criterion != "cv-1se" or not support:
        best = min(range(len(scales)), key=lambda i: scales[i].result.selected.cv_error)
        return best, frequencies
    refits = [score_support(s.matrix, s.target, support, s.groups) for s in scales]
    best = min(range(len(scales)), key=lambda i: refits[i].cv_error)
    scales[best].result = dataclasses.replace(scales[best].result, selected=refits[best])
    return best, frequencies


def _library_shape(terms: Sequence[Term]) -> tuple[int, int, bool]:
    """Highest derivative order, highest number of factors, constant term present."""
    return max_order(terms), max((len(t) for t in terms), default=1), () in terms


def regress_weak(
    surrogate: SurrogateBase,
    fit: FitReport,
    data: SpaceTimeData,
    config: DiscoveryConfig,
    distance: np.ndarray,
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> Discovery:
    """Weak-form regression (:mod:`~dolfinx_nn.discovery.weak`) with a fitted surrogate.

    The weak library holds ``d^a (u^p)`` with the derivative order and the power of the
    strong library ``config.library``; the selected model is reported as strong terms.

    Args:
        surrogate: fitted surrogate (identical on every rank).
        fit: its fit report (the fitted time window).
        data: the data it was fitted to.
        config: settings.
        distance: distance of each station to the domain boundary (data units).
        comm: ranks that share the test functions.
    """
    strong = parse_library(config.library, data.dim)
    order, degree, constant = _library_shape(strong)
    terms = weak_library(data.dim, order, degree, constant)
    nrm = surrogate.normalisation
    first = fit.scales.get("first_time", float(data.t[0]))
    last = fit.scales.get("last_time", float(data.t[-1]))
    snapshots = int(np.count_nonzero((data.t >= first) & (data.t <= last)))
    start = time.perf_counter()
    scale = float(nrm.x_scale[0])
    median, half = test_function_scales(
        distance, scale, 2.0 * (last - first) / (2.0 * nrm.t_scale), snapshots
    )
    names = [weak_name(t) for t in terms]
    rows_needed = 2 * len(terms)  # at least twice as many test functions as terms
    tried: list[dict] = []
    results: list[_Scale[WeakSystem]] = []
    for factor in RADIUS_FACTORS:
        radius = median * factor
        deep = np.flatnonzero(distance > radius * scale)
        if deep.size * TIME_CENTERS < rows_needed:
            tried.append({"radius": radius * scale, "centers": int(deep.size), "cv_error": None})
            continue
        if deep.size > config.weak_centers:
            rng = np.random.default_rng(config.seed)
            deep = np.sort(rng.choice(deep, config.weak_centers, replace=False))
        # about four quadrature nodes per feature length 1 / input_scale across the radius
        nodes = int(np.clip(np.ceil(4.0 * radius * fit.scales.get("input_scale", 1.0)), 16, 64))
        system = weak_system(
            surrogate, terms, data.x[deep], radius, (first, last), half,
            time_centers=TIME_CENTERS, radial_points=nodes, comm=comm,
        )
        result = sparse_regression(
            system.matrix, system.target, names, config.criterion, config.tolerance,
            folds=config.folds, groups=system.groups % config.folds,
        )
        tried.append({"radius": radius * scale, "centers": int(deep.size),
                      "cv_error": result.selected.cv_error,
                      "selected": list(result.raw_coefficients())})
        results.append(_Scale(result, system.matrix, system.target,
                              system.groups % config.folds, system))
    if not results:
        raise ValueError(
            f"too few stations lie deep enough inside the domain for {rows_needed} test "
            f"functions (radii tried: {[round(t['radius'], 4) for t in tried]}); "
            "weak form impossible"
        )
    chosen, frequencies = _select_across(results, config.criterion)
    result, system = results[chosen].result, results[chosen].extra
    tried[[i for i, r in enumerate(tried) if r["cv_error"] is not None][chosen]]["chosen"] = True
    features_s = time.perf_counter() - start
    found = Discovery(
        terms=strong,
        surrogate=surrogate,
        fit=fit,
        regression=result,
        raw_coefficients={},
        coefficients={},
        timings={"weak_system_and_regression_s": features_s},
        collinearity=collinearity(system.matrix, names),
        formulation="weak",
        details={"test_functions": system.scales, "radius_search": tried,
                 "term_frequencies": frequencies, "library": names},
        weak_terms=terms,
    )
    found.raw_coefficients = {weak_name(t): c for t, c in zip(
        (terms[i] for i in result.selected.support), result.selected.coefficients, strict=True
    )}
    found.coefficients = found.candidate_coefficients(result.selected)
    return found


def discover(
    data: SpaceTimeData,
    config: DiscoveryConfig | None = None,
    normalisation: Normalisation | None = None,
    comm: MPI.Comm = MPI.COMM_WORLD,
    stations: np.ndarray | None = None,
    formulation: str = "strong",
    mesh=None,
    distance: np.ndarray | None = None,
) -> Discovery:
    """Fit a surrogate to ``data`` and select the terms of ``u_t = sum_k c_k T_k``.

    The surrogate fit is data parallel over ``comm``; features and regression are cheap and
    run identically on every rank, so every rank returns the same equation.

    Args:
        data: the observations used for discovery (hold out later snapshots yourself, e.g.
            with :meth:`~dolfinx_nn.discovery.data.SpaceTimeData.split`).
        config: settings; defaults to :class:`DiscoveryConfig`.
        normalisation: the surrogate's variables; defaults to
            :meth:`~dolfinx_nn.discovery.surrogate.Normalisation.from_data`.
        comm: communicator.
        stations: optional boolean mask of the stations whose samples enter the regression
            (the surrogate is fitted to all of them), e.g. from
            :func:`~dolfinx_nn.discovery.simulation.boundary_distance`.
        formulation: a key of :data:`FORMULATIONS`.
        mesh: the domain in data units (``weak``: gives the stations' distance to the
            boundary).
        distance: distance of each station to the boundary (``weak``; when not given: from
            ``mesh``, or from the data's bounding box).
    """
    config = config or DiscoveryConfig()
    if formulation not in FORMULATIONS:
        raise ValueError(
            f"unknown formulation {formulation!r}; choose one of: {', '.join(FORMULATIONS)}"
        )
    parse_library(config.library, data.dim)  # fail early on a bad library
    start = time.perf_counter()
    surrogate, fit = fit_surrogate(data, config.surrogate, normalisation, comm)
    fit_s = time.perf_counter() - start
    if formulation == "weak":
        if distance is None and mesh is not None:
            from dolfinx_nn.discovery.simulation import boundary_distance

            distance = boundary_distance(mesh, data.x)
        elif distance is None:
            lo, hi = data.x.min(axis=0), data.x.max(axis=0)
            distance = np.minimum(data.x - lo, hi - data.x).min(axis=1)
        found = regress_weak(surrogate, fit, data, config, distance, comm)
    else:
        found = regress(surrogate, fit, data, config, stations)
    found.timings = {"surrogate_fit_s": fit_s, **found.timings}
    return found
