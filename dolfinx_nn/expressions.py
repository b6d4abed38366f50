"""Safe mathematical formulas typed by users, evaluated with UFL, NumPy or PyTorch.

A formula such as ``"1 + 0.5*sin(pi*x[0])*cos(pi*x[1])"`` or ``"exp(-t)*sin(pi*x[0])"`` is
parsed with :mod:`ast` into a small tree of whitelisted nodes; nothing the user types is ever
passed to ``eval``.  The tree is then evaluated by walking it with one of three backends:

- :meth:`ParsedExpression.ufl` builds a UFL expression of ``ufl.SpatialCoordinate(mesh)``
  (differentiable by UFL, usable in forms and ``dolfinx.fem.Expression``);
- :meth:`ParsedExpression.numpy` evaluates at points shaped ``(3 or gdim, n)``, the layout
  ``dolfinx.fem.Function.interpolate`` passes;
- :meth:`ParsedExpression.torch` evaluates at points shaped ``(n, d)``, differentiably.

Grammar: numbers, ``x[i]`` (literal integer ``i >= 0``), ``t`` (time), ``pi``, ``e``, the
operators ``+ - * / **`` and unary ``+ -``, and the functions listed in :data:`FUNCTIONS`.
``where(cond, a, b)`` selects ``a`` where ``cond`` holds; a condition is a comparison
(``< <= > >= == !=``, chains allowed) combined with ``and``, ``or``, ``not``.

Example:
    >>> e = parse_expression("1 + 0.5*sin(pi*x[0])*x[1]")
    >>> e.max_coordinate, e.uses_time
    (1, False)
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["CONSTANTS", "FUNCTIONS", "ParsedExpression", "on_mesh", "parse_expression"]

#: Maximal length of a formula (protects the parser against pathological input).
MAX_LENGTH = 10_000

#: Named constants.
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}

#: Function name -> number of arguments.
FUNCTIONS: dict[str, int] = {
    "sin": 1,
    "cos": 1,
    "tan": 1,
    "asin": 1,
    "acos": 1,
    "atan": 1,
    "atan2": 2,
    "sinh": 1,
    "cosh": 1,
    "tanh": 1,
    "exp": 1,
    "log": 1,
    "sqrt": 1,
    "abs": 1,
    "sign": 1,
    "min": 2,
    "max": 2,
    "where": 3,
}

_SIGNATURES = {
    "atan2": "atan2(y, x)",
    "min": "min(a, b)",
    "max": "max(a, b)",
    "where": "where(cond, a, b)",
}
_ALLOWED = (
    "numbers, x[i] with a literal integer i >= 0, t (time), "
    + ", ".join(CONSTANTS)
    + ", the operators + - * / ** and unary -, the functions "
    + ", ".join(_SIGNATURES.get(name, name) for name in FUNCTIONS)
    + "; a condition in where(...) compares with < <= > >= == != and joins with and/or/not"
)


# --------------------------------------------------------------------------------------------
# The validated tree
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Number:
    value: float


@dataclass(frozen=True)
class _Coordinate:
    index: int


@dataclass(frozen=True)
class _Time:
    pass


@dataclass(frozen=True)
class _Binary:
    op: str  # one of + - * / **
    left: Any
    right: Any


@dataclass(frozen=True)
class _Negate:
    operand: Any


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple


@dataclass(frozen=True)
class _Compare:
    op: str  # one of < <= > >= == !=
    left: Any
    right: Any


@dataclass(frozen=True)
class _Logic:
    op: str  # "and", "or", "not"
    args: tuple


_BINARY_OPS: dict[type, str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Pow: "**",
}
_COMPARE_OPS: dict[type, str] = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
}
_HINTS: dict[type, str] = {
    ast.BitXor: "use ** for powers, not ^",
    ast.Attribute: "attribute access is not allowed",
    ast.Lambda: "lambdas are not allowed",
    ast.keyword: "keyword arguments are not allowed",
}


class _Parser:
    """Translate a Python ``ast`` into the validated tree, rejecting everything else."""

    def __init__(self, text: str, dim: int | None, constants: Mapping[str, float]):
        self.text = text
        self.dim = dim
        self.constants = constants
        self.max_coordinate = -1
        self.uses_time = False

    def fail(self, node: ast.AST, what: str) -> ValueError:
        piece = ast.get_source_segment(self.text, node) or type(node).__name__
        col = getattr(node, "col_offset", None)
        where = f" at column {col + 1}" if col is not None else ""
        return ValueError(
            f"invalid expression {self.text!r}: {what}: {piece!r}{where}. Allowed: {_ALLOWED}."
        )

    def value(self, node: ast.AST) -> Any:
        """A node that must evaluate to a number (not a condition)."""
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise self.fail(node, "only real numbers are allowed as literals")
            return _Number(float(node.value))
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.Subscript):
            return self.coordinate(node)
        if isinstance(node, ast.BinOp):
            op = _BINARY_OPS.get(type(node.op))
            if op is None:
                hint = _HINTS.get(type(node.op), "unsupported operator")
                raise self.fail(node, hint)
            return _Binary(op, self.value(node.left), self.value(node.right))
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return _Negate(self.value(node.operand))
            if isinstance(node.op, ast.UAdd):
                return self.value(node.operand)
            if isinstance(node.op, ast.Not):
                raise self.fail(node, "a condition can only be the first argument of where(...)")
            raise self.fail(node, "unsupported unary operator")
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Compare | ast.BoolOp):
            raise self.fail(node, "a condition can only be the first argument of where(...)")
        raise self.fail(node, _HINTS.get(type(node), f"unsupported syntax ({type(node).__name__})"))

    def name(self, node: ast.Name) -> Any:
        if node.id == "t":
            self.uses_time = True
            return _Time()
        if node.id in self.constants:
            return _Number(float(self.constants[node.id]))
        if node.id == "x":
            raise self.fail(node, "use x[i] for the i-th coordinate")
        if node.id in FUNCTIONS:
            raise self.fail(node, f"function {node.id} must be called")
        raise self.fail(node, f"unknown name {node.id!r}")

    def coordinate(self, node: ast.Subscript) -> _Coordinate:
        if not (isinstance(node.value, ast.Name) and node.value.id == "x"):
            raise self.fail(node, "only x can be indexed")
        index = node.slice
        if not (
            isinstance(index, ast.Constant)
            and isinstance(index.value, int)
            and not isinstance(index.value, bool)
        ):
            raise self.fail(node, "the index of x must be a literal integer >= 0")
        i = index.value
        if self.dim is not None and i >= self.dim:
            raise self.fail(node, f"index {i} out of range for dimension {self.dim}")
        self.max_coordinate = max(self.max_coordinate, i)
        return _Coordinate(i)

    def call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node.func, "only calls of whitelisted functions by name are allowed")
        name = node.func.id
        if name not in FUNCTIONS:
            raise self.fail(node.func, f"unknown function {name!r}")
        if node.keywords:
            raise self.fail(node.keywords[0], "keyword arguments are not allowed")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail(node, "starred arguments are not allowed")
        if len(node.args) != FUNCTIONS[name]:
            raise self.fail(node, f"{name} takes {FUNCTIONS[name]} argument(s)")
        if name == "where":
            cond, a, b = node.args
            return _Call(name, (self.condition(cond), self.value(a), self.value(b)))
        return _Call(name, tuple(self.value(a) for a in node.args))

    def condition(self, node: ast.AST) -> Any:
        """A node that must evaluate to a boolean."""
        if isinstance(node, ast.Compare):
            parts = []
            left = self.value(node.left)
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                symbol = _COMPARE_OPS.get(type(op))
                if symbol is None:
                    raise self.fail(node, "unsupported comparison")
                right = self.value(comparator)
                parts.append(_Compare(symbol, left, right))
                left = right
            return parts[0] if len(parts) == 1 else _Logic("and", tuple(parts))
        if isinstance(node, ast.BoolOp):
            kind = "and" if isinstance(node.op, ast.And) else "or"
            return _Logic(kind, tuple(self.condition(v) for v in node.values))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return _Logic("not", (self.condition(node.operand),))
        raise self.fail(node, "the first argument of where(...) must be a comparison")


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Backend:
    """How to evaluate each node kind with one array library."""

    number: Callable[[float], Any]
    functions: Mapping[str, Callable[..., Any]]
    compare: Mapping[str, Callable[[Any, Any], Any]]
    logic: Mapping[str, Callable[..., Any]]


_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "**": operator.pow,
}
_PY_COMPARE = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def _reduce(binary: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    def apply(*args: Any) -> Any:
        result = args[0]
        for a in args[1:]:
            result = binary(result, a)
        return result

    return apply


#: Functions numpy and torch both name as the expression does.
_SAME_NAME = ("sin", "cos", "tan", "sinh", "cosh", "tanh", "exp", "log", "sqrt", "abs", "sign",
              "where")
#: Functions numpy and torch both name differently: expression name -> their name.
_RENAMED = {"asin": "arcsin", "acos": "arccos", "atan": "arctan", "atan2": "arctan2",
            "min": "minimum", "max": "maximum"}


def _array_backend(library: Any, number: Callable[[float], Any]) -> _Backend:
    """The backend of an array library with numpy's names (numpy, torch)."""
    names = {name: name for name in _SAME_NAME} | _RENAMED
    functions = {name: getattr(library, attr) for name, attr in names.items()}
    logic = {
        "and": _reduce(library.logical_and),
        "or": _reduce(library.logical_or),
        "not": library.logical_not,
    }
    return _Backend(number, functions, _PY_COMPARE, logic)


