"""Values between a ``dolfinx.fem.Function`` and a torch tensor: the rank's owned dofs.

The bridge's convention, shared by every op of the package: a tensor exchanged with DOLFINx
holds the dofs this rank *owns*, block size flattened (DOLFINx's order: node by node, the
components of a node together), as ``float64`` unless asked otherwise. Ghost values never
appear in a tensor; :func:`from_torch` updates them from their owners. The analogue in
Firedrake's coupling is ``firedrake.ml.pytorch.to_torch`` / ``from_torch``; there the whole
vector is gathered, here each rank keeps its part, as data-parallel training needs.

Example::

    q = dolfinx.fem.Function(V)
    t = dnn.to_torch(q)            # (n_owned * bs,) float64 copy
    dnn.from_torch(2 * t, q)       # q.x.array[:n_owned*bs] = 2 t, ghosts updated
"""

from __future__ import annotations

import dolfinx
import torch

from dolfinx_nn._dofs import assign_owned, owned_size, tensor_to_numpy
from dolfinx_nn.parallel import raise_on_all_ranks


def _whole_space(function: dolfinx.fem.Function, what: str) -> None:
    """Refuse a view of one component of a mixed or blocked Function (``w.sub(i)``): its
    vector is the whole parent's, so its owned dofs are not this component's."""
    component = function.function_space.component()
    if len(component) > 0:
        raise ValueError(
            f"{what} got a view of the sub-space {tuple(component)} of a mixed or blocked "
            "Function (w.sub(i)); its vector holds every component. Use the collapsed copy "
            "w.sub(i).collapse() and, to write, interpolate it back into w.sub(i)."
        )


def num_owned(function_space: dolfinx.fem.FunctionSpace) -> int:
    """Number of dofs this rank owns in ``function_space``, block size flattened."""
    return owned_size(function_space)


def to_torch(
    function: dolfinx.fem.Function,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A tensor copy of the dofs this rank owns in ``function``.

    Args:
        function: a real-valued ``dolfinx.fem.Function`` (any element, any block size).
        dtype: floating dtype of the result.
        device: device of the result (default: CPU).

    Returns:
        A tensor of shape ``(n_owned * bs,)`` that does not share memory with ``function``
        (changing one leaves the other as it was). Not part of an autograd graph: for a
        differentiable map from a network to a Function use :class:`dolfinx_nn.NeuralFunction`.

    Raises:
        TypeError: ``function`` is not a ``dolfinx.fem.Function`` or ``dtype`` is not a real
            floating dtype.
        ValueError: ``function`` is a view ``w.sub(i)`` of a mixed or blocked Function (its
            vector is the parent's; use ``w.sub(i).collapse()``).
    """
    if not isinstance(function, dolfinx.fem.Function):
        raise TypeError(f"to_torch expects a dolfinx.fem.Function, got {type(function).__name__}")
    _whole_space(function, "to_torch")
    if not dtype.is_floating_point:
        raise TypeError(f"to_torch returns real values; dtype must be floating, got {dtype}")
    n = owned_size(function.function_space)
    values = torch.from_numpy(function.x.array[:n].copy())
    return values.to(dtype=dtype, device=device)


def from_torch(tensor: torch.Tensor, function: dolfinx.fem.Function) -> dolfinx.fem.Function:
    """Write a tensor of owned dof values into ``function`` and update its ghosts.

    Collective: every rank of ``function``'s mesh must call it (the layout check is agreed over
    the ranks and the ghost update communicates).

    Args:
        tensor: the owned dofs, flat ``(n_owned * bs,)``, a column ``(n_owned * bs, 1)`` or, for
            a blocked space, ``(n_owned, bs)`` (nodes by components). Any real dtype and device;
            detached before it is written.
        function: the ``dolfinx.fem.Function`` to write into (changed in place).

    Returns:
        ``function``, for chaining.

    Raises:
        TypeError: ``tensor`` is not a real torch tensor, or ``function`` not a Function.
        ValueError: ``tensor`` does not hold this rank's ``n_owned * bs`` values in one of the
            accepted layouts, on any rank (raised on every rank; the message names the rank and
            the expected count), or ``function`` is a view ``w.sub(i)`` (see :func:`to_torch`).
            ``function`` must be a Function on every rank (a rank that passes something else
            raises alone: it cannot know the communicator of the others).
    """
    if not isinstance(function, dolfinx.fem.Function):
        raise TypeError(
            f"from_torch writes into a dolfinx.fem.Function, got {type(function).__name__}"
        )
    V = function.function_space
    n = owned_size(V)
    comm = V.mesh.comm
    values, error = None, None
    try:
        _whole_space(function, "from_torch")
        values = tensor_to_numpy(
            tensor, n, "from_torch's tensor", V.dofmap.index_map_bs, comm.rank
        )
    except (TypeError, ValueError) as exc:
        error = exc
    raise_on_all_ranks(error, comm)
    assert values is not None
    assign_owned(function, values)
    return function
