"""A DOLFINx solve as a differentiable PyTorch operation.

``fem_operator(F, u, controls=[q, f], ...)`` returns a callable ``solve(q_t, f_t) -> u_t``
mapping the owned dofs of the controls to the owned dofs of the solution of ``F(u; q, f) = 0``.
The forward pass solves with PETSc (a KSP when ``F`` is linear in ``u``, a SNES otherwise); the
backward pass solves ONE adjoint problem

    (dF/du)^T lambda = dJ/du,   lambda = 0 on Dirichlet dofs,

and returns ``dJ/dm = -(dF/dm)^T lambda`` for each control ``m``, assembled by DOLFINx from the
UFL derivative of ``F``.  Matrices, KSP/SNES and factorizations live as long as the operator.
When the operator is symmetric and linear the adjoint reuses the forward factorization;
otherwise the transposed Jacobian at the solution gets its own KSP, tuned with options under
the prefix ``f"{petsc_options_prefix}adjoint_"``.

Coefficients that are operators of the unknown (e.g. :class:`dolfinx_nn.NeuralOperator`) are
passed as ``operators=[...]``: they refresh themselves from the current iterate before each
residual and Jacobian assembly, add their term to the Jacobian, and receive ``-(dF/dN)^T
lambda`` in the backward pass, which they pull back to their own inputs (network parameters).
An operator provides ``update(derivatives)``, ``jacobian(F, u, du)``, ``inputs()``,
``set_inputs(tensors)`` and ``backward(grad, inputs)``; it is itself the coefficient in ``F``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mpi4py import MPI
from petsc4py import PETSc

import dolfinx
import dolfinx.fem.petsc
import numpy as np
import torch
import ufl

from dolfinx_nn._dofs import (
    assign_owned,
    check_finite,
    ghost_insert,
    owned_size,
)
from dolfinx_nn._forms import (
    Control,
    assemble_gradient,
    assemble_owned,
    assign_control,
    check_controls,
    control_name,
    control_size,
    control_to_numpy,
    gradient_form,
    is_empty,
)
from dolfinx_nn.errors import SolverError
from dolfinx_nn.petsc_problems import LinearProblem, NonlinearProblem, collect_garbage

#: Direct solver used unless the user says otherwise.
DEFAULT_KSP_OPTIONS: dict[str, object] = {
    "ksp_type": "preonly",
    "pc_type": "lu",
    "pc_factor_mat_solver_type": "mumps",
}
#: Newton with a backtracking line search and tight tolerances, so gradients are exact.
DEFAULT_SNES_OPTIONS: dict[str, object] = {
    "snes_type": "newtonls",
    "snes_linesearch_type": "bt",
    "snes_rtol": 1e-12,
    "snes_atol": 1e-12,
    "snes_stol": 0.0,
    "snes_max_it": 50,
}

ADJOINT_PREFIX = "adjoint_"


def _reason_name(enum: type, reason: int) -> str:
    for name in dir(enum):
        if not name.startswith("_") and getattr(enum, name) == reason:
            return name
    return str(reason)


def _reset_after_failure(ksp: PETSc.KSP) -> None:
    """Forget a failed set-up (e.g. a zero pivot in the factorization), keeping the operators.

    A PC whose set-up failed is left in an error state (MUMPS then refuses every later solve
    with a raw PETSc error): ``KSPReset`` clears it and the next solve sets up afresh.
    """
    A, P = ksp.getOperators()
    ksp.reset()
    ksp.setOperators(A, P)


def _split_options(
    options: dict[str, object], linear: bool
) -> tuple[dict[str, object], dict[str, object]]:
    """Forward options, and adjoint options (forward KSP/PC options unless overridden)."""
    user_chose_solver = any(k.startswith(("ksp_", "pc_")) for k in options)
    defaults = {} if user_chose_solver else dict(DEFAULT_KSP_OPTIONS)
    if not linear:
        defaults.update(DEFAULT_SNES_OPTIONS)
    forward = {k: v for k, v in options.items() if not k.startswith(ADJOINT_PREFIX)}
    forward = {**defaults, **forward}
    adjoint = {
        k: v for k, v in forward.items() if k.startswith(("ksp_", "pc_", "mat_"))
    }
    adjoint.update(
        {k[len(ADJOINT_PREFIX) :]: v for k, v in options.items() if k.startswith(ADJOINT_PREFIX)}
    )
    return forward, adjoint


def _set_options(obj: PETSc.KSP, prefix: str, options: dict[str, object]) -> None:
    """Push ``options`` under ``prefix``, call setFromOptions, and tidy the database."""
    obj.setOptionsPrefix(prefix)
    opts = PETSc.Options()
    opts.prefixPush(prefix)
    for k, v in options.items():
        opts[k] = v
    obj.setFromOptions()
    for k in options:
        del opts[k]
    opts.prefixPop()


@dataclass
class _State:
    """What the backward pass needs from one forward pass."""

    forward_id: int
    controls: list[np.ndarray]
    solution: np.ndarray
    operator_inputs: list[list[torch.Tensor]]


class FEMOperator:
    """Solve ``F(u; controls) = 0`` for ``u`` as a differentiable map of the controls.

    Use :func:`fem_operator` to build one.  Calling it with one tensor per control (the owned
    dofs, in the order of ``controls``) returns the owned dofs of ``u`` as a float64 tensor and
    leaves the solution in ``u`` (ghosts updated).

    Attributes:
        linear: whether ``F`` is linear in ``u`` (KSP) or not (SNES).
        solver: the forward ``PETSc.KSP`` or ``PETSc.SNES``.
        iterations: Krylov or Newton iterations of the last forward solve.
    """

    def __init__(
        self,
        F: ufl.Form,
        u: dolfinx.fem.Function,
        *,
        controls: Sequence[Control],
        bcs: Sequence[dolfinx.fem.DirichletBC] = (),
        petsc_options: dict[str, object] | None = None,
        petsc_options_prefix: str,
        symmetric: bool | None = None,
        warm_start: bool = False,
        form_compiler_options: dict | None = None,
        jit_options: dict | None = None,
        operators: Sequence[Any] = (),
    ) -> None:
        if not isinstance(F, ufl.Form) or len(F.arguments()) != 1:
            raise ValueError("F must be a UFL residual form with exactly one TestFunction.")
        operators = list(operators)
        operand_coefficients = {
            id(c) for op in operators for e in getattr(op, "operands", ())
            for c in ufl.algorithms.extract_coefficients(e)
        }
        if not isinstance(u, dolfinx.fem.Function) or (
            u not in F.coefficients() and id(u) not in operand_coefficients
        ):
            raise ValueError(
                "u must be a dolfinx.fem.Function that appears in F (or in an operand of one "
                "of the operators)."
            )
        if not petsc_options_prefix or not petsc_options_prefix[0].isalpha():
            raise ValueError(
                f"petsc_options_prefix must be a non-empty string starting with a letter "
                f"(PETSc's rule), e.g. 'poisson_'; got {petsc_options_prefix!r}."
            )
        for bc in bcs:
            if not isinstance(bc, dolfinx.fem.DirichletBC):
                raise TypeError(f"bcs must hold dolfinx.fem.DirichletBC, got {type(bc).__name__}.")
        controls = list(controls)
        if any(c is u for c in controls):
            raise ValueError("the unknown u cannot also be a control.")
        # Controls that are the values of Dirichlet conditions (and need not appear in F).
        self._dirichlet = [_dirichlet_dofs(c, bcs, u.function_space) for c in controls]
        self.controls = check_controls(
            F, controls, "F", exempt=[d is not None for d in self._dirichlet]
        )
        self.operators = _check_operators(operators, F, u, self.controls)
        self.u = u
        self.warm_start = warm_start
        self._last_solution: np.ndarray | None = None
        self.bcs = list(bcs)
        self.prefix = petsc_options_prefix
        self.comm: MPI.Comm = u.function_space.mesh.comm
        V = u.function_space
        self._n = owned_size(V)
        self._control_sizes = [control_size(c) for c in self.controls]
        compile_opts = {"form_compiler_options": form_compiler_options, "jit_options": jit_options}

        v = F.arguments()[0]
        du = ufl.TrialFunction(V)
        J = ufl.derivative(F, u, du)
        self.linear = not self.operators and is_empty(ufl.derivative(J, u, du))
        for op in self.operators:
            term = op.jacobian(F, u, du)
            if term is not None:
                J = J + term
        forward_options, adjoint_options = _split_options(dict(petsc_options or {}), self.linear)
        self._symmetric_given = symmetric if self.linear else False
        self._symmetric = self._symmetric_given

        if self.linear:
            # J u = -F(0): with u = 0 in F, -F is the right-hand side.
            self._problem = LinearProblem(
                J, -F, u=u, bcs=self.bcs, petsc_options=forward_options,
                petsc_options_prefix=self.prefix, **compile_opts,
            )
        else:
            self._problem = NonlinearProblem(
                F, u, bcs=self.bcs, J=J, petsc_options=forward_options,
                petsc_options_prefix=self.prefix, **compile_opts,
            )
        self.solver = self._problem.solver
        self._hook_error: Exception | None = None
        if self.operators:
            self._install_operator_hooks()

        # Adjoint: the transposed Jacobian (at the solution) with homogeneous Dirichlet rows.
        self._lam = dolfinx.fem.Function(V, name="adjoint")
        self._adjoint_rhs = dolfinx.fem.petsc.create_vector(V)
        self._adjoint_sol = dolfinx.fem.petsc.create_vector(V)
        self._adjoint_form = dolfinx.fem.form(ufl.adjoint(J), **compile_opts)
        self._adjoint_A: PETSc.Mat | None = None
        self._adjoint_ksp: PETSc.KSP | None = None
        self._adjoint_options = adjoint_options
        # Gradient forms: dF/dm^T lambda, i.e. the derivative of F(u; m)[lambda] along m.
        F_lam = ufl.replace(F, {v: self._lam})
        self._gradient_forms = [
            gradient_form(F_lam, c, **compile_opts)
            if c in F.coefficients() or c in F.constants() else None
            for c in self.controls
        ]
        self._operator_forms = [gradient_form(F_lam, op, **compile_opts) for op in self.operators]
        # (dF/du)^T lambda without boundary conditions: how the free dofs feel Dirichlet data.
        self._jacobian_action = (
            gradient_form(F_lam, u, **compile_opts)
            if any(d is not None for d in self._dirichlet) else None
        )
        self._bc_dofs = [bc.dof_indices()[0][: bc.dof_indices()[1]] for bc in self.bcs]
        self._forward_id = 0
        self._factorized_id = -1  # forward pass whose operator the forward KSP holds
        self.iterations = 0

    # -- public -------------------------------------------------------------------------------
    def __call__(
        self,
        *controls: torch.Tensor,
        operator_inputs: Sequence[Sequence[torch.Tensor] | None] | None = None,
    ) -> torch.Tensor:
        """Solve for the given control values; differentiable in each control tensor.

        Args:
            controls: one tensor per control (owned dofs), in order.
            operator_inputs: per operator, the tensors it evaluates with (for a
                ``NeuralOperator``: its parameters, e.g. ``list(params.values())``) or ``None``
                for its own; the result is differentiable in them too.
        """
        if len(controls) != len(self.controls):
            raise ValueError(
                f"expected {len(self.controls)} control tensor(s) (one per control, in order), "
                f"got {len(controls)}."
            )
        if operator_inputs is None:
            operator_inputs = [None] * len(self.operators)
        if len(operator_inputs) != len(self.operators):
            raise ValueError(
                f"operator_inputs must hold one entry per operator ({len(self.operators)}), "
                f"got {len(operator_inputs)}."
            )
        for op, inputs in zip(self.operators, operator_inputs, strict=True):
            op.set_inputs(inputs)
        self._operator_counts = [len(op.inputs()) for op in self.operators]
        flat = [t for op in self.operators for t in op.inputs()]
        return _FEMSolve.apply(self, len(controls), *controls, *flat)

    @property
    def symmetric(self) -> bool | None:
        """Whether the adjoint reuses the forward operator (``None``: not yet determined)."""
        return self._symmetric

    def destroy(self) -> None:
        """Free the PETSc objects of the operator now (collective on its communicator).

        Without it, the objects are freed collectively when the operator is garbage and any
        operator of the same communicator runs its next forward pass (see
        :mod:`dolfinx_nn.petsc_problems`): ``__del__`` never destroys, since Python may run it
        at different moments on different ranks.
        """
        problem = self._problem
        objects = (self._adjoint_ksp, self._adjoint_A, self._adjoint_rhs, self._adjoint_sol,
                   problem.solver, problem.A, problem.b, problem.x, problem.P_mat)
        for obj in objects:
            if obj is not None:
                obj.destroy()
        self._adjoint_ksp = self._adjoint_A = None

    # -- operators of the unknown -------------------------------------------------------------
    def _install_operator_hooks(self) -> None:
        """Refresh the operators from the iterate before each residual/Jacobian assembly."""
        snes, problem = self.solver, self._problem
        petsc = dolfinx.fem.petsc
        residual_ctx = {"u": problem.u, "residual": problem.F, "jacobian": problem.J,
                        "bcs": self.bcs}
        jacobian_ctx = {"u": problem.u, "jacobian": problem.J,
                        "preconditioner": problem.preconditioner, "bcs": self.bcs}

        def hooked_residual(snes_, x, b, **kwargs):
            self._refresh_operators(x, derivatives=False)
            if self._hook_error is not None:
                b.set(np.nan)  # stops the SNES; the error is raised after the solve
                return
            petsc.assemble_residual(snes_, x, b, **kwargs)

        def hooked_jacobian(snes_, x, A, P, **kwargs):
            self._refresh_operators(x, derivatives=True)
            petsc.assemble_jacobian(snes_, x, A, P, **kwargs)

        snes.setFunction(hooked_residual, problem.b, kargs=residual_ctx)
        snes.setJacobian(hooked_jacobian, problem.A, problem.P_mat, kargs=jacobian_ctx)

    def _refresh_operators(self, x: PETSc.Vec | None, derivatives: bool) -> None:
        if x is not None:
            ghost_insert(x)
            dolfinx.fem.petsc.assign(x, self.u)
        try:
            for op in self.operators:
                op.update(derivatives)
        except ValueError as error:  # raised on every rank (collective checks)
            self._hook_error = error

    # -- forward ------------------------------------------------------------------------------
    def _set_controls(self, values: Sequence[np.ndarray]) -> None:
        for i, (c, x) in enumerate(zip(self.controls, values, strict=True)):
            assign_control(c, x, self.comm, f"control {i}")

    def _forward(self, tensors: Sequence[torch.Tensor]) -> _State:
        values = []
        for i, (c, t, n) in enumerate(zip(self.controls, tensors, self._control_sizes, strict=True)):
            x = control_to_numpy(c, t, f"control {i} ({control_name(c)})")
            check_finite(x, self.comm, f"control {i} ({control_name(c)})")
            values.append(x)
        collect_garbage(self.comm)  # a collective point: free what other operators dropped
        self._set_controls(values)
        self._forward_id += 1
        self._hook_error = None
        if self.linear or not self.warm_start or self._last_solution is None:
            self.u.x.array[:] = 0.0
        else:
            assign_owned(self.u, self._last_solution)
        self._problem.solve()
        self._check_converged()
        self._factorized_id = self._forward_id
        if self._symmetric_given is None:
            self._symmetric = self._is_symmetric(self._problem.A)
        solution = self.u.x.array[: self._n].copy()
        self._last_solution = solution
        inputs = [list(op.inputs()) for op in self.operators]
        return _State(self._forward_id, values, solution, inputs)

    def _check_converged(self) -> None:
        if self._hook_error is not None:
            error, self._hook_error = self._hook_error, None
            raise error
        solver = self.solver
        reason = solver.getConvergedReason()
        if self.linear:
            if reason < 0:
                name = _reason_name(PETSc.KSP.ConvergedReason, reason)
                iterations = solver.getIterationNumber()
                self._factorized_id = -1
                _reset_after_failure(solver)
                raise SolverError("KSP", reason, name, iterations, self.prefix)
            self.iterations = solver.getIterationNumber()
        else:
            if reason <= 0:
                name = _reason_name(PETSc.SNES.ConvergedReason, reason)
                iterations = solver.getIterationNumber()
                _reset_after_failure(solver.getKSP())
                raise SolverError("SNES", reason, name, iterations, self.prefix)
            self.iterations = solver.getIterationNumber()
        check_finite(self.u.x.array[: self._n], self.comm, "the solution")

    @staticmethod
    def _is_symmetric(A: PETSc.Mat) -> bool:
        scale = A.norm(PETSc.NormType.INFINITY)
        return bool(A.isSymmetric(1e-12 * max(scale, 1.0)))

    # -- backward -----------------------------------------------------------------------------
    def _restore(self, state: _State) -> None:
        self._set_controls(state.controls)
        assign_owned(self.u, state.solution)
        for op, inputs in zip(self.operators, state.operator_inputs, strict=True):
            op.set_inputs(inputs)
            op.update(True)

    def _adjoint_operator(self, state: _State) -> PETSc.KSP:
        """A KSP for the transposed Jacobian at ``state`` (the forward one when possible)."""
        if self.linear and self._symmetric:
            if self._factorized_id != state.forward_id:  # another forward pass came in between
                A = self._problem.A
                A.zeroEntries()
                dolfinx.fem.petsc.assemble_matrix(A, self._problem.a, bcs=self.bcs)
                A.assemble()
                self._factorized_id = state.forward_id
            return self._problem.solver
        if self._adjoint_A is None:
            self._adjoint_A = dolfinx.fem.petsc.create_matrix(self._adjoint_form)
            self._adjoint_ksp = PETSc.KSP().create(self.comm)
            self._adjoint_ksp.setOperators(self._adjoint_A)
            _set_options(self._adjoint_ksp, f"{self.prefix}{ADJOINT_PREFIX}", self._adjoint_options)
        A = self._adjoint_A
        A.zeroEntries()
        dolfinx.fem.petsc.assemble_matrix(A, self._adjoint_form, bcs=self.bcs)
        A.assemble()
        return self._adjoint_ksp

    def _backward(
        self, state: _State, grad_u: np.ndarray, needs: Sequence[bool]
    ) -> list[np.ndarray | None]:
        check_finite(grad_u, self.comm, "the gradient with respect to u")
        self._restore(state)
        ksp = self._adjoint_operator(state)
        rhs, lam = self._adjoint_rhs, self._adjoint_sol
        with rhs.localForm() as local:
            local.set(0.0)
        rhs.array_w[:] = grad_u
        for dofs in self._bc_dofs:
            rhs.array_w[dofs] = 0.0
        ksp.solve(rhs, lam)
        reason = ksp.getConvergedReason()
        if reason < 0:
            name = _reason_name(PETSc.KSP.ConvergedReason, reason)
            iterations = ksp.getIterationNumber()
            self._factorized_id = -1
            _reset_after_failure(ksp)
            raise SolverError("KSP", reason, name, iterations, ksp.getOptionsPrefix())
        ghost_insert(lam)
        with lam.localForm() as local:
            self._lam.x.array[:] = local.array_r
        grads: list[np.ndarray | None] = []
        boundary_action = None
        for form, c, dofs, need in zip(
            self._gradient_forms, self.controls, self._dirichlet, needs, strict=True
        ):
            if not need:
                grads.append(None)
                continue
            grad = -assemble_gradient(form, c)
            if dofs is not None:
                if boundary_action is None:
                    boundary_action = assemble_owned(self._jacobian_action, self._n)
                grad[dofs] += grad_u[dofs] - boundary_action[dofs]
            grads.append(grad)
        return grads

    def _operator_backward(
        self, state: _State, needs: Sequence[bool]
    ) -> list[torch.Tensor | None]:
        """Gradients of the operators' inputs from the adjoint of the last :meth:`_backward`."""
        out: list[torch.Tensor | None] = []
        start = 0
        for op, form, inputs in zip(
            self.operators, self._operator_forms, state.operator_inputs, strict=True
        ):
            need = needs[start : start + len(inputs)]
            start += len(inputs)
            if not any(need):
                out.extend([None] * len(inputs))
                continue
            g = -assemble_owned(form, owned_size(op.function_space))
            grads = op.backward(g, inputs)
            out.extend(gr if n else None for gr, n in zip(grads, need, strict=True))
        return out