def _numpy_backend() -> _Backend:
    return _array_backend(np, np.float64)


def _torch_backend(like: torch.Tensor) -> _Backend:
    def number(v: float) -> torch.Tensor:
        return torch.tensor(v, dtype=like.dtype, device=like.device)

    return _array_backend(torch, number)


def _ufl_backend() -> _Backend:
    import ufl

    functions: dict[str, Callable[..., Any]] = {
        "sin": ufl.sin,
        "cos": ufl.cos,
        "tan": ufl.tan,
        "asin": ufl.asin,
        "acos": ufl.acos,
        "atan": ufl.atan,
        "atan2": ufl.atan2,
        "sinh": ufl.sinh,
        "cosh": ufl.cosh,
        "tanh": ufl.tanh,
        "exp": ufl.exp,
        "log": ufl.ln,
        "sqrt": ufl.sqrt,
        "abs": abs,
        "sign": ufl.sign,
        "min": ufl.min_value,
        "max": ufl.max_value,
        "where": ufl.conditional,
    }
    compare: dict[str, Callable[..., Any]] = {
        "<": ufl.lt,
        "<=": ufl.le,
        ">": ufl.gt,
        ">=": ufl.ge,
        "==": ufl.eq,
        "!=": ufl.ne,
    }
    logic = {"and": _reduce(ufl.And), "or": _reduce(ufl.Or), "not": ufl.Not}
    return _Backend(ufl.as_ufl, functions, compare, logic)


