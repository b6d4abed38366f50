"""Second derivatives through :func:`dolfinx_nn.fem_operator`: the second-order adjoint.

The forward pass solves ``F(u, m) = 0`` (Dirichlet rows: ``u = g``).  Its backward pass maps
the cotangent ``gbar`` of ``u`` to the gradients

    A^T lam = P gbar,   lam = 0 on Dirichlet dofs,
    g_m = -(dF/dm)^T lam     (+ E^T (gbar - (dF/du)^T lam) for Dirichlet data),

with ``A = dF/du`` at the solution (Dirichlet rows and columns replaced by the identity), ``P``
zeroing the Dirichlet entries and ``E`` putting a Dirichlet control's values on the dofs it
wins (:mod:`dolfinx_nn._dirichlet`).  Write ``Phi(u, m) = F(u, m)[lam]`` (the residual tested
with the adjoint) and, for a direction ``(du, dm)``,

    r(du, dm) = d/du Phi'[du, dm] = Phi_uu[., du] + Phi_um[., dm]      (a vector on u's space),
    s(du, dm) = d/dm Phi'[du, dm] = Phi_mu[., du] + Phi_mm[., dm]      (one per control),

assembled from UFL's derivatives of ``F``.  This module makes the backward pass an
``autograd.Function`` of ``(gbar, u, m)`` with

- a backward rule (reverse over reverse, ``create_graph=True``): for a cotangent ``delta`` of
  the gradients, the tangent-linear solve ``W = E delta_D - A^{-1} P (dF/du E delta_D +
  dF/dm delta)`` gives ``W`` to ``gbar``, ``-r(W, delta)`` to ``u`` and ``-s(W, delta)`` to
  ``m``; autograd then sends the cotangent of ``u`` through the solve's own backward pass (the
  second adjoint solve);
- a forward-mode rule (forward over reverse, ``torch.func.jvp`` of ``torch.func.grad``): for
  tangents ``(dgbar, du, dm)``, ``dg = backward(dgbar - r(du, dm)) - s(du, dm)``;

and gives the solve itself a forward-mode rule: ``du`` is the tangent-linear solve above.
These are the tangent-linear and second-order adjoint equations of Hinze, Pinnau, Ulbrich &
Ulbrich, *Optimization with PDE Constraints* (Springer 2009), section 1.6.5, written for the
discrete Dirichlet rows.  The tangent-linear solve uses the forward factorization of a linear
problem (its matrix at the pass's state, as the adjoint does), and for a nonlinear problem the
transposed solve with the adjoint's factors when the adjoint solve is direct (an iterative one
gets a KSP of its own on the Jacobian at the state, with the adjoint's options).  Every solve
has the adjoint's tolerances and true-residual check.

Operators of the unknown (:class:`dolfinx_nn.NeuralOperator`) have no second derivatives in
the form: with one in ``F`` the second-order rules raise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from petsc4py import PETSc

import dolfinx
import dolfinx.fem.petsc
import numpy as np
import torch
import ufl

from dolfinx_nn._dofs import assign_owned, ghost_add, ghost_insert
from dolfinx_nn._forms import assemble_gradient, assemble_owned, control_size, gradient_form
from dolfinx_nn._options import ADJOINT_PREFIX, _is_direct, set_options
from dolfinx_nn._reuse import FormInputs
from dolfinx_nn._second_order import (
    RefusingFunction,
    as_numpy,
    compile_form,
    direction_of,
    refusal,
    set_direction,
    total_derivative,
)
from dolfinx_nn.parallel import agree_any
from dolfinx_nn.petsc_problems import PetscOwner, assemble_matrix_into, assemble_vector_into


@dataclass
class SolvePass:
    """One forward pass of a solve, as its second-order rules see it (a context's copy).

    Attributes:
        op: the :class:`dolfinx_nn.FEMOperator`.
        size: the batch size, ``None`` without a batch.
        batched: per control, whether its tensor carries the batch dimension.
        states: one ``_State`` per batch member.
        n_controls: number of controls (then come the operators' inputs).
        n_inputs: number of the operators' inputs.
        meta: per control, the tensor's ``(dtype, device, shape)``.
        needs: per control and operator input, whether its gradient is computed.
    """

    op: Any
    size: int | None
    batched: list[bool]
    states: list[Any]
    n_controls: int
    n_inputs: int
    meta: list[tuple]
    needs: list[bool]

    @property
    def members(self) -> list[int | None]:
        return [None] if self.size is None else list(range(self.size))


def _pass_of(ctx, needs: list[bool]) -> SolvePass:
    return SolvePass(ctx.op, ctx.size, list(ctx.batched), list(ctx.states), ctx.n_controls,
                     ctx.n_inputs, list(ctx.meta), needs)


def _member(values: np.ndarray | None, b: int | None, batched: bool) -> np.ndarray | None:
    """A batch member's row of a (possibly batched) value."""
    if values is None:
        return None
    return values if b is None or not batched else values[b]


def _flat(values: np.ndarray | None) -> np.ndarray | None:
    return None if values is None else values.reshape(-1)


def _combine(parts: list[np.ndarray], batched: bool, meta: tuple) -> torch.Tensor:
    """Per-member values as the tensor of a control: stacked if batched, else summed."""
    dtype, device, shape = meta
    value = np.stack(parts) if batched else np.sum(parts, axis=0)
    return torch.from_numpy(value).reshape(shape).to(device=device, dtype=dtype)


def _combine_controls(
    p: SolvePass, per_member: list[list[np.ndarray | None]]
) -> list[torch.Tensor | None]:
    """Per control, the members' values as its tensor (``None`` where not computed: for every
    member or for none, since the members share what is needed)."""
    batch = p.size is not None
    out: list[torch.Tensor | None] = []
    for i in range(p.n_controls):
        parts = [part for values in per_member if (part := values[i]) is not None]
        out.append(_combine(parts, batch and p.batched[i], p.meta[i]) if parts else None)
    return out


class OperatorSecondOrder(PetscOwner):
    """The forms, directions and solves of the second-order passes of one operator.

    Built (and its forms compiled) on the first second-order pass; collective.
    """

    def __init__(self, op: Any) -> None:
        self.op = op
        F = op.F
        V = op.u.function_space
        opts = op._compile_options
        v = F.arguments()[0]
        self.n = op._n
        self.lam = dolfinx.fem.Function(V, name="adjoint")
        self.du = dolfinx.fem.Function(V, name="du")
        in_form = set(F.coefficients()) | set(F.constants())
        self.in_form = [c in in_form for c in op.controls]
        self.directions = [direction_of(c) if inside else None
                           for c, inside in zip(op.controls, self.in_form, strict=True)]
        pairs = [(c, d) for c, d in zip(op.controls, self.directions, strict=True)
                 if d is not None]
        # Dirichlet data moves u itself on the dofs it wins: that is the u-direction.
        self.dirichlet = any(d is not None for d in op._dirichlet)
        u_pair = [(op.u, self.du)] if self.dirichlet else []
        # dF/du [xi] + dF/dm [dm]: the right-hand side of the tangent-linear solve.
        self.tangent_form = compile_form(total_derivative(F, u_pair + pairs), **opts)
        # Phi'[du, dm] with Phi = F[lam]; r and s are its derivatives by u and by the controls.
        phi = ufl.replace(F, {v: self.lam})
        d_phi = total_derivative(phi, [(op.u, self.du)] + pairs)
        self.r_form = None
        self.s_forms: list[Any] = [None] * len(op.controls)
        if d_phi is not None:
            r = ufl.algorithms.expand_derivatives(
                ufl.derivative(d_phi, op.u, ufl.TestFunction(V)))
            self.r_form = compile_form(r, **opts)
            self.s_forms = [gradient_form(d_phi, c, **opts) if inside else None
                            for c, inside in zip(op.controls, self.in_form, strict=True)]
        # Dirichlet controls' values with their ghosts (to read the entries they impose).
        self._scratch = [
            dolfinx.fem.Function(c.function_space) if src is not None
            and isinstance(c, dolfinx.fem.Function) else None
            for c, src in zip(op.controls, op._dirichlet, strict=True)
        ]
        self._rhs = dolfinx.fem.petsc.create_vector(V)
        self._sol = dolfinx.fem.petsc.create_vector(V)
        self._tangent_A: PETSc.Mat | None = None
        self._tangent_ksp: PETSc.KSP | None = None
        self._tangent_inputs: FormInputs | None = None

    def _owned_petsc(self) -> tuple[PETSc.Object | None, ...]:
        return self._rhs, self._sol, self._tangent_A, self._tangent_ksp

    # -- directions -----------------------------------------------------------------------
    def _set_directions(self, deltas: Sequence[np.ndarray | None]) -> None:
        for d, delta in zip(self.directions, deltas, strict=True):
            if d is not None:
                set_direction(d, delta)

    def _lift(self, deltas: Sequence[np.ndarray | None]) -> np.ndarray:
        """``E delta``: the Dirichlet controls' directions on the owned dofs they win."""
        xi = np.zeros(self.n)
        for src, scratch, delta in zip(self.op._dirichlet, self._scratch, deltas, strict=True):
            if src is None or delta is None:
                continue
            if scratch is not None:
                assign_owned(scratch, delta)
                xi[src.dofs] = scratch.x.array[src.entries]
            else:
                xi[src.dofs] = delta.reshape(-1)[src.entries]
        return xi

    # -- the tangent-linear solve -----------------------------------------------------------
    def _tangent_operator(self, state: Any) -> tuple[PETSc.KSP, PETSc.Mat, bool]:
        """A KSP, a matrix and whether to solve with its transpose, for ``A w = rhs``."""
        op = self.op
        if op.linear:
            return op._problem.solver, op._forward_matrix_at(state), False
        if _is_direct(op.options.adjoint_effective):
            ksp, A, transpose = op._adjoint_operator(state)
            return ksp, A, not transpose
        problem = op._problem
        if self._tangent_A is None or self._tangent_ksp is None or self._tangent_inputs is None:
            self._tangent_A = dolfinx.fem.petsc.create_matrix(problem.J)
            self._tangent_inputs = FormInputs(op._jacobian, op.comm)
            self._tangent_ksp = PETSc.KSP().create(op.comm)
            set_options(self._tangent_ksp, f"{op.prefix}{ADJOINT_PREFIX}", op.options.adjoint)
            self._tangent_ksp.setOperators(self._tangent_A)
        A, ksp, inputs = self._tangent_A, self._tangent_ksp, self._tangent_inputs
        if inputs.changed():
            A.zeroEntries()
            assemble_matrix_into(A, problem.J, bcs=op.bcs)
            A.assemble()
            inputs.record()
        return ksp, A, False

    def tangent(self, state: Any, deltas: Sequence[np.ndarray | None]) -> np.ndarray:
        """Owned dofs of ``du = E delta_D - A^{-1} P (dF/du E delta_D + dF/dm delta)``.

        Args:
            state: the forward pass's state (restored here).
            deltas: per control, the direction (owned dofs, or a Constant's value; ``None``
                for zero).
        """
        op = self.op
        op._restore(state)
        xi = self._lift(deltas)
        if self.dirichlet:
            assign_owned(self.du, xi)
        self._set_directions(deltas)
        rhs, sol = self._rhs, self._sol
        with rhs.localForm() as local:
            local.set(0.0)
        if self.tangent_form is not None:
            assemble_vector_into(rhs, self.tangent_form)
            ghost_add(rhs)
            rhs.scale(-1.0)
        for dofs in op._bc_dofs:
            rhs.array_w[dofs] = 0.0
        ksp, A, transpose = self._tangent_operator(state)
        op._solve_adjoint(ksp, A, transpose, rhs, sol, what="tangent-linear")
        ghost_insert(sol)
        return sol.array_r[: self.n] + xi

    # -- second derivatives of Phi ---------------------------------------------------------
    def second(
        self, lam: np.ndarray, du: np.ndarray | None, deltas: Sequence[np.ndarray | None],
        needs: Sequence[bool],
    ) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """``r(du, dm)`` (owned dofs) and ``s(du, dm)`` per control (``None`` where not needed).

        The coefficients must hold the state (:meth:`FEMOperator._restore`).

        Args:
            lam: the adjoint, owned and ghost values.
            du: owned dofs of the u-direction (``None``: zero).
            deltas: per control, its direction (``None``: zero).
            needs: per control, whether ``s`` is wanted.
        """
        self.lam.x.array[:] = lam
        if du is None:
            self.du.x.array[:] = 0.0
        else:
            assign_owned(self.du, du)
        self._set_directions(deltas)
        r = assemble_owned(self.r_form, self.n)
        s: list[np.ndarray | None] = []
        for c, form, need in zip(self.op.controls, self.s_forms, needs, strict=True):
            if not need:
                s.append(None)
            elif form is None:
                s.append(np.zeros(control_size(c)))
            else:
                s.append(assemble_gradient(form, c))
        return r, s


def _forms(op: Any) -> OperatorSecondOrder:
    op._require_alive()
    if op._second_order is None:
        op._second_order = OperatorSecondOrder(op)
    return op._second_order


def _refuse_operators(op: Any) -> None:
    if op.operators:
        raise refusal("fem_operator", "operator")


def _controls_per_member(
    p: SolvePass, values: Sequence[np.ndarray | None], b: int | None
) -> list[np.ndarray | None]:
    return [_flat(_member(v, b, p.size is not None and p.batched[i]))
            for i, v in enumerate(values)]


# -- the autograd Functions ------------------------------------------------------------------
class _Adjoint(torch.autograd.Function):
    """The backward pass of a solve, ``(gbar, u, m) -> dJ/dm``, as a differentiable op."""

    @staticmethod
    def forward(p: SolvePass, grad_u: torch.Tensor, u: torch.Tensor, *tensors: torch.Tensor):
        from dolfinx_nn.fem_operator import adjoint_gradients

        g = grad_u.detach().to("cpu", torch.float64).numpy()
        adjoints: list[np.ndarray] = []
        out = adjoint_gradients(p, g, p.needs, adjoints)
        p.op._adjoints_pending = adjoints
        return tuple(out)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.p = inputs[0]
        ctx.adjoints = ctx.p.op._adjoints_pending

    @staticmethod
    def backward(ctx, *cotangents: torch.Tensor | None):
        p: SolvePass = ctx.p
        _refuse_operators(p.op)
        needs = agree_any(ctx.needs_input_grad[1:], p.op.comm)
        return (None, *_AdjointVjp.apply(p, ctx.adjoints, needs, *cotangents))

    @staticmethod
    def jvp(ctx, *tangents: torch.Tensor | None):
        p: SolvePass = ctx.p
        _refuse_operators(p.op)
        return _AdjointJvp.apply(p, ctx.adjoints, *tangents[1:])


class _AdjointVjp(RefusingFunction):
    """Reverse mode of :class:`_Adjoint`: the tangent-linear solve and ``r``, ``s``."""

    what = "fem_operator"

    @staticmethod
    def forward(p: SolvePass, adjoints: list[np.ndarray], needs: list[bool],
                *cotangents: torch.Tensor | None):
        op = p.op
        n = p.n_controls
        forms = _forms(op)
        deltas = [as_numpy(c) for c in cotangents[:n]]
        need_controls = needs[2 : 2 + n]
        W_parts, r_parts, s_parts = [], [], []
        with op._values_kept():
            for b, state, lam in zip(p.members, p.states, adjoints, strict=True):
                delta_b = _controls_per_member(p, deltas, b)
                W = forms.tangent(state, delta_b)
                r, s = forms.second(lam, W, delta_b, need_controls)
                W_parts.append(W)
                r_parts.append(-r)
                s_parts.append([None if x is None else -x for x in s])
        batch = p.size is not None
        grad_gbar = torch.from_numpy(np.stack(W_parts) if batch else W_parts[0])
        grad_u = torch.from_numpy(np.stack(r_parts) if batch else r_parts[0])
        out: list[torch.Tensor | None] = [grad_gbar, grad_u, *_combine_controls(p, s_parts)]
        out += [None] * (len(needs) - 2 - n)  # operator inputs: refused before
        return tuple(out)


class _AdjointJvp(RefusingFunction):
    """Forward mode of :class:`_Adjoint`: ``dg = backward(dgbar - r) - s``."""

    what = "fem_operator"

    @staticmethod
    def forward(p: SolvePass, adjoints: list[np.ndarray], d_gbar: torch.Tensor | None,
                d_u: torch.Tensor | None, *d_tensors: torch.Tensor | None):
        op = p.op
        n = p.n_controls
        forms = _forms(op)
        batch = p.size is not None
        dg = as_numpy(d_gbar)
        du = as_numpy(d_u)
        dms = [as_numpy(t) for t in d_tensors[:n]]
        need_controls = p.needs[:n]
        parts: list[list[np.ndarray | None]] = []
        for b, state, lam in zip(p.members, p.states, adjoints, strict=True):
            dm_b = _controls_per_member(p, dms, b)
            du_b = _flat(_member(du, b, batch))
            with op._values_kept():
                op._restore(state)
                r, s = forms.second(lam, du_b, dm_b, need_controls)
            dg_b = _flat(_member(dg, b, batch))
            rhs = -r if dg_b is None else dg_b - r
            grads, _ = op._backward(state, rhs, need_controls)
            parts.append([None if g is None else g - x for g, x in zip(grads, s, strict=True)])
        out = _combine_controls(p, parts)
        out += [None] * (len(p.needs) - n)
        return tuple(out)


class _Tangent(RefusingFunction):
    """Forward mode of the solve: the tangent-linear solve, one per batch member."""

    what, reverse = "fem_operator", "reverse-over-forward"

    @staticmethod
    def forward(p: SolvePass, n: int, *tensors: torch.Tensor | None) -> torch.Tensor:
        # tensors: n tangents, then the primal inputs, which connect the tangent to them so
        # that reverse mode over it reaches the refusing backward instead of returning zeros.
        d_controls = tensors[:n]
        forms = _forms(p.op)
        dms = [as_numpy(t) for t in d_controls]
        with p.op._values_kept():
            parts = [forms.tangent(state, _controls_per_member(p, dms, b))
                     for b, state in zip(p.members, p.states, strict=True)]
        if p.size is None:
            return torch.from_numpy(parts[0])
        return torch.from_numpy(np.stack(parts))


# -- entry points from _FEMSolve ------------------------------------------------------------
def differentiable_backward(ctx, grad_u: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    """The backward pass of a solve as a differentiable op (``create_graph``, ``torch.func``).

    Returns one gradient (or ``None``) per control and operator input.
    """
    from dolfinx_nn.fem_operator import agreed_needs

    p = _pass_of(ctx, agreed_needs(ctx))
    *inputs, u = ctx.saved_tensors
    return _Adjoint.apply(p, grad_u, u, *inputs)


def tangent_linear(ctx, tangents: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """The forward-mode rule of a solve: ``du`` for the controls' tangents."""
    _refuse_operators(ctx.op)
    p = _pass_of(ctx, [])
    return _Tangent.apply(p, ctx.n_controls, *tangents[: ctx.n_controls], *ctx.saved_tensors)
