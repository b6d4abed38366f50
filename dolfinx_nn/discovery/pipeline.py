"""Discover ``u_t = F(u, grad u, D^2 u)`` from scattered data: surrogate, features, regression."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from mpi4py import MPI

import numpy as np

from dolfinx_nn.discovery.data import SpaceTimeData
from dolfinx_nn.discovery.equation import format_equation
from dolfinx_nn.discovery.library import Term, parse_library, term_name
from dolfinx_nn.discovery.regression import (
    RegressionResult,
    physical_coefficients,
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

__all__ = ["Discovery", "DiscoveryConfig", "discover", "regress"]


@dataclasses.dataclass
class DiscoveryConfig:
    """Settings of :func:`discover`.

    Attributes:
        library: preset name or comma-separated term names
            (see :func:`~dolfinx_nn.discovery.library.parse_library`).
        criterion: model selection, a key of
            :data:`~dolfinx_nn.discovery.regression.SELECTION_CRITERIA`.
        tolerance: relative slack of the ``cv`` criterion.
        trim: fraction of the time span dropped at each end when evaluating features (the
            surrogate's time derivative is least accurate there).
        max_feature_points: most data points used for the regression (a random subset).
        surrogate: network and fit.
        seed: seed of the subset and the folds.
    """

    library: str | Sequence[str] = "quadratic"
    criterion: str = "cv"
    tolerance: float = 0.2
    trim: float = 0.1
    max_feature_points: int = 50_000
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

    @property
    def equation(self) -> str:
        """The equation as a readable formula in the data's units."""
        return format_equation(self.coefficients)

    def pareto_front(self) -> list[dict]:
        """Complexity, errors and physical coefficients of each model on the Pareto front."""
        rows = []
        for c in self.regression.front:
            raw = {
                term_name(self.terms[i]): float(w)
                for i, w in zip(c.support, c.coefficients, strict=True)
            }
            rows.append(
                {
                    "complexity": c.complexity,
                    "train_error": c.train_error,
                    "cv_error": c.cv_error,
                    "coefficients": physical_coefficients(
                        raw, self.terms, self.surrogate.normalisation
                    ),
                }
            )
        return rows


def _feature_points(
    data: SpaceTimeData, trim: float, limit: int, seed: int, stations: np.ndarray | None,
    window: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
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
    return x[keep], t[keep]


def regress(
    surrogate: SurrogateBase,
    fit: FitReport,
    data: SpaceTimeData,
    config: DiscoveryConfig,
    stations: np.ndarray | None = None,
) -> Discovery:
    """Features of a fitted surrogate, sparse regression and conversion to data units.

    ``stations`` (boolean, one per station) restricts the regression to some stations, e.g.
    those away from the boundary, where the surrogate's derivatives are one-sided.
    """
    terms = parse_library(config.library, data.dim)
    start = time.perf_counter()
    window = None
    if "first_time" in fit.scales:  # the snapshots the surrogate was fitted to
        window = (fit.scales["first_time"], fit.scales["last_time"])
    x, t = _feature_points(
        data, config.trim, config.max_feature_points, config.seed, stations, window
    )
    theta, v_tau = term_features(surrogate, x, t, terms)
    features_s = time.perf_counter() - start
    start = time.perf_counter()
    result = sparse_regression(
        theta, v_tau, terms, config.criterion, config.tolerance, seed=config.seed
    )
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
    )


def discover(
    data: SpaceTimeData,
    config: DiscoveryConfig | None = None,
    normalisation: Normalisation | None = None,
    comm: MPI.Comm = MPI.COMM_WORLD,
    stations: np.ndarray | None = None,
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
    """
    config = config or DiscoveryConfig()
    parse_library(config.library, data.dim)  # fail early on a bad library
    start = time.perf_counter()
    surrogate, fit = fit_surrogate(data, config.surrogate, normalisation, comm)
    fit_s = time.perf_counter() - start
    found = regress(surrogate, fit, data, config, stations)
    found.timings = {"surrogate_fit_s": fit_s, **found.timings}
    return found
