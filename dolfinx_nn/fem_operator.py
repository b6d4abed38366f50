"""A DOLFINx solve as a differentiable PyTorch operation.

``fem_operator(F, u, controls=[q, f], ...)`` returns a callable ``solve(q_t, f_t) -> u_t``
mapping the owned dofs of the controls to the owned dofs of the solution of ``F(u; q, f) = 0``.
The forward pass solves with PETSc (a KSP when ``F`` is linear in ``u``, a SNES otherwise); the
backward pass solves ONE adjoint problem

    (dF/du)^T lambda = dJ/du,   lambda = 0 on Dirichlet dofs,

and returns ``dJ/dm = -(dF/dm)^T lambda`` for each control ``m``, assembled by DOLFINx from the
UFL derivative of ``F``.  Matrices, KSP/SNES and factorizations live as long as the operator.

The backward pass mirrors what the forward pass did:

- Dirichlet data that is a control gets the gradient of the dofs it actually sets: where
  several conditions constrain a dof, DOLFINx imposes the last one (:mod:`dolfinx_nn._dirichlet`);
- the adjoint solve uses the forward solver's method but tolerances of its own (an inexact
  Newton setting is fine for the forward solve, not for a gradient), and its true residual is
  checked after the solve (:mod:`dolfinx_nn._options`);
- a symmetric linear problem reuses the forward factorization (with the adjoint's tolerances
  when the solve is iterative); otherwise the transposed Jacobian at the solution gets its own
  KSP, tuned with options under the prefix ``f"{petsc_options_prefix}adjoint_"``;
- second derivatives (``create_graph=True``, ``torch.func.jvp``/``hvp``) go through the
  second-order adjoint of :mod:`dolfinx_nn._operator_second_order`: a tangent-linear solve with
  the forward operator and a second adjoint solve; with an operator of the unknown in ``F``
  they are refused with an error rather than returned wrong.

Coefficients of ``F`` that are operators of the unknown (e.g. :class:`dolfinx_nn.NeuralOperator`)
are found in ``F`` by themselves (or passed as ``operators=[...]``): they refresh themselves
from the current iterate before each residual and Jacobian assembly, add their term to the
Jacobian, and receive ``-(dF/dN)^T lambda`` in the backward pass, which they pull back to their
own inputs (network parameters).  An operator provides ``update(derivatives)``,
``jacobian(F, u, du)``, ``inputs()``, ``set_inputs(tensors)`` and ``backward(grad, inputs)``;
it is itself the coefficient in ``F``.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from mpi4py import MPI
from petsc4py import PETSc

import dolfinx
import dolfinx.fem.petsc
import numpy as np
import torch
import ufl

from dolfinx_nn._convergence import RoundoffAwareTest
from dolfinx_nn._dirichlet import DirichletSource, dirichlet_source
from dolfinx_nn._dofs import assign_owned, check_finite, ghost_add, ghost_insert, owned_size
from dolfinx_nn._forms import (
    CompileOptions,
    Control,
    DerivativeMatrix,
    assemble_gradient,
    assemble_owned,
    assign_control,
    check_controls,
    control_name,
    control_size,
    control_values,
    gradient_form,
    is_empty,
    prepare_call,
)
from dolfinx_nn._operator_second_order import differentiable_backward, tangent_linear
from dolfinx_nn._options import (
    ADJOINT_PREFIX,
    ADJOINT_TOLERANCES,
    FALLBACK_LINE_SEARCH,
    SolverOptions,
    set_options,
    solver_options,
)
from dolfinx_nn._reuse import FormInputs, Values
from dolfinx_nn._signature import signature_of
from dolfinx_nn.errors import GradientAccuracyError, SolverError
from dolfinx_nn.parallel import agree_any, raise_on_all_ranks
from dolfinx_nn.petsc_problems import (
    LinearProblem,
    NonlinearProblem,
    PetscOwner,
    assemble_matrix_into,
    assemble_vector_into,
    assign_vector,
    collect_garbage,
    converged_reason,
    norm,
    petsc_comm,
)

#: An adjoint solve whose normwise backward error ``|A^T lam - b| / (|A^T| |lam| + |b|)``
#: (infinity norms, ``A`` the forward Jacobian) exceeds this is not accurate enough for a
#: gradient: an error (or a warning when the user set the adjoint's tolerances), naming the
#: figure. The backward error, not the relative residual: a stable direct solve of an
#: ill-conditioned system (a coefficient contrast of 1e8) has a residual far above round-off
#: but a backward error at round-off, and its solution is as exact as the problem allows.
ADJOINT_BACKWARD_ERROR_LIMIT = 1e-10
#: A linear forward solve whose backward error exceeds this warns: the gradient is that of the
#: exact solve, which the forward solution then only approximates.
FORWARD_BACKWARD_ERROR_LIMIT = 1e-8
#: A Newton solve that stops with a residual above this fraction of the initial one warns.
NEWTON_RESIDUAL_WARNING = 1e-8


def _reason_name(enum: type, reason: int) -> str:
    for name in dir(enum):
        if not name.startswith("_") and getattr(enum, name) == reason:
            return name
    return str(reason)


def _solve_accuracy(
    A: PETSc.Mat, x: PETSc.Vec, b: PETSc.Vec, transpose: bool = False
) -> tuple[float, float]:
    """The relative residual ``|A x - b|_2 / |b|_2`` and the normwise backward error
    ``|A x - b|_inf / (|A|_inf |x|_inf + |b|_inf)`` (with ``A^T`` if ``transpose``); zeros
    when ``b`` vanishes and ``x`` solves it. Collective."""
    Inf = PETSc.NormType.INFINITY
    r = b.duplicate()
    (A.multTranspose if transpose else A.mult)(x, r)
    r.axpy(-1.0, b)
    b_norm, r_norm = norm(b), norm(r)
    relative = r_norm / b_norm if b_norm > 0 else r_norm
    a_norm = norm(A, PETSc.NormType.NORM_1 if transpose else Inf)
    scale = a_norm * norm(x, Inf) + norm(b, Inf)
    backward = norm(r, Inf) / scale if scale > 0 else 0.0
    r.destroy()
    return float(relative), float(backward)


@dataclass
class _State:
    """What the backward pass needs from one forward pass."""

    forward_id: int
    controls: list[np.ndarray]
    solution: np.ndarray
    operator_inputs: list[list[torch.Tensor]]
    matrix_version: int = -1
    context: list[np.ndarray] | None = None


class FEMOperator(PetscOwner):
    """Solve ``F(u; controls) = 0`` for ``u`` as a differentiable map of the controls.

    Use :func:`fem_operator` to build one.  Calling it with one tensor per control (the owned
    dofs, in the order of ``controls``) returns the owned dofs of ``u`` as a float64 tensor and
    leaves the solution in ``u`` (ghosts updated).

    Its PETSc objects follow the package's rule (:mod:`dolfinx_nn.petsc_problems`):
    ``destroy()`` (or a ``with`` block) frees them collectively, the garbage collector never
    does, and a destroyed operator refuses every use (solve, gradient, ``solver``).

    Attributes:
        linear: whether ``F`` is linear in ``u`` (KSP) or not (SNES).
        solver: the forward ``PETSc.KSP`` or ``PETSc.SNES``.
        iterations: Krylov or Newton iterations of the last forward solve.
        operators: the operators of the unknown in ``F`` (given or found).
        options: the options in force (:class:`dolfinx_nn._options.SolverOptions`).
        adjoint_residual: true relative residual of the last adjoint solve.
        adjoint_backward_error: its normwise backward error (what is checked).
        tangent_residual: true relative residual of the last tangent-linear solve (second
            derivatives).
        tangent_backward_error: its normwise backward error.
    """

    def __init__(
        self,
        F: ufl.Form,
        u: dolfinx.fem.Function,
        *,
        controls: Sequence[Control],
        bcs: Sequence[dolfinx.fem.DirichletBC] = (),
        petsc_options: Mapping[str, object] | None = None,
        petsc_options_prefix: str,
        symmetric: bool | None = None,
        warm_start: bool = False,
        form_compiler_options: dict | None = None,
        jit_options: dict | None = None,
        operators: Sequence[Any] = (),
        constant_jacobian: bool | None = None,
        near_nullspace: PETSc.NullSpace | None = None,
    ) -> None:
        if not isinstance(F, ufl.Form) or len(F.arguments()) != 1:
            raise ValueError("F must be a UFL residual form with exactly one TestFunction.")
        operators = _find_operators(F, operators)
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
        if not isinstance(petsc_options_prefix, str) or not petsc_options_prefix[:1].isalpha():
            raise ValueError(
                f"petsc_options_prefix must be a non-empty string starting with a letter "
                f"(PETSc's rule), e.g. 'poisson_'; got {petsc_options_prefix!r}."
            )
        if constant_jacobian not in (None, True, False):
            raise ValueError(
                "constant_jacobian must be None (detect), True or False, got "
                f"{constant_jacobian!r}."
            )
        if petsc_options is not None and not isinstance(petsc_options, Mapping):
            raise TypeError(
                f"petsc_options must be a dict (a mapping), got {type(petsc_options).__name__}."
            )
        V = u.function_space
        for i, bc in enumerate(bcs):
            if not isinstance(bc, dolfinx.fem.DirichletBC):
                raise TypeError(f"bcs must hold dolfinx.fem.DirichletBC, got {type(bc).__name__}.")
            if not V._cpp_object.contains(bc.function_space):
                raise ValueError(
                    f"Dirichlet condition {i} is on a space that is neither u's space nor one "
                    "of its sub-spaces."
                )
        controls = list(controls)
        if any(c is u for c in controls):
            raise ValueError("the unknown u cannot also be a control.")
        # Controls that are the values of Dirichlet conditions (and need not appear in F).
        self._dirichlet: list[DirichletSource | None] = [
            dirichlet_source(c, bcs, V)
            if isinstance(c, dolfinx.fem.Function | dolfinx.fem.Constant) else None
            for c in controls
        ]
        self.controls = check_controls(
            F, controls, "F", exempt=[d is not None for d in self._dirichlet]
        )
        self.operators = _check_operators(operators, F, u, self.controls)
        self.u = u
        # Everything else the forms read (a material Function, the time in a source term):
        # recorded by each forward pass and seen by its backward pass as it was.
        inputs = _form_inputs(F, self.operators)
        context_functions = [c for c in inputs[0] if c is not u and not _listed(c, self.controls)
                             and not _listed(c, self.operators)]
        context_constants = [c for c in inputs[1] if not _listed(c, self.controls)]
        self._context = Values(context_functions, context_constants)
        self._everything = Values(
            [u, *context_functions,
             *(c for c in self.controls if isinstance(c, dolfinx.fem.Function))],
            [*context_constants,
             *(c for c in self.controls if isinstance(c, dolfinx.fem.Constant))],
        )
        self.warm_start = warm_start
        self._last_solution: np.ndarray | None = None
        self.bcs = list(bcs)
        self.prefix = petsc_options_prefix
        self.comm: MPI.Comm = V.mesh.comm
        self._n = owned_size(V)
        self._control_sizes = [control_size(c) for c in self.controls]
        compile_opts = CompileOptions(form_compiler_options=form_compiler_options,
                                      jit_options=jit_options)
        self.F = F
        self._compile_options = compile_opts
        self._second_order = None  # its forms, compiled on the first second-order pass

        v = F.arguments()[0]
        du = ufl.TrialFunction(V)
        J = ufl.derivative(F, u, du)
        # F is affine in u exactly when its Jacobian does not depend on u. (The second
        # derivative is no test: UFL differentiates max_value, abs and conditionals as if
        # their conditions were constant, so it vanishes for piecewise-linear residuals.)
        expanded = ufl.algorithms.expand_derivatives(J)
        self.linear = not self.operators and (
            expanded.empty() or u not in expanded.coefficients()
        ) and is_empty(ufl.derivative(J, u, du))
        for op in self.operators:
            term = op.jacobian(F, u, du)
            if term is not None:
                J = J + term
        self.options: SolverOptions = solver_options(
            dict(petsc_options or {}), self.prefix, self.linear
        )
        self._symmetric_given = symmetric if self.linear else False
        self._symmetric = self._symmetric_given

        self._problem: LinearProblem | NonlinearProblem
        if self.linear:
            # J u = -F(0): with u = 0 in F, -F is the right-hand side.
            self._problem = LinearProblem(
                J, -F, u=u, bcs=self.bcs, petsc_options_prefix=self.prefix, **compile_opts,
            )
        else:
            self._problem = NonlinearProblem(
                F, u, bcs=self.bcs, J=J, petsc_options_prefix=self.prefix, **compile_opts,
            )
        if near_nullspace is not None:
            self._problem.A.setNearNullSpace(near_nullspace)
        # Set here rather than by DOLFINx, whose clean-up leaves the options in the database.
        self._pushed = [set_options(self.solver, self.prefix, self.options.forward)]
        # Reuse of the assembled Jacobian (and its factorization) of a linear problem.
        self.constant_jacobian = constant_jacobian
        self._jacobian = ufl.algorithms.expand_derivatives(J)
        self._jacobian_inputs = FormInputs(self._jacobian, self.comm)
        self._matrix_version = -1  # the forward matrix's version (-1: never assembled)
        self._adjoint_version = -1  # the version the adjoint matrix was assembled for
        # What the adjoint matrix of a nonlinear problem depends on (it is assembled at the
        # state of the backward pass, again only when that state changed).
        self._adjoint_inputs = FormInputs(self._jacobian, self.comm)
        self.assemblies = 0  # forward Jacobian assemblies of the linear path
        self._hook_error: BaseException | None = None
        self._convergence: RoundoffAwareTest | None = None
        if not self.linear:
            self._install_hooks()
            if not self.options.convergence_test_set:
                self._convergence = RoundoffAwareTest()
                # The stubs want a ConvergedReason; PETSc takes the reason's int (its members).
                self._snes.setConvergenceTest(self._convergence)  # type: ignore[arg-type]

        # Adjoint: the transposed Jacobian (at the solution) with homogeneous Dirichlet rows.
        self._lam = dolfinx.fem.Function(V, name="adjoint")
        self._adjoint_rhs = dolfinx.fem.petsc.create_vector(V)
        self._adjoint_sol = dolfinx.fem.petsc.create_vector(V)
        self._adjoint_form = dolfinx.fem.form(ufl.adjoint(J), **compile_opts)
        self._adjoint_A: PETSc.Mat | None = None
        self._adjoint_ksp: PETSc.KSP | None = None
        self.adjoint_residual = 0.0
        self.adjoint_backward_error = 0.0
        self.tangent_residual = 0.0
        self.tangent_backward_error = 0.0
        # Gradient forms: dF/dm^T lambda, i.e. the derivative of F(u; m)[lambda] along m.
        F_lam = ufl.replace(F, {v: self._lam})
        self._gradient_forms = [
            gradient_form(F_lam, c, **compile_opts)
            if c in F.coefficients() or c in F.constants() else None
            for c in self.controls
        ]
        # Where dF/dm is a constant matrix (a source, the previous time step) the gradient is a
        # matrix-vector product with it instead of an assembly.
        self._gradient_matrices = [
            DerivativeMatrix(F, c, self.comm, **compile_opts)
            if form is not None and isinstance(c, dolfinx.fem.Function) else None
            for form, c in zip(self._gradient_forms, self.controls, strict=True)
        ]
        self._gradient_matrices = [m if m is not None and m.usable else None
                                   for m in self._gradient_matrices]
        self._operator_forms = [gradient_form(F_lam, op, **compile_opts) for op in self.operators]
        # (dF/du)^T lambda without boundary conditions, operator terms included: how the free
        # dofs feel Dirichlet data.
        self._jacobian_action = (
            dolfinx.fem.form(ufl.action(ufl.adjoint(J), self._lam), **compile_opts)
            if any(d is not None for d in self._dirichlet) else None
        )
        self._bc_dofs = [bc.dof_indices()[0][: bc.dof_indices()[1]] for bc in self.bcs]
        self._forward_id = 0
        self._forward_warned = False
        self.iterations = 0
        # The batch size, which controls are batched, and the states of a forward pass.
        self._pending: tuple[int | None, list[bool], list[_State]] | None = None

    # -- public -------------------------------------------------------------------------------
    def __call__(
        self,
        *controls: torch.Tensor,
        operator_inputs: Sequence[Sequence[torch.Tensor] | None] | None = None,
    ) -> torch.Tensor:
        """Solve for the given control values; differentiable in each control tensor.

        Args:
            controls: one tensor per control (owned dofs), in order; batched controls carry a
                leading batch dimension (then the result is ``(B, n_owned)``).
            operator_inputs: per operator, the tensors it evaluates with (for a
                ``NeuralOperator``: its parameters, e.g. ``list(params.values())``) or ``None``
                for its own; the result is differentiable in them too.
        """
        flat, anchor = prepare_call(self, controls, operator_inputs)
        self._n_inputs = len(flat)
        return _FEMSolve.apply(self, len(controls), *controls, *flat, *anchor)

    @property
    def symmetric(self) -> bool | None:
        """Whether the adjoint reuses the forward operator (``None``: not yet determined)."""
        return self._symmetric

    @property
    def solver(self) -> PETSc.KSP | PETSc.SNES:
        """The forward solver: a KSP (linear problems) or a SNES; refused after destroy()."""
        self._require_alive()
        return self._problem.solver

    @property
    def _snes(self) -> PETSc.SNES:
        """The forward SNES of a nonlinear ``F``."""
        solver = self.solver
        assert isinstance(solver, PETSc.SNES), "a linear F is solved by a KSP"
        return solver

    @property
    def _ksp(self) -> PETSc.KSP:
        """The forward KSP: the solver of a linear ``F``, the SNES's linear solver otherwise."""
        solver = self.solver
        return solver if isinstance(solver, PETSc.KSP) else solver.getKSP()

    @property
    def _linear_problem(self) -> LinearProblem:
        """The forward problem of a linear ``F``."""
        problem = self._problem
        assert isinstance(problem, LinearProblem), "a nonlinear F has no LinearProblem"
        return problem

    @property
    def _linear_forms(self) -> tuple[dolfinx.fem.Form, dolfinx.fem.Form]:
        """The compiled bilinear and linear forms of a linear ``F`` (single forms, no blocks)."""
        problem = self._linear_problem
        return cast(dolfinx.fem.Form, problem.a), cast(dolfinx.fem.Form, problem.L)

    def _owned_petsc(self) -> list[Any]:
        """What :meth:`destroy` frees (collective; see :mod:`dolfinx_nn.petsc_problems`).

        Without ``destroy()``, the objects are freed collectively when the operator is garbage
        and any operator of the same communicator runs its next forward pass.
        """
        problem = self._problem
        return [self._adjoint_ksp, self._adjoint_A, self._adjoint_rhs, self._adjoint_sol,
                problem.solver, problem.A, problem.b, problem.x, problem.P_mat,
                *self._gradient_matrices, self._second_order]

    # -- SNES callbacks -----------------------------------------------------------------------
    def _install_hooks(self) -> None:
        """Residual and Jacobian callbacks that refresh the operators and keep errors.

        An exception raised inside a callback (a network's shape error, a missing CUDA driver)
        would reach the user as ``PETSc.Error: error code 101``.  The callbacks keep it, make
        the residual NaN so that the SNES stops on every rank, and :meth:`_check_converged`
        raises it (on every rank) after the solve.

        The callbacks hold the operator weakly: the SNES keeps them in C, out of reach of
        Python's cycle collector, so a strong reference would keep every nonlinear operator
        (its mesh, communicators and factorizations) alive for the life of the process.
        """
        snes, problem = self._snes, self._problem
        assert isinstance(problem, NonlinearProblem), "a linear F has no SNES callbacks"
        owner = weakref.ref(self)
        petsc = dolfinx.fem.petsc
        residual_ctx = {"u": problem.u, "residual": problem.F, "jacobian": problem.J,
                        "bcs": self.bcs}
        jacobian_ctx = {"u": problem.u, "jacobian": problem.J,
                        "preconditioner": problem.preconditioner, "bcs": self.bcs}

        def hooked_residual(snes_, x, b, **kwargs):
            op = owner()
            if op._hook_error is None:
                op._refresh_operators(x, derivatives=False)
            if op._hook_error is None:
                try:
                    petsc.assemble_residual(snes_, x, b, **kwargs)
                except Exception as error:  # noqa: BLE001 (re-raised after the solve)
                    op._hook_error = error
            if op._hook_error is not None:
                b.set(np.nan)  # stops the SNES on every rank (the norm is collective)

        def hooked_jacobian(snes_, x, A, P, **kwargs):
            op = owner()
            if op._hook_error is None:
                op._refresh_operators(x, derivatives=True)
            if op._hook_error is None:
                try:
                    petsc.assemble_jacobian(snes_, x, A, P, **kwargs)
                except Exception as error:  # noqa: BLE001
                    op._hook_error = error
            # After an error the matrix keeps its last values; the next residual, made NaN,
            # stops the SNES (or PETSc stops at a never assembled matrix): _solve raises.

        snes.setFunction(hooked_residual, problem.b, kargs=residual_ctx)
        snes.setJacobian(hooked_jacobian, problem.A, problem.P_mat, kargs=jacobian_ctx)

    def _refresh_operators(self, x: PETSc.Vec | None, derivatives: bool) -> None:
        if not self.operators:
            return
        if x is not None:
            ghost_insert(x)
            assign_vector(x, self.u)
        try:
            for op in self.operators:
                op.update(derivatives)
        except Exception as error:  # noqa: BLE001 (operators raise collectively)
            self._hook_error = error

    # -- forward ------------------------------------------------------------------------------
    def _control_shape(self, i: int, ndim: int) -> tuple[int, ...] | None:
        """The unbatched shape of control ``i`` for a tensor of ``ndim`` dimensions, if any."""
        c = self.controls[i]
        if isinstance(c, dolfinx.fem.Constant):
            shape = tuple(np.shape(c.value))
            return shape if len(shape) == ndim else None
        return (self._control_sizes[i],) if ndim == 1 else None

    def _batch_layout(
        self, tensors: Sequence[torch.Tensor]
    ) -> tuple[int | None, list[bool]]:
        """The batch size (``None``: no batch) and which controls are batched (collective).

        A Function control's tensor is batched when it is ``(B, n_owned)``; a Constant's when
        it is ``(B, *value_shape)``. Every batched control must have the same ``B`` on every
        rank.
        """
        batched, sizes = [], set()
        for i, (c, t) in enumerate(zip(self.controls, tensors, strict=True)):
            is_b = False
            if isinstance(t, torch.Tensor):
                if isinstance(c, dolfinx.fem.Constant):
                    shape = tuple(np.shape(c.value))
                    is_b = t.dim() == len(shape) + 1 and tuple(t.shape[1:]) == shape
                else:
                    is_b = t.dim() == 2 and t.shape[1] == self._control_sizes[i]
            batched.append(is_b)
            if is_b:
                sizes.add(int(t.shape[0]))
        everywhere = self.comm.allgather((tuple(batched), tuple(sorted(sizes))))
        error = None
        if len(set(everywhere)) > 1 or len(sizes) > 1 or 0 in sizes:
            error = ValueError(
                "batched controls must share one batch size B (a leading dimension) on every "
                f"rank; got batched={batched} with sizes {sorted(sizes)} on rank "
                f"{self.comm.rank}" + (f" and {everywhere[0]} on rank 0" if self.comm.rank else "")
                + "."
            )
        raise_on_all_ranks(error, self.comm)
        return (sizes.pop() if sizes else None), batched

    def _set_controls(self, values: Sequence[np.ndarray]) -> None:
        for i, (c, x) in enumerate(zip(self.controls, values, strict=True)):
            assign_control(c, x, self.comm, f"control {i}")

    def _control_values(self, tensors: Sequence[torch.Tensor]) -> list[np.ndarray]:
        """The controls' tensors as float64 arrays, checked on every rank together."""
        return control_values(self.controls, tensors, self.comm)

    def _forward(self, tensors: Sequence[torch.Tensor]) -> _State:
        self._require_alive()
        values = self._control_values(tensors)
        collect_garbage(self.comm)  # a collective point: free what other operators dropped
        self._set_controls(values)
        self._forward_id += 1
        self._hook_error = None
        initial = None if self.linear or not self.warm_start else self._last_solution
        self._solve(initial)
        if (not self.linear and self._failed() and not self.options.line_search_set
                and converged_reason(self.solver)
                != PETSc.SNES.ConvergedReason.DIVERGED_LINEAR_SOLVE):
            # Plain Newton diverged (a failed linear solve is no matter of step length): try
            # again from the same start with a line search.
            self._recover()
            line_search = self._snes.getLineSearch()
            line_search.setType(FALLBACK_LINE_SEARCH)
            try:
                self._solve(initial)
            finally:
                line_search.setType(str(self.options.effective["snes_linesearch_type"]))
        self._check_converged()
        self._tidy_options()
        if self.linear and not self.options.direct:
            self._check_forward_accuracy()
        solution = self.u.x.array[: self._n].copy()
        self._last_solution = solution
        inputs = [list(op.inputs()) for op in self.operators]
        return _State(self._forward_id, values, solution, inputs, self._matrix_version,
                      self._context.record())

    def _solve(self, initial: np.ndarray | None) -> None:
        self._hook_error = None
        if initial is None:
            self.u.x.array[:] = 0.0
        else:
            assign_owned(self.u, initial)
        try:
            if self.linear:
                self._solve_linear()
            else:
                self._problem.solve()
        except PETSc.Error as error:
            # An error inside a callback (kept in _hook_error) or in PETSc itself, typically a
            # failed factorization inside Newton: report the linear solver's reason.
            ksp = self._ksp
            reason = converged_reason(ksp)
            name = (_reason_name(PETSc.KSP.ConvergedReason, reason) if reason < 0
                    else f"PETSc error code {error.ierr}")  # type: ignore[attr-defined]  # stub lacks ierr
            failed = self._hook_error or SolverError(
                "KSP" if self.linear or reason < 0 else "SNES", min(reason, -1), name,
                ksp.getIterationNumber() if reason < 0 else self.solver.getIterationNumber(),
                ksp.getOptionsPrefix() or self.prefix,
            )
            self._hook_error = None
            self._recover()
            raise_on_all_ranks(failed, self.comm)

    def _solve_linear(self) -> None:
        """Assemble the right-hand side (and the matrix only if it changed), then solve."""
        problem = self._linear_problem
        a, L = self._linear_forms
        self._ensure_matrix(force=self.constant_jacobian is False)
        b = problem.b
        with b.localForm() as local:
            local.set(0.0)
        assemble_vector_into(b, L)
        dolfinx.fem.petsc.apply_lifting(b, [a], bcs=[self.bcs])
        ghost_add(b)
        for bc in self.bcs:
            bc.set(b.array_w)
        self._ksp.solve(b, problem.x)
        ghost_insert(problem.x)
        assign_vector(problem.x, self.u)

    def _ensure_matrix(self, force: bool = False) -> None:
        """Assemble the linear problem's matrix if its inputs changed (or if forced).

        Automatic (``constant_jacobian=None``): when a coefficient, constant or the geometry
        of the Jacobian form changed since the last assembly. ``True``: once. ``False``: on
        every forward pass (DOLFINx's ``LinearProblem``). An unchanged matrix keeps its
        factorization (PETSc refactors only when the matrix changed).
        """
        if self._matrix_version >= 0 and not force:
            if self.constant_jacobian or not self._jacobian_inputs.changed():
                return
        A = self._linear_problem.A
        A.zeroEntries()
        assemble_matrix_into(A, self._linear_forms[0], bcs=self.bcs)
        A.assemble()
        self._jacobian_inputs.record()
        self.assemblies += 1
        self._matrix_version = self.assemblies
        if self._symmetric_given is None:
            self._symmetric = self._is_symmetric(A)

    def _failed(self) -> bool:
        return self._hook_error is None and converged_reason(self.solver) <= 0

    def _check_converged(self) -> None:
        if self.comm.allreduce(self._hook_error is not None, op=MPI.LOR):
            error, self._hook_error = self._hook_error, None
            self._recover()
            raise_on_all_ranks(error, self.comm)
        solver = self.solver
        reason = converged_reason(solver)
        kind = "KSP" if self.linear else "SNES"
        if (reason < 0) if self.linear else (reason <= 0):
            enum = PETSc.KSP.ConvergedReason if self.linear else PETSc.SNES.ConvergedReason
            iterations = solver.getIterationNumber()
            self._recover()
            raise SolverError(kind, reason, _reason_name(enum, reason), iterations, self.prefix)
        self.iterations = solver.getIterationNumber()
        check_finite(self.u.x.array[: self._n], self.comm, "the solution")
        if not self.linear:
            self._check_newton_accuracy(reason)

    def _check_newton_accuracy(self, reason: int) -> None:
        """Warn (once) when the SNES stopped far from the solution: a loose tolerance the user
        set, or its own iteration count (a convergence test that never stops it)."""
        test = self._convergence
        if self._forward_warned or (test is not None and test.at_roundoff):
            return
        fnorm = self._snes.getFunctionNorm()
        start = test.initial_norm if test is not None else 0.0
        loose = reason == PETSc.SNES.ConvergedReason.CONVERGED_ITS or (
            start > 0 and fnorm > NEWTON_RESIDUAL_WARNING * start)
        if loose:
            self._forward_warned = True
            warnings.warn(
                f"the Newton solve with options prefix {self.prefix!r} stopped "
                f"({_reason_name(PETSc.SNES.ConvergedReason, reason)}) at a residual of "
                f"{fnorm:.1e}" + (f", {fnorm / start:.1e} of the initial one" if start else "")
                + "; the gradient is that of the exact solution, which this one approximates "
                f"only to that level. Tighten -{self.prefix}snes_rtol for exact gradients.",
                RuntimeWarning, stacklevel=4,
            )

    def _tidy_options(self) -> None:
        """Remove the options pushed for the solvers once they have been set up."""
        for pushed in self._pushed:
            pushed.tidy()

    def _recover(self) -> None:
        """Reset the solvers after a failed solve, so that the next call starts afresh.

        A failed factorization (``DIVERGED_PCSETUP_FAILED``) leaves the PC in a failed state
        that makes every later ``KSPSolve`` stop with a raw PETSc error.
        """
        ksp = self._ksp
        operators = ksp.getOperators()
        ksp.reset()
        ksp.setOperators(*operators)
        self._matrix_version = -1  # assemble again: the failed matrix may have been the cause

    def _check_forward_accuracy(self) -> None:
        problem = self._problem
        residual, backward = _solve_accuracy(problem.A, problem.x, problem.b)
        if backward > FORWARD_BACKWARD_ERROR_LIMIT and not self._forward_warned:
            self._forward_warned = True
            warnings.warn(
                f"the linear solve with options prefix {self.prefix!r} stopped at a true "
                f"relative residual of {residual:.1e} (backward error {backward:.1e}); the "
                f"gradient is that of the exact solve, which this forward solution approximates "
                f"only to that level. Tighten -{self.prefix}ksp_rtol for exact gradients.",
                RuntimeWarning, stacklevel=4,
            )

    @staticmethod
    def _is_symmetric(A: PETSc.Mat) -> bool:
        scale = norm(A, PETSc.NormType.INFINITY)
        return bool(A.isSymmetric(1e-12 * max(scale, 1.0)))

    # -- backward -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _values_kept(self):
        """Put back the values of the moment of everything the forms read, on leaving."""
        now = self._everything.read()
        try:
            yield
        finally:
            self._everything.write(now)

    def _restore(self, state: _State) -> None:
        self._set_controls(state.controls)
        assign_owned(self.u, state.solution)
        if state.context is not None:
            self._context.write(state.context)
        for op, inputs in zip(self.operators, state.operator_inputs, strict=True):
            op.set_inputs(inputs)
            op.update(True)

    def _reuses_forward_solver(self) -> bool:
        """The adjoint can use the forward KSP: a linear problem, same method, and either a
        symmetric matrix or a direct solver (which solves with the transpose of its factors)."""
        if not self.linear or not (self._symmetric or self.options.direct):
            return False
        method = ("ksp_type", "pc_type", "pc_factor_mat_solver_type")
        forward, adjoint = self.options.effective, self.options.adjoint_effective
        return all(forward.get(k) == adjoint.get(k) for k in method)

    def _forward_matrix_at(self, state: _State) -> PETSc.Mat:
        """The linear problem's matrix at ``state``'s coefficients (the one it solved with)."""
        self._ensure_matrix(force=state.matrix_version != self._matrix_version)
        self._matrix_version = state.matrix_version if state.matrix_version > 0 \
            else self._matrix_version
        return self._problem.A

    def _adjoint_operator(self, state: _State) -> tuple[PETSc.KSP, PETSc.Mat, bool]:
        """A KSP for the transposed Jacobian at ``state``, its matrix, and whether to solve with
        the transpose of that matrix (``KSPSolveTranspose``)."""
        if self.linear:
            A = self._forward_matrix_at(state)
            if self._reuses_forward_solver():
                return self._linear_problem.solver, A, not self._symmetric
            if self._symmetric:
                ksp = self._own_adjoint_ksp()
                ksp.setOperators(A)
                return ksp, A, False
        if self._adjoint_A is None:
            self._adjoint_A = dolfinx.fem.petsc.create_matrix(self._adjoint_form)
        A = self._adjoint_A
        # A linear problem's transposed matrix changes only with the forward one; a nonlinear
        # problem's with the state (the same state again: the same matrix and factors).
        if (self._adjoint_inputs.changed() if not self.linear
                else self._adjoint_version != self._matrix_version):
            A.zeroEntries()
            assemble_matrix_into(A, self._adjoint_form, bcs=self.bcs)
            A.assemble()
            self._adjoint_version = self._matrix_version if self.linear else -1
            if not self.linear:
                self._adjoint_inputs.record()
        ksp = self._own_adjoint_ksp()
        ksp.setOperators(A)
        return ksp, A, False

    def _own_adjoint_ksp(self) -> PETSc.KSP:
        if self._adjoint_ksp is None:
            self._adjoint_ksp = PETSc.KSP().create(petsc_comm(self.comm))
            self._pushed.append(set_options(
                self._adjoint_ksp, f"{self.prefix}{ADJOINT_PREFIX}", self.options.adjoint))
        return self._adjoint_ksp

    def _solve_adjoint(
        self, ksp: PETSc.KSP, A: PETSc.Mat, transpose: bool,
        rhs: PETSc.Vec | None = None, lam: PETSc.Vec | None = None, what: str = "adjoint",
    ) -> None:
        """Solve ``A lam = rhs`` (``A^T lam = rhs`` when ``transpose``) to the adjoint's
        tolerances and check its true residual; by default the adjoint's own vectors.

        The tangent-linear solve of the second-order pass comes here too (``what`` names the
        solve in the messages; its residual is kept in :attr:`tangent_residual`).
        """
        if rhs is None or lam is None:  # both given, or neither
            rhs, lam = self._adjoint_rhs, self._adjoint_sol
        solve = ksp.solveTranspose if transpose else ksp.solve
        if ksp is self._problem.solver:
            # The forward KSP, with the adjoint's tolerances for this solve.
            saved = ksp.getTolerances()
            tol: dict[str, Any] = {  # numbers, or strings from PETSc's database
                k: self.options.adjoint_effective.get(k, ADJOINT_TOLERANCES[k])
                for k in ADJOINT_TOLERANCES
            }
            ksp.setTolerances(rtol=float(tol["ksp_rtol"]), atol=float(tol["ksp_atol"]),
                              max_it=int(tol["ksp_max_it"]))
            try:
                solve(rhs, lam)
            finally:
                ksp.setTolerances(*saved)
        else:
            solve(rhs, lam)
        self._tidy_options()
        reason = converged_reason(ksp)
        if reason < 0:
            name = _reason_name(PETSc.KSP.ConvergedReason, reason)
            iterations = ksp.getIterationNumber()
            prefix = ksp.getOptionsPrefix()
            if ksp is not self._problem.solver:
                operators = ksp.getOperators()
                ksp.reset()
                ksp.setOperators(*operators)
            else:
                self._recover()
            raise SolverError("KSP", reason, name, iterations, prefix)
        # Checked against the true system: for the adjoint, the transposed forward matrix of a
        # linear problem (this also catches a wrong symmetric=True), the adjoint Jacobian
        # otherwise; for the tangent-linear solve, the matrix it was solved with.
        if self.linear and what == "adjoint":
            check = _solve_accuracy(self._problem.A, lam, rhs, transpose=True)
        else:
            check = _solve_accuracy(A, lam, rhs, transpose=transpose)
        if what == "adjoint":
            self.adjoint_residual, self.adjoint_backward_error = check
        else:
            self.tangent_residual, self.tangent_backward_error = check
        residual, backward_error = check
        if backward_error > ADJOINT_BACKWARD_ERROR_LIMIT:
            adjoint = self.prefix + ADJOINT_PREFIX
            if self.linear and self._symmetric_given and what == "adjoint":
                advice = ("The problem was declared symmetric (symmetric=True): if dF/du is not "
                          "symmetric, pass symmetric=None.")
            elif ksp.getType() == "preonly":
                advice = (f"KSP type preonly applies the preconditioner "
                          f"({ksp.getPC().getType()}) once: choose a Krylov method "
                          f"(-{adjoint}ksp_type gmres) or a direct solver.")
            else:
                advice = (f"Tighten -{adjoint}ksp_rtol or choose a stronger preconditioner "
                          f"(-{adjoint}pc_type).")
            message = (
                f"the {what} solve (options prefix {adjoint!r}) stopped at a true relative "
                f"residual of {residual:.2e} (backward error {backward_error:.2e}) after "
                f"{ksp.getIterationNumber()} iterations; an exact "
                f"{'gradient' if what == 'adjoint' else 'second derivative'} needs a backward "
                f"error of at most {ADJOINT_BACKWARD_ERROR_LIMIT:.0e}. {advice}"
            )
            if self.options.adjoint_tolerances_set:
                warnings.warn(message, RuntimeWarning, stacklevel=5)
            else:
                raise GradientAccuracyError(message)

    def _backward(
        self, state: _State, grad_u: np.ndarray, needs: Sequence[bool],
        input_needs: Sequence[bool] = (),
    ) -> tuple[list[np.ndarray | None], list[torch.Tensor | None]]:
        """Gradients of the controls and of the operators' inputs for one forward pass,
        computed with everything the forms read as that forward pass left it."""
        check_finite(grad_u, self.comm, "the gradient with respect to u")
        now = self._everything.read()  # the values of the moment, put back afterwards
        try:
            grads = self._adjoint_gradients(state, grad_u, needs)
            inputs = self._operator_backward(state, input_needs) if self.operators else []
            return grads, inputs
        finally:
            self._everything.write(now)

    def _adjoint_gradients(
        self, state: _State, grad_u: np.ndarray, needs: Sequence[bool]
    ) -> list[np.ndarray | None]:
        self._restore(state)
        ksp, A, transpose = self._adjoint_operator(state)
        rhs = self._adjoint_rhs
        with rhs.localForm() as local:
            local.set(0.0)
        rhs.array_w[:] = grad_u
        for dofs in self._bc_dofs:
            rhs.array_w[dofs] = 0.0
        self._solve_adjoint(ksp, A, transpose)
        lam = self._adjoint_sol
        ghost_insert(lam)
        with lam.localForm() as local:
            self._lam.x.array[:] = local.array_r
        grads: list[np.ndarray | None] = []
        free_sensitivity = None
        for form, matrix, c, source, need in zip(
            self._gradient_forms, self._gradient_matrices, self.controls, self._dirichlet, needs,
            strict=True,
        ):
            if not need:
                grads.append(None)
                continue
            if matrix is not None:
                grad = -matrix.transpose_action(lam)
            elif form is not None:
                grad = -assemble_gradient(form, c)
            else:
                grad = np.zeros(control_size(c))
            if source is not None:
                if free_sensitivity is None:
                    # dJ/du_D seen through u_D directly and through the free equations.
                    free_sensitivity = grad_u - assemble_owned(self._jacobian_action, self._n)
                grad = grad + source.pull_back(c, free_sensitivity)
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


