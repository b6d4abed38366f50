"""Validation of UFL forms and controls, and the derivative forms the bridge assembles.

A control is a ``fem.Function`` (its tensor holds the rank's owned dofs; its gradient the
rank's owned entries) or a ``fem.Constant`` (its tensor holds the whole value, the same on
every rank; its gradient is the rank's share, the integral over the rank's cells, like the
gradient of a network parameter: :func:`dolfinx_nn.sync_gradients` or a
:func:`dolfinx_nn.global_sum` of a scalar product sums the shares).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict, Unpack, cast, overload

from mpi4py import MPI
from petsc4py import PETSc

import dolfinx
import dolfinx.fem.petsc
import numpy as np
import torch
import ufl
from ufl.algorithms import expand_derivatives
from ufl.algorithms.map_integrands import map_integrands

from dolfinx_nn._dofs import assign_owned, check_finite, ghost_add, owned_size, tensor_to_numpy
from dolfinx_nn.parallel import raise_on_all_ranks, recording_anchor
from dolfinx_nn.petsc_problems import PetscOwner, assemble_matrix_into

Control = dolfinx.fem.Function | dolfinx.fem.Constant


class CompileOptions(TypedDict):
    """The compilation options of the bridge's forms (keywords of ``dolfinx.fem.form``)."""

    form_compiler_options: dict | None
    jit_options: dict | None


def control_name(c: Control) -> str:
    """``c.name`` for a Function, a description of the value shape for a Constant."""
    if isinstance(c, dolfinx.fem.Constant):
        return f"Constant of shape {tuple(np.shape(c.value))}"
    return repr(c.name)


def control_size(c: Control) -> int:
    """Values of the control's tensor on this rank: owned dofs, or the Constant's size."""
    if isinstance(c, dolfinx.fem.Constant):
        return int(np.asarray(c.value).size)
    return owned_size(c.function_space)


def control_to_numpy(c: Control, t: torch.Tensor, what: str, rank: int) -> np.ndarray:
    """Validate a control's tensor (owned dofs, or a Constant's whole value) as float64."""
    if isinstance(c, dolfinx.fem.Constant) and isinstance(t, torch.Tensor):
        shape = tuple(np.shape(c.value))
        if t.numel() != control_size(c):
            raise ValueError(
                f"{what} has {t.numel()} values (shape {tuple(t.shape)}) but the Constant has "
                f"{control_size(c)} (shape {shape}); pass its whole value on every rank."
            )
        return tensor_to_numpy(t, control_size(c), what, rank=rank, block_size=1
                               ) if t.dim() <= 1 else _constant_values(t, what)
    bs = c.function_space.dofmap.index_map_bs
    return tensor_to_numpy(t, control_size(c), what, block_size=bs, rank=rank)


def control_values(
    controls: Sequence[Control], tensors: Sequence[torch.Tensor], comm: MPI.Comm
) -> list[np.ndarray]:
    """The control tensors as float64 arrays (owned dofs or a Constant's value), checked.

    Raises:
        TypeError, ValueError: on every rank, for a tensor of the wrong type or size, or one
            holding NaN/Inf.
    """
    values: list[np.ndarray] = []
    error: Exception | None = None
    try:
        for i, (c, t) in enumerate(zip(controls, tensors, strict=True)):
            values.append(control_to_numpy(c, t, f"control {i} ({control_name(c)})", comm.rank))
    except (TypeError, ValueError) as e:
        error = e
    raise_on_all_ranks(error, comm)
    for i, (c, x) in enumerate(zip(controls, values, strict=True)):
        check_finite(x, comm, f"control {i} ({control_name(c)})")
    return values


def _constant_values(t: torch.Tensor, what: str) -> np.ndarray:
    if t.is_complex():
        raise TypeError(f"{what} is complex ({t.dtype}); the bridge works with real values.")
    return t.detach().to("cpu", torch.float64).reshape(-1).numpy()


def assign_control(c: Control, values: np.ndarray, comm: MPI.Comm, what: str) -> None:
    """Write a control's tensor values (a Constant's must agree on all ranks)."""
    if isinstance(c, dolfinx.fem.Constant):
        reference = comm.bcast(values if comm.rank == 0 else None, root=0)
        if comm.allreduce(int(not np.array_equal(values, reference)), op=MPI.SUM):
            raise ValueError(
                f"{what} is a Constant, replicated on every rank, but its tensor differs between "
                "ranks; pass the same values on every rank (e.g. broadcast them)."
            )
        c.value[...] = values.reshape(np.shape(c.value))
    else:
        assign_owned(c, values)


