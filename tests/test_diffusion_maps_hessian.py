"""Hessian spectra by Lanczos and stochastic Lanczos quadrature, and the trajectory recorder.

The networks are replicated on every rank (same seed); the MPI test splits a loss over the
ranks with ``global_sum`` and checks that the summed Hessian shares equal the serial Hessian.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dolfinx_nn.diffusion_maps import (
    HessianOperator,
    TrajectoryRecorder,
    load_trajectory,
    spectral_density,
    top_eigenpairs,
)
from dolfinx_nn.diffusion_maps.recorder import project
from dolfinx_nn.parallel import global_sum


def _problem(seed: int = 0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
    ).double()
    x = torch.randn(40, 2, dtype=torch.float64)
    y = torch.sin(3 * x[:, :1]) * x[:, 1:]
    return net, x, y


def _exact_hessian(net, x, y) -> np.ndarray:
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss(flat):
        params, offset = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            size = int(np.prod(shape))
            params[name] = flat[offset : offset + size].view(shape)
            offset += size
        return ((torch.func.functional_call(net, params, (x,)) - y) ** 2).mean()

    return torch.func.hessian(loss)(theta).numpy()


@pytest.mark.parametrize("mode, tol", [("autodiff", 1e-6), ("double-backward", 1e-6),
                                       ("finite-difference", 1e-6)])
def test_lanczos_top_eigenvalues_match_exact_hessian(mode, tol):
    net, x, y = _problem()
    exact = np.sort(np.linalg.eigvalsh(_exact_hessian(net, x, y)))[::-1]
    H = HessianOperator(net, lambda: ((net(x) - y) ** 2).mean(), mode=mode)
    lam, V = top_eigenpairs(H, k=5)
    assert np.abs(lam - exact[:5]).max() < tol
    assert H.n_products < H.shape[0] * 4  # matrix-free: no column-by-column assembly
    # the vectors are eigenvectors of the same operator
    assert np.abs(H.matvec(V[:, 0]) - lam[0] * V[:, 0]).max() < 1e-6


def test_stochastic_lanczos_quadrature():
    net, x, y = _problem(1)
    Hex = _exact_hessian(net, x, y)
    H = HessianOperator(net, lambda: ((net(x) - y) ** 2).mean())
    n = H.shape[0]
    sd = spectral_density(H, n_probes=2, steps=12, seed=3)
    # Gauss quadrature with 12 nodes integrates x^2 exactly: compare with v^T H^2 v / |v|^2
    rng = np.random.default_rng(3)
    for nodes, weights in zip(sd.nodes, sd.weights, strict=True):
        v = rng.choice([-1.0, 1.0], size=n)
        assert abs(weights @ nodes**2 - v @ Hex @ Hex @ v / (v @ v)) < 1e-8 * np.abs(Hex).max() ** 2
        assert abs(weights.sum() - 1.0) < 1e-12
    # with n steps the Ritz values are the exact eigenvalues
    full = spectral_density(H, n_probes=1, steps=n, seed=0)
    exact = np.linalg.eigvalsh(Hex)
    assert np.abs(np.sort(full.nodes[0])[-3:] - exact[-3:]).max() < 1e-8
    grid = np.linspace(exact.min() - 1, exact.max() + 1, 4001)
    assert abs(np.trapezoid(sd.density(grid, 0.05), grid) - 1.0) < 1e-6


def test_hessian_shares_summed_over_ranks_equal_serial_hessian(comm):
    net, x, y = _problem(2)
    serial = HessianOperator(net, lambda: ((net(x) - y) ** 2).sum())
    rows = np.array_split(np.arange(x.shape[0]), comm.size)[comm.rank]

    def shared_loss():
        return global_sum(((net(x[rows]) - y[rows]) ** 2).sum(), comm)

    # global_sum is an autograd.Function without functorch rules: reverse-mode modes only
    for mode in ("double-backward", "finite-difference"):
        parallel = HessianOperator(net, shared_loss, mode=mode, comm=comm)
        v = np.random.default_rng(0).standard_normal(serial.shape[0])
        assert np.abs(parallel.matvec(v) - serial.matvec(v)).max() < 1e-6 * np.abs(v).max()
        lam, _ = top_eigenpairs(parallel, k=2)
        ref, _ = top_eigenpairs(serial, k=2)
        assert np.abs(lam - ref).max() < 1e-6 * abs(ref[0])


def test_unknown_mode_is_rejected():
    net, x, y = _problem()
    with pytest.raises(ValueError, match="autodiff, double-backward, finite-difference"):
        HessianOperator(net, lambda: net(x).sum(), mode="exact")


def test_recorder_streams_every_kth_step_and_projects(tmp_path_factory, comm):
    folder = tmp_path_factory.mktemp("traj") if comm.rank == 0 else None
    folder = comm.bcast(folder, root=0)
    net, x, y = _problem(3)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    full = TrajectoryRecorder(net, folder / "full", every=3, buffer_rows=2, comm=comm)
    small = TrajectoryRecorder(net, folder / "proj", every=1, projection_dim=7, comm=comm)
    handle = small.attach(optimizer)
    expected = []
    for step in range(10):
        optimizer.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        optimizer.step()
        if step % 3 == 0:
            expected.append(torch.nn.utils.parameters_to_vector(net.parameters()).detach())
        full.record(step)
    handle.remove()
    full.close()
    small.close()
    X, steps = load_trajectory(folder / "full")
    assert X.shape == (4, full.n_params)
    assert list(steps) == [0, 3, 6, 9]
    assert np.abs(X - torch.stack(expected).numpy()).max() == 0.0
    P, _ = load_trajectory(folder / "proj")
    assert P.shape == (10, 7)
    last = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    assert np.abs(P[-1] - project(last, 7, 0).numpy()).max() < 1e-12
    # the projection is linear and preserves squared norms on average (Johnson-Lindenstrauss)
    norms = [float(project(torch.randn(500, dtype=torch.float64), 400, s).norm() ** 2)
             for s in range(5)]
    assert abs(np.mean(norms) / 500 - 1.0) < 0.15
    comm.Barrier()


def test_hessian_spectrum_of_the_inverse_problem_prior_by_exact_products(comm):
    """A PDE-constrained loss (the network prior of the inverse problem, through the bridge):
    the top eigenvalues by exact Hessian-vector products equal those by differences of
    gradients, with one solve of the forward problem in all."""
    from dolfinx_nn.diffusion_maps.problems import inverse

    problem = inverse(seed=0, resolution=6, width=4, comm=comm)
    exact = HessianOperator(problem.module, problem.full_loss, mode="retained-graph", comm=comm)
    lam, _ = top_eigenpairs(exact, k=3)
    reference = HessianOperator(problem.module, problem.full_loss, mode="finite-difference",
                                comm=comm)
    ref, _ = top_eigenpairs(reference, k=3)
    assert np.abs(lam - ref).max() <= 1e-6 * abs(ref[0]), (lam, ref)
