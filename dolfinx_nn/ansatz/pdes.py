"""A problem: one of the registered PDEs with a manufactured solution and its data.

The equations themselves (operator, weak form, properties) are the classes of
:mod:`~dolfinx_nn.ansatz.equations`. The source ``f``, the Dirichlet data and (for
time-dependent equations) the initial value come from the exact solution: symbolically by UFL
derivatives for FEM and by torch autograd for the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import ufl

from dolfinx_nn.ansatz.equations import PDE, get_pde
from dolfinx_nn.expressions import ParsedExpression, on_mesh, parse_expression
from dolfinx_nn.networks.pointwise import laplacian


@dataclass(frozen=True)
class Problem:
    """A PDE with a manufactured solution on a ``gdim``-dimensional domain.

    Attributes:
        pde: the name of a registered equation (:data:`~dolfinx_nn.ansatz.equations.PDES`).
        exact: exact solution (uses ``t`` only for time-dependent PDEs).
        gdim: space dimension.
        diffusion: diffusion coefficient ``k > 0``.
        advection: advection field ``b``, ``gdim`` expressions (empty for Poisson).
        final_time: ``T`` of time-dependent PDEs.
    """

    pde: str
    exact: ParsedExpression
    gdim: int
    diffusion: float = 1.0
    advection: tuple[ParsedExpression, ...] = ()
    final_time: float = 1.0

    def __post_init__(self) -> None:
        equation = get_pde(self.pde)
        needs_b, timed = equation.needs_advection, equation.time_dependent
        if not self.diffusion > 0.0 or not np.isfinite(self.diffusion):
            raise ValueError(f"diffusion must be a positive number, got {self.diffusion!r}")
        if needs_b and len(self.advection) != self.gdim:
            raise ValueError(
                f"pde {self.pde!r} needs an advection field with {self.gdim} components "
                f"(one per coordinate), got {len(self.advection)}"
            )
        if not needs_b and self.advection:
            raise ValueError(f"pde {self.pde!r} takes no advection field")
        if self.exact.uses_time and not timed:
            raise ValueError(
                f"the exact solution {self.exact.text!r} uses t, but pde {self.pde!r} is stationary"
            )
        if timed and not (np.isfinite(self.final_time) and self.final_time > 0.0):
            raise ValueError(f"final_time must be a positive finite number, got "
                             f"{self.final_time!r}")

    @classmethod
    def from_text(
        cls, pde: str, exact: str, gdim: int, *, diffusion: float = 1.0,
        advection: str | None = None, final_time: float = 1.0,
    ) -> Problem:
        """Build a problem from formulas, e.g. ``advection="1, 0.5"``."""
        fields = () if not advection else tuple(
            parse_expression(part) for part in _split_vector(advection)
        )
        return cls(pde, parse_expression(exact), gdim, diffusion, fields, final_time)

    @property
    def equation(self) -> PDE:
        """The registered equation named :attr:`pde`."""
        return get_pde(self.pde)

    @property
    def time_dependent(self) -> bool:
        """Whether the equation is ``u_t + L u = f`` (inputs ``(x, t)``)."""
        return self.equation.time_dependent

    @property
    def input_dim(self) -> int:
        """Inputs of the network: ``gdim``, plus one for time."""
        return self.gdim + int(self.time_dependent)

    # ------------------------------------------------------------------ torch side

    def exact_torch(self, x: torch.Tensor) -> torch.Tensor:
        """Exact solution at inputs ``(n, input_dim)``."""
        t = x[:, self.gdim] if self.time_dependent else None
        return self.exact.torch(x[:, : self.gdim], t)

    def exact_numpy(self, x: np.ndarray) -> np.ndarray:
        """Exact solution at inputs ``(n, input_dim)`` (NumPy)."""
        return self.exact_torch(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()

    def operator(self, fn, x: torch.Tensor, *, create_graph: bool = True) -> torch.Tensor:
        """The differential operator applied to ``fn`` at inputs ``x``, by autograd."""
        u, grad, lap = laplacian(fn, x, self.gdim, create_graph=create_graph)
        return self.apply(x, u, grad, lap)

    def apply(
        self, x: torch.Tensor, u: torch.Tensor, grad: torch.Tensor, lap: torch.Tensor
    ) -> torch.Tensor:
        """The operator from a field's value, gradient (all inputs) and spatial Laplacian at
        ``x``: ``L u``, plus ``u_t`` (the last gradient component) if time-dependent."""
        out = self.equation.operator(self, x, u, grad, lap)
        if self.time_dependent:
            out = out + grad[:, self.gdim]
        return out

    def source_torch(self, x: torch.Tensor) -> torch.Tensor:
        """``f`` at inputs ``x``, by autograd of the exact solution."""
        return self.operator(self.exact_torch, x, create_graph=False)

    def residual(self, fn, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """Strong residual ``L fn - f`` at ``x`` (pass a precomputed ``source`` to save time)."""
        f = self.source_torch(x) if source is None else source
        return self.operator(fn, x) - f

    # ------------------------------------------------------------------ UFL side

    def exact_ufl(self, x: ufl.SpatialCoordinate, t=None):
        """Exact solution as UFL (``t``: a float or ``dolfinx.fem.Constant``)."""
        return self.exact.ufl(x, t if self.time_dependent else None)

    def advection_ufl(self, x: ufl.SpatialCoordinate, t=None):
        """Advection field as a UFL vector (None for Poisson)."""
        if not self.advection:
            return None
        tt = t if self.time_dependent else None
        return ufl.as_vector([b.ufl(x, tt) for b in self.advection])

    def source_ufl(self, x: ufl.SpatialCoordinate, t=None):
        """``f`` by UFL differentiation of the exact solution."""
        f = self.equation.operator_ufl(self, self.exact_ufl(x, t), x, t)
        if self.time_dependent:
            tv = ufl.variable(t)
            f = f + ufl.diff(self.exact.ufl(x, tv), tv)
        return on_mesh(f, x)  # f = 0 (an affine u) is UFL's Zero, of no mesh

    def describe(self) -> dict:
        """JSON-friendly summary."""
        return {
            "pde": self.pde,
            "equation": self.equation.formula,
            "exact": self.exact.text,
            "diffusion": self.diffusion,
            "advection": [b.text for b in self.advection],
            "final_time": self.final_time if self.time_dependent else None,
        }


def _split_vector(text: str) -> list[str]:
    """Split ``"a, b"`` at top-level commas (commas inside calls are kept)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]