def _evaluate(node: Any, backend: _Backend, coordinate: Callable[[int], Any], time: Any) -> Any:
    def walk(n: Any) -> Any:
        match n:
            case _Number(value):
                return backend.number(value)
            case _Coordinate(index):
                return coordinate(index)
            case _Time():
                return time
            case _Binary(op, left, right):
                return _ARITHMETIC[op](walk(left), walk(right))
            case _Negate(operand):
                return -walk(operand)
            case _Call(name, args):
                return backend.functions[name](*(walk(a) for a in args))
            case _Compare(op, left, right):
                return backend.compare[op](walk(left), walk(right))
            case _Logic(op, args):
                return backend.logic[op](*(walk(a) for a in args))
        raise AssertionError(f"unknown node {n!r}")  # pragma: no cover

    return walk(node)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


class ParsedExpression:
    """A validated formula of ``x[i]`` and ``t``, evaluable with UFL, NumPy and PyTorch.

    Create it with :func:`parse_expression`.

    Attributes:
        text: the formula as typed.
        uses_time: whether the formula contains ``t``.
        max_coordinate: largest ``i`` among the ``x[i]`` in the formula, or -1 if none.
    """

    def __init__(self, text: str, tree: Any, uses_time: bool, max_coordinate: int):
        self.text = text
        self._tree = tree
        self.uses_time = uses_time
        self.max_coordinate = max_coordinate

    def __repr__(self) -> str:
        return f"ParsedExpression({self.text!r})"

    def __str__(self) -> str:
        return self.text

    def _time(self, t: Any, convert: Callable[[Any], Any]) -> Any:
        if t is None:
            if self.uses_time:
                raise ValueError(f"expression {self.text!r} uses t: pass a time t=...")
            return None
        return convert(t)

    def _check_dim(self, dim: int, where: str) -> None:
        if self.max_coordinate >= dim:
            raise ValueError(
                f"expression {self.text!r} uses x[{self.max_coordinate}], but the {where} has "
                f"only {dim} coordinate(s) x[0]..x[{dim - 1}]"
            )

    def ufl(self, x: Any, t: Any = None) -> Any:
        """The formula as a UFL expression.

        Args:
            x: ``ufl.SpatialCoordinate(mesh)`` (a DOLFINx mesh is accepted as well).
            t: time, a float or a UFL expression (e.g. a ``dolfinx.fem.Constant``); needed
                only when the formula uses ``t``.

        Returns:
            A scalar UFL expression on the mesh of ``x``: a formula without ``x`` (a number,
            or a function of a numeric ``t``) is a sum with a zero ``dolfinx.fem.Constant`` of
            that mesh, so it can be integrated and interpolated like any other.
        """
        import ufl

        if not isinstance(x, ufl.core.expr.Expr):
            if hasattr(x, "ufl_domain"):
                x = ufl.SpatialCoordinate(x)
            else:
                raise TypeError(
                    f"x must be ufl.SpatialCoordinate(mesh) or a mesh, got {type(x).__name__}"
                )
        if len(x.ufl_shape) != 1:
            raise ValueError(f"x must be a vector, got UFL shape {x.ufl_shape}")
        self._check_dim(x.ufl_shape[0], "mesh")
        time = self._time(t, ufl.as_ufl)
        result = _evaluate(self._tree, _ufl_backend(), lambda i: x[i], time)
        return on_mesh(result, x)

    def numpy(self, x: np.ndarray, t: Any = None) -> np.ndarray:
        """Evaluate at points ``x`` shaped ``(3 or gdim, n)``; returns a float64 array ``(n,)``.

        The layout is the one ``dolfinx.fem.Function.interpolate`` uses, so
        ``u.interpolate(e.numpy)`` works for formulas without ``t``.  ``t`` is a number or
        an array ``(n,)`` (one time per point).
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"x must have shape (3 or gdim, n), got {x.shape}")
        self._check_dim(x.shape[0], "point array")
        time = self._time(t, lambda v: np.asarray(v, dtype=np.float64))
        with np.errstate(all="ignore"):
            result = _evaluate(self._tree, _numpy_backend(), lambda i: x[i], time)
        return np.broadcast_to(np.asarray(result, dtype=np.float64), (x.shape[1],)).copy()

    def torch(self, x: torch.Tensor, t: Any = None) -> torch.Tensor:
        """Evaluate at points ``x`` shaped ``(n, d)``; returns ``(n,)``, differentiable.

        ``t`` is a number or a tensor ``()`` or ``(n,)`` (one time per point).  The result
        has the dtype and device of ``x``; gradients flow to ``x`` and to ``t`` when ``t`` is
        a tensor.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (n, d), got {type(x).__name__}")
        if x.ndim != 2:
            raise ValueError(f"x must have shape (n, d), got {tuple(x.shape)}")
        self._check_dim(x.shape[1], "point tensor")
        backend = _torch_backend(x)
        time = self._time(t, lambda v: torch.as_tensor(v, dtype=x.dtype, device=x.device))
        result = _evaluate(self._tree, backend, lambda i: x[:, i], time)
        return result.expand(x.shape[0]) if result.ndim == 0 else result


