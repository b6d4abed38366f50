"""When an assembled matrix (and so its factorization) is still valid.

A matrix assembled from a bilinear form depends on the form's coefficients, its constants and
the mesh geometry, and on nothing else.  :class:`FormInputs` keeps a copy of those values from
the last assembly; the matrix must be assembled again exactly when one of them changed since.
The decision is agreed over the ranks (a value changed on one rank only would otherwise make
that rank alone enter the collective assembly).  Comparing the values costs a pass over them,
far less than an assembly, let alone a factorization.
"""

from __future__ import annotations

from mpi4py import MPI

import numpy as np
import ufl


class FormInputs:
    """The values a form's matrix depends on, and whether they changed since :meth:`record`.

    Args:
        form: the UFL form (its coefficients are ``dolfinx.fem.Function``s and its constants
            ``dolfinx.fem.Constant``s).
        comm: the communicator of the form's mesh.
    """

    def __init__(self, form: ufl.Form, comm: MPI.Comm) -> None:
        self.comm = comm
        arrays = [c.x.array for c in form.coefficients()]
        arrays += [np.asarray(c.value) for c in form.constants()]
        meshes = {id(d.ufl_cargo()): d.ufl_cargo() for d in form.ufl_domains()}
        arrays += [m.geometry.x for m in meshes.values()]
        self._arrays = arrays
        self._recorded: list[np.ndarray] | None = None

    def changed(self) -> bool:
        """Whether any value differs from the record on any rank (collective)."""
        local = self._recorded is None or any(
            not np.array_equal(a, r) for a, r in zip(self._arrays, self._recorded, strict=True)
        )
        return bool(self.comm.allreduce(local, op=MPI.LOR))

    def record(self) -> None:
        """Remember the current values (after an assembly)."""
        self._recorded = [np.array(a, copy=True) for a in self._arrays]
