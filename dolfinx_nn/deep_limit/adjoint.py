"""Backpropagation through an ODE flow by the continuous adjoint method.

For ``dx/dt = f(x; theta)`` on ``[0, 1]`` and a loss ``L(x(1))`` the adjoint ``a = dL/dx(t)``
solves ``da/dt = -a^T df/dx`` backwards from ``a(1) = dL/dx(1)``, and
``dL/dtheta = int_0^1 a^T df/dtheta dt``.  The backward pass integrates ``x``, ``a`` and that
integral together from ``t = 1`` to ``t = 0`` with the forward scheme (Chen et al., 2018), so
memory does not grow with the number of steps; each right-hand side is one vector-Jacobian
product of ``f``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from dolfinx_nn.deep_limit.runge_kutta import IntegrationStats, State, integrate


class _AdjointFlow(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x0: torch.Tensor, f: Callable, options: dict, stats: list, *params):
        with torch.no_grad():
            (x1,), forward_stats = integrate(lambda y: (f(y[0]),), (x0,), **options)
        stats.append(forward_stats)
        ctx.f, ctx.options, ctx.stats, ctx.params = f, options, stats, params
        ctx.save_for_backward(x1)
        return x1

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_x1: torch.Tensor):
        (x1,) = ctx.saved_tensors
        f, params = ctx.f, ctx.params
        n = len(params)

        def augmented(state: State) -> State:
            x, a = state[0], state[1]
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                fx = f(x)
                vjps = torch.autograd.grad(fx, (x, *params), -a, allow_unused=True,
                                           materialize_grads=True)
            return (fx.detach(), *vjps)

        start = (x1, grad_x1, *[torch.zeros_like(p) for p in params])
        options = dict(ctx.options, span=-ctx.options.get("span", 1.0))
        with torch.no_grad():
            end, backward_stats = integrate(augmented, start, **options)
        ctx.stats.append(backward_stats)
        grads_params = end[2 : 2 + n]
        return (end[1], None, None, None, *grads_params)


def odeint_adjoint(
    f: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    params: tuple[torch.Tensor, ...],
    options: dict[str, Any],
) -> tuple[torch.Tensor, list[IntegrationStats]]:
    """Flow of ``f`` from ``x0`` over the unit interval, differentiated by the adjoint method.

    Args:
        f: right-hand side; its trainable tensors must all be in ``params``.
        x0: initial state.
        params: the tensors ``f`` depends on (receive gradients).
        options: keyword arguments of :func:`~dolfinx_nn.deep_limit.runge_kutta.integrate`.

    Returns:
        ``x(1)`` and a list that receives the forward (now) and backward (after
        ``backward()``) :class:`IntegrationStats`.
    """
    stats: list[IntegrationStats] = []
    x1 = _AdjointFlow.apply(x0, f, options, stats, *params)
    return x1, stats