def on_mesh(expr: Any, x: Any) -> Any:
    """``expr`` as a UFL expression on the mesh of ``x`` (a UFL expression on a mesh, e.g.
    ``ufl.SpatialCoordinate(mesh)``).

    An expression without a mesh once its derivatives are applied (a number, a function of a
    numeric time, the gradient of an affine field, UFL's ``Zero``) gets one by adding a zero
    ``dolfinx.fem.Constant`` of it; without, UFL cannot integrate it (``dx`` has no domain)
    and ``dolfinx.fem.Expression`` cannot evaluate it (no communicator, or no mesh to check
    the cells against).  Other expressions are returned as they are.
    """
    import ufl
    from ufl.algorithms.apply_algebra_lowering import apply_algebra_lowering
    from ufl.algorithms.apply_derivatives import apply_derivatives

    expr = ufl.as_ufl(expr)
    domain = ufl.domain.extract_unique_domain(x)
    if domain is None:
        return expr
    if ufl.domain.extract_domains(expr):
        expanded = apply_derivatives(apply_algebra_lowering(expr))
        if ufl.domain.extract_domains(expanded):
            return expr
        expr = expanded
    import dolfinx.fem

    zero = dolfinx.fem.Constant(domain, np.zeros(expr.ufl_shape))
    return expr + zero


