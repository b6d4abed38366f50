"""The same gradients on 1 and N ranks, and no memory growth over many iterations."""

from __future__ import annotations

import gc

from mpi4py import MPI

import numpy as np
import psutil
import pytest
import torch
from bridge_problems import PoissonCoefficient

import dolfinx_nn as dnn


@pytest.mark.parametrize("nonlinear", [False, True])
@pytest.mark.parametrize("space", ["P1", "quadrature"])
def test_parameter_gradient_same_on_one_and_all_ranks(nonlinear, space):
    """Distributed gradient (COMM_WORLD, synced) == serial gradient (COMM_SELF) on every rank."""
    # (quadrature coefficients live in cells only: no boundary term for them)
    kw = dict(nonlinear=nonlinear, space=space, n=10, seed=3, boundary_term=space == "P1")
    distributed = PoissonCoefficient(MPI.COMM_WORLD, prefix="dist_", **kw)
    serial = PoissonCoefficient(MPI.COMM_SELF, prefix="ser_", **kw)
    g_dist = distributed.parameter_gradient()
    g_serial = serial.parameter_gradient()
    rel = (g_dist - g_serial).norm() / g_serial.norm()
    assert rel < 1e-10, float(rel)
    assert float(distributed.loss()) == pytest.approx(float(serial.loss()), rel=1e-12)
    # and every rank holds the same gradient after sync_gradients
    gathered = MPI.COMM_WORLD.allgather(g_dist.numpy())
    assert all(np.array_equal(gathered[0], g) for g in gathered)


def test_global_sum_and_sync_gradients():
    comm = MPI.COMM_WORLD
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    local = (comm.rank + 1) * (w**2).sum()
    total = dnn.global_sum(local, comm)
    n = comm.size
    assert float(total) == pytest.approx(5.0 * n * (n + 1) / 2)
    total.backward()
    dnn.sync_gradients([w], comm)
    expected = 2 * w.detach() * n * (n + 1) / 2
    assert torch.allclose(w.grad, expected)


def test_no_memory_growth_over_200_iterations():
    p = PoissonCoefficient(MPI.COMM_WORLD, nonlinear=True, n=4, prefix="leak_")
    proc = psutil.Process()

    def iterate(k: int) -> None:
        for _ in range(k):
            p.net.zero_grad()
            p.loss().backward()
            dnn.sync_gradients(p.net, p.msh.comm)

    iterate(20)  # warm-up: JIT, allocator pools, PETSc objects created lazily
    gc.collect()
    rss0 = proc.memory_info().rss
    iterate(200)
    gc.collect()
    growth = (proc.memory_info().rss - rss0) / rss0
    assert growth < 0.05, f"resident memory grew by {100 * growth:.2f}%"
