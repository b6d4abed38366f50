"""What exact Hessians buy the inverse problem: Newton-CG, and the Laplace posterior.

Serial and under MPI: the Newton iteration and the posterior are collective, and the numbers
must not depend on the number of ranks.
"""

from __future__ import annotations

import json

from mpi4py import MPI
from petsc4py import PETSc

import dolfinx
import dolfinx.fem.petsc
import numpy as np
import torch
import ufl
from dolfinx import fem, mesh

import dolfinx_nn as dnn
from dolfinx_nn.conversion import to_torch
from dolfinx_nn.fem_functional import fem_functional
from dolfinx_nn.hessian import GaussNewtonHessian, ReducedHessian
from dolfinx_nn.inverse.laplace import low_rank_posterior
from dolfinx_nn.inverse.newton import minimize_lbfgs, minimize_newton_cg
from dolfinx_nn.inverse.tikhonov import REGULARIZATIONS, _GlobalCoefficient
from dolfinx_nn.models.inverse_problem import ProblemSpec, build_problem

COMM = MPI.COMM_WORLD


def poisson_source(n: int, prefix: str):
    """-div grad u = f, u = 0 on the boundary: u is linear in the source f."""
    msh = mesh.create_unit_square(COMM, n, n)
    V = fem.functionspace(msh, ("Lagrange", 1))
    u, f = fem.Function(V, name="u"), fem.Function(V, name="f")
    v = ufl.TestFunction(V)
    F = ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - f * v * ufl.dx
    facets = mesh.locate_entities_boundary(msh, 1, lambda x: np.full(x.shape[1], True))
    bc = fem.dirichletbc(0.0, fem.locate_dofs_topological(V, 1, facets), V)
    return V, u, f, dnn.fem_operator(F, u, controls=[f], bcs=[bc], petsc_options_prefix=prefix)


def test_hessian_as_petsc_mat_and_scipy_operator():
    """Owned and replicated controls: the PETSc, scipy and tensor forms of H agree."""
    V, u, f, solve = poisson_source(4, "hop_")
    c = fem.Constant(V.mesh, PETSc.ScalarType(2.0))
    J = fem_functional((u - 0.1) ** 2 * ufl.dx + c**2 * u**2 * ufl.dx + f**2 * u * ufl.dx,
                       controls=[u, c, f])
    f.interpolate(lambda x: 1 + x[0])
    m = [to_torch(f), torch.tensor(2.0, dtype=torch.float64)]
    H = ReducedHessian(lambda ms: J(solve(ms[0]), ms[1], ms[0]), m, comm=COMM,
                       replicated=[False, True])
    dense = H.dense()
    assert dense.shape == (H.layout.size, H.layout.size)
    x = np.random.default_rng(0).standard_normal(H.layout.size)
    assert np.allclose(H.linear_operator().matvec(x), dense @ x, rtol=1e-12, atol=1e-14)
    # the PETSc layout: each rank's owned dofs of f, then (rank 0) the Constant
    mat = H.petsc_mat()
    X, Y = mat.createVecRight(), mat.createVecLeft()
    first = V.dofmap.index_map.local_range[0]
    n_owned = V.dofmap.index_map.size_local
    rows = list(range(first, first + n_owned)) + ([H.layout.size - 1] if COMM.rank == 0 else [])
    X.getArray()[:] = x[rows]
    mat.mult(X, Y)
    assert np.allclose(Y.getArray(readonly=True), (dense @ x)[rows], rtol=1e-12, atol=1e-14)
    assert np.abs(dense - dense.T).max() <= 1e-12 * np.abs(dense).max()
    for obj in (X, Y, mat):
        obj.destroy()


