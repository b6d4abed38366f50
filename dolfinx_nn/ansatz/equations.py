"""The PDEs of the ansatz module: one class per equation, in the registry :data:`PDES`.

=====================  ===================================================  =================
name                   equation                                             inputs
=====================  ===================================================  =================
poisson                ``-k lap u = f``                                     ``x``
advection-diffusion    ``-k lap u + b . grad u = f``                        ``x``
heat-advection         ``u_t - k lap u + b . grad u = f`` on ``(0, T]``     ``(x, t)``
=====================  ===================================================  =================

A class holds everything that differs between equations: its spatial operator ``L`` in strong
form on network derivatives (torch) and on UFL expressions (the manufactured source, SUPG), its
weak form ``a(w, v)`` (the FEM reference), the Ritz energy density when the weak form is
symmetric, and its properties. A time-dependent equation is ``u_t + L u = f`` on ``(0, T]``;
:class:`~dolfinx_nn.ansatz.pdes.Problem` adds the ``u_t`` term and the FEM reference steps it
with Crank-Nicolson (:mod:`~dolfinx_nn.ansatz.fem_reference`).

To add an equation, write a :class:`PDE` subclass here and add an instance to :data:`PDES`;
``--pde`` of ``dolfinx-nn compare``, the losses, the scales and the FEM reference take it from
the registry, and ``tests/test_ansatz_fem.py`` checks its source against its weak form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import ufl

if TYPE_CHECKING:
    from dolfinx_nn.ansatz.pdes import Problem


class PDE:
    """One equation ``L u = f`` (or ``u_t + L u = f``): its operator, weak form and properties.

    The methods take the :class:`~dolfinx_nn.ansatz.pdes.Problem` that carries the data of an
    instance (diffusion ``k``, advection ``b``, dimension); the class itself holds no state.

    Attributes:
        name: registry key, the value of ``--pde``.
        formula: the equation in words (``results.json``'s ``"equation"``).
        needs_advection: the problem carries an advection field ``b``, one expression per
            coordinate (refused otherwise).
        time_dependent: the equation is ``u_t + L u = f`` on ``(0, T]``: the network takes
            ``(x, t)`` and the FEM reference steps in time.
        symmetric: ``a(w, v)`` is symmetric, so the solution minimises the Ritz energy
            ``int`` :meth:`energy_density` ``dx`` (``loss="ritz"``).
    """

    name: ClassVar[str]
    formula: ClassVar[str]
    needs_advection: ClassVar[bool] = False
    time_dependent: ClassVar[bool] = False
    symmetric: ClassVar[bool] = False

    def operator(
        self, problem: Problem, x: torch.Tensor, u: torch.Tensor, grad: torch.Tensor,
        lap: torch.Tensor,
    ) -> torch.Tensor:
        """Spatial operator ``L u`` at inputs ``x`` from a field's derivatives there.

        Args:
            problem: the problem's data.
            x: inputs ``(n, input_dim)`` (time last for time-dependent equations).
            u: values ``(n,)``.
            grad: gradients ``(n, input_dim)`` with respect to all inputs.
            lap: spatial Laplacians ``(n,)``.

        Returns:
            ``(n,)``.
        """
        raise NotImplementedError

    def operator_ufl(self, problem: Problem, w: Any, x: ufl.SpatialCoordinate, t: Any) -> Any:
        """Spatial operator ``L w`` of a UFL expression or trial function ``w`` at time ``t``."""
        raise NotImplementedError

    def weak_form(
        self, problem: Problem, w: Any, v: Any, x: ufl.SpatialCoordinate, t: Any
    ) -> ufl.Form:
        """``a(w, v) dx`` with ``a(u, v) = (L u, v)`` for test functions ``v`` zero on the
        boundary (one integration by parts)."""
        raise NotImplementedError

    def energy_density(self, problem: Problem, u: Any, grad: Sequence[Any], f: Any) -> Any:
        """Ritz energy density at a value ``u``, gradient components ``grad`` and source ``f``
        (UFL): its integral is minimal at the solution. Only symmetric equations have one."""
        raise NotImplementedError(f"pde {self.name!r} is not symmetric: it has no Ritz energy")


class Poisson(PDE):
    """``-k lap u = f``; symmetric: the Ritz energy is ``k/2 |grad u|^2 - f u``."""

    name = "poisson"
    formula = "-k lap u = f"
    symmetric = True

    def operator(self, problem, x, u, grad, lap):
        return -problem.diffusion * lap

    def operator_ufl(self, problem, w, x, t):
        return -problem.diffusion * ufl.div(ufl.grad(w))

    def weak_form(self, problem, w, v, x, t):
        return problem.diffusion * ufl.inner(ufl.grad(w), ufl.grad(v)) * ufl.dx

    def energy_density(self, problem, u, grad, f):
        return 0.5 * problem.diffusion * sum(g**2 for g in grad) - f * u


class AdvectionDiffusion(PDE):
    """``-k lap u + b . grad u = f`` (not symmetric; SUPG in the FEM reference when the mesh
    Peclet number is large)."""

    name = "advection-diffusion"
    formula = "-k lap u + b . grad u = f"
    needs_advection = True

    def operator(self, problem, x, u, grad, lap):
        out = -problem.diffusion * lap
        xs = x[:, : problem.gdim]
        t = x[:, problem.gdim] if problem.time_dependent else None
        for i, b in enumerate(problem.advection):
            out = out + b.torch(xs, t) * grad[:, i]
        return out

    def operator_ufl(self, problem, w, x, t):
        b = problem.advection_ufl(x, t)
        return -problem.diffusion * ufl.div(ufl.grad(w)) + ufl.dot(b, ufl.grad(w))

    def weak_form(self, problem, w, v, x, t):
        b = problem.advection_ufl(x, t)
        form = problem.diffusion * ufl.inner(ufl.grad(w), ufl.grad(v)) * ufl.dx
        return form + ufl.dot(b, ufl.grad(w)) * v * ufl.dx


class HeatAdvection(AdvectionDiffusion):
    """``u_t - k lap u + b . grad u = f`` on ``(0, T]``, ``b`` may depend on ``t``."""

    name = "heat-advection"
    formula = "u_t - k lap u + b . grad u = f, t in (0, T]"
    time_dependent = True


#: PDE name -> equation. Register a new equation by adding an instance to the tuple.
PDES: dict[str, PDE] = {
    pde.name: pde for pde in (Poisson(), AdvectionDiffusion(), HeatAdvection())
}


def get_pde(name: str) -> PDE:
    """The registered equation called ``name``.

    Raises:
        ValueError: no equation of that name; the message lists the registered names.
    """
    try:
        return PDES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown pde {name!r}; choose one of {sorted(PDES)}") from None
