"""Matrix-free Hessians of reduced functionals, for scipy, PETSc and SLEPc, on N ranks.

A reduced functional ``J(m)`` (a loss computed from control tensors through bridge ops:
``J(u(m), m)`` with ``u`` a DOLFINx solve) has Hessian-vector products by the second-order
adjoint of the bridge (see :mod:`dolfinx_nn._operator_second_order`).  :class:`ReducedHessian`
evaluates ``J`` and its gradient once at a point, keeping the autograd graph, so that each
product then costs one tangent-linear and one adjoint solve (with the forward factorization
where the operator allows) and a few assemblies, never a forward solve.
:class:`GaussNewtonHessian` applies the Gauss-Newton part of a misfit ``phi(u(m))``,
``(du/dm)^T phi''(u) (du/dm)`` (positive semi-definite when ``phi`` is convex in ``u``; the
Hessian a Laplace approximation of a posterior is usually built from).

Tensors follow the bridge's MPI convention: a control tensor is either *owned* (each rank holds
its owned dofs) or *replicated* (the same on every rank: a Constant, network parameters; the
gradient and the products hold the rank's share).  The operators are offered as

- :meth:`ReducedHessian.petsc_mat`: a ``PETSc.Mat`` of type python whose rows are the owned
  dofs of each rank (replicated entries on rank 0), for SLEPc eigensolvers and PETSc KSPs;
- :meth:`ReducedHessian.linear_operator`: a ``scipy.sparse.linalg.LinearOperator`` on the
  *global* vector, the same on every rank (owned parts gathered in rank order), for scipy's
  Lanczos (``eigsh``), CG and trust-region Newton.

Example::

    H = ReducedHessian(lambda m: J(solve(m[0]), m[0]), [q_t], comm=comm)
    Hv = H.apply([v_t])                                   # owned dofs of H v
    eps = SLEPc.EPS().create(comm); eps.setOperators(H.petsc_mat()) ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

from mpi4py import MPI
from petsc4py import PETSc

import numpy as np
import scipy.sparse.linalg
import torch

from dolfinx_nn.petsc_problems import petsc_comm

Loss = Callable[[list[torch.Tensor]], torch.Tensor]


class ControlLayout:
    """Where the entries of a list of control tensors live, and their global vector.

    Args:
        tensors: the control tensors (their shapes and dtypes).
        replicated: per tensor, whether it holds the same values on every rank.
        comm: the communicator.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], replicated: Sequence[bool],
                 comm: MPI.Comm) -> None:
        if len(replicated) != len(tensors):
            raise ValueError(
                f"replicated needs one flag per control tensor ({len(tensors)}), got "
                f"{len(replicated)}."
            )
        self.comm = comm
        self.shapes = [t.shape for t in tensors]
        self.dtypes = [t.dtype for t in tensors]
        self.replicated = [bool(r) for r in replicated]
        self.local_sizes = [t.numel() for t in tensors]
        # per owned tensor: its size on every rank (None for a replicated one)
        self.counts = [np.asarray(comm.allgather(n)) if not r else None
                       for n, r in zip(self.local_sizes, self.replicated, strict=True)]
        self.global_sizes = [n if c is None else int(c.sum()) for n, c in
                             zip(self.local_sizes, self.counts, strict=True)]
        self.size = int(sum(self.global_sizes))
        root = comm.rank == 0
        # rows of the PETSc layout on this rank: owned entries, and replicated ones on rank 0
        self.petsc_local = int(sum(n for n, r in zip(self.local_sizes, self.replicated,
                                                     strict=True) if not r or root))

    # -- global vectors (the same on every rank) --------------------------------------------
    def to_global(self, parts: Sequence[torch.Tensor | np.ndarray], shares: bool) -> np.ndarray:
        """The global vector of rank parts (replicated ones: ``shares`` are summed, else kept).

        Collective; every rank gets rank 0's result bit for bit.
        """
        out = []
        for part, c in zip(parts, self.counts, strict=True):
            x = np.ascontiguousarray(_numpy(part).reshape(-1))
            if c is None:  # replicated
                if shares:
                    total = np.empty_like(x)
                    self.comm.Allreduce(x, total, op=MPI.SUM)
                    x = total
                out.append(x)
            else:
                full = np.empty(int(c.sum()))
                self.comm.Allgatherv(x, (full, c.tolist()))
                out.append(full)
        result = np.concatenate(out) if out else np.zeros(0)
        self.comm.Bcast(result, root=0)
        return result

    def from_global(self, x: np.ndarray) -> list[torch.Tensor]:
        """This rank's parts of a global vector, as tensors of the controls' shapes."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.size != self.size:
            raise ValueError(f"expected a global vector of {self.size} entries, got {x.size}.")
        parts, offset = [], 0
        for shape, dtype, c, n in zip(self.shapes, self.dtypes, self.counts, self.global_sizes,
                                      strict=True):
            block = x[offset : offset + n]
            offset += n
            if c is not None:  # owned by the ranks
                start = int(c[: self.comm.rank].sum())
                block = block[start : start + int(c[self.comm.rank])]
            parts.append(torch.from_numpy(block.copy()).reshape(shape).to(dtype))
        return parts

    # -- the PETSc layout (owned rows; replicated rows on rank 0) ---------------------------
    def from_petsc(self, local: np.ndarray) -> list[torch.Tensor]:
        """Tensors from the local rows of a PETSc vector (replicated values broadcast)."""
        parts, offset = [], 0
        root = self.comm.rank == 0
        for shape, dtype, r, n in zip(self.shapes, self.dtypes, self.replicated,
                                      self.local_sizes, strict=True):
            if r:
                block = np.array(local[offset : offset + n]) if root else np.empty(n)
                self.comm.Bcast(block, root=0)
                offset += n if root else 0
            else:
                block = np.array(local[offset : offset + n])
                offset += n
            parts.append(torch.from_numpy(block).reshape(shape).to(dtype))
        return parts

    def to_petsc(self, parts: Sequence[torch.Tensor], out: np.ndarray) -> None:
        """Write rank parts (replicated ones: shares, summed onto rank 0) into local rows."""
        offset = 0
        root = self.comm.rank == 0
        for part, r, n in zip(parts, self.replicated, self.local_sizes, strict=True):
            x = np.ascontiguousarray(_numpy(part).reshape(-1))
            if r:
                total = np.empty_like(x) if root else None
                self.comm.Reduce(x, total, op=MPI.SUM, root=0)
                if root:
                    out[offset : offset + n] = total
                    offset += n
            else:
                out[offset : offset + n] = x
                offset += n


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


class _HessianBase:
    """What the exact and the Gauss-Newton Hessians share: layouts and wrappers."""

    layout: ControlLayout
    n_products: int

    def apply(self, v: Sequence[torch.Tensor]) -> list[torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def apply_global(self, x: np.ndarray) -> np.ndarray:
        """``H x`` for a global vector (the same on every rank); collective."""
        return self.layout.to_global(self.apply(self.layout.from_global(x)), shares=True)

    def linear_operator(self) -> scipy.sparse.linalg.LinearOperator:
        """A scipy operator on global vectors; every rank must call it with the same vector."""
        n = self.layout.size
        return scipy.sparse.linalg.LinearOperator(
            (n, n), matvec=self.apply_global, rmatvec=self.apply_global, dtype=np.float64
        )

    def petsc_mat(self) -> PETSc.Mat:
        """A ``PETSc.Mat`` of type python (owned rows; replicated entries on rank 0)."""
        n_local, n = self.layout.petsc_local, self.layout.size
        mat = PETSc.Mat().createPython(((n_local, n), (n_local, n)), _PetscContext(self),
                                       comm=petsc_comm(self.layout.comm))
        mat.setOption(cast(PETSc.Mat.Option, PETSc.Mat.Option.SYMMETRIC), True)  # stub: int
        mat.setUp()
        return mat

    def dense(self) -> np.ndarray:
        """The whole Hessian, column by column (small problems only; symmetrized)."""
        n = self.layout.size
        eye = np.eye(n)
        H = np.column_stack([self.apply_global(eye[:, i]) for i in range(n)])
        return 0.5 * (H + H.T)


class _PetscContext:
    def __init__(self, hessian: _HessianBase) -> None:
        self.hessian = hessian

    def mult(self, mat: PETSc.Mat, x: PETSc.Vec, y: PETSc.Vec) -> None:
        layout = self.hessian.layout
        parts = layout.from_petsc(x.getArray(readonly=True))
        layout.to_petsc(self.hessian.apply(parts), y.getArray())

    def multTranspose(self, mat: PETSc.Mat, x: PETSc.Vec, y: PETSc.Vec) -> None:
        self.mult(mat, x, y)


class ReducedHessian(_HessianBase):
    """The Hessian of ``loss(m)`` at the point ``m``, applied matrix-free.

    ``loss`` is evaluated once with its gradient (``create_graph=True``); each product
    differentiates that gradient again along the given direction.  Collective: every rank
    calls every method together.

    Args:
        loss: maps the list of control tensors to the 0-dim loss (global value).
        m: the point (tensors; copied).
        comm: the communicator of the bridge ops in ``loss``.
        replicated: per tensor, whether it is replicated (default: all owned).

    Attributes:
        value: ``loss(m)``.
        gradient: the gradient's rank parts (owned entries or shares).
        n_products: number of Hessian-vector products so far.
    """

    def __init__(self, loss: Loss, m: Sequence[torch.Tensor], *, comm: MPI.Comm,
                 replicated: Sequence[bool] | None = None) -> None:
        m = list(m)
        self.layout = ControlLayout(m, replicated or [False] * len(m), comm)
        self.leaves = [x.detach().clone().requires_grad_(True) for x in m]
        value = loss(self.leaves)
        grads = torch.autograd.grad(value, self.leaves, create_graph=True, allow_unused=True)
        self._grads = [torch.zeros_like(x) if g is None else g
                       for g, x in zip(grads, self.leaves, strict=True)]
        self.value = float(value.detach())
        self.gradient = [g.detach().clone() for g in self._grads]
        self.n_products = 0

    def global_gradient(self) -> np.ndarray:
        """The gradient as a global vector (shares summed), the same on every rank."""
        return self.layout.to_global(self.gradient, shares=True)

    def apply(self, v: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``H v`` (rank parts: owned entries, or shares of replicated tensors)."""
        v = [t.detach().to(x.dtype).reshape(x.shape) for t, x in zip(v, self.leaves,
                                                                    strict=True)]
        live = [(g, t) for g, t in zip(self._grads, v, strict=True) if g.requires_grad]
        self.n_products += 1
        if not live:
            return [torch.zeros_like(x) for x in self.leaves]
        hv = torch.autograd.grad([g for g, _ in live], self.leaves, [t for _, t in live],
                                 retain_graph=True, allow_unused=True)
        return [torch.zeros_like(x) if h is None else h.detach()
                for h, x in zip(hv, self.leaves, strict=True)]


