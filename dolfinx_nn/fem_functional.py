"""A scalar UFL functional as a differentiable torch scalar.

Operators of the unknown in the functional (a :class:`dolfinx_nn.NeuralOperator` ``N(u)``) are
found by themselves: the value uses ``N`` at the current operands, the gradient with respect to
a control that is an operand includes ``dM/dN dN/du``, and the operator's inputs (network
parameters) are differentiable too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mpi4py import MPI

import dolfinx
import dolfinx.fem.petsc
import numpy as np
import torch
import ufl

from dolfinx_nn._dofs import owned_size
from dolfinx_nn._forms import (
    CompileOptions,
    Control,
    assemble_gradient,
    assemble_owned,
    assign_control,
    check_controls,
    control_size,
    control_values,
    gradient_form,
    prepare_call,
)
from dolfinx_nn._functional_second_order import differentiable_gradient, functional_tangent
from dolfinx_nn._reuse import Values
from dolfinx_nn.parallel import agree_any


@dataclass
class _State:
    controls: list[np.ndarray]
    operator_inputs: list[list[torch.Tensor]]
    context: list[np.ndarray]


class FEMFunctional:
    """``J(c_1, ..., c_k) = assemble(M)`` with ``M`` a scalar UFL form of the controls.

    Use :func:`fem_functional` to build one.  The value is the global one (summed over ranks)
    on every rank; the gradient with respect to a Function control's tensor holds the rank's
    owned dofs, with respect to a Constant control's tensor the rank's share (see
    :mod:`dolfinx_nn._forms`).

    Attributes:
        operators: the operators of the unknown found in ``M``.
    """

    def __init__(
        self,
        M: ufl.Form,
        *,
        controls: Sequence[Control],
        form_compiler_options: dict | None = None,
        jit_options: dict | None = None,
    ) -> None:
        from dolfinx_nn.fem_operator import (
            _find_operators,
            _form_inputs,
            _listed,
            check_operands,
        )

        if not isinstance(M, ufl.Form) or len(M.arguments()) != 0:
            raise ValueError("M must be a scalar UFL form (no TestFunction or TrialFunction).")
        self.controls = check_controls(M, controls, "M")
        if not self.controls:
            raise ValueError("fem_functional needs at least one control.")
        self.operators: list[Any] = _find_operators(M, ())
        if any(op is c for op in self.operators for c in self.controls):
            raise ValueError(
                "an operator of the unknown cannot be a control of fem_functional; its inputs "
                "(network parameters) are differentiable through operator_inputs."
            )
        for i, op in enumerate(self.operators):
            # Function controls may be operands here (the chain rule is assembled below);
            # Constants and other operators may not.
            check_operands(op, i, [c for c in self.controls
                                   if isinstance(c, dolfinx.fem.Constant)], self.operators)
        # Everything else M reads (data changed per sample, a time): kept per forward pass.
        functions, constants = _form_inputs(M, self.operators)
        context_functions = [c for c in functions if not _listed(c, self.controls)
                             and not _listed(c, self.operators)]
        context_constants = [c for c in constants if not _listed(c, self.controls)]
        self._context = Values(context_functions, context_constants)
        self._everything = Values(
            [*context_functions,
             *(c for c in self.controls if isinstance(c, dolfinx.fem.Function))],
            [*context_constants,
             *(c for c in self.controls if isinstance(c, dolfinx.fem.Constant))],
        )
        compile_opts = CompileOptions(form_compiler_options=form_compiler_options,
                                      jit_options=jit_options)
        self.M = M
        self._compile_options = compile_opts
        self._second_order = None  # its forms, compiled on the first second-order pass
        self._form = dolfinx.fem.form(M, **compile_opts)
        self.comm: MPI.Comm = self._form.mesh.comm
        self._gradient_forms = [
            _chain_gradient_form(M, c, self.operators, compile_opts) for c in self.controls
        ]
        self._operator_forms = [gradient_form(M, op, **compile_opts) for op in self.operators]
        self._sizes = [control_size(c) for c in self.controls]
        self._pending: _State | None = None

    def __call__(
        self,
        *controls: torch.Tensor,
        operator_inputs: Sequence[Sequence[torch.Tensor] | None] | None = None,
    ) -> torch.Tensor:
        """Evaluate the functional at the given control values (owned dofs).

        Args:
            controls: one tensor per control, in order.
            operator_inputs: per operator found in ``M``, the tensors it evaluates with (for a
                ``NeuralOperator``: its parameters) or ``None`` for its own.
        """
        flat, anchor = prepare_call(self, controls, operator_inputs, " in M")
        self._n_tensors = len(controls) + len(flat)
        return _FEMAssemble.apply(self, len(controls), *controls, *flat, *anchor)

    def _set(self, state: _State, derivatives: bool) -> None:
        for i, (c, x) in enumerate(zip(self.controls, state.controls, strict=True)):
            assign_control(c, x, self.comm, f"control {i}")
        self._context.write(state.context)
        for op, inputs in zip(self.operators, state.operator_inputs, strict=True):
            op.set_inputs(inputs)
            op.update(derivatives)

    def _forward(self, tensors: Sequence[torch.Tensor]) -> tuple[float, _State]:
        values = control_values(self.controls, tensors, self.comm)
        state = _State(values, [list(op.inputs()) for op in self.operators],
                       self._context.record())
        self._set(state, derivatives=False)
        local = dolfinx.fem.assemble_scalar(self._form)
        return self.comm.allreduce(local, op=MPI.SUM), state

    def _backward(self, state: _State, needs: Sequence[bool]) -> list[torch.Tensor | None]:
        now = self._everything.read()  # the values of the moment, put back afterwards
        try:
            return self._gradients(state, needs)
        finally:
            self._everything.write(now)

    def _gradients(self, state: _State, needs: Sequence[bool]) -> list[torch.Tensor | None]:
        n = len(self.controls)
        self._set(state, derivatives=bool(self.operators) and any(needs[:n]))
        grads: list[torch.Tensor | None] = []
        for form, c, need in zip(self._gradient_forms, self.controls, needs[:n], strict=True):
            grads.append(torch.from_numpy(assemble_gradient(form, c)) if need else None)
        start = n
        for op, op_form, inputs in zip(
            self.operators, self._operator_forms, state.operator_inputs, strict=True
        ):
            op_needs = needs[start : start + len(inputs)]
            start += len(inputs)
            if not any(op_needs):
                grads.extend([None] * len(inputs))
                continue
            g = assemble_owned(op_form, owned_size(op.function_space))
            op_grads = op.backward(g, inputs)
            grads.extend(gr if k else None for gr, k in zip(op_grads, op_needs, strict=True))
        return grads


def _chain_gradient_form(
    M: ufl.Form, control: Control, operators: Sequence[Any], compile_opts: CompileOptions
) -> dolfinx.fem.Form | list[dolfinx.fem.Form | None] | None:
    """``dM/dc``, plus ``dM/dN dN/dc`` for each operator ``N`` with ``c`` among its operands."""
    if isinstance(control, dolfinx.fem.Constant) or not operators:
        return gradient_form(M, control, **compile_opts)
    w = ufl.TestFunction(control.function_space)
    total = ufl.derivative(M, control, w)
    for op in operators:
        term = op.jacobian(M, control, w)
        if term is not None:
            total = total + term
    expanded = ufl.algorithms.expand_derivatives(total)
    if expanded.empty():
        return None
    return dolfinx.fem.form(expanded, **compile_opts)


class _FEMAssemble(torch.autograd.Function):
    @staticmethod
    def forward(functional: FEMFunctional, n_controls: int, *tensors: torch.Tensor) -> torch.Tensor:
        value, state = functional._forward(tensors[:n_controls])
        functional._pending = state
        return torch.tensor(value, dtype=torch.float64)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        functional, n_controls, *tensors = inputs
        ctx.functional = functional
        ctx.state = functional._pending
        ctx.meta = [(t.dtype, t.device, t.shape) for t in tensors[: functional._n_tensors]]
        ctx.save_for_backward(*tensors)
        ctx.save_for_forward(*tensors)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        anchors = [None] * (len(ctx.needs_input_grad) - 2 - len(ctx.meta))
        if torch.is_grad_enabled():  # create_graph=True or torch.func: a differentiable pass
            return (None, None, *differentiable_gradient(ctx, grad_output), *anchors)
        scale = grad_output.detach().to("cpu", torch.float64)
        return (None, None, *scaled_gradients(ctx, scale, agreed_needs(ctx)), *anchors)

    @staticmethod
    def jvp(ctx, *tangents):
        return functional_tangent(ctx, tangents[2 : 2 + len(ctx.meta)])


def agreed_needs(ctx) -> list[bool]:
    """Which inputs of an assembly need a gradient, agreed over the ranks."""
    return agree_any(ctx.needs_input_grad[2 : 2 + len(ctx.meta)], ctx.functional.comm)


def scaled_gradients(
    ctx, scale: torch.Tensor, needs: Sequence[bool],
    unscaled: list[torch.Tensor | None] | None = None,
) -> list[torch.Tensor | None]:
    """``scale * dM/dc`` per input (``None`` where not needed), shaped like the inputs.

    Args:
        ctx: the assembly's context (``functional``, ``state``, ``meta``).
        scale: the cotangent of the value (0-dim, float64, on the CPU).
        needs: per input, whether its gradient is needed (the same on every rank).
        unscaled: if given, receives the gradients before scaling (float64, flat).
    """
    grads = ctx.functional._backward(ctx.state, needs)
    if unscaled is not None:
        unscaled.extend(grads)
    out: list[torch.Tensor | None] = []
    for g, (dtype, device, shape) in zip(grads, ctx.meta, strict=True):
        out.append(
            None if g is None
            else (scale * g.to("cpu", torch.float64)).reshape(shape).to(device=device,
                                                                        dtype=dtype)
        )
    return out


def fem_functional(
    M: ufl.Form,
    *,
    controls: Sequence[Control],
    form_compiler_options: dict | None = None,
    jit_options: dict | None = None,
) -> FEMFunctional:
    """Make the scalar form ``M`` a differentiable function of the controls' owned dofs.

    Args:
        M: scalar UFL form (``dx``, ``ds`` and ``dS`` terms); it may contain operators of the
            unknown (:class:`dolfinx_nn.NeuralOperator`), whose inputs are then differentiable
            (``J(u_t, operator_inputs=[params])``).
        controls: ``fem.Function`` coefficients or ``fem.Constant`` constants of ``M``, in the
            order of the call's tensors (a Constant's tensor: its whole value, on every rank).
        form_compiler_options: FFCx options.
        jit_options: JIT options.

    Returns:
        A callable ``J(*control_tensors) -> 0-dim float64 tensor`` (the global value).

    Raises:
        ValueError: a control not in ``M``, a tensor of the wrong size or with NaN/Inf (on
            every rank).
        RuntimeError: in a second-order pass (``create_graph=True`` then differentiating the
            gradient, ``torch.func.jvp``) when ``M`` contains an operator of the unknown, or in
            a third-order one.

    Example:
        >>> J = fem_functional(0.5 * (u - d) ** 2 * dx + alpha * q * ds, controls=[u, q])
        >>> j = J(u_t, q_t)
        >>> j.backward()
    """
    return FEMFunctional(
        M, controls=controls, form_compiler_options=form_compiler_options, jit_options=jit_options
    )
