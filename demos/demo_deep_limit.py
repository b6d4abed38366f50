# # ResNets with constant weights and their deep limit, the neural ODE
#
# A residual network whose $N$ layers all share one block $f_\theta:\mathbb R^d\to\mathbb R^d$,
#
# $$x_{k+1} = x_k + \tfrac1N f_\theta(x_k), \qquad k = 0,\dots,N-1,$$
#
# is the forward Euler scheme with step $1/N$ for the neural ODE
# $\dot x = f_\theta(x)$ on $[0, 1]$.  Avelin & Nyström (2021) proved that, as $N\to\infty$,
# the loss of the ResNet converges to that of the ODE and stochastic gradient descent on the
# ResNet converges to SGD on the ODE.  This demo shows both facts on the annulus data set:
#
# 1. at fixed weights the ResNet output approaches the ODE flow at first order in $1/N$;
# 2. SGD runs of all depths, started from the same weights and fed the same mini-batches,
#    approach the SGD run of the ODE, again at first order.
#
# It runs in serial and in parallel (the runs of different depths are spread over ranks):
#
#     python demos/demo_deep_limit.py
#     mpiexec -n 2 python demos/demo_deep_limit.py

# +
from __future__ import annotations

import os

from mpi4py import MPI

import torch

from dolfinx_nn.deep_limit import ConstantWeightResNet, NeuralODE, annulus, dense_block
from dolfinx_nn.deep_limit.rates import fitted_order, successive_ratios
from dolfinx_nn.deep_limit.sgd_convergence import SGDConfig, sgd_convergence
from dolfinx_nn.output import print0

comm = MPI.COMM_WORLD
quick = os.environ.get("DOLFINX_NN_DEMO_QUICK") == "1"
depths = (1, 2, 4, 8, 16, 32) if quick else (1, 2, 4, 8, 16, 32, 64, 128)
# -

# ## The block and the data
#
# The block is the one of the paper, `Dense(16, ReLU) -> Dense(d)`.  The annulus points live
# in the plane; we pad them with one zero coordinate ($d = 3$) because a flow of the plane
# cannot pull the inner class out of the outer one.  The same seeded generator gives the
# same weights and data on every rank.

g = torch.Generator().manual_seed(0)
block = dense_block(3, width=16, activation="relu", generator=g)
x, y = annulus(64, dim=3, generator=g)

# ## 1. Fixed weights: the ResNet is Euler's method for the ODE
#
# The reference flow is RK4 with 512 steps (the ReLU kinks spoil the error estimate of
# adaptive pairs, and RK4 is accurate to about $10^{-7}$ here).  `ConstantWeightResNet(f, N)`
# and `NeuralODE(f, "euler", steps=N)` are the same map; their distance to the flow halves
# each time $N$ doubles.

# +
with torch.no_grad():
    flow = NeuralODE(block, "rk4", steps=512)(x)
    errors = [float((ConstantWeightResNet(block, n)(x) - flow).abs().max()) for n in depths]
forward_order = fitted_order(depths[2:], errors[2:])
print0("| N | max error vs ODE | e_N / e_2N |\n|---|---|---|")
for n, e, r in zip(depths, errors, [*successive_ratios(errors), float("nan")], strict=True):
    print0(f"| {n} | {e:.3e} | {r:.3f} |")
print0(f"observed order of the ResNet output: {forward_order:.3f}")
# -

# ## 2. SGD on the ResNets follows SGD on the ODE
#
# `sgd_convergence` trains every depth and the ODE (here RK4 with 256 steps) from the same
# weights with the same mini-batches and step size, and measures
# $\max_k\|\theta_N(k) - \theta_{\mathrm{ODE}}(k)\|$ over the whole trajectory.

# +
config = SGDConfig(n_train=64, batch_size=16, steps=10 if quick else 30, lr=0.1,
                   depths=depths, ode_options={"method": "rk4", "steps": 256})
sgd = sgd_convergence(config, comm)
print0("| N | trajectory distance | loss gap |\n|---|---|---|")
for n, d, gap in zip(depths, sgd["trajectory_distance"], sgd["loss_gap"], strict=True):
    print0(f"| {n} | {d:.3e} | {gap:.3e} |")
print0(f"observed order of the SGD trajectories: {sgd['trajectory_order']:.3f}, "
       f"of the losses: {sgd['loss_gap_order']:.3f}")
# -

# ## Summary
#
# Both orders are close to one: the deep limit of a constant-weight ResNet is the neural
# ODE, for the network itself and for its training.  `dolfinx-nn deep-limit --experiment all`
# adds the test accuracy on the annulus set over seeds and a ResNet prior for a PDE inverse
# problem, and writes plots and a table of rates.

results = {
    "forward_order": forward_order,
    "forward_ratios": successive_ratios(errors),
    "trajectory_order": sgd["trajectory_order"],
    "trajectory_distance": sgd["trajectory_distance"],
    "loss_gap_order": sgd["loss_gap_order"],
}