class GaussNewtonHessian(_HessianBase):
    """``(du/dm)^T phi''(u) (du/dm)`` (+ the exact Hessian of a regularizer), matrix-free.

    For a misfit ``phi`` of the state ``u(m)`` (a bridge solve), the Gauss-Newton Hessian keeps
    the curvature of the misfit and drops that of the state map; it is positive semi-definite
    when ``phi`` is convex in ``u``.  Each product is one tangent-linear solve (by
    differentiating the solve's backward pass along its cotangent), one Hessian action of
    ``phi`` and one adjoint solve.

    Args:
        state: maps the control tensors to the state tensor ``u`` (owned dofs).
        misfit: maps ``u`` to the 0-dim misfit (global value).
        m: the point.
        comm: the communicator.
        replicated: per control tensor, whether it is replicated (default: all owned).
        regularizer: optional ``R(m)`` whose exact Hessian is added.
    """

    def __init__(self, state: Callable[[list[torch.Tensor]], torch.Tensor],
                 misfit: Callable[[torch.Tensor], torch.Tensor], m: Sequence[torch.Tensor],
                 *, comm: MPI.Comm, replicated: Sequence[bool] | None = None,
                 regularizer: Loss | None = None) -> None:
        m = list(m)
        self.layout = ControlLayout(m, replicated or [False] * len(m), comm)
        self.leaves = [x.detach().clone().requires_grad_(True) for x in m]
        self._u = state(self.leaves)
        self._w = torch.zeros_like(self._u, requires_grad=True)
        # J^T w, differentiable in w: its derivative along v is J v (the tangent-linear solve)
        jt = torch.autograd.grad(self._u, self.leaves, self._w, create_graph=True,
                                 allow_unused=True)
        self._jt = [(g, x) for g, x in zip(jt, self.leaves, strict=True)
                    if g is not None and g.requires_grad]
        self._u_leaf = self._u.detach().clone().requires_grad_(True)
        (self._misfit_grad,) = torch.autograd.grad(misfit(self._u_leaf), self._u_leaf,
                                                   create_graph=True)
        self._regularizer = None
        if regularizer is not None:
            self._regularizer = ReducedHessian(regularizer, m, comm=comm,
                                               replicated=self.layout.replicated)
        self.n_products = 0

    def apply(self, v: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``H_GN v`` (rank parts)."""
        v = [t.detach().to(x.dtype).reshape(x.shape) for t, x in zip(v, self.leaves,
                                                                    strict=True)]
        self.n_products += 1
        index = {id(x): i for i, x in enumerate(self.leaves)}
        if self._jt:
            (jv,) = torch.autograd.grad([g for g, _ in self._jt], self._w,
                                        [v[index[id(x)]] for _, x in self._jt],
                                        retain_graph=True)
        else:
            jv = torch.zeros_like(self._u)
        if self._misfit_grad.requires_grad:
            (hu,) = torch.autograd.grad(self._misfit_grad, self._u_leaf, jv.detach(),
                                        retain_graph=True)
        else:
            hu = torch.zeros_like(jv)
        grads = torch.autograd.grad(self._u, self.leaves, hu.detach(), retain_graph=True,
                                    allow_unused=True)
        out = [torch.zeros_like(x) if h is None else h.detach()
               for h, x in zip(grads, self.leaves, strict=True)]
        if self._regularizer is not None:
            out = [a + b for a, b in zip(out, self._regularizer.apply(v), strict=True)]
        return out
