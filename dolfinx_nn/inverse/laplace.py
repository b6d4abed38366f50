"""Low-rank Laplace approximation of a Gaussian posterior: the prior-preconditioned Hessian.

A posterior with precision ``H + B`` (``H`` the data-misfit Hessian, positive semi-definite;
``B`` the prior precision, symmetric positive definite) has covariance

    (H + B)^{-1} = B^{-1} - V D V^T,   D = diag(lam_i / (1 + lam_i)),

with ``H v_i = lam_i B v_i``, ``V^T B V = I`` (all eigenpairs).  The data inform only a few
directions: the eigenvalues decay fast, and the ``k`` largest give the covariance up to
``sum_{i>k} lam_i / (1 + lam_i) v_i v_i^T`` (Bui-Thanh, Ghattas, Martin & Stadler, "A
computational framework for infinite-dimensional Bayesian inverse problems, part I", SIAM J.
Sci. Comput. 35 (2013) A2494, section 4; Villa, Petra & Ghattas, "hIPPYlib", ACM TOMS 47
(2021)).  The eigenpairs come from SLEPc's Krylov-Schur (a Lanczos method for this symmetric
definite problem) with ``H`` matrix-free (:meth:`dolfinx_nn.hessian.ReducedHessian.petsc_mat`)
and ``B`` assembled; the rank ``k`` grows (doubling) until the smallest computed eigenvalue
is below a threshold.  The pointwise posterior variance is then

    diag((H + B)^{-1}) = diag(B^{-1}) - sum_i d_i v_i^2,

with ``diag(B^{-1})`` computed exactly (one solve per dof with the factorization of ``B``) up
to :data:`EXACT_VARIANCE_LIMIT` dofs, and estimated beyond by Rademacher probing (Bekas,
Kokiopoulou & Saad, "An estimator for the diagonal of a matrix", Appl. Numer. Math. 57
(2007) 1214).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from petsc4py import PETSc

import numpy as np

#: Truncate the eigen-decomposition where ``lam / (1 + lam)`` drops below this (1e-3: the
#: dropped directions reduce the prior variance by less than 0.1 % each).
EIGENVALUE_THRESHOLD = 1e-3
#: First rank tried (doubled until the threshold is met).
INITIAL_RANK = 16
#: Largest number of dofs for which ``diag(B^{-1})`` is computed exactly (one solve each).
EXACT_VARIANCE_LIMIT = 5000
#: Rademacher probes of the diagonal estimator beyond that.
VARIANCE_PROBES = 200


def _factorization(B: PETSc.Mat) -> PETSc.KSP:
    ksp = PETSc.KSP().create(B.getComm())
    ksp.setOperators(B)
    ksp.setType("preonly")
    pc = ksp.getPC()
    pc.setType("lu")
    pc.setFactorSolverType("mumps")
    ksp.setUp()
    return ksp


def generalized_eigenpairs(
    A: PETSc.Mat, B: PETSc.Mat, k: int, tol: float = 1e-10
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The ``k`` largest eigenpairs of ``A v = lam B v`` (``B`` positive definite; collective).

    Returns:
        Eigenvalues in descending order and the eigenvectors' owned entries, normalised to
        ``v^T B v = 1``.
    """
    from slepc4py import SLEPc

    eps = SLEPc.EPS().create(A.getComm())
    eps.setOperators(A, B)
    eps.setProblemType(SLEPc.EPS.ProblemType.GHEP)
    eps.setType(SLEPc.EPS.Type.KRYLOVSCHUR)
    eps.setWhichEigenpairs(SLEPc.EPS.Which.LARGEST_REAL)
    eps.setDimensions(nev=k)
    eps.setTolerances(tol=tol, max_it=1000)
    ksp = eps.getST().getKSP()
    ksp.setType("preonly")
    ksp.getPC().setType("lu")
    ksp.getPC().setFactorSolverType("mumps")
    eps.solve()
    n = min(eps.getConverged(), k)
    values, vectors = [], []
    v, Bv = A.createVecRight(), A.createVecRight()
    for i in range(n):
        values.append(eps.getEigenpair(i, v).real)
        B.mult(v, Bv)
        vectors.append(v.getArray(readonly=True) / np.sqrt(v.dot(Bv)))
    for obj in (v, Bv, eps):
        obj.destroy()
    order = np.argsort(values)[::-1]
    return np.asarray(values)[order], [vectors[i] for i in order]