def check_controls(
    form: ufl.Form,
    controls: Sequence[Control],
    form_name: str,
    exempt: Sequence[bool] | None = None,
) -> list[Control]:
    """Check that every control is a ``fem.Function`` or ``fem.Constant`` of ``form``.

    ``exempt[i]`` marks controls that need not appear (e.g. Dirichlet data).
    """
    controls = list(controls)
    coefficients = form.coefficients()
    for i, c in enumerate(controls):
        if exempt is not None and exempt[i]:
            continue
        if isinstance(c, dolfinx.fem.Constant):
            if c not in form.constants():
                raise ValueError(f"control {i} ({control_name(c)}) does not appear in {form_name}.")
            continue
        if not isinstance(c, dolfinx.fem.Function):
            raise TypeError(
                f"control {i} must be a dolfinx.fem.Function or dolfinx.fem.Constant, got "
                f"{type(c).__name__}."
            )
        if c not in coefficients:
            names = ", ".join(repr(f.name) for f in coefficients) or "none"
            raise ValueError(
                f"control {i} ({c.name!r}) does not appear in {form_name}; the coefficients of "
                f"{form_name} are: {names}."
            )
    if len({id(c) for c in controls}) != len(controls):
        raise ValueError(f"the controls of {form_name} must be distinct functions.")
    return controls


