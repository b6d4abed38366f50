"""Print the figures of the second-order checks of docs/second_order.md.

The problems are those of tests/test_bridge_second_order.py; the tests assert the bounds, this
prints the measured values (Taylor rates, products against differences of gradients, 1 rank
against all ranks).  Run from the repository root:

    python scripts/second_order_figures.py
    mpiexec -n 2 python scripts/second_order_figures.py
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from mpi4py import MPI

import numpy as np
import torch
from test_bridge_second_order import (
    COMM,
    Problem,
    global_dot,
    gradient,
    hessian_vector,
    mlp,
    rank_direction,
)

import dolfinx_nn as dnn

out = []
for nl in (False, True):
    prob = Problem(COMM, nl); m = prob.point(); sd = prob.smooth_direction()
    for name, idx in (("function", 0), ("constant", 2), ("dirichlet", 3)):
        dm = [torch.zeros_like(x) for x in m]; dm[idx] = sd[idx]
        r = dnn.second_order_taylor_test(prob.loss, m, dm, h=0.05, comm=COMM)
        out.append(f"taylor {'nonlinear' if nl else 'linear'} {name}: {[round(x,3) for x in r]}")
    net = mlp(2, seed=1)
    with torch.no_grad(): net[2].bias.fill_(0.5)
    qn = dnn.NeuralFunction(net, prob.V, function=prob.q)
    params = {k: p.detach().clone() for k, p in net.named_parameters()}
    g = torch.Generator().manual_seed(3)
    dparams = {k: torch.randn(p.shape, generator=g, dtype=p.dtype) for k, p in params.items()}
    def loss(p):
        q_t = qn(p); return prob.J(prob.solve(q_t, m[1], m[2], m[3]), q_t, m[2])
    r = dnn.second_order_taylor_test(loss, params, dparams, h=0.05, comm=COMM)
    out.append(f"taylor {'nonlinear' if nl else 'linear'} network: {[round(x,3) for x in r]}")
prob = Problem(COMM, True, dirichlet="constant"); m = prob.point(); dm = [torch.zeros_like(x) for x in m]; dm[3] = prob.smooth_direction()[3]
out.append(f"taylor nonlinear constant-dirichlet: {[round(x,3) for x in dnn.second_order_taylor_test(prob.loss, m, dm, h=0.05, comm=COMM)]}")
for case in ("linear", "nonlinear", "nonlinear-iterative"):
    prob = Problem(COMM, case.startswith("nonlinear"), solver="iterative" if "iterative" in case else "direct")
    m = prob.point()
    dm = [rank_direction(m[0].numel(), 1), rank_direction(m[1].numel(), 2), torch.tensor(0.3, dtype=torch.float64), rank_direction(m[3].numel(), 3)]
    w = [rank_direction(m[0].numel(), 4), rank_direction(m[1].numel(), 5), torch.tensor(-0.8, dtype=torch.float64), rank_direction(m[3].numel(), 6)]
    hv = hessian_vector(prob.loss, m, dm); h = 1e-3
    at = [gradient(prob.loss, [x + s*h*d for x, d in zip(m, dm)]) for s in (2, 1, -1, -2)]
    fd = [(-a + 8*b - 8*c + d)/(12*h) for a, b, c, d in zip(*at)]
    a, b = global_dot(w, hv), global_dot(w, fd)
    out.append(f"hvp vs fd {case}: rel {abs(a-b)/abs(b):.2e}")
if COMM.rank == 0: print("\n".join(out))
def product(comm):
    prob = Problem(comm, nonlinear=True); m = prob.point()
    hv = hessian_vector(prob.loss, m, prob.smooth_direction())
    xy = np.round(prob.V.tabulate_dof_coordinates()[: m[0].numel(), :2], 12) + 0.0
    rows = np.column_stack([xy, hv[0].numpy(), hv[1].numpy(), hv[3].numpy()])
    rows = np.concatenate(comm.allgather(rows))
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))], comm.allreduce(float(hv[2]), op=MPI.SUM)
(s, c1), (p, cn) = product(MPI.COMM_SELF), product(COMM)
rel = (np.abs(s[:, 2:] - p[:, 2:]).max(axis=0) / np.abs(s[:, 2:]).max(axis=0))
if COMM.rank == 0: print("1 vs", COMM.size, "ranks: rel max diff q, f, g:", rel, "constant:", abs(c1-cn)/abs(c1))
