"""The PDEs, each with a manufactured solution: strong operator in torch and UFL.

=====================  ===================================================  =================
name                   equation                                             inputs
=====================  ===================================================  =================
poisson                ``-k lap u = f``                                     ``x``
advection-diffusion    ``-k lap u + b . grad u = f``                        ``x``
heat-advection         ``u_t - k lap u + b . grad u = f`` on ``(0, T]``     ``(x, t)``
=====================  ===================================================  =================

The source ``f``, the Dirichlet data and (for heat-advection) the initial value come from the
exact solution: symbolically by UFL derivatives for FEM and by torch autograd for the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import ufl

from dolfinx_nn.expressions import ParsedExpression, parse_expression
from dolfinx_nn.networks.pointwise import laplacian

#: PDE name -> (needs an advection field, time dependent, description).
PDES: dict[str, tuple[bool, bool, str]] = {
    "poisson": (False, False, "-k lap u = f"),
    "advection-diffusion": (True, False, "-k lap u + b . grad u = f"),
    "heat-advection": (True, True, "u_t - k lap u + b . grad u = f, t in (0, T]"),
}


@dataclass(frozen=True)
class Problem:
    """A PDE with a manufactured solution on a ``gdim``-dimensional domain.

    Attributes:
        pde: one of :data:`PDES`.
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
        if self.pde not in PDES:
            raise ValueError(f"unknown pde {self.pde!r}; choose one of {sorted(PDES)}")
        needs_b, timed, _ = PDES[self.pde]
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
        if timed and not self.final_time > 0.0:
            raise ValueError(f"final_time must be positive, got {self.final_time!r}")

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
    def time_dependent(self) -> bool:
        return PDES[self.pde][1]

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
        _, grad, lap = laplacian(fn, x, self.gdim, create_graph=create_graph)
        return self.apply(x, grad, lap)

    def apply(self, x: torch.Tensor, grad: torch.Tensor, lap: torch.Tensor) -> torch.Tensor:
        """The operator from a field's gradient (all inputs) and spatial Laplacian at ``x``."""
        out = -self.diffusion * lap
        if self.advection:
            xs = x[:, : self.gdim]
            t = x[:, self.gdim] if self.time_dependent else None
            for i, b in enumerate(self.advection):
                out = out + b.torch(xs, t) * grad[:, i]
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
        u = self.exact_ufl(x, t)
        f = -self.diffusion * ufl.div(ufl.grad(u))
        b = self.advection_ufl(x, t)
        if b is not None:
            f = f + ufl.dot(b, ufl.grad(u))
        if self.time_dependent:
            tv = ufl.variable(t)
            f = f + ufl.diff(self.exact.ufl(x, tv), tv)
        return f

    def describe(self) -> dict:
        """JSON-friendly summary."""
        return {
            "pde": self.pde,
            "equation": PDES[self.pde][2],
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