def parse_expression(
    text: str, dim: int | None = None, constants: Mapping[str, float] | None = None
) -> ParsedExpression:
    """Parse a formula of ``x[i]`` and ``t`` safely (no ``eval``).

    Args:
        text: the formula, e.g. ``"1 + 0.5*sin(pi*x[0])*cos(pi*x[1])"``.
        dim: if given, ``x[i]`` with ``i >= dim`` is rejected.
        constants: extra named constants (name -> value), e.g. ``{"k": 2.0}``; they may not
            shadow ``x``, ``t`` or a function name.

    Returns:
        The validated expression.

    Raises:
        ValueError: if the formula uses anything outside the grammar; the message names the
            offending piece and lists what is allowed.
        TypeError: if ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"expression must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"empty expression {text!r}. Allowed: {_ALLOWED}.")
    if len(text) > MAX_LENGTH:
        raise ValueError(f"expression is {len(text)} characters long; the limit is {MAX_LENGTH}")
    if dim is not None and (not isinstance(dim, int) or dim < 1):
        raise ValueError(f"dim must be a positive integer or None, got {dim!r}")
    names = dict(CONSTANTS)
    for name, value in (constants or {}).items():
        if not name.isidentifier() or name in ("x", "t") or name in FUNCTIONS:
            raise ValueError(
                f"invalid constant name {name!r}: it must be an identifier other than x, t "
                f"and the function names {', '.join(FUNCTIONS)}"
            )
        names[name] = float(value)
    try:
        module = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"invalid expression {text!r}: syntax error ({err.msg})") from None
    except (RecursionError, MemoryError):
        raise ValueError(f"invalid expression {text!r}: nested too deeply") from None
    parser = _Parser(text.strip(), dim, names)
    try:
        tree = parser.value(module.body)
    except RecursionError:
        raise ValueError(f"invalid expression {text!r}: nested too deeply") from None
    return ParsedExpression(text, tree, parser.uses_time, parser.max_coordinate)