_OPERATOR_METHODS = ("update", "jacobian", "inputs", "set_inputs", "backward")


def _check_operators(
    operators: Sequence[Any], F: ufl.Form, u: dolfinx.fem.Function, controls: Sequence[Any]
) -> list[Any]:
    """Validate the operators of the unknown given to :class:`FEMOperator`."""
    operators = list(operators)
    coefficients = F.coefficients()
    for i, op in enumerate(operators):
        missing = [m for m in _OPERATOR_METHODS if not callable(getattr(op, m, None))]
        if missing or not isinstance(op, dolfinx.fem.Function):
            raise TypeError(
                f"operator {i} must be a dolfinx.fem.Function providing "
                f"{', '.join(_OPERATOR_METHODS)} (e.g. a dolfinx_nn.NeuralOperator); got "
                f"{type(op).__name__}" + (f" without {', '.join(missing)}" if missing else "") + "."
            )
        if op not in coefficients:
            raise ValueError(f"operator {i} ({op.name!r}) does not appear in F.")
        if any(op is c for c in controls):
            raise ValueError(f"operator {i} ({op.name!r}) cannot also be a control.")
        depends = {id(c) for e in getattr(op, "operands", ()) for c in
                   ufl.algorithms.extract_coefficients(e)}
        for c in controls:
            if id(c) in depends:
                raise ValueError(
                    f"control {c.name!r} is an operand of operator {i} ({op.name!r}); only the "
                    "unknown and fixed functions may be operands."
                )
    if len({id(op) for op in operators}) != len(operators):
        raise ValueError("the operators must be distinct.")
    return operators


