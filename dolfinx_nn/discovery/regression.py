"""Sparse regression with model selection: which terms make up ``u_t = sum_k c_k T_k``?

Sequential thresholded ridge regression (STRidge) runs along a path of thresholds; every
distinct support it visits is refitted by least squares and scored by k-fold cross-validation.
The Pareto front (number of terms vs error) is reported and one model is selected from it by a
criterion from :data:`SELECTION_CRITERIA`.  The default, ``cv-1se``, is the one-standard-error
rule (Breiman et al., *Classification and Regression Trees*, 1984; Hastie, Tibshirani &
Friedman, *The Elements of Statistical Learning*, 2nd ed., sec. 7.10): the fewest terms whose
cross-validation error lies within one standard error of the best.  The folds are contiguous
blocks in time (:func:`block_folds`), so that the spread over folds measures how much a model
depends on *where* it is fitted, not the (tiny) sampling noise of neighbouring points of a
smooth surrogate.

:func:`collinearity` reports library columns that are nearly linear combinations of others
(e.g. ``u_xx`` and ``u`` once a diffusing field is a single Fourier mode), where no data can
tell the terms apart.

Regression happens in the surrogate's normalised variables (well conditioned); the
coefficients are then converted to the data's units with the exact factors of
:func:`~dolfinx_nn.discovery.library.term_scale`.  Thresholds act on the *relative
contribution* ``|c_k| ||T_k|| / ||u_t||`` of a term, which is invariant under any rescaling of
the data, so the selected support does not depend on units either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from dolfinx_nn.discovery.library import Term, parse_term, term_name, term_scale
from dolfinx_nn.discovery.surrogate import Normalisation

__all__ = [
    "SELECTION_CRITERIA",
    "Candidate",
    "RegressionResult",
    "block_folds",
    "collinearity",
    "physical_coefficients",
    "score_support",
    "sparse_regression",
    "stridge",
]


def stridge(
    theta: np.ndarray, y: np.ndarray, threshold: float, ridge: float = 1e-6, max_iter: int = 20
) -> np.ndarray:
    """Sequential thresholded ridge regression.

    Args:
        theta: features, shape (n, p).
        y: target, shape (n,).
        threshold: drop terms whose relative contribution ``|c_k| ||theta_k|| / ||y||`` is
            below this value.
        ridge: Tikhonov parameter on the column-normalised problem.
        max_iter: most thresholding sweeps.

    Returns:
        Boolean support of length p.
    """
    norms = np.linalg.norm(theta, axis=0)
    norms[norms == 0] = 1.0
    a = theta / norms
    ynorm = np.linalg.norm(y) or 1.0
    active = np.ones(theta.shape[1], dtype=bool)
    for _ in range(max_iter):
        if not active.any():
            break
        sub = a[:, active]
        w = np.linalg.solve(sub.T @ sub + ridge * np.eye(sub.shape[1]), sub.T @ y)
        keep = np.abs(w) / ynorm >= threshold
        if keep.all():
            break
        idx = np.flatnonzero(active)
        active[idx[~keep]] = False
    return active


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One support on the threshold path, refitted by least squares."""

    support: tuple[int, ...]
    coefficients: np.ndarray  # raw (network variables), one per support entry
    train_error: float  # relative residual ||y - theta c|| / ||y|| on all points
    cv_error: float  # mean relative residual on the held-out folds
    cv_se: float = 0.0  # standard error of that mean (spread over folds / sqrt(folds))

    @property
    def complexity(self) -> int:
        return len(self.support)


