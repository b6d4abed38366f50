"""The lifetime of PETSc objects in dolfinx_nn: one rule for every class that owns them.

Destroying a parallel PETSc object is collective (a MUMPS factorisation, a distributed
matrix), but Python may run ``__del__`` at different moments on different ranks (a reference
held on one rank only, a reference cycle collected by the cyclic GC): a destroy run by the
garbage collector then leaves the ranks waiting for each other forever.  Hence the rule:

1. **Never destroy in** ``__del__``.  An object Python drops is left to petsc4py, which puts
   parallel objects on PETSc's garbage list instead of destroying them; :func:`collect_garbage`
   destroys that list collectively at a point every rank reaches (every forward solve of a
   :class:`~dolfinx_nn.FEMOperator` is one).
2. **Free now with** ``destroy()``, called on every rank (collective), or with a ``with``
   block.  It may be called more than once.
3. **After** ``destroy()`` **the object refuses use** with a ``RuntimeError`` naming its class
   (on every rank, since every rank destroyed it), instead of handing a destroyed PETSc object
   to PETSc.

:class:`PetscOwner` implements 2 and 3 for the classes of the package that own PETSc objects
(:class:`~dolfinx_nn.FEMOperator`, :class:`~dolfinx_nn.point_evaluation.PointObservation` and
their private helpers).  ``dolfinx.fem.petsc.LinearProblem`` and ``NonlinearProblem`` break
rule 1, so the package uses the subclasses below.  A ``PETSc.Mat`` handed to the caller (e.g.
:meth:`dolfinx_nn.hessian.ReducedHessian.petsc_mat`) belongs to the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, Self, cast

from mpi4py import MPI
from petsc4py import PETSc

import dolfinx.fem.petsc

__all__ = [
    "LinearProblem",
    "NonlinearProblem",
    "PetscOwner",
    "assemble_matrix_into",
    "assemble_vector_into",
    "assign_vector",
    "collect_garbage",
    "converged_reason",
    "norm",
    "petsc_comm",
]


class _Destroyable(Protocol):
    def destroy(self) -> object: ...


class PetscOwner:
    """Base of the classes that own PETSc objects (see the module's rule).

    A subclass lists what it owns in :meth:`_owned_petsc` (PETSc objects, other owners or
    ``None``) and calls :meth:`_require_alive` where it is about to use them.
    """

    _destroyed: bool = False

    def _owned_petsc(self) -> Iterable[_Destroyable | None]:
        """The PETSc objects (or owners of some) that :meth:`destroy` frees."""
        return ()

    @property
    def destroyed(self) -> bool:
        """Whether :meth:`destroy` was called."""
        return self._destroyed

    def destroy(self) -> None:
        """Free the PETSc objects now (collective: call it on every rank); idempotent.

        The object cannot be used afterwards.
        """
        if self._destroyed:
            return
        self._destroyed = True
        for obj in self._owned_petsc():
            if obj is not None:
                obj.destroy()

    def _require_alive(self) -> None:
        """Raise ``RuntimeError`` if :meth:`destroy` was called."""
        if self._destroyed:
            name = type(self).__name__
            raise RuntimeError(
                f"this {name} was destroyed ({name}.destroy()): its PETSc objects are freed; "
                f"create a new {name}."
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


class LinearProblem(PetscOwner, dolfinx.fem.petsc.LinearProblem):
    """``dolfinx.fem.petsc.LinearProblem`` with collective destruction: :meth:`destroy` (or a
    ``with`` block) on every rank, or PETSc's garbage list when dropped."""

    def __del__(self) -> None:  # objects go to PETSc's garbage list via petsc4py
        pass

    def _owned_petsc(self) -> Iterable[_Destroyable | None]:
        return (self._solver, self._A, self._b, self._x, self._P_mat)

    def solve(self) -> dolfinx.fem.Function | Sequence[dolfinx.fem.Function]:
        self._require_alive()
        return super().solve()


class NonlinearProblem(PetscOwner, dolfinx.fem.petsc.NonlinearProblem):
    """``dolfinx.fem.petsc.NonlinearProblem`` with collective destruction: :meth:`destroy` (or
    a ``with`` block) on every rank, or PETSc's garbage list when dropped."""

    def __del__(self) -> None:
        pass

    def _owned_petsc(self) -> Iterable[_Destroyable | None]:
        return (self._snes, self._A, self._b, self._x, self._P_mat)

    def solve(self) -> dolfinx.fem.Function | Sequence[dolfinx.fem.Function]:
        self._require_alive()
        return super().solve()


def collect_garbage(comm: MPI.Comm = MPI.COMM_WORLD) -> None:
    """Destroy, collectively, the parallel PETSc objects Python has dropped on ``comm``."""
    PETSc.garbage_cleanup(petsc_comm(comm))


# petsc4py's stubs type enum members as ``int`` but parameters as the enum classes, a norm as
# ``float | tuple`` (a tuple only for NORM_1_AND_2) and communicators as ``PETSc.Comm`` only
# (petsc4py takes mpi4py's): the helpers below give the package's uses their real types.


def petsc_comm(comm: MPI.Comm) -> PETSc.Comm:
    """``comm`` as petsc4py's stubs spell a communicator (petsc4py accepts mpi4py's)."""
    return cast(PETSc.Comm, comm)


def norm(obj: PETSc.Vec | PETSc.Mat, kind: int = PETSc.NormType.NORM_2) -> float:
    """The norm of a vector or matrix (``kind``: a ``PETSc.NormType`` other than NORM_1_AND_2)."""
    return float(cast(float, obj.norm(cast(PETSc.NormType, kind))))


def converged_reason(solver: PETSc.KSP | PETSc.SNES) -> int:
    """The solver's converged reason as an int (negative: diverged)."""
    return cast(int, solver.getConvergedReason())


# DOLFINx registers the variants of ``assemble_vector``, ``assemble_matrix`` and ``assign`` that
# write into an existing PETSc object with ``functools.singledispatch``, which type checkers do
# not see (they know only the base signature): the helpers below call them with their types.


def assemble_vector_into(b: PETSc.Vec, L: dolfinx.fem.Form) -> PETSc.Vec:
    """``dolfinx.fem.petsc.assemble_vector(b, L)``: add the assembled ``L`` into ``b``."""
    into = cast(Callable[..., PETSc.Vec], dolfinx.fem.petsc.assemble_vector)
    return into(b, L)


def assemble_matrix_into(
    A: PETSc.Mat,
    a: dolfinx.fem.Form | Sequence[Sequence[dolfinx.fem.Form]],
    bcs: Sequence[dolfinx.fem.DirichletBC] | None = None,
) -> PETSc.Mat:
    """``dolfinx.fem.petsc.assemble_matrix(A, a, bcs=bcs)``: add the assembled ``a`` into
    ``A`` (rows and columns of ``bcs`` zeroed, ones on their diagonal)."""
    into = cast(Callable[..., PETSc.Mat], dolfinx.fem.petsc.assemble_matrix)
    return into(A, a, bcs=bcs)


def assign_vector(x: PETSc.Vec, u: dolfinx.fem.Function) -> None:
    """``dolfinx.fem.petsc.assign(x, u)``: copy the entries of ``x`` (ghosts included) into
    ``u``'s dofs."""
    cast(Callable[..., None], dolfinx.fem.petsc.assign)(x, u)
