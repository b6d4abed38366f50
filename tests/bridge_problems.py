"""Small problems shared by the bridge tests."""

from __future__ import annotations

from mpi4py import MPI

import basix.ufl
import numpy as np
import torch
import ufl
from dolfinx import fem, mesh

import dolfinx_nn as dnn


def mlp(din: int, dout: int = 1, width: int = 8, seed: int = 0, dtype=torch.float64):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(din, width), torch.nn.Tanh(), torch.nn.Linear(width, dout)
    ).to(dtype)


def unit_mesh(comm: MPI.Comm, dim: int, n: int) -> mesh.Mesh:
    if dim == 1:
        return mesh.create_unit_interval(comm, n)
    if dim == 2:
        return mesh.create_unit_square(comm, n, n)
    return mesh.create_unit_cube(comm, n, n, n)


def boundary_bc(V: fem.FunctionSpace, value: float = 0.0, where=None) -> fem.DirichletBC:
    msh = V.mesh
    tdim = msh.topology.dim
    if where is None:
        where = lambda x: np.isclose(x[0], 0.0) | np.isclose(x[0], 1.0)  # noqa: E731
    facets = mesh.locate_entities_boundary(msh, tdim - 1, where)
    return fem.dirichletbc(value, fem.locate_dofs_topological(V, tdim - 1, facets), V)


def quadrature_space(msh: mesh.Mesh, degree: int) -> fem.FunctionSpace:
    element = basix.ufl.quadrature_element(msh.basix_cell(), value_shape=(), degree=degree)
    return fem.functionspace(msh, element)


class PoissonCoefficient:
    """-div(q grad u) = f with q = 1 + softplus(net) (or a nonlinear variant), and a misfit."""

    def __init__(
        self,
        comm: MPI.Comm,
        *,
        dim: int = 2,
        n: int = 8,
        space: str = "P1",
        nonlinear: bool = False,
        seed: int = 0,
        boundary_term: bool = False,
        prefix: str = "bridge_",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.msh = unit_mesh(comm, dim, n)
        V = fem.functionspace(self.msh, ("Lagrange", 1))
        self.V = V
        dx = ufl.dx
        if space == "P1":
            Q = fem.functionspace(self.msh, ("Lagrange", 1))
        elif space == "DG0":
            Q = fem.functionspace(self.msh, ("DG", 0))
        elif space == "quadrature":
            Q = quadrature_space(self.msh, 2)
            dx = ufl.dx(metadata={"quadrature_degree": 2})
        else:
            raise ValueError(space)
        self.net = mlp(dim, seed=seed, dtype=dtype)
        self.qn = dnn.NeuralFunction(self.net, Q)
        q = self.qn.function
        self.u = u = fem.Function(V, name="u")
        self.f = f = fem.Function(V, name="f")
        f.interpolate(lambda x: 1.0 + x[0] * x[1 % dim])
        v = ufl.TestFunction(V)
        k = (1.0 + q**2) * (1.0 + u**2) if nonlinear else 1.0 + q**2
        F = k * ufl.inner(ufl.grad(u), ufl.grad(v)) * dx - f * v * dx
        if nonlinear:
            F += u**3 * v * dx
        self.bc = boundary_bc(V, 0.0)
        self.solve = dnn.fem_operator(
            F, u, controls=[q, f], bcs=[self.bc], petsc_options_prefix=prefix
        )
        d = fem.Function(V)
        d.interpolate(lambda x: 0.05 * np.sin(np.pi * x[0]))
        M = (u - d) ** 2 * dx + 1e-2 * q**2 * dx
        if boundary_term:
            M += 0.1 * q * u * ufl.ds + 0.1 * q**2 * ufl.ds
        self.J = dnn.fem_functional(M, controls=[u, q])
        self.f_t = dnn.to_torch(f)

    def loss(self, params=None, f_t=None) -> torch.Tensor:
        q_t = self.qn(params)
        u_t = self.solve(q_t, self.f_t if f_t is None else f_t)
        return self.J(u_t, q_t)

    def params(self) -> dict[str, torch.Tensor]:
        return {k: p.detach().clone() for k, p in self.net.named_parameters()}

    def directions(self, seed: int = 1) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return {
            k: torch.randn(p.shape, generator=g, dtype=p.dtype)
            for k, p in self.net.named_parameters()
        }

    def parameter_gradient(self) -> torch.Tensor:
        self.net.zero_grad()
        self.loss().backward()
        dnn.sync_gradients(self.net, self.msh.comm)
        return torch.cat([p.grad.reshape(-1) for p in self.net.parameters()])


def directional_derivatives(f, m, dm, comm: MPI.Comm, h: float = 1e-3) -> tuple[float, float]:
    """The derivative of ``f`` along ``dm`` by the backward pass, and by finite differences.

    ``m`` and ``dm`` are lists of tensors: rank-local ones (owned dofs, a different direction
    on each rank) and replicated ones (Constants, network parameters: the same everywhere).
    Both conventions give the global directional derivative as the sum over the ranks of
    ``<grad, dm>``, since a replicated tensor's gradient is the rank's share.  The finite
    difference is the fourth-order central one, ``(-f(2h) + 8 f(h) - 8 f(-h) + f(-2h)) / 12h``
    (truncation ``O(h^4)``), so that it is a reference to well below 1e-6 relative.
    """
    leaves = [x.detach().clone().requires_grad_(True) for x in m]
    value = f(leaves)
    grads = torch.autograd.grad(value, leaves, allow_unused=True)
    local = sum(float((g * d).sum()) for g, d in zip(grads, dm, strict=True) if g is not None)
    ad = comm.allreduce(local, op=MPI.SUM)
    with torch.no_grad():
        def at(s: float) -> float:
            return float(f([x.detach() + s * d for x, d in zip(m, dm, strict=True)]))

        fd = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)
    return ad, fd


def assert_matches_fd(ad: float, fd: float, scale: float, rtol: float = 1e-6) -> None:
    """``ad`` equals ``fd`` to ``rtol`` (relative; absolute below ``1e-10 * scale``)."""
    assert abs(ad - fd) <= rtol * max(abs(ad), abs(fd)) + 1e-10 * scale, (ad, fd)


def dofs_on(V: fem.FunctionSpace, where) -> np.ndarray:
    """Dofs of ``V`` on the boundary facets where ``where(x)`` holds."""
    msh = V.mesh
    tdim = msh.topology.dim
    facets = mesh.locate_entities_boundary(msh, tdim - 1, where)
    return fem.locate_dofs_topological(V, tdim - 1, facets)
