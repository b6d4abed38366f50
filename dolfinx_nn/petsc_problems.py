"""DOLFINx problem classes whose PETSc objects are destroyed collectively.

``dolfinx.fem.petsc.LinearProblem`` and ``NonlinearProblem`` destroy their KSP/SNES, matrices
and vectors in ``__del__``. Destroying a parallel PETSc object is collective (a MUMPS
factorisation, say), but Python may run ``__del__`` at different moments on different ranks
(a reference held on one rank only, a reference cycle collected by the cyclic GC): the ranks
then wait for each other forever.  The classes below leave their objects to petsc4py, which
puts parallel objects on PETSc's garbage list instead of destroying them, and
:func:`collect_garbage` destroys that list collectively at a point every rank reaches.
"""

from __future__ import annotations

from mpi4py import MPI
from petsc4py import PETSc

import dolfinx.fem.petsc


class LinearProblem(dolfinx.fem.petsc.LinearProblem):
    """``dolfinx.fem.petsc.LinearProblem`` with collective (deferred) destruction."""

    def __del__(self) -> None:  # objects go to PETSc's garbage list via petsc4py
        pass


class NonlinearProblem(dolfinx.fem.petsc.NonlinearProblem):
    """``dolfinx.fem.petsc.NonlinearProblem`` with collective (deferred) destruction."""

    def __del__(self) -> None:
        pass


def collect_garbage(comm: MPI.Comm = MPI.COMM_WORLD) -> None:
    """Destroy, collectively, the parallel PETSc objects Python has dropped on ``comm``."""
    PETSc.garbage_cleanup(comm)