def prepare_call(
    bridge_op: Any,
    controls: Sequence[torch.Tensor],
    operator_inputs: Sequence[Sequence[torch.Tensor] | None] | None,
    where: str = "",
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The checks and set-up of a call of a bridge op (collective).

    Checks the number of control tensors and of operator inputs (on every rank), hands each
    operator of the unknown its inputs and returns the operators' tensors and the op's
    recording anchor (:func:`dolfinx_nn.parallel.recording_anchor`).

    Args:
        bridge_op: a ``FEMOperator`` or ``FEMFunctional`` (``controls``, ``operators``,
            ``comm``).
        controls: the call's control tensors.
        operator_inputs: the call's ``operator_inputs``.
        where: where the operators are, for the message (e.g. ``" in M"``).

    Raises:
        ValueError: on every rank, for a wrong count or an operator's refused inputs.
    """
    expected, operators = len(bridge_op.controls), bridge_op.operators
    error: Exception | None = None
    if len(controls) != expected:
        error = ValueError(
            f"expected {expected} control tensor(s) (one per control, in order), "
            f"got {len(controls)}."
        )
    elif operator_inputs is not None and len(operator_inputs) != len(operators):
        error = ValueError(
            f"operator_inputs must hold one entry per operator{where} ({len(operators)}), "
            f"got {len(operator_inputs)}."
        )
    raise_on_all_ranks(error, bridge_op.comm)
    try:
        for op, inputs in zip(operators, operator_inputs or [None] * len(operators),
                              strict=True):
            op.set_inputs(inputs)
    except (TypeError, ValueError) as e:
        error = e
    raise_on_all_ranks(error, bridge_op.comm)
    flat = [t for op in operators for t in op.inputs()]
    return flat, recording_anchor([*controls, *flat], bridge_op.comm)


def is_empty(form: ufl.Form) -> bool:
    """True if ``form`` vanishes identically after expanding derivatives."""
    return expand_derivatives(form).empty()


@overload
def gradient_form(
    functional: ufl.Form, control: dolfinx.fem.Function, **compile_options: Unpack[CompileOptions]
) -> dolfinx.fem.Form | None: ...


@overload
def gradient_form(
    functional: ufl.Form, control: dolfinx.fem.Constant, **compile_options: Unpack[CompileOptions]
) -> list[dolfinx.fem.Form | None]: ...


@overload
def gradient_form(
    functional: ufl.Form, control: Control, **compile_options: Unpack[CompileOptions]
) -> dolfinx.fem.Form | list[dolfinx.fem.Form | None] | None: ...


def gradient_form(
    functional: ufl.Form, control: Control, **compile_options: Unpack[CompileOptions]
) -> dolfinx.fem.Form | list[dolfinx.fem.Form | None] | None:
    """Compile ``d functional / d control``.

    For a Function: a linear form on the control's space (``None`` when it vanishes). For a
    Constant: one scalar form per component of its value (``None`` for vanishing ones); UFL
    has no derivative with respect to a Constant, so the Constant is made a UFL variable and
    each integrand is differentiated with ``ufl.diff``.
    """
    if isinstance(control, dolfinx.fem.Constant):
        variable = ufl.variable(control)
        forms: list[dolfinx.fem.Form | None] = []
        for index in np.ndindex(*control.ufl_shape):

            def component(integrand, index=index):
                d = ufl.diff(ufl.replace(integrand, {control: variable}), variable)
                return expand_derivatives(d[index] if index else d)

            dform = map_integrands(component, functional)
            forms.append(None if is_empty(dform) else dolfinx.fem.form(dform, **compile_options))
        return forms
    w = ufl.TestFunction(control.function_space)
    dform = ufl.derivative(functional, control, w)
    if is_empty(dform):
        return None
    return dolfinx.fem.form(dform, **compile_options)


def assemble_gradient(
    form: dolfinx.fem.Form | list[dolfinx.fem.Form | None] | None, control: Control
) -> np.ndarray:
    """The rank's part of an assembled :func:`gradient_form`: owned entries, or a share."""
    if isinstance(control, dolfinx.fem.Constant):
        forms = form if isinstance(form, list) else []  # None: a vanishing derivative
        shares = [0.0 if f is None else dolfinx.fem.assemble_scalar(f) for f in forms]
        return np.asarray(shares, dtype=np.float64)  # flat, in the order of np.ndindex
    # A Function's gradient form is one form (or None), never a list.
    return assemble_owned(cast(dolfinx.fem.Form | None, form), owned_size(control.function_space))


def assemble_owned(form: dolfinx.fem.Form | None, n: int) -> np.ndarray:
    """Owned entries of an assembled linear form (zeros for a vanishing form)."""
    if form is None:
        return np.zeros(n)
    vec = dolfinx.fem.petsc.assemble_vector(form)
    ghost_add(vec)
    values = vec.array_r[:n].copy()
    vec.destroy()
    return values


class DerivativeMatrix(PetscOwner):
    """``dF/dc`` as an assembled matrix, for a control whose derivative form is constant.

    The gradient of a Function control is ``-(dF/dc)^T lambda``, the vector assembly of the
    form ``dF/dc[w; lambda]``. Where that bilinear form (test ``w`` on the control's space,
    trial ``lambda`` on ``u``'s space) has no Function coefficients (the source of a Poisson
    problem, the previous state of a time step: a mass matrix), its matrix never changes and
    the gradient is one sparse matrix-vector product instead of an assembly. The matrix is
    assembled on first use and again only if a constant or the geometry changed.

    Args:
        F: the residual form; its argument is ``v``.
        control: a Function control of ``F``.
        comm: the mesh communicator.
        compile_options: FFCx/JIT options.
    """

    def __init__(self, F: ufl.Form, control: dolfinx.fem.Function, comm: MPI.Comm,
                 **compile_options: Unpack[CompileOptions]) -> None:
        from dolfinx_nn._reuse import FormInputs

        v = F.arguments()[0]
        trial = ufl.TrialFunction(v.ufl_function_space())
        B = expand_derivatives(ufl.derivative(
            ufl.replace(F, {v: trial}), control, ufl.TestFunction(control.function_space)
        ))
        self.usable = not B.empty() and not B.coefficients()
        self._n = owned_size(control.function_space)
        if self.usable:
            self._form = dolfinx.fem.form(B, **compile_options)
            self._inputs = FormInputs(B, comm)
        self._matrix: PETSc.Mat | None = None
        self._out: PETSc.Vec | None = None

    def transpose_action(self, lam: PETSc.Vec) -> np.ndarray:
        """Owned entries of ``dF/dc[.; lam]`` (collective)."""
        self._require_alive()
        if self._matrix is None or self._out is None:
            self._matrix = dolfinx.fem.petsc.create_matrix(self._form)
            self._out = self._matrix.createVecLeft()
        matrix, out = self._matrix, self._out
        if self._inputs.changed():
            matrix.zeroEntries()
            assemble_matrix_into(matrix, self._form)
            matrix.assemble()
            self._inputs.record()
        matrix.mult(lam, out)
        return out.array_r[: self._n].copy()

    def _owned_petsc(self) -> tuple[PETSc.Mat | None, PETSc.Vec | None]:
        return self._matrix, self._out