def _lstsq(theta: np.ndarray, y: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(theta, axis=0)
    norms[norms == 0] = 1.0
    c, *_ = np.linalg.lstsq(theta / norms, y, rcond=None)
    return c / norms


def score_support(
    theta: np.ndarray, y: np.ndarray, support: tuple[int, ...], fold: np.ndarray
) -> Candidate:
    """Least-squares refit of ``support`` and its cross-validation error over the folds."""
    sub = theta[:, list(support)]
    ynorm = np.linalg.norm(y) or 1.0
    coef = _lstsq(sub, y) if support else np.zeros(0)
    train = float(np.linalg.norm(y - sub @ coef) / ynorm)
    errors = []
    for k in np.unique(fold):
        test = fold == k
        c = _lstsq(sub[~test], y[~test]) if support else np.zeros(0)
        errors.append(np.linalg.norm(y[test] - sub[test] @ c) / (np.linalg.norm(y[test]) or 1.0))
    se = float(np.std(errors, ddof=1) / np.sqrt(len(errors))) if len(errors) > 1 else 0.0
    return Candidate(support, coef, train, float(np.mean(errors)), se)


def block_folds(t: np.ndarray, folds: int) -> np.ndarray:
    """Fold labels of points with times ``t``: ``folds`` contiguous time blocks of equal size."""
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    order = np.argsort(t, kind="stable")
    labels = np.empty(t.size, dtype=np.int64)
    labels[order] = np.arange(t.size) * folds // max(t.size, 1)
    return labels


def _select_cv(front: list[Candidate], n: int, tolerance: float) -> Candidate:
    best = min(c.cv_error for c in front)
    good = [c for c in front if c.cv_error <= best * (1.0 + tolerance)]
    return min(good, key=lambda c: c.complexity)


def _select_one_se(front: list[Candidate], n: int, tolerance: float) -> Candidate:
    best = min(front, key=lambda c: c.cv_error)
    good = [c for c in front if c.cv_error <= best.cv_error + best.cv_se]
    return min(good, key=lambda c: c.complexity)


Rule = Callable[[list[Candidate], int, float], Candidate]


def _select_ic(penalty: Callable[[int, int], float]) -> Rule:
    def select(front: list[Candidate], n: int, tolerance: float) -> Candidate:
        return min(
            front,
            key=lambda c: n * np.log(max(c.train_error, 1e-300) ** 2) + penalty(c.complexity, n),
        )

    return select


#: Model selection on the Pareto front: name -> rule(front, n_points, tolerance).
#: ``cv-1se``: the fewest terms whose cross-validation error is within one standard error of
#: the best; ``cv``: the fewest terms whose cross-validation error is within
#: ``(1 + tolerance)`` of the best; ``aic``/``bic``: Akaike / Bayesian information criteria of
#: the relative residual.
SELECTION_CRITERIA: dict[str, Rule] = {
    "cv-1se": _select_one_se,
    "cv": _select_cv,
    "aic": _select_ic(lambda k, n: 2.0 * k),
    "bic": _select_ic(lambda k, n: k * np.log(n)),
}


@dataclasses.dataclass(frozen=True)
class RegressionResult:
    """Outcome of :func:`sparse_regression` (raw coefficients, in network variables)."""

    terms: list  # the library: strong terms or names
    selected: Candidate
    front: list[Candidate]
    candidates: list[Candidate]

    def names(self, candidate: Candidate) -> dict[str, float]:
        """Term name -> raw coefficient of a candidate."""
        return {
            t if isinstance(t, str) else term_name(t): float(c)
            for t, c in zip(
                (self.terms[i] for i in candidate.support), candidate.coefficients, strict=True
            )
        }

    def raw_coefficients(self) -> dict[str, float]:
        """Selected term name -> coefficient in the network's normalised variables."""
        return self.names(self.selected)


def sparse_regression(
    theta: np.ndarray,
    y: np.ndarray,
    terms: Sequence[Term] | Sequence[str],
    criterion: str = "cv-1se",
    tolerance: float = 0.1,
    thresholds: Sequence[float] | None = None,
    folds: int = 5,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> RegressionResult:
    """STRidge along a threshold path, Pareto front and model selection.

    Args:
        theta: features, shape (n, p) (columns in the order of ``terms``).
        y: time derivative, shape (n,).
        terms: the library.
        criterion: a key of :data:`SELECTION_CRITERIA`.
        tolerance: relative slack of the ``cv`` criterion.
        thresholds: relative-contribution thresholds to try (default: 60 values, 1e-4..1).
        folds: cross-validation folds (when ``groups`` is not given: random folds).
        seed: seed of the random fold assignment.
        groups: fold label of each point, e.g. from :func:`block_folds`.
    """
    if criterion not in SELECTION_CRITERIA:
        raise ValueError(
            f"unknown selection criterion {criterion!r}; choose one of: "
            f"{', '.join(SELECTION_CRITERIA)}"
        )
    if theta.shape != (y.size, len(terms)):
        raise ValueError(f"theta has shape {theta.shape}, expected ({y.size}, {len(terms)})")
    if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(y))):
        raise ValueError("features or time derivative hold NaN/inf; check the surrogate fit")
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if groups is None:
        groups = np.random.default_rng(seed).permutation(y.size) % folds
    elif groups.shape != y.shape or np.unique(groups).size < 2:
        raise ValueError(f"groups must label each of the {y.size} points, with >= 2 folds")
    grid = np.geomspace(1e-4, 1.0, 60) if thresholds is None else np.asarray(thresholds, float)
    supports = {
        tuple(int(i) for i in np.flatnonzero(stridge(theta, y, float(tol)))) for tol in grid
    }
    candidates = sorted(
        (score_support(theta, y, s, groups) for s in supports if s),
        key=lambda c: (c.complexity, c.cv_error),
    )
    if not candidates:
        raise ValueError("every threshold removed all terms; lower the thresholds")
    front: list[Candidate] = []
    for c in candidates:  # best of each complexity, kept if it beats every simpler model
        if (not front or c.complexity > front[-1].complexity) and (
            not front or c.cv_error < front[-1].cv_error
        ):
            front.append(c)
    selected = SELECTION_CRITERIA[criterion](front, y.size, tolerance)
    return RegressionResult(list(terms), selected, front, candidates)


