"""Dirichlet data as a control: which dofs of the solution each control really sets.

When several conditions constrain the same dof, DOLFINx imposes the value of the *last*
condition in ``bcs`` (``set_bc`` and the lifting both apply the conditions in order, each
overwriting the previous one).  The gradient with respect to Dirichlet data must follow the
same precedence: data that a later condition overrides has no influence on the solution.

A condition's value may be a Function on the solution's space, a Function on a collapsed
sub-space (a condition on ``W.sub(0)`` of a mixed space, the Taylor-Hood inflow profile), or
a Constant (a scalar, or a vector on a blocked space).  Rather than re-deriving DOLFINx's dof
maps for each case, :func:`dirichlet_source` asks the condition itself: it imposes a *probe*
value (each data entry set to its own index) with ``DirichletBC.set`` and reads back which
entry of the data lands on which dof.  The map is then exactly the one the forward solve
uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dolfinx
import dolfinx.la
import numpy as np

from dolfinx_nn._dofs import owned_size


@dataclass
class DirichletSource:
    """The dofs of ``u`` whose value a control imposes, and where each value comes from.

    Attributes:
        dofs: owned dofs of ``u``'s space (block size unrolled) that take the control's value.
        entries: for each of ``dofs``, the entry of the control it takes: a local index into
            the Function's array (owned or ghost), or a flat component of the Constant.
    """

    dofs: np.ndarray
    entries: np.ndarray

    def pull_back(self, control: dolfinx.fem.Function | dolfinx.fem.Constant,
                  values: np.ndarray) -> np.ndarray:
        """Transpose of the imposition: ``sum`` of ``values[dofs]`` into the control's entries.

        Collective for a Function control (ghost contributions are sent to their owners).

        Args:
            control: the control whose data this is.
            values: owned entries of a vector on ``u``'s space (e.g. ``dJ/du``).

        Returns:
            The rank's part: owned entries of the Function, or the rank's share of each
            component of the Constant (summed over the ranks by the caller's convention).
        """
        if isinstance(control, dolfinx.fem.Constant):
            out = np.zeros(np.asarray(control.value).size)
            np.add.at(out, self.entries, values[self.dofs])
            return out
        acc = dolfinx.fem.Function(control.function_space)
        np.add.at(acc.x.array, self.entries, values[self.dofs])
        acc.x.scatter_reverse(dolfinx.la.InsertMode.add)
        return acc.x.array[: owned_size(control.function_space)].copy()


def _is_value_of(bc: dolfinx.fem.DirichletBC, control: object) -> bool:
    cpp = getattr(control, "_cpp_object", None)
    return cpp is not None and bc.g is cpp


def _local_size(V: dolfinx.fem.FunctionSpace) -> int:
    index_map = V.dofmap.index_map
    return (index_map.size_local + index_map.num_ghosts) * V.dofmap.index_map_bs


def dirichlet_source(
    control: dolfinx.fem.Function | dolfinx.fem.Constant,
    bcs: Sequence[dolfinx.fem.DirichletBC],
    V: dolfinx.fem.FunctionSpace,
) -> DirichletSource | None:
    """Where ``control`` is the value of conditions in ``bcs``: the dofs it wins, and the map.

    Args:
        control: a Function or Constant.
        bcs: the Dirichlet conditions of the solve, in the order DOLFINx applies them.
        V: the solution's space.

    Returns:
        ``None`` when ``control`` is the value of no condition; otherwise its
        :class:`DirichletSource` (possibly with no dofs, when later conditions override all).
    """
    mine = [j for j, bc in enumerate(bcs) if _is_value_of(bc, control)]
    if not mine:
        return None
    n_local = _local_size(V)
    winner = np.full(n_local, -1, dtype=np.int64)
    for j, bc in enumerate(bcs):
        winner[bc.dof_indices()[0]] = j

    # Probe: every entry of the data carries its own index (exact in float64).
    if isinstance(control, dolfinx.fem.Constant):
        saved = np.array(control.value, copy=True)
        control.value[...] = np.arange(saved.size, dtype=float).reshape(saved.shape)
    else:
        saved = control.x.array.copy()
        control.x.array[:] = np.arange(saved.size, dtype=float)
    probe = np.zeros(n_local)
    try:
        for j in mine:
            bcs[j].set(probe)
    finally:
        if isinstance(control, dolfinx.fem.Constant):
            control.value[...] = saved
        else:
            control.x.array[:] = saved

    owned = np.zeros(n_local, dtype=bool)
    owned[: owned_size(V)] = True
    wins = owned & np.isin(winner, mine)
    dofs = np.flatnonzero(wins).astype(np.int32)
    return DirichletSource(dofs=dofs, entries=np.rint(probe[dofs]).astype(np.int64))