def _dirichlet_dofs(
    c: dolfinx.fem.Function, bcs: Sequence[dolfinx.fem.DirichletBC], V: dolfinx.fem.FunctionSpace
) -> np.ndarray | None:
    """Owned dofs constrained by the conditions whose value is ``c`` (None if there are none)."""
    if not isinstance(c, dolfinx.fem.Function):
        return None
    found = []
    for bc in bcs:
        g = bc.g
        if hasattr(g, "x") and np.shares_memory(np.asarray(g.x.array), c.x.array):
            if c.function_space != V:
                raise ValueError(
                    f"control {c.name!r} is Dirichlet data on another space than u's; only data "
                    "on u's own space can be a control."
                )
            dofs, n_owned = bc.dof_indices()
            found.append(dofs[:n_owned])
    return np.unique(np.concatenate(found)) if found else None


class _FEMSolve(torch.autograd.Function):
    """Inputs: the operator, the number of controls, the controls, the operators' inputs."""

    @staticmethod
    def forward(ctx, op: FEMOperator, n_controls: int, *tensors: torch.Tensor) -> torch.Tensor:
        state = op._forward(tensors[:n_controls])
        ctx.op = op
        ctx.state = state
        ctx.n_controls = n_controls
        ctx.meta = [(t.dtype, t.device, t.shape) for t in tensors[:n_controls]]
        return torch.from_numpy(state.solution.copy())

    @staticmethod
    def backward(ctx, grad_u: torch.Tensor):
        g = grad_u.detach().to("cpu", torch.float64).numpy()
        n = ctx.n_controls
        needs = ctx.needs_input_grad[2:]
        grads = ctx.op._backward(ctx.state, g, needs[:n])
        out = []
        for grad, (dtype, device, shape) in zip(grads, ctx.meta, strict=True):
            out.append(
                None if grad is None
                else torch.from_numpy(grad).reshape(shape).to(device=device, dtype=dtype)
            )
        if ctx.op.operators:
            out.extend(ctx.op._operator_backward(ctx.state, needs[n:]))
        return (None, None, *out)


