"""Second derivatives through :func:`dolfinx_nn.fem_functional`.

The backward pass of ``J = assemble(M)(c_1, ..., c_k)`` maps the cotangent ``s`` of the value
to ``g_j = s dM/dc_j``.  As a differentiable op of ``(s, c)`` it has

- a backward rule: for cotangents ``delta_j`` of the ``g_j``, ``sum_j <dM/dc_j, delta_j>`` to
  ``s`` (the rank's share) and ``s h_j(delta)`` to ``c_j``, with ``h_j(dc) = d/dc_j (sum_i
  dM/dc_i [dc_i])`` the Hessian of ``M`` applied to a direction, assembled from UFL's second
  derivative;
- a forward-mode rule: ``dg_j = ds dM/dc_j + s h_j(dc)``;

and the assembly itself has the forward-mode rule ``dJ = sum_j <dM/dc_j, dc_j>`` (summed over
the ranks: the value is global).  A functional with an operator of the unknown in ``M`` (a
:class:`dolfinx_nn.NeuralOperator`) refuses second derivatives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mpi4py import MPI

import numpy as np
import torch

from dolfinx_nn._forms import assemble_gradient, gradient_form
from dolfinx_nn._second_order import (
    RefusingFunction,
    as_numpy,
    direction_of,
    refusal,
    set_direction,
    total_derivative,
)


@dataclass
class AssemblyPass:
    """One evaluation of a functional, as its second-order rules see it.

    Attributes:
        functional: the :class:`dolfinx_nn.FEMFunctional`.
        state: the evaluation's state (control values).
        meta: per input, the tensor's ``(dtype, device, shape)``.
        needs: per input, whether its gradient is computed.
    """

    functional: Any
    state: Any
    meta: list[tuple]
    needs: list[bool]


class FunctionalSecondOrder:
    """The directions and the Hessian-action forms ``h_j`` of one functional (collective)."""

    def __init__(self, functional: Any) -> None:
        opts = functional._compile_options
        self.functional = functional
        self.directions = [direction_of(c) for c in functional.controls]
        d_m = total_derivative(functional.M, list(zip(functional.controls, self.directions,
                                                      strict=True)))
        self.forms = [None if d_m is None else gradient_form(d_m, c, **opts)
                      for c in functional.controls]

    def hessian_action(
        self, directions: Sequence[np.ndarray | None], needs: Sequence[bool]
    ) -> list[np.ndarray | None]:
        """``h_j`` for the given directions (the controls must hold the state)."""
        for d, values in zip(self.directions, directions, strict=True):
            set_direction(d, values)
        return [
            assemble_gradient(form, c) if need else None
            for c, form, need in zip(self.functional.controls, self.forms, needs, strict=True)
        ]


def _forms(functional: Any) -> FunctionalSecondOrder:
    if functional._second_order is None:
        functional._second_order = FunctionalSecondOrder(functional)
    return functional._second_order


def _hessian_action_at(
    p: AssemblyPass, directions: Sequence[np.ndarray | None], needs: Sequence[bool]
) -> list[np.ndarray | None]:
    """``h_j`` at the pass's state; the coefficients' values of the moment are put back."""
    functional = p.functional
    now = functional._everything.read()
    try:
        functional._set(p.state, derivatives=False)
        return _forms(functional).hessian_action(directions, needs)
    finally:
        functional._everything.write(now)


def _refuse_operators(functional: Any) -> None:
    if functional.operators:
        raise refusal("fem_functional", "operator")


def _flat(t: torch.Tensor | None) -> np.ndarray | None:
    values = as_numpy(t)
    return None if values is None else values.reshape(-1)


def _shaped(values: np.ndarray, meta: tuple) -> torch.Tensor:
    dtype, device, shape = meta
    return torch.from_numpy(values).reshape(shape).to(device=device, dtype=dtype)


class _Gradient(torch.autograd.Function):
    """The backward pass of an assembly, ``(s, c) -> s dM/dc``, as a differentiable op."""

    @staticmethod
    def forward(p: AssemblyPass, scale: torch.Tensor, *tensors: torch.Tensor):
        from dolfinx_nn.fem_functional import scaled_gradients

        unscaled: list[torch.Tensor | None] = []
        value = scale.detach().to("cpu", torch.float64)
        out = scaled_gradients(p, value, p.needs, unscaled)
        p.functional._gradients_pending = (
            [None if g is None else g.numpy().reshape(-1) for g in unscaled], float(value)
        )
        return tuple(out)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.p = inputs[0]
        ctx.gradients, ctx.scale = ctx.p.functional._gradients_pending
        ctx.scale_meta = (inputs[1].dtype, inputs[1].device)

    @staticmethod
    def backward(ctx, *cotangents: torch.Tensor | None):
        p: AssemblyPass = ctx.p
        _refuse_operators(p.functional)
        flags = np.asarray(ctx.needs_input_grad[1:], dtype=np.int32)
        p.functional.comm.Allreduce(MPI.IN_PLACE, flags, op=MPI.MAX)
        needs = [bool(x) for x in flags]
        return (None, *_GradientVjp.apply(p, ctx.gradients, ctx.scale, ctx.scale_meta, needs,
                                          *cotangents))

    @staticmethod
    def jvp(ctx, *tangents: torch.Tensor | None):
        p: AssemblyPass = ctx.p
        _refuse_operators(p.functional)
        return _GradientJvp.apply(p, ctx.gradients, ctx.scale, *tangents[1:])


class _GradientVjp(RefusingFunction):
    what = "fem_functional"

    @staticmethod
    def forward(p: AssemblyPass, gradients: list[np.ndarray | None], scale: float,
                scale_meta: tuple, needs: list[bool], *cotangents: torch.Tensor | None):
        functional = p.functional
        deltas = [_flat(c) for c in cotangents]
        # The value is global, so is the derivative with respect to its cotangent: every
        # rank continues with the same number (as it holds the same value).
        to_scale = functional.comm.allreduce(
            sum(float(g @ d) for g, d in zip(gradients, deltas, strict=True)
                if g is not None and d is not None), op=MPI.SUM)
        h = _hessian_action_at(p, deltas, needs[1:])
        out: list[torch.Tensor | None] = [
            torch.tensor(to_scale, dtype=scale_meta[0], device=scale_meta[1]) if needs[0]
            else None
        ]
        out += [None if x is None else _shaped(scale * x, meta)
                for x, meta in zip(h, p.meta, strict=True)]
        return tuple(out)


class _GradientJvp(RefusingFunction):
    what = "fem_functional"

    @staticmethod
    def forward(p: AssemblyPass, gradients: list[np.ndarray | None], scale: float,
                d_scale: torch.Tensor | None, *d_tensors: torch.Tensor | None):
        ds = 0.0 if d_scale is None else float(d_scale.detach())
        h = _hessian_action_at(p, [_flat(t) for t in d_tensors], p.needs)
        out: list[torch.Tensor | None] = []
        for g, x, meta in zip(gradients, h, p.meta, strict=True):  # None together (p.needs)
            out.append(None if g is None or x is None else _shaped(ds * g + scale * x, meta))
        return tuple(out)


class _Tangent(RefusingFunction):
    """Forward mode of the assembly: ``dJ = sum_j <dM/dc_j, dc_j>`` over all ranks."""

    what, reverse = "fem_functional", "reverse-over-forward"

    @staticmethod
    def forward(p: AssemblyPass, n: int, *tensors: torch.Tensor | None) -> torch.Tensor:
        # tensors: n tangents, then the primal inputs, which connect the tangent to them so
        # that reverse mode over it reaches the refusing backward instead of returning zeros.
        d_tensors = tensors[:n]
        functional = p.functional
        needs = [t is not None for t in d_tensors]
        grads = functional._backward(p.state, needs)
        local = sum(float(g.numpy().reshape(-1) @ _flat(t))
                    for g, t in zip(grads, d_tensors, strict=True) if g is not None)
        return torch.tensor(functional.comm.allreduce(local, op=MPI.SUM), dtype=torch.float64)


# -- entry points from _FEMAssemble ---------------------------------------------------------
def differentiable_gradient(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    """The backward pass of an assembly as a differentiable op (``create_graph``, ``torch.func``).

    Returns one gradient (or ``None``) per input.
    """
    from dolfinx_nn.fem_functional import agreed_needs

    p = AssemblyPass(ctx.functional, ctx.state, list(ctx.meta), agreed_needs(ctx))
    return _Gradient.apply(p, grad_output, *ctx.saved_tensors[: len(ctx.meta)])


def functional_tangent(ctx, tangents: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """The forward-mode rule of an assembly: ``dJ`` for the inputs' tangents."""
    _refuse_operators(ctx.functional)
    p = AssemblyPass(ctx.functional, ctx.state, list(ctx.meta), [])
    return _Tangent.apply(p, len(tangents), *tangents, *ctx.saved_tensors)
