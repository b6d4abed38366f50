"""Random small problems: every Hessian-vector product of the bridge against differences of
gradients.

The problems, controls, Dirichlet layouts and solvers are those of the first-order property
test (``tests/test_bridge_property.py``) without the network of the unknown (whose second
derivatives are refused): for each case the Hessian-vector product along a random direction
in all controls at once, by differentiating the gradient again (``create_graph=True``), is
compared with the fourth-order central difference of gradients along that direction, tensor
by tensor (rank shares of replicated tensors summed first).  30 cases per run and per rank
count; the tolerance is 1e-6 relative.
"""

from __future__ import annotations

from mpi4py import MPI

import numpy as np
import pytest
import torch
from test_bridge_property import (
    LAYOUTS,
    SOLVERS,
    SOURCES,
    grouped_cases,
    make_problem,
)
from test_bridge_property import draw_case as draw_first_order_case

COMM = MPI.COMM_WORLD
CASES = 30
PHYSICS = ("linear", "nonlinear", "stokes")
FIRST_SEED = 20_000  # other draws than the first-order test's


def draw_case(seed: int) -> tuple[tuple, str]:
    return draw_first_order_case(seed, PHYSICS, FIRST_SEED)


GROUPS = grouped_cases(CASES, PHYSICS, FIRST_SEED)


def _gradient(loss, m, create_graph=False):
    leaves = [x.detach().clone().requires_grad_(True) for x in m]
    grads = torch.autograd.grad(loss(leaves), leaves, create_graph=create_graph,
                                allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves, strict=True)]
    return leaves, grads


def _replicated(t: torch.Tensor) -> bool:
    """Whether a tensor holds the same values on every rank (Constants, network parameters)."""
    values = COMM.allgather(t.detach().numpy().tobytes())
    return all(v == values[0] for v in values)


def _global_error(a: list[torch.Tensor], b: list[torch.Tensor], replicated: list[bool]):
    """``|a - b|`` and ``|b|`` over all tensors and ranks (shares of replicated ones summed)."""
    err = ref = 0.0
    for x, y, rep in zip(a, b, replicated, strict=True):
        if rep:
            x = torch.as_tensor(COMM.allreduce(np.atleast_1d(x.detach().numpy()), op=MPI.SUM))
            y = torch.as_tensor(COMM.allreduce(np.atleast_1d(y.detach().numpy()), op=MPI.SUM))
            err += float(((x - y) ** 2).sum())
            ref += float((y**2).sum())
        else:
            err += COMM.allreduce(float(((x - y) ** 2).sum()), op=MPI.SUM)
            ref += COMM.allreduce(float((y**2).sum()), op=MPI.SUM)
    return err**0.5, ref**0.5


@pytest.mark.parametrize("key", sorted(GROUPS), ids=lambda k: "-".join(map(str, k)))
def test_random_problems_hessian_matches_differences_of_gradients(key):
    prob = make_problem(key)
    for seed, source in GROUPS[key]:
        rng = np.random.default_rng(30_000 + seed)
        m, dm, loss = prob.draw(rng, source)
        leaves, grads = _gradient(loss, m, create_graph=True)
        inner = sum((g * d).sum() for g, d in zip(grads, dm, strict=True))
        hv = torch.autograd.grad(inner, leaves, allow_unused=True)
        hv = [torch.zeros_like(x) if h is None else h for h, x in zip(hv, leaves, strict=True)]
        h = 1e-3
        at = [_gradient(loss, [x + s * h * d for x, d in zip(m, dm, strict=True)])[1]
              for s in (2, 1, -1, -2)]
        fd = [(-a + 8 * b - 8 * c + d) / (12 * h) for a, b, c, d in zip(*at, strict=True)]
        err, ref = _global_error(hv, fd, [_replicated(x) for x in m])
        assert err <= 1e-6 * ref + 1e-10, (seed, source, err, ref)


def test_the_cases_cover_every_kind():
    drawn = [draw_case(s) for s in range(CASES)]
    keys = [k for k, _ in drawn]
    assert {k[0] for k in keys} == set(PHYSICS)
    assert {k[2] for k in keys} == set(LAYOUTS)
    assert {k[3] for k in keys} == set(SOLVERS)
    assert {s for _, s in drawn} == set(SOURCES)