def fem_operator(
    F: ufl.Form,
    u: dolfinx.fem.Function,
    *,
    controls: Sequence[Control],
    bcs: Sequence[dolfinx.fem.DirichletBC] = (),
    petsc_options: dict[str, object] | None = None,
    petsc_options_prefix: str,
    symmetric: bool | None = None,
    warm_start: bool = False,
    form_compiler_options: dict | None = None,
    jit_options: dict | None = None,
    operators: Sequence[Any] = (),
) -> FEMOperator:
    """Make the solve of ``F(u; controls) = 0`` a differentiable torch operation.

    Args:
        F: residual form, linear in its TestFunction; linear or nonlinear in ``u``.
        u: the unknown; receives the solution of each forward pass.
        controls: ``fem.Function`` coefficients of ``F`` the solution is differentiated by,
            the value functions of Dirichlet conditions in ``bcs`` (on ``u``'s space), or
            ``fem.Constant`` constants of ``F`` (tensor: the whole value, the same on every
            rank; gradient: the rank's share, summed by ``sync_gradients``).
        bcs: Dirichlet conditions on ``u`` (the adjoint gets their homogeneous version).
        petsc_options: KSP (linear) or SNES (nonlinear) options; keys starting with
            ``"adjoint_"`` go to the adjoint KSP, which otherwise inherits the forward KSP/PC
            options. Default: LU (MUMPS) and, for SNES, Newton with tolerances 1e-12.
        petsc_options_prefix: options prefix of the PETSc objects, e.g. ``"poisson_"``.
        symmetric: whether dF/du is symmetric (the adjoint then reuses the forward
            factorization). ``None``: checked numerically after each forward pass (linear ``F``);
            nonlinear problems always assemble the transposed Jacobian at the solution.
        warm_start: start Newton from the previous solution instead of zero (nonlinear ``F``;
            saves iterations in training loops, at the price of results that depend on the
            call history up to the SNES tolerance).
        form_compiler_options: FFCx options.
        jit_options: JIT options.
        operators: coefficients of ``F`` that are operators of ``u``, such as
            :class:`dolfinx_nn.NeuralOperator`; they are refreshed from the Newton iterate
            before each assembly, enter the Jacobian, and their inputs (network parameters)
            are differentiable. ``F`` is then solved with SNES.

    Returns:
        A callable ``solve(*control_tensors) -> u_tensor`` (owned dofs, float64).

    Raises:
        ValueError: if a control does not appear in ``F`` or has the wrong size, or holds NaN.
        SolverError: if the KSP or SNES diverges (carries PETSc's converged reason).
    """
    return FEMOperator(
        F, u, controls=controls, bcs=bcs, petsc_options=petsc_options,
        petsc_options_prefix=petsc_options_prefix, symmetric=symmetric, warm_start=warm_start,
        form_compiler_options=form_compiler_options, jit_options=jit_options,
        operators=operators,
    )
