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


class Values:
    """The values of some Functions and Constants: recorded at a forward pass, written back at
    its backward pass (and the values of the moment restored afterwards).

    Everything a form depends on besides its controls and unknown (a material parameter, the
    time in a source term, data changed per sample) is read when the form is assembled, so the
    backward pass must see it as the forward pass did. A recording shares the arrays of the
    previous one where nothing changed, so a time loop whose other coefficients are fixed
    stores them once.

    Args:
        functions: Functions whose arrays (owned and ghost entries) are kept.
        constants: Constants whose values are kept.
    """

    def __init__(self, functions, constants) -> None:
        self._functions = list(functions)
        self._constants = list(constants)
        self._last: list[np.ndarray] | None = None

    def _current(self) -> list[np.ndarray]:
        return [f.x.array for f in self._functions] + [
            np.asarray(c.value) for c in self._constants]

    def record(self) -> list[np.ndarray]:
        """The current values (copies, shared with the previous record where unchanged)."""
        current = self._current()
        if self._last is None:
            recorded = [np.array(a, copy=True) for a in current]
        else:
            recorded = [
                last if np.array_equal(a, last) else np.array(a, copy=True)
                for a, last in zip(current, self._last, strict=True)
            ]
        self._last = recorded
        return recorded

    def read(self) -> list[np.ndarray]:
        """Copies of the current values (to write back after a backward pass)."""
        return [np.array(a, copy=True) for a in self._current()]

    def write(self, values: list[np.ndarray]) -> None:
        """Set the values (all local entries of a Function, so no ghost update is needed)."""
        for target, value in zip(self._current(), values, strict=True):
            if target is not value:
                target[...] = value