def test_low_rank_posterior_variance_matches_the_dense_one():
    """A linear Gaussian problem (the source of a Poisson problem from part of the domain)."""
    V, u, f, solve = poisson_source(8, "lgp_")
    msh = V.mesh
    d = fem.Function(V)
    d.interpolate(lambda x: 0.1 * np.sin(np.pi * x[0]) * x[1])
    chi = fem.Function(fem.functionspace(msh, ("DG", 0)))
    chi.interpolate(lambda x: (x[0] < 0.6).astype(float))
    misfit = fem_functional(0.5e4 * chi * (u - d) ** 2 * ufl.dx, controls=[u])
    p, w = ufl.TrialFunction(V), ufl.TestFunction(V)
    B = dolfinx.fem.petsc.assemble_matrix(
        fem.form(1e-2 * (ufl.inner(ufl.grad(p), ufl.grad(w)) + p * w) * ufl.dx))
    B.assemble()
    H = GaussNewtonHessian(lambda ms: solve(ms[0]), misfit, [to_torch(f)], comm=COMM)
    A = H.petsc_mat()
    posterior = low_rank_posterior(A, B)
    n = B.getSize()[0]
    start, stop = B.getOwnershipRange()
    rows = COMM.allgather((start, B.getValues(range(start, stop), range(n))))
    B_dense = np.zeros((n, n))
    for s, block in rows:
        B_dense[s : s + block.shape[0]] = block
    dense = np.diag(np.linalg.inv(H.dense() + B_dense))[start:stop]
    error = COMM.allreduce(float(np.max(np.abs(posterior.variance - dense) / dense,
                                        initial=0.0)), op=MPI.MAX)
    assert posterior.rank < n // 2  # low rank
    assert posterior.smallest_computed > 1e-8  # the truncation dropped informed directions
    assert error <= 1e-3, (error, posterior.rank)
    for obj in (A, B):
        obj.destroy()


def test_newton_cg_needs_a_fifth_of_the_lbfgs_iterations_to_the_same_minimizer():
    """Tikhonov (h1, alpha = 1e-4, 1 % noise): both to |g| <= 1e-8 |g0|."""
    problem = build_problem(ProblemSpec(dim=2, resolution=8, noise=0.01), COMM)
    model = problem.model
    coefficient = _GlobalCoefficient(problem, 0.05, 1.0)
    volume = COMM.allreduce(dolfinx.fem.assemble_scalar(
        dolfinx.fem.form(1.0 * ufl.dx(domain=model.mesh))), op=MPI.SUM)
    regularizer = fem_functional((0.5 / volume) * REGULARIZATIONS["h1"](model.q, 1.0),
                                 controls=[model.q])

    def loss(m):
        q = coefficient.of(m)
        return problem.loss(q) + 1e-4 * regularizer(q)

    newton = minimize_newton_cg(loss, coefficient.m.detach(), COMM)
    lbfgs = minimize_lbfgs(loss, coefficient.m.detach(), COMM)
    assert newton.stopped_because == "converged" and lbfgs.stopped_because == "converged"
    assert 5 * newton.iterations <= lbfgs.iterations, (newton.iterations, lbfgs.iterations)
    difference = np.linalg.norm(newton.x - lbfgs.x) / np.linalg.norm(lbfgs.x)
    assert difference <= 1e-6, difference
    same = COMM.allgather(newton.x.tobytes())
    assert all(s == same[0] for s in same)  # every rank ran the same iterations


def test_inverse_command_with_newton_cg_and_the_laplace_posterior(tmp_path):
    from dolfinx_nn.cli import main

    out = COMM.bcast(str(tmp_path / "run"), root=0)
    code = main(["inverse", "--resolution", "6", "--noise", "0.02", "--alphas", "1e-4",
                 "--width", "8", "--adam-steps", "20", "--lbfgs-steps", "10",
                 "--tikhonov-optimizer", "newton-cg", "--posterior", "laplace", "--out", out])
    assert code == 0
    if COMM.rank == 0:
        import pathlib

        folder = pathlib.Path(out)
        for name in ("posterior.json", "posterior.png", "posterior.bp"):
            assert (folder / name).exists(), name
        results = json.loads((folder / "results.json").read_text())
        assert results["tikhonov"]["optimizer"] == "newton-cg"
        assert all(r["hessian_products"] > 0 for r in results["tikhonov"]["runs"])
        posterior = json.loads((folder / "posterior.json").read_text())
        for prior in ("network", "tikhonov"):
            p = posterior[prior]
            assert 0 < p["std_min"] <= p["std_max"] < 1.0, p
            assert p["relative_noise"] > 0 and p["rank"] >= 1
        assert posterior["network"]["prior_precision_delta"] > 0