def _listed(c: object, items: Sequence[object]) -> bool:
    return any(c is x for x in items)


def _form_inputs(form: ufl.Form, operators: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """The Functions and Constants ``form`` reads, those of its operators' operands included."""
    functions, constants = list(form.coefficients()), list(form.constants())
    for op in operators:
        for e in getattr(op, "operands", ()):
            functions += [c for c in ufl.algorithms.extract_coefficients(e)
                          if not _listed(c, functions)]
            constants += [c for c in ufl.algorithms.analysis.extract_constants(e)
                          if not _listed(c, constants)]
    return functions, constants


def is_operator(c: object) -> bool:
    """Whether ``c`` is an operator of the unknown (a Function with the operator protocol)."""
    return isinstance(c, dolfinx.fem.Function) and all(
        callable(getattr(c, m, None)) for m in _OPERATOR_METHODS
    )


def _find_operators(form: ufl.Form, given: Sequence[Any]) -> list[Any]:
    """The operators given, then those found among the form's coefficients and, so that
    nesting is seen (and refused), among the operands of the operators found."""
    found = list(given)
    pending = list(form.coefficients())
    while pending:
        c = pending.pop(0)
        if is_operator(c) and all(c is not g for g in found):
            found.append(c)
            pending += [x for e in getattr(c, "operands", ())
                        for x in ufl.algorithms.extract_coefficients(e)]
    return found


def check_operands(op: Any, i: int, controls: Sequence[Any], operators: Sequence[Any]) -> None:
    """Refuse operands the bridge cannot differentiate through: controls (Functions or
    Constants: their chain-rule term through the network would be missing) and other
    operators of the unknown (the Jacobian would miss dN2/dN1 dN1/du)."""
    operands = getattr(op, "operands", ())
    functions = [c for e in operands for c in ufl.algorithms.extract_coefficients(e)]
    constants = [c for e in operands for c in ufl.algorithms.analysis.extract_constants(e)]
    for c in controls:
        if _listed(c, functions) or _listed(c, constants):
            raise ValueError(
                f"control {control_name(c)} is an operand of operator {i} ({op.name!r}); "
                "only the unknown and fixed functions and constants may be operands."
            )
    for other in operators:
        if other is not op and _listed(other, functions):
            raise ValueError(
                f"operator {i} ({op.name!r}) has another operator of the unknown "
                f"({other.name!r}) among its operands; compose the two networks into one "
                "operator instead (its Jacobian would miss the inner operator's derivative)."
            )


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
        check_operands(op, i, controls, operators)
    if len({id(op) for op in operators}) != len(operators):
        raise ValueError("the operators must be distinct.")
    return operators


def agreed_needs(ctx) -> list[bool]:
    """Which inputs of a solve need a gradient, agreed over the ranks (it decides which
    collective assemblies run)."""
    return agree_any(ctx.needs_input_grad[2 : 2 + ctx.n_controls + ctx.n_inputs], ctx.op.comm)


def adjoint_gradients(
    ctx, g: np.ndarray, needs: Sequence[bool], adjoints: list[np.ndarray] | None = None
) -> list[torch.Tensor | None]:
    """The backward pass of a solve: one adjoint solve per batch member.

    Args:
        ctx: the solve's context (``op``, ``size``, ``batched``, ``states``, ``n_controls``,
            ``n_inputs``, ``meta``).
        g: the cotangent of ``u``, ``(n,)`` or ``(B, n)``.
        needs: per input after the first two (controls, then operator inputs), whether its
            gradient is needed (the same on every rank).
        adjoints: if given, receives each member's adjoint solution (owned and ghost values).

    Returns:
        One gradient (or ``None``) per control and operator input, shaped like the inputs.
    """
    op: FEMOperator = ctx.op
    op._require_alive()
    n = ctx.n_controls
    members = [None] if ctx.size is None else list(range(ctx.size))
    per_member = []
    for b, state in zip(members, ctx.states, strict=True):
        grads, op_grads = op._backward(state, g if b is None else g[b], needs[:n], needs[n:])
        if adjoints is not None:
            adjoints.append(op._lam.x.array.copy())
        per_member.append((grads, op_grads))
    # A gradient is None for every member or for none: the members share ``needs``.
    out: list[torch.Tensor | None] = []
    for i, (dtype, device, shape) in enumerate(ctx.meta):
        parts = [part for grads, _ in per_member if (part := grads[i]) is not None]
        if not parts:
            out.append(None)
            continue
        if ctx.size is not None and ctx.batched[i]:
            grad = np.stack(parts)
        else:
            grad = np.sum(parts, axis=0)
        out.append(torch.from_numpy(grad).reshape(shape).to(device=device, dtype=dtype))
    for j in range(len(needs) - n):
        terms = [term for _, op_grads in per_member if (term := op_grads[j]) is not None]
        out.append(sum(terms[1:], terms[0]) if terms else None)
    return out


class _FEMSolve(torch.autograd.Function):
    """Inputs: the operator, the number of controls, the controls, the operators' inputs.

    A batch of control values (a leading dimension ``B`` on some controls, see
    :meth:`FEMOperator._batch_layout`) gives a ``(B, n)`` solution: one solve per batch member,
    with the matrix and its factorization reused wherever the batched controls do not enter
    the Jacobian; the backward pass solves one adjoint problem per member likewise.
    """

    @staticmethod
    def forward(op: FEMOperator, n_controls: int, *tensors: torch.Tensor) -> torch.Tensor:
        controls = tensors[:n_controls]
        size, batched = op._batch_layout(controls)
        if size is None:
            states = [op._forward(controls)]
        else:
            states = [
                op._forward([t[b] if is_b else t for t, is_b in zip(controls, batched,
                                                                     strict=True)])
                for b in range(size)
            ]
        op._pending = (size, batched, states)
        solutions = [torch.from_numpy(state.solution.copy()) for state in states]
        return solutions[0] if size is None else torch.stack(solutions).reshape(size, -1)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        op, n_controls, *tensors = inputs
        ctx.op = op
        ctx.size, ctx.batched, ctx.states = op._pending
        ctx.n_controls = n_controls
        ctx.n_inputs = op._n_inputs
        ctx.meta = [(t.dtype, t.device, t.shape) for t in tensors[:n_controls]]
        ctx.save_for_backward(*tensors, output)
        ctx.save_for_forward(*tensors)

    @staticmethod
    def backward(ctx, grad_u: torch.Tensor):
        if torch.is_grad_enabled():  # create_graph=True or torch.func: a differentiable pass
            out: Sequence[torch.Tensor | None] = differentiable_backward(ctx, grad_u)
            return (None, None, *out, *[None] * (len(ctx.needs_input_grad) - 2 - len(out)))
        g = grad_u.detach().to("cpu", torch.float64).numpy()
        out = adjoint_gradients(ctx, g, agreed_needs(ctx))
        return (None, None, *out, *[None] * (len(ctx.needs_input_grad) - 2 - len(out)))

    @staticmethod
    def jvp(ctx, *tangents):
        return tangent_linear(ctx, tangents[2:])

    @staticmethod
    def vmap(info, in_dims, op: FEMOperator, n_controls: int, *tensors: torch.Tensor):
        """``torch.func.vmap`` over control tensors: the batched solve (one factorization)."""
        dims = in_dims[2:]
        for i, d in enumerate(dims[n_controls:]):
            if d is not None:
                raise ValueError(
                    f"torch.func.vmap over the inputs of an operator of the unknown is not "
                    f"supported (operator input {i} has batch dimension {d}); batch the controls "
                    "only, or call the operator once per parameter set."
                )
        moved = []
        for i, (t, d) in enumerate(zip(tensors, dims, strict=True)):
            if d is None:
                moved.append(t)
                continue
            natural = op._control_shape(i, t.dim() - 1)
            if natural is None:
                raise ValueError(
                    f"torch.func.vmap: control {i} has batch dimension {d} of size "
                    f"{info.batch_size}, but a batched control must hold one whole control "
                    "value per batch member (owned dofs, or a Constant's value)."
                )
            moved.append(t.movedim(d, 0))
        return _FEMSolve.apply(op, n_controls, *moved), 0


@signature_of(FEMOperator)
def fem_operator(F: ufl.Form, u: dolfinx.fem.Function, **options: Any) -> FEMOperator:
    """Make the solve of ``F(u; controls) = 0`` a differentiable torch operation.

    The keyword arguments are those of :class:`FEMOperator` (keyword-only; ``controls`` and
    ``petsc_options_prefix`` are required).

    Args:
        F: residual form, linear in its TestFunction; linear or nonlinear in ``u``.
        u: the unknown; receives the solution of each forward pass.
        controls: ``fem.Function`` coefficients of ``F`` the solution is differentiated by;
            the values of Dirichlet conditions in ``bcs`` (a Function on ``u``'s space or on a
            collapsed sub-space, or a Constant; where conditions overlap, the gradient follows
            DOLFINx's precedence: the last condition wins); or ``fem.Constant`` constants of
            ``F`` (tensor: the whole value, the same on every rank; gradient: the rank's share,
            summed by ``sync_gradients``).
        bcs: Dirichlet conditions on ``u`` or its sub-spaces (the adjoint gets their
            homogeneous version).
        petsc_options: options of the forward KSP (linear ``F``) or SNES (nonlinear ``F``);
            keys starting with ``"adjoint_"`` go to the adjoint KSP. Options set in PETSc's
            database (``-{prefix}ksp_type cg`` on the command line, ``PETSC_OPTIONS``) are
            respected: defaults fill only what neither sets (where both set an option, the
            dictionary wins, as in DOLFINx). Defaults: LU (MUMPS); a Krylov method chosen for
            a linear ``F`` gets ``ksp_rtol=1e-10``; SNES: plain Newton (a ``bt`` line search is
            tried if it diverges), ``snes_rtol=1e-12``, ``snes_atol=1e-50``, and a stop at the
            residual's round-off floor (:mod:`dolfinx_nn._convergence`) unless you set
            ``snes_convergence_test``. ``snes_type ksponly`` is refused (it does not solve).
            The adjoint inherits the forward KSP type and preconditioner, never its
            tolerances (defaults ``ksp_rtol=1e-12``, ``ksp_max_it=10000`` under the adjoint
            prefix; an adjoint preconditioner chosen over an inherited ``preonly`` gets
            GMRES).
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
            :class:`dolfinx_nn.NeuralOperator`. Those in ``F`` are found without being listed;
            they are refreshed from the Newton iterate before each assembly, enter the
            Jacobian, and their inputs (network parameters) are differentiable. ``F`` is then
            solved with SNES.
        constant_jacobian: reuse of the matrix of a linear ``F`` (and of its factorization or
            preconditioner): ``None`` (default) assembles it again only when a coefficient,
            constant or the geometry of the Jacobian form changed since the last assembly (a
            time loop or a batch of sources then factorizes once); ``True`` assembles it once
            (Firedrake's name: the user promises it never changes); ``False`` on every
            forward pass. The adjoint of a linear problem always solves with the matrix of its
            own forward pass: the same factors (transposed when not symmetric, with a direct
            solver) when it is still the current one.
        near_nullspace: near null space of the operator for algebraic multigrid (e.g. rigid
            body modes for elasticity with ``pc_type gamg``), set on the forward matrix.

    Returns:
        A callable ``solve(*control_tensors) -> u_tensor`` (owned dofs, float64). A batch of
        control values, a leading dimension ``B`` on any controls (``(B, n_owned)`` for a
        Function, ``(B, *value_shape)`` for a Constant), gives ``(B, n_owned)`` solutions;
        ``torch.func.vmap`` over the control tensors does the same.

    Raises:
        ValueError: if a control does not appear in ``F`` or has the wrong size, or holds NaN
            (on every rank).
        SolverError: if the KSP or SNES diverges (carries PETSc's converged reason); the
            operator recovers and can be called again.
        GradientAccuracyError: in the backward pass, if the adjoint solve is too inaccurate for
            an exact gradient (the message gives its true residual).
        RuntimeError: in a second backward pass through the solve (second derivatives).
    """
    return FEMOperator(F, u, **options)