def physical_coefficients(
    raw: dict[str, float], terms: Sequence[Term] | None, normalisation: Normalisation
) -> dict[str, float]:
    """Convert raw coefficients to the data's units (exact; see the module docstring).

    With ``v_tau = sum_k r_k T_k(v)``, ``u_t = (U / T) v_tau`` and ``T_k(u) = F_k T_k(v)``
    the physical coefficients are ``c_k = r_k U / (T F_k)``.  ``terms=None``: the terms are
    parsed from the names.
    """
    nrm = normalisation
    dim = nrm.x_center.size
    by_name = {term_name(t): t for t in terms} if terms is not None else {}
    out = {}
    for name, r in raw.items():
        term = by_name[name] if name in by_name else parse_term(name, dim)
        f = term_scale(term, nrm.x_scale, nrm.u_scale)
        out[name] = r * nrm.u_scale / (nrm.t_scale * f)
    return out


def collinearity(
    theta: np.ndarray, terms: Sequence[Term] | Sequence[str], threshold: float = 0.999
) -> dict:
    """Near-linear dependencies among the library columns.

    Columns are normalised to unit length; reported are the condition number of the
    normalised matrix, each column's variance inflation factor ``1 / (1 - R_k^2)``
    (``R_k^2``: the fraction of column k explained by the other columns; Belsley, Kuh &
    Welsch, *Regression Diagnostics*, 1980) and the pairs of columns whose cosine exceeds
    ``threshold`` in absolute value, with the ratio of their coefficients that leaves the
    right-hand side unchanged.

    Args:
        theta: features, shape (n, p).
        terms: the library (p terms, or their names).
        threshold: |cosine| above which a pair of columns is reported.

    Returns:
        ``{"condition_number", "vif": {term: value}, "pairs": [{"terms", "cosine"}]}``.
    """
    names = [t if isinstance(t, str) else term_name(t) for t in terms]
    norms = np.linalg.norm(theta, axis=0)
    a = theta / np.where(norms > 0, norms, 1.0)
    singular = np.linalg.svd(a, compute_uv=False)
    condition = float(singular[0] / singular[-1]) if singular[-1] > 0 else float("inf")
    gram = a.T @ a
    try:
        diag = np.diag(np.linalg.inv(gram))
        vif = {n: float(v) for n, v in zip(names, diag, strict=True)}
    except np.linalg.LinAlgError:
        vif = {n: float("inf") for n in names}
    pairs = []
    p = len(names)
    for i in range(p):
        for j in range(i + 1, p):
            if abs(gram[i, j]) >= threshold:
                pairs.append({"terms": [names[i], names[j]], "cosine": float(gram[i, j])})
    return {"condition_number": condition, "vif": vif, "pairs": pairs, "threshold": threshold}
