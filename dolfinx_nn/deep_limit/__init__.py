"""ResNets with constant weights and their deep limit, the neural ODE.

A ResNet whose ``N`` layers share one block ``f``, ``x_{k+1} = x_k + f(x_k) / N``, is the
forward Euler scheme for ``dx/dt = f(x)`` on ``[0, 1]``.  As ``N`` grows its output, its
gradients, and the whole SGD trajectory of its parameters converge to those of the neural
ODE (Avelin & Nyström, 2021).  This package provides both models with the same ``f``
(:class:`ConstantWeightResNet`, :class:`NeuralODE` with Euler, RK4 or adaptive
Dormand–Prince and direct or adjoint gradients), the annulus data set, and the experiments
behind ``dolfinx-nn deep-limit``.
"""

from __future__ import annotations

from dolfinx_nn.deep_limit.annulus import annulus
from dolfinx_nn.deep_limit.blocks import dense_block
from dolfinx_nn.deep_limit.neural_ode import GRADIENT_MODES, NeuralODE
from dolfinx_nn.deep_limit.resnet import ConstantWeightResNet
from dolfinx_nn.deep_limit.runge_kutta import TABLEAUS, ButcherTableau, integrate

__all__ = [
    "GRADIENT_MODES",
    "TABLEAUS",
    "ButcherTableau",
    "ConstantWeightResNet",
    "NeuralODE",
    "annulus",
    "dense_block",
    "integrate",
]
