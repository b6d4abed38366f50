"""Diffusion maps (Coifman & Lafon, 2006) with Nystrom out-of-sample extension.

Given points ``x_1..x_n``, the Gaussian kernel ``K_ij = exp(-|x_i - x_j|^2 / epsilon)`` is
alpha-normalised, ``K^a_ij = K_ij / (q_i^a q_j^a)`` with ``q = K 1``, and turned into the
Markov matrix ``P = D^-1 K^a`` with ``D = diag(K^a 1)``.  The right eigenvectors ``psi_k``
of ``P`` (computed from the symmetric conjugate ``D^-1/2 K^a D^-1/2``), normalised so that
``sum_i pi_i psi_k(x_i)^2 = 1`` with the stationary measure ``pi = d / sum(d)``, give the
diffusion coordinates ``lambda_k^t psi_k`` at diffusion time ``t``.  ``psi_0 = 1`` with
``lambda_0 = 1`` is trivial and left out.

``alpha = 0`` is the classical normalised graph Laplacian, ``alpha = 1/2`` the
Fokker-Planck normalisation, ``alpha = 1`` (default) removes the influence of the sampling
density so that ``P`` approximates the Laplace-Beltrami heat semigroup.

Two eigen-solvers: ``"dense"`` (LAPACK ``eigh`` on the full kernel, for up to a few
thousand points) and ``"sparse"`` (kernel on the symmetrised k-nearest-neighbour graph,
ARPACK Lanczos via :func:`scipy.sparse.linalg.eigsh`).  ``method="auto"`` picks dense up to
``dense_max`` points.

The map is computed in standardised units (the data centred and divided by their RMS
radius, :func:`~dolfinx_nn.diffusion_maps.kernel.standardise`): the result
does not depend on the origin, and data scaled by ``s`` give the same eigenpairs and
``epsilon`` times ``s^2`` (data of size 1e-300 or 1e300 included; see
:mod:`~dolfinx_nn.diffusion_maps.kernel`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
import torch

from dolfinx_nn.diffusion_maps import bandwidth
from dolfinx_nn.diffusion_maps.bandwidth import Bandwidth, automatic_bandwidth
from dolfinx_nn.diffusion_maps.kernel import (
    as_points,
    knn_squared_distances,
    nearest_neighbours,
    squared_distances,
    standardise,
)


@dataclass
class _Kernel:
    """Normalised kernel of a fitted diffusion map (symmetric conjugate and row sums)."""

    symmetric: np.ndarray | scipy.sparse.csr_matrix
    q: np.ndarray  # row sums of K (alpha normalisation)
    d: np.ndarray  # row sums of K^alpha


def _normalise(K, alpha: float) -> _Kernel:
    sparse = scipy.sparse.issparse(K)
    q = np.asarray(K.sum(axis=1)).ravel()
    qa = q**-alpha
    if sparse:
        Ka = scipy.sparse.diags(qa) @ K @ scipy.sparse.diags(qa)
    else:
        Ka = K * qa[:, None] * qa[None, :]
    d = np.asarray(Ka.sum(axis=1)).ravel()
    s = d**-0.5
    if sparse:
        S = (scipy.sparse.diags(s) @ Ka @ scipy.sparse.diags(s)).tocsr()
        S = 0.5 * (S + S.T)
    else:
        S = Ka * s[:, None] * s[None, :]
        S = 0.5 * (S + S.T)
    return _Kernel(S, q, d)


def _dense_eigs(S: np.ndarray, m: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    n = S.shape[0]
    lam, V = scipy.linalg.eigh(S, subset_by_index=[n - m, n - 1])
    return lam, V


def _sparse_eigs(S: scipy.sparse.csr_matrix, m: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    n = S.shape[0]
    v0 = np.random.default_rng(0).standard_normal(n)
    lam, V = scipy.sparse.linalg.eigsh(S, k=m, which="LA", tol=tol, v0=v0)
    return lam, V


#: eigen-solver name -> function(symmetric kernel, number of eigenpairs, tolerance)
EIGENSOLVERS: dict[str, Callable] = {"dense": _dense_eigs, "sparse": _sparse_eigs}


def _fix_signs(V: np.ndarray) -> np.ndarray:
    """Make the entry of largest magnitude of each column positive (deterministic output)."""
    i = np.argmax(np.abs(V), axis=0)
    signs = np.sign(V[i, np.arange(V.shape[1])])
    signs[signs == 0] = 1.0
    return V * signs


def _power(lam: np.ndarray, t: float) -> np.ndarray:
    return np.sign(lam) * np.abs(lam) ** t


class DiffusionMap:
    """Diffusion map of a point cloud with out-of-sample (Nystrom) extension.

    Args:
        n_components: number of non-trivial diffusion coordinates.
        epsilon: kernel bandwidth (data units), or ``"auto"``: the steepest-kernel-sum rule
            (BGH 2015) over k-NN neighbourhoods of the distinct points, kept to the
            bandwidths where the k-NN sum equals the full one to within its standard error
            (:func:`~dolfinx_nn.diffusion_maps.bandwidth.automatic_bandwidth`); the
            minimum-spanning-tree edges longer than ``2 sqrt(epsilon)`` get the weight
            ``exp(-4)`` of an edge of that length, so that no point is cut off the graph
            (optimizer trajectories have large early steps and small late ones; an outlier is
            far from everything) while every other kernel entry keeps the bulk's bandwidth.
        alpha: Coifman-Lafon normalisation exponent in [0, 1] (0, 1/2, 1 are the classical
            choices; default 1).
        t: diffusion time (>= 0).
        method: ``"dense"``, ``"sparse"`` or ``"auto"``.
        k: neighbours per point for the sparse kernel (default ``min(n, 64)``).
        dense_max: largest number of points for which ``"auto"`` picks the dense solver.
        tol: eigen-solver tolerance (sparse solver only).

    Attributes (after :meth:`fit`):
        epsilon_: the bandwidth used, data units (underflows to 0 / overflows to inf for
            data smaller than about 1e-154 / larger than 1e154; ``scaled_epsilon_`` does not).
        scaled_epsilon_: the bandwidth in the standardised units of the fit,
            ``epsilon_ / unit_length_**2``.
        unit_length_: the unit length of the standardised units (RMS radius of the
            points, data units).
        eigenvalues_: the non-trivial eigenvalues ``lambda_1 >= ... >= lambda_m``.
        eigenvectors_: right eigenvectors ``psi_1..psi_m`` of P at the points, shape (n, m).
        coordinates_: diffusion coordinates ``lambda^t psi``, shape (n, m).
        stationary_: the stationary distribution ``pi`` of P.
        kernel_dimension_: twice the slope of the off-diagonal log kernel sum at ``epsilon``
            (only when ``epsilon="auto"``).
        bandwidth_: the :class:`~dolfinx_nn.diffusion_maps.bandwidth.Bandwidth` (auto only);
            ``bandwidth_.summary()`` reports the choice.
    """

    def __init__(
        self,
        n_components: int = 2,
        epsilon: float | str = "auto",
        alpha: float = 1.0,
        t: float = 1,
        method: str = "auto",
        k: int | None = None,
        dense_max: int = 4000,
        tol: float = 1e-10,
    ):
        if not isinstance(n_components, int | np.integer) or n_components < 1:
            raise ValueError(f"n_components must be a positive integer; got {n_components!r}")
        if isinstance(epsilon, str):
            if epsilon != "auto":
                raise ValueError(f"epsilon must be a positive number or 'auto'; got {epsilon!r}")
        elif not (np.isfinite(epsilon) and epsilon > 0):
            raise ValueError(f"epsilon must be a positive number or 'auto'; got {epsilon!r}")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1] (classical: 0, 0.5, 1); got {alpha!r}")
        if not (np.isfinite(t) and t >= 0):
            raise ValueError(f"diffusion time t must be >= 0; got {t!r}")
        if method != "auto" and method not in EIGENSOLVERS:
            valid = ", ".join(["auto", *EIGENSOLVERS])
            raise ValueError(f"unknown method {method!r}; choose one of: {valid}")
        if k is not None and k < 2:
            raise ValueError(f"k must be at least 2; got {k!r}")
        self.n_components = int(n_components)
        self.epsilon = epsilon
        self.alpha = float(alpha)
        self.t = float(t)
        self.method = method
        self.k = k
        self.dense_max = dense_max
        self.tol = tol

    def _resolve_method(self, n: int) -> str:
        if self.method != "auto":
            return self.method
        return "dense" if n <= self.dense_max else "sparse"

    def fit(self, X: np.ndarray | torch.Tensor) -> DiffusionMap:
        """Compute the diffusion map of the rows of ``X`` (shape (n, D))."""
        X = as_points(X)
        n = X.shape[0]
        m = self.n_components + 1
        if m > n - 1:
            raise ValueError(
                f"n_components={self.n_components} is too large for {n} points (max {n - 2})"
            )
        method = self._resolve_method(n)
        self.method_ = method
        self.kernel_dimension_ = None
        self.bandwidth_: Bandwidth | None = None
        if method == "sparse":
            self.k_ = min(n, self.k or 64)
        if self.epsilon == "auto":
            self.bandwidth_ = automatic_bandwidth(X, self.k_ if method == "sparse" else 64)
            centre, scale = self.bandwidth_.centre, self.bandwidth_.scale
            epsilon = self.bandwidth_.scaled_epsilon
            self.epsilon_ = self.bandwidth_.epsilon
            self.kernel_dimension_ = self.bandwidth_.kernel_dimension
        else:
            units = standardise(X)
            centre, scale = units.centre, units.scale
            with np.errstate(over="ignore", under="ignore"):
                epsilon = float(np.float64(self.epsilon) / np.float64(scale) / scale)
            if not (np.isfinite(epsilon) and epsilon > 0.0):
                raise ValueError(
                    f"epsilon={self.epsilon!r} is out of floating-point range relative to the "
                    f"squared size of the data ({scale:.3g}^2)"
                )
            self.epsilon_ = float(self.epsilon)
        self._centre, self.unit_length_, self.scaled_epsilon_ = centre, scale, epsilon
        X = np.asarray((X - centre) / scale)
        if method == "dense":
            K = np.exp(-squared_distances(X) / epsilon)
            if self.bandwidth_ is not None and self.bandwidth_.bridges[0].size:
                rows, cols, _ = self.bandwidth_.bridges
                floor = np.exp(-bandwidth.BRIDGE_EXPONENT)
                K[rows, cols] = K[cols, rows] = np.maximum(K[rows, cols], floor)
        else:
            A = knn_squared_distances(X, self.k_)
            K = A.copy()
            K.data = np.exp(-A.data / epsilon)
            if self.bandwidth_ is not None and self.bandwidth_.bridges[0].size:
                rows, cols, _ = self.bandwidth_.bridges
                floor = np.exp(-bandwidth.BRIDGE_EXPONENT)
                B = scipy.sparse.csr_matrix(
                    (np.full(rows.size, floor), (rows, cols)), shape=(n, n)
                )
                K = K.maximum(B).maximum(B.T).tocsr()
        kernel = _normalise(K, self.alpha)
        lam, V = EIGENSOLVERS[method](kernel.symmetric, m, self.tol)
        order = np.argsort(lam)[::-1]
        lam, V = lam[order], V[:, order]
        psi = V / np.sqrt(kernel.d)[:, None] * np.sqrt(kernel.d.sum())
        psi = _fix_signs(psi)
        self._X = X
        self._q = kernel.q
        self.stationary_ = kernel.d / kernel.d.sum()
        self.trivial_eigenvalue_ = float(lam[0])
        self.eigenvalues_ = lam[1:]
        self.eigenvectors_ = psi[:, 1:]
        self.coordinates_ = self.eigenvectors_ * _power(self.eigenvalues_, self.t)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "eigenvalues_"):
            raise RuntimeError("call fit(X) before using the diffusion map")

    def coordinates(self, t: float | None = None) -> np.ndarray:
        """Diffusion coordinates ``lambda^t psi`` at the training points for time ``t``."""
        self._check_fitted()
        t = self.t if t is None else float(t)
        if t < 0:
            raise ValueError(f"diffusion time t must be >= 0; got {t!r}")
        return self.eigenvectors_ * _power(self.eigenvalues_, t)

    def transform(self, Y: np.ndarray | torch.Tensor, chunk: int = 2048) -> np.ndarray:
        """Nystrom extension: diffusion coordinates of new points ``Y`` (shape (n_new, D)).

        ``psi_k(y) = (1 / lambda_k) sum_j p(y, x_j) psi_k(x_j)`` with the alpha-normalised
        transition probabilities ``p(y, .)`` of the fitted kernel; at the training points of
        a dense fit this reproduces :attr:`coordinates_` exactly (except at the ends of the
        spanning-tree edges added by ``epsilon="auto"``: a new point gets the plain kernel).

        Raises:
            ValueError: a point of ``Y`` is beyond the kernel's reach of every training point.
        """
        self._check_fitted()
        Y = as_points(Y, "Y", min_points=1)
        if Y.shape[1] != self._X.shape[1]:
            raise ValueError(
                f"Y has dimension {Y.shape[1]} but the map was fitted in dimension "
                f"{self._X.shape[1]}"
            )
        Z = (np.asarray(Y) - self._centre) / self.unit_length_
        epsilon = self.scaled_epsilon_
        qa = self._q**-self.alpha
        out = np.empty((Z.shape[0], self.n_components))
        for start in range(0, Z.shape[0], chunk):
            Yc = Z[start : start + chunk]
            with np.errstate(invalid="ignore", divide="ignore"):  # far points: checked below
                if self.method_ == "dense":
                    k = np.exp(-squared_distances(Yc, self._X) / epsilon)
                    ka = k * qa[None, :]
                    ka /= (k.sum(axis=1) ** self.alpha)[:, None]
                    p = ka / ka.sum(axis=1, keepdims=True)
                    psi = p @ self.eigenvectors_
                else:
                    d2, idx = nearest_neighbours(self._X, self.k_, Yc)
                    k = np.exp(-d2 / epsilon)
                    ka = k * qa[idx] / (k.sum(axis=1) ** self.alpha)[:, None]
                    p = ka / ka.sum(axis=1, keepdims=True)
                    psi = np.einsum("ij,ijk->ik", p, self.eigenvectors_[idx])
            if not np.all(np.isfinite(psi)):
                far = start + int(np.flatnonzero(~np.all(np.isfinite(psi), axis=1))[0])
                raise ValueError(
                    f"Y[{far}] is too far from the training points for the kernel "
                    f"(epsilon = {self.epsilon_:.3g}); it has no neighbour to extend from"
                )
            out[start : start + chunk] = psi / self.eigenvalues_
        return out * _power(self.eigenvalues_, self.t)


def diffusion_map(
    X: np.ndarray | torch.Tensor,
    n_components: int = 2,
    epsilon: float | str = "auto",
    alpha: float = 1.0,
    t: float = 1,
    **options,
) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and diffusion coordinates of the point cloud ``X`` (shape (n, D)).

    Args:
        X: points as rows.
        n_components: number of non-trivial coordinates.
        epsilon: kernel bandwidth or ``"auto"``.
        alpha: Coifman-Lafon normalisation exponent (default 1).
        t: diffusion time.
        **options: ``method``, ``k``, ``dense_max``, ``tol`` of :class:`DiffusionMap`.

    Returns:
        (eigenvalues ``lambda_1..lambda_m``, coordinates of shape (n, m)).
    """
    dm = DiffusionMap(n_components, epsilon=epsilon, alpha=alpha, t=t, **options).fit(X)
    return dm.eigenvalues_, dm.coordinates_
