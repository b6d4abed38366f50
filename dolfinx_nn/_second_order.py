"""What the second-order passes of the bridge's ops share: directions, derivatives, refusals.

The backward pass of a bridge op (an adjoint solve, an assembly) is computed outside torch.
For second derivatives it is itself an ``autograd.Function`` whose backward and forward-mode
rules are again assemblies and solves (:mod:`dolfinx_nn._operator_second_order`,
:mod:`dolfinx_nn._functional_second_order`).  Those rules need UFL's derivatives of a form
along a *direction* of each control: a ``fem.Function`` on the control's space (owned values
from a tensor, ghosts updated) or a ``fem.Constant`` of the control's shape.  UFL has no
derivative with respect to a Constant; as in :func:`dolfinx_nn._forms.gradient_form` the
Constant is made a UFL variable and each integrand differentiated with ``ufl.diff``.

What is not supported (an operator of the unknown in the form, third derivatives, reverse
mode over a forward-mode tangent) raises :func:`refusal`'s error instead of returning a
Hessian without its second-order terms.
"""

from __future__ import annotations

from collections.abc import Sequence

import dolfinx
import numpy as np
import torch
import ufl
from ufl.algorithms import expand_derivatives
from ufl.algorithms.map_integrands import map_integrands

from dolfinx_nn._dofs import assign_owned
from dolfinx_nn._forms import Control, control_size

#: Why a second-order rule refuses, by key.
REASONS = {
    "operator": (
        "second derivatives through {what} are not supported when its form contains an "
        "operator of the unknown (a NeuralOperator): the operator's network has no second "
        "derivatives in the form (a Hessian would silently lack them). Use differences of "
        "gradients (e.g. HessianOperator(..., mode='finite-difference'))."
    ),
    "third": (
        "third derivatives through {what} are not supported: its second-order pass (a "
        "tangent-linear and a second adjoint solve) is not differentiable again. "
        "(torch.autograd.functional.hvp differentiates the gradient twice more, the "
        "double-backward trick: use torch.autograd.functional.vhp, equal for a symmetric "
        "Hessian, or torch.func.jvp of torch.func.grad.)"
    ),
    "reverse-over-forward": (
        "reverse mode over a forward-mode tangent of {what} (grad of a jvp) is not supported; "
        "compute Hessian-vector products forward-over-reverse (torch.func.jvp of "
        "torch.func.grad) or reverse-over-reverse (create_graph=True)."
    ),
}


def refusal(what: str, reason: str = "operator") -> RuntimeError:
    """The error raised when ``what`` is differentiated in a way it does not support.

    Args:
        what: the op's name, e.g. ``"fem_operator"``.
        reason: a key of :data:`REASONS`.
    """
    return RuntimeError(REASONS[reason].format(what=what))


class RefusingFunction(torch.autograd.Function):
    """Base of a second-order op of the bridge whose own derivatives are not supported.

    A subclass names the op (``what``) and defines ``forward`` only (inputs in the signature,
    as for ``setup_context``); its backward pass raises :func:`refusal` ``(what, reverse)``
    and its forward mode ``(what, "third")``, on every rank alike.  Example::

        class _Tangent(RefusingFunction):
            what, reverse = "fem_operator", "reverse-over-forward"

            @staticmethod
            def forward(p, n, *tensors): ...
    """

    what: str = ""
    reverse: str = "third"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        what, reverse = cls.what, cls.reverse

        def setup_context(ctx: object, inputs: object, output: object) -> None:
            pass

        def backward(ctx: object, *grads: object) -> None:
            raise refusal(what, reverse)

        def jvp(ctx: object, *tangents: object) -> None:
            raise refusal(what, "third")

        cls.setup_context = staticmethod(setup_context)  # type: ignore[method-assign]  # torch declares them as plain staticmethods of Function
        cls.backward = staticmethod(backward)  # type: ignore[method-assign]
        cls.jvp = staticmethod(jvp)  # type: ignore[method-assign]


def direction_of(control: Control) -> Control:
    """A Function on the control's space, or a Constant of its shape, holding zeros."""
    if isinstance(control, dolfinx.fem.Constant):
        return dolfinx.fem.Constant(control.ufl_domain(), np.zeros(np.shape(control.value)))
    return dolfinx.fem.Function(control.function_space, name=f"d_{control.name}")


def set_direction(direction: Control, values: np.ndarray | None) -> None:
    """Write a direction's values: owned dofs (ghosts updated) or a Constant's value.

    ``None`` is the zero direction.  A Constant's value may differ between ranks (the
    cotangent of a Constant's gradient share): each rank's cells then use its own.
    """
    if isinstance(direction, dolfinx.fem.Constant):
        direction.value[...] = 0.0 if values is None else values.reshape(direction.value.shape)
        return
    if values is None:
        direction.x.array[:] = 0.0
    else:
        assign_owned(direction, values)


def directional_derivative(form: ufl.Form, control: Control, direction: Control) -> ufl.Form:
    """``d form / d control [direction]``, derivatives expanded.

    Args:
        form: any form (with or without arguments).
        control: a Function or a Constant of ``form``.
        direction: a Function on the control's space, or a Constant of its shape.
    """
    if isinstance(control, dolfinx.fem.Constant):
        variable = ufl.variable(control)
        scalar = control.ufl_shape == ()

        def along(integrand):
            d = ufl.diff(ufl.replace(integrand, {control: variable}), variable)
            return expand_derivatives(d * direction if scalar else ufl.inner(d, direction))

        return map_integrands(along, form)
    return expand_derivatives(ufl.derivative(form, control, direction))


def total_derivative(
    form: ufl.Form, pairs: Sequence[tuple[Control, Control]]
) -> ufl.Form | None:
    """``sum_i d form / d c_i [d_i]`` over ``(c_i, d_i)`` pairs; ``None`` when it vanishes."""
    terms = [directional_derivative(form, c, d) for c, d in pairs]
    terms = [t for t in terms if not t.empty()]
    if not terms:
        return None
    return sum(terms[1:], terms[0])


def compile_form(form: ufl.Form | None, **compile_options) -> dolfinx.fem.Form | None:
    """``dolfinx.fem.form`` of a form, or ``None`` when it vanishes."""
    if form is None:
        return None
    form = expand_derivatives(form)
    return None if form.empty() else dolfinx.fem.form(form, **compile_options)


def as_numpy(t: torch.Tensor | None) -> np.ndarray | None:
    """A float64 numpy copy of a tensor (flattened only by the caller), ``None`` kept."""
    return None if t is None else t.detach().to("cpu", torch.float64).numpy().copy()


def zeros_like_control(control: Control) -> np.ndarray:
    """Zeros of the size of a control's tensor on this rank."""
    return np.zeros(control_size(control))
