"""A network of the unknown inside a UFL form: ``N = net(u, grad u, ...)`` at quadrature points.

``NeuralOperator(net, operands=(u, ufl.grad(u)), space=Q)`` is a ``dolfinx.fem.Function`` on a
quadrature space ``Q`` that holds the network's output at the quadrature points, evaluated on
the current values of the operands.  Write residuals with it like with any coefficient and
integrate them with :attr:`NeuralOperator.measure` (the rule of ``Q``), then hand the residual to
:func:`dolfinx_nn.fem_operator` with ``operators=[N]``:

- before each residual (and Jacobian) assembly of the SNES, the operands are evaluated at the
  quadrature points of the owned cells and the network is called once on all points;
- the Jacobian is ``dF/du`` with ``N`` frozen plus ``dF/dN[sum_k D_k : d(operand_k)/du[du]]``,
  where ``D_k = dN/d(operand_k)`` at the quadrature points comes from ``torch.func`` (one
  batched call) and lives in a quadrature Function: a sparse form that DOLFINx assembles;
- the backward pass assembles ``g = -(dF/dN)^T lambda`` on ``Q`` and pulls it back through the
  network at the solution (one vector-Jacobian product), so the network's parameters get their
  gradient (each rank its share; :func:`dolfinx_nn.sync_gradients` sums them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mpi4py import MPI

import dolfinx
import numpy as np
import torch
import ufl

from dolfinx_nn._dofs import owned_size
from dolfinx_nn.parallel import check_device, raise_on_all_ranks
from dolfinx_nn.quadrature import (
    QuadratureEvaluator,
    QuadratureLayout,
    is_quadrature_space,
    quadrature_degree,
    quadrature_measure,
    quadrature_space,
)


def _check_operand(expr: object, index: int) -> ufl.core.expr.Expr:
    if isinstance(expr, int | float):
        raise TypeError(
            f"operand {index} is the number {expr!r}; operands must be UFL expressions."
        )
    if not isinstance(expr, ufl.core.expr.Expr):
        raise TypeError(
            f"operand {index} must be a UFL expression (e.g. u or ufl.grad(u)), "
            f"got {type(expr).__name__}."
        )
    if ufl.algorithms.extract_arguments(expr):
        raise ValueError(f"operand {index} ({expr}) contains a Test/TrialFunction.")
    for c in ufl.algorithms.extract_coefficients(expr):
        element = c.ufl_element()
        if getattr(element, "is_mixed", False):
            raise ValueError(
                f"operand {index} ({expr}) depends on {c} in a mixed space ({element}); use a "
                "function of a single (scalar, vector or tensor) space as operand, e.g. a "
                "collapsed sub-space."
            )
    return expr


def _contract(D: ufl.core.expr.Expr, dop: ufl.core.expr.Expr, out_rank: int) -> ufl.core.expr.Expr:
    """``D[i..., j...] * dop[j...]``: the derivative ``D`` applied to an operand increment."""
    in_rank = len(dop.ufl_shape)
    if in_rank == 0:
        return D * dop
    ii = ufl.indices(out_rank)
    jj = ufl.indices(in_rank)
    term = D[(*ii, *jj)] * dop[jj]
    return ufl.as_tensor(term, ii) if out_rank else term


class NeuralOperator(dolfinx.fem.Function):
    """Network of UFL operands evaluated at the quadrature points of ``space``.

    Args:
        net: torch module mapping the concatenated (flattened) operand values, shape
            ``(n, sum of operand sizes)``, to the output, shape ``(n, *value_shape)`` (or
            ``(n,)`` / ``(n, 1)`` for a scalar space). Any dtype and device.
        operands: UFL expressions of the unknown (and of other functions), e.g.
            ``(u, ufl.grad(u))``; each must be evaluable at points (``fem.Expression``).
        space: quadrature space of the output (see :func:`dolfinx_nn.quadrature.quadrature_space`);
            its rule is the rule of every integral that contains the operator.
        device: where the network runs; by default the device of its parameters.
        name: name of the Function.
        chunk_size: points per network call. The network acts point by point, so the points
            are fed in chunks whose intermediate activations stay in cache (2-4x faster on a
            CPU than one call on 1e5-1e6 points); ``None``: one call on all points.

    Attributes:
        measure: the cell measure with ``space``'s rule.
        derivatives: one quadrature Function per operand with ``dN/d(operand)`` (shape
            ``value_shape + operand shape``), filled when a Jacobian is assembled.
        evaluations: number of network calls so far (forward only, and with derivatives).
    """

    def __init__(
        self,
        net: torch.nn.Module,
        operands: Sequence[ufl.core.expr.Expr],
        space: dolfinx.fem.FunctionSpace,
        *,
        device: torch.device | str | None = None,
        name: str = "N",
        chunk_size: int | None = 16384,
    ) -> None:
        if not isinstance(net, torch.nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}.")
        if not isinstance(space, dolfinx.fem.FunctionSpace) or not is_quadrature_space(space):
            what = space.ufl_element() if isinstance(space, dolfinx.fem.FunctionSpace) else space
            raise ValueError(
                f"space must be a quadrature space (dolfinx_nn.quadrature.quadrature_space), "
                f"got {what}."
            )
        if isinstance(operands, ufl.core.expr.Expr):
            operands = (operands,)
        operands = tuple(_check_operand(e, i) for i, e in enumerate(operands))
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}.")
        self.chunk_size = chunk_size
        if not operands:
            raise ValueError("NeuralOperator needs at least one operand.")
        super().__init__(space, name=name)
        self.net = net
        self.operands = operands
        self.layout = QuadratureLayout(space)
        self.value_shape = self.layout.value_shape
        self.out_size = int(np.prod(self.value_shape, dtype=int))
        self._evaluators = [QuadratureEvaluator(e, self.layout) for e in operands]
        self.in_size = sum(ev.size for ev in self._evaluators)
        degree = quadrature_degree(space)
        self.derivatives = [
            dolfinx.fem.Function(
                quadrature_space(space.mesh, degree, (*self.value_shape, *ev.shape)),
                name=f"d{name}_d{k}",
            )
            for k, ev in enumerate(self._evaluators)
        ]
        self._derivative_layouts = [QuadratureLayout(D.function_space) for D in self.derivatives]
        self.measure = quadrature_measure(space)
        params = list(net.parameters())
        self.net_device = check_device(device, space.mesh.comm) if device is not None else (
            params[0].device if params else torch.device("cpu")
        )
        self.net_dtype = params[0].dtype if params else torch.float64
        self.num_owned = owned_size(space)
        self._parameters: dict[str, torch.Tensor] | None = None
        self._state: tuple[np.ndarray, bool] | None = None  # (operand values, with derivatives)
        self.evaluations = 0

    # -- parameters -------------------------------------------------------------------------
    def parameter_names(self) -> list[str]:
        """Names of the network's parameters, in the order of :meth:`inputs`."""
        return [k for k, _ in self.net.named_parameters()]

    def inputs(self) -> list[torch.Tensor]:
        """The parameter tensors the operator currently evaluates the network with."""
        if self._parameters is not None:
            return list(self._parameters.values())
        return [p for _, p in self.net.named_parameters()]

    def set_inputs(
        self, tensors: Sequence[torch.Tensor] | Mapping[str, torch.Tensor] | None
    ) -> None:
        """Evaluate with these parameter tensors (``None``: the network's own parameters)."""
        if tensors is None:
            new = None
        else:
            names = self.parameter_names()
            values = list(tensors.values()) if isinstance(tensors, Mapping) else list(tensors)
            if len(values) != len(names):
                raise ValueError(
                    f"expected {len(names)} parameter tensors for {self.name!r} ({names}), "
                    f"got {len(values)}."
                )
            new = dict(zip(names, values, strict=True))
        self._parameters = new
        self._state = None

    # -- evaluation -------------------------------------------------------------------------
    def operand_values(self) -> np.ndarray:
        """Concatenated operand values at the quadrature points of the owned cells."""
        return np.concatenate([ev() for ev in self._evaluators], axis=1)

    def _call(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.net, params, (x,))

    def _params(self, detach: bool = True) -> dict[str, torch.Tensor]:
        if self._parameters is not None:
            params = self._parameters
        else:
            params = dict(self.net.named_parameters())
        return {k: (v.detach() if detach else v) for k, v in params.items()}

    def _check_shape(self, out: torch.Tensor, n: int) -> torch.Tensor:
        if out.numel() != n * self.out_size or out.shape[0] != n:
            raise ValueError(
                f"network output has shape {tuple(out.shape)} for {n} points, but the space of "
                f"{self.name!r} has value shape {self.value_shape}: expected "
                f"{(n, *self.value_shape)}" + (" or (n,) / (n, 1)" if not self.value_shape else "")
                + "."
            )
        return out.reshape(n, self.out_size)

    def _check_finite(self, values: np.ndarray, X: np.ndarray, what: str) -> None:
        bad = ~np.isfinite(values).all(axis=tuple(range(1, values.ndim)))  # per point
        comm = self.layout.comm
        total = comm.allreduce(int(bad.sum()))
        if not total:
            return
        error = None
        if bad.any():
            p = int(np.flatnonzero(bad)[0])
            error = ValueError(
                f"{what} of {self.name!r} is NaN/Inf at {total} quadrature point(s); first on "
                f"rank {comm.rank} in cell {self.layout.cell_of_point(p)} (local index), "
                f"quadrature point {p % self.layout.points_per_cell}, operand values "
                f"{X[p].tolist()}."
            )
        raise_on_all_ranks(error, comm)

    def update(self, derivatives: bool = False) -> None:
        """Evaluate the network (and, if asked, its derivatives) at the current operands."""
        X = self.operand_values()
        unchanged = (
            self._state is not None
            and (self._state[1] or not derivatives)
            and np.array_equal(self._state[0], X)
        )
        # Collective decision: a rank whose operands did not change must still join the
        # collective checks when another rank's did.
        if self.layout.comm.allreduce(unchanged, op=MPI.LAND):
            return
        self._check_finite(X, X, "an operand")
        x = torch.from_numpy(X).to(self.net_device, self.net_dtype)
        params = self._params()
        error: Exception | None = None
        try:
            with torch.no_grad():
                if derivatives:
                    values, jac = self._value_and_jacobian(params, x)
                else:
                    values = torch.cat([
                        self._check_shape(self._call(params, c), c.shape[0])
                        for c in self._chunks(x)
                    ])
        except Exception as e:  # noqa: BLE001 (a wrong shape, an error inside the network)
            error = e
        # Raised on every rank (a rank without points too), as itself where it happened.
        raise_on_all_ranks(error, self.layout.comm)
        self.evaluations += 1
        output = values.to("cpu", torch.float64).numpy()
        self._check_finite(output, X, "the network output")
        self.layout.write(self, output)
        if derivatives:
            jacobian = jac.to("cpu", torch.float64).numpy()  # (n, out_size, in_size)
            self._check_finite(jacobian, X, "the network derivative")
            start = 0
            for ev, D, layout in zip(
                self._evaluators, self.derivatives, self._derivative_layouts, strict=True
            ):
                layout.write(D, jacobian[:, :, start : start + ev.size])
                start += ev.size
        self._state = (X, derivatives)

    def _chunks(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x,) if self.chunk_size is None else torch.split(x, self.chunk_size)

    def _value_and_jacobian(
        self, params: dict[str, torch.Tensor], x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Values ``(n, out)`` and Jacobians ``(n, out, in)`` in one batched call."""
        n = x.shape[0]
        if n == 0:  # a rank without cells
            return x.new_zeros(0, self.out_size), x.new_zeros(0, self.out_size, self.in_size)
        self._check_shape(self._call(params, x[:1]), 1)

        def at_point(xp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = self._call(params, xp[None]).reshape(self.out_size)
            return y, y

        # Forward mode costs one pass per input component, reverse mode one per output one.
        jac_fn = torch.func.jacfwd if self.in_size <= self.out_size else torch.func.jacrev
        batched = torch.func.vmap(jac_fn(at_point, has_aux=True))
        jacs, values = zip(*(batched(c) for c in self._chunks(x)), strict=True)
        return (
            torch.cat(values).reshape(n, self.out_size),
            torch.cat(jacs).reshape(n, self.out_size, self.in_size),
        )

    # -- Jacobian and backward pass ---------------------------------------------------------
    def jacobian(self, F: ufl.Form, u: dolfinx.fem.Function, du: ufl.Argument) -> ufl.Form | None:
        """``dF/dN[sum_k D_k : d(operand_k)/du[du]]``; None if N does not depend on ``u``."""
        increments = []
        for op, D in zip(self.operands, self.derivatives, strict=True):
            dop = ufl.algorithms.expand_derivatives(ufl.derivative(op, u, du))
            if isinstance(dop, ufl.constantvalue.Zero):
                continue
            increments.append(_contract(D, dop, len(self.value_shape)))
        if not increments:
            return None
        w = ufl.TrialFunction(self.function_space)
        dF = ufl.derivative(F, self, w)
        increment = sum(increments[1:], increments[0])
        return ufl.replace(ufl.algorithms.expand_derivatives(dF), {w: increment})

    def backward(
        self, grad: np.ndarray, inputs: Sequence[torch.Tensor]
    ) -> list[torch.Tensor | None]:
        """Gradient w.r.t. ``inputs`` (the parameters) of ``<grad, N>`` at the current operands.

        Args:
            grad: owned dofs of the gradient w.r.t. the values of ``N`` on its space.
            inputs: the parameter tensors the forward pass used.
        """
        full = np.zeros(self.x.array.size)
        full[: self.num_owned] = grad
        g = self.layout.read(full).reshape(self.layout.num_points, self.out_size)
        X = self.operand_values()
        names = self.parameter_names()
        leaves = [t.detach().requires_grad_(True) for t in inputs]
        with torch.enable_grad():
            out = self._call(
                dict(zip(names, leaves, strict=True)),
                torch.from_numpy(X).to(self.net_device, self.net_dtype),
            )
            out = self._check_shape(out, X.shape[0])
            weights = torch.from_numpy(g).to(out.device, out.dtype)
            grads = torch.autograd.grad(out, leaves, weights, allow_unused=True)
        return [
            None if gr is None else gr.to(device=t.device, dtype=t.dtype)
            for gr, t in zip(grads, inputs, strict=True)
        ]


def derivative(
    form: ufl.Form, u: dolfinx.fem.Function, du: ufl.core.expr.Expr | None = None
) -> ufl.Form:
    """``ufl.derivative(form, u, du)`` including the derivatives of operators of ``u`` in it.

    A :class:`NeuralOperator` is a Function to UFL, so ``ufl.derivative`` treats it as a
    constant coefficient.  This adds ``dF/dN[dN/du[du]]`` for every operator of the unknown
    found in ``form`` (with its derivatives at the last :meth:`NeuralOperator.update`
    with ``derivatives=True``), which is the Jacobian :func:`dolfinx_nn.fem_operator` uses.

    Args:
        form: a UFL form containing operators of ``u``.
        u: the function to differentiate by.
        du: the direction (an Argument); default a TrialFunction (Jacobian of a residual) or a
            TestFunction (gradient of a functional) on ``u``'s space.

    Returns:
        The derivative form.
    """
    from dolfinx_nn.fem_operator import _find_operators

    if du is None:
        V = u.function_space
        du = ufl.TrialFunction(V) if form.arguments() else ufl.TestFunction(V)
    total = ufl.derivative(form, u, du)
    for op in _find_operators(form, ()):
        term = op.jacobian(form, u, du)
        if term is not None:
            total = total + term
    return total
