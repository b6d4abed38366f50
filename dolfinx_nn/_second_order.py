"""Refusing second derivatives through the bridge's ops.

A ``torch.autograd.Function`` whose backward pass is computed outside torch (an adjoint solve
with PETSc) returns gradients that torch sees as constants.  With
``torch.autograd.grad(..., create_graph=True)`` a Hessian through such an op would silently
lack the second-order terms.  :func:`first_order_only` attaches the returned gradients to the
op's inputs through a node whose own backward pass raises, so that differentiating them
again fails with a clear message, while a first-order backward pass (or a ``create_graph``
that never differentiates through these gradients) is unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def refusal(what: str) -> RuntimeError:
    """The error raised when ``what`` is differentiated twice (or in forward mode)."""
    return RuntimeError(
        f"second derivatives through {what} are not supported: its backward pass is an "
        "adjoint solve whose result torch cannot differentiate again (a Hessian would silently "
        "lack its second-order terms), and it has no forward-mode (jvp) rule. Use differences "
        "of gradients (e.g. HessianOperator(..., mode='finite-difference')), or keep the op "
        "out of the double-backward graph."
    )


class _FirstOrderOnly(torch.autograd.Function):
    @staticmethod
    def forward(what: str, gradient: torch.Tensor, *anchors: torch.Tensor) -> torch.Tensor:
        return gradient.clone()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.what = inputs[0]

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        raise refusal(ctx.what)

    @staticmethod
    def jvp(ctx, *tangents: torch.Tensor):
        raise refusal(ctx.what)


def first_order_only(
    gradients: Sequence[torch.Tensor | None], anchors: Sequence[torch.Tensor], what: str
) -> list[torch.Tensor | None]:
    """Make ``gradients`` refuse a further backward pass when torch records one.

    Args:
        gradients: the op's input gradients (``None`` where not needed).
        anchors: tensors the gradients depend on (incoming gradient, saved inputs).
        what: name of the op, for the message.

    Returns:
        ``gradients`` unchanged when no graph is recorded (the usual first-order case);
        otherwise copies that raise ``RuntimeError`` if differentiated.
    """
    if not torch.is_grad_enabled():
        return list(gradients)
    live = [a for a in anchors if isinstance(a, torch.Tensor) and a.requires_grad]
    if not live:
        return list(gradients)
    return [None if g is None else _FirstOrderOnly.apply(what, g, *live) for g in gradients]
