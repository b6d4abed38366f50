"""A scalar UFL functional as a differentiable torch scalar."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mpi4py import MPI

import dolfinx
import dolfinx.fem.petsc
import numpy as np
import torch
import ufl

from dolfinx_nn._dofs import check_finite
from dolfinx_nn._forms import (
    Control,
    assemble_gradient,
    assign_control,
    check_controls,
    control_name,
    control_size,
    control_to_numpy,
    gradient_form,
)


@dataclass
class _State:
    controls: list[np.ndarray]


class FEMFunctional:
    """``J(c_1, ..., c_k) = assemble(M)`` with ``M`` a scalar UFL form of the controls.

    Use :func:`fem_functional` to build one.  The value is the global one (summed over ranks)
    on every rank; the gradient with respect to a Function control's tensor holds the rank's
    owned dofs, with respect to a Constant control's tensor the rank's share (see
    :mod:`dolfinx_nn._forms`).
    """

    def __init__(
        self,
        M: ufl.Form,
        *,
        controls: Sequence[Control],
        form_compiler_options: dict | None = None,
        jit_options: dict | None = None,
    ) -> None:
        if not isinstance(M, ufl.Form) or len(M.arguments()) != 0:
            raise ValueError("M must be a scalar UFL form (no TestFunction or TrialFunction).")
        self.controls = check_controls(M, controls, "M")
        if not self.controls:
            raise ValueError("fem_functional needs at least one control.")
        compile_opts = {"form_compiler_options": form_compiler_options, "jit_options": jit_options}
        self._form = dolfinx.fem.form(M, **compile_opts)
        self.comm: MPI.Comm = self._form.mesh.comm
        self._gradient_forms = [gradient_form(M, c, **compile_opts) for c in self.controls]
        self._sizes = [control_size(c) for c in self.controls]

    def __call__(self, *controls: torch.Tensor) -> torch.Tensor:
        """Evaluate the functional at the given control values (owned dofs)."""
        if len(controls) != len(self.controls):
            raise ValueError(
                f"expected {len(self.controls)} control tensor(s) (one per control, in order), "
                f"got {len(controls)}."
            )
        return _FEMAssemble.apply(self, *controls)

    def _set(self, values: Sequence[np.ndarray]) -> None:
        for i, (c, x) in enumerate(zip(self.controls, values, strict=True)):
            assign_control(c, x, self.comm, f"control {i}")

    def _forward(self, tensors: Sequence[torch.Tensor]) -> tuple[float, _State]:
        values = []
        for i, (c, t, n) in enumerate(zip(self.controls, tensors, self._sizes, strict=True)):
            x = control_to_numpy(c, t, f"control {i} ({control_name(c)})")
            check_finite(x, self.comm, f"control {i} ({control_name(c)})")
            values.append(x)
        self._set(values)
        local = dolfinx.fem.assemble_scalar(self._form)
        return self.comm.allreduce(local, op=MPI.SUM), _State(values)

    def _backward(self, state: _State, needs: Sequence[bool]) -> list[np.ndarray | None]:
        self._set(state.controls)
        grads: list[np.ndarray | None] = []
        for form, c, need in zip(self._gradient_forms, self.controls, needs, strict=True):
            grads.append(assemble_gradient(form, c) if need else None)
        return grads


class _FEMAssemble(torch.autograd.Function):
    @staticmethod
    def forward(ctx, functional: FEMFunctional, *controls: torch.Tensor) -> torch.Tensor:
        value, state = functional._forward(controls)
        ctx.functional = functional
        ctx.state = state
        ctx.meta = [(t.dtype, t.device, t.shape) for t in controls]
        return torch.tensor(value, dtype=torch.float64)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        scale = float(grad_output)
        grads = ctx.functional._backward(ctx.state, ctx.needs_input_grad[1:])
        out = []
        for g, (dtype, device, shape) in zip(grads, ctx.meta, strict=True):
            out.append(
                None if g is None
                else (scale * torch.from_numpy(g)).reshape(shape).to(device=device, dtype=dtype)
            )
        return (None, *out)


def fem_functional(
    M: ufl.Form,
    *,
    controls: Sequence[Control],
    form_compiler_options: dict | None = None,
    jit_options: dict | None = None,
) -> FEMFunctional:
    """Make the scalar form ``M`` a differentiable function of the controls' owned dofs.

    Args:
        M: scalar UFL form (``dx``, ``ds`` and ``dS`` terms).
        controls: ``fem.Function`` coefficients or ``fem.Constant`` constants of ``M``, in the
            order of the call's tensors (a Constant's tensor: its whole value, on every rank).
        form_compiler_options: FFCx options.
        jit_options: JIT options.

    Returns:
        A callable ``J(*control_tensors) -> 0-dim float64 tensor`` (the global value).

    Example:
        >>> J = fem_functional(0.5 * (u - d) ** 2 * dx + alpha * q * ds, controls=[u, q])
        >>> j = J(u_t, q_t)
        >>> j.backward()
    """
    return FEMFunctional(
        M, controls=controls, form_compiler_options=form_compiler_options, jit_options=jit_options
    )