def diagonal_of_inverse(
    B: PETSc.Mat, *, exact_limit: int = EXACT_VARIANCE_LIMIT, probes: int = VARIANCE_PROBES,
    seed: int = 0,
) -> tuple[np.ndarray, str]:
    """Owned entries of ``diag(B^{-1})``, and how they were computed (collective).

    Exact (one solve per dof) up to ``exact_limit`` dofs; beyond, Bekas et al.'s estimator
    ``sum_j z_j * B^{-1} z_j / sum_j z_j * z_j`` with ``probes`` Rademacher vectors (the same
    on any number of ranks for a given ``seed``).
    """
    n = B.getSize()[0]
    start, stop = B.getOwnershipRange()
    ksp = _factorization(B)
    x, b = B.createVecRight(), B.createVecLeft()
    if n <= exact_limit:
        diagonal = np.zeros(stop - start)
        for i in range(n):
            b.zeroEntries()
            if start <= i < stop:
                b.setValue(i, 1.0)
            b.assemble()
            ksp.solve(b, x)
            if start <= i < stop:
                diagonal[i - start] = x.getArray(readonly=True)[i - start]
        method = "exact"
    else:
        rng = np.random.default_rng(seed)
        numerator, denominator = np.zeros(stop - start), np.zeros(stop - start)
        for _ in range(probes):
            z = rng.choice([-1.0, 1.0], size=n)[start:stop]
            b.getArray()[:] = z
            ksp.solve(b, x)
            # stub: PETSc scalar, complex included; the package works with real PETSc
            numerator += z * cast(np.ndarray, x.getArray(readonly=True))
            denominator += z * z
        diagonal = numerator / denominator
        method = f"Rademacher probing, {probes} probes"
    for obj in (x, b, ksp):
        obj.destroy()
    return diagonal, method


@dataclass
class LowRankPosterior:
    """The low-rank posterior covariance ``B^{-1} - V D V^T`` and its diagonal.

    Attributes:
        eigenvalues: the kept eigenvalues ``lam_i`` of ``H v = lam B v`` (descending).
        vectors: their eigenvectors' owned entries (``v^T B v = 1``).
        prior_variance: owned entries of ``diag(B^{-1})``.
        variance: owned entries of the posterior variance.
        variance_method: how ``diag(B^{-1})`` was computed.
        smallest_computed: the smallest eigenvalue computed (below the threshold unless the
            rank reached its limit).
        threshold: the truncation threshold on ``lam / (1 + lam)``.
    """

    eigenvalues: np.ndarray
    vectors: list[np.ndarray]
    prior_variance: np.ndarray
    variance: np.ndarray
    variance_method: str
    smallest_computed: float
    threshold: float
    ranks_tried: list[int] = field(default_factory=list)

    @property
    def rank(self) -> int:
        return len(self.eigenvalues)

    def summary(self) -> dict:
        """JSON-friendly numbers (no vectors)."""
        return {
            "rank": self.rank,
            "eigenvalues": [float(x) for x in self.eigenvalues],
            "smallest_computed_eigenvalue": float(self.smallest_computed),
            "truncation_threshold": self.threshold,
            "ranks_tried": list(self.ranks_tried),
            "prior_variance_method": self.variance_method,
        }


def low_rank_posterior(
    A: PETSc.Mat, B: PETSc.Mat, *, threshold: float = EIGENVALUE_THRESHOLD,
    initial_rank: int = INITIAL_RANK, exact_limit: int = EXACT_VARIANCE_LIMIT,
) -> LowRankPosterior:
    """The low-rank Laplace posterior of precision ``A + B`` (collective).

    Args:
        A: the data-misfit Hessian (a matrix-free ``PETSc.Mat``), positive semi-definite.
        B: the prior precision, assembled, symmetric positive definite.
        threshold: keep the eigenpairs with ``lam / (1 + lam) >= threshold``.
        initial_rank: first number of eigenpairs computed; doubled until the smallest is
            below the threshold (or all but one are computed).
        exact_limit: see :func:`diagonal_of_inverse`.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}.")
    n = A.getSize()[0]
    k = max(1, min(initial_rank, n - 1))
    tried = []
    while True:
        tried.append(k)
        values, vectors = generalized_eigenpairs(A, B, k)
        ratio = values / (1.0 + values)
        if len(values) and (ratio[-1] < threshold or k >= n - 1):
            break
        if not len(values) or k >= n - 1:
            break
        k = min(2 * k, n - 1)
    smallest = float(values[-1]) if len(values) else float("nan")
    keep = ratio >= threshold
    values = values[keep]
    vectors = [v for v, kept in zip(vectors, keep, strict=True) if kept]
    prior, method = diagonal_of_inverse(B, exact_limit=exact_limit)
    d = values / (1.0 + values)
    reduction = sum((di * v**2 for di, v in zip(d, vectors, strict=True)),
                    np.zeros_like(prior))
    return LowRankPosterior(
        eigenvalues=values, vectors=vectors, prior_variance=prior,
        variance=prior - reduction, variance_method=method,
        smallest_computed=smallest,
        threshold=threshold, ranks_tried=tried,
    )
