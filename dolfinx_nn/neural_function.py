"""A neural network evaluated at the dof points of a DOLFINx function space."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from mpi4py import MPI

import dolfinx
import numpy as np
import torch

from dolfinx_nn._dofs import assign_owned, check_finite, owned_size
from dolfinx_nn.parallel import check_device, raise_on_all_ranks

#: Element families whose dofs are point evaluations (so "the network at the dof point" is exact).
POINT_EVALUATION_FAMILIES = (
    "P", "Q", "DG", "DQ", "quadrature", "Lagrange", "Discontinuous Lagrange", "CR",
)


def _check_space(V: dolfinx.fem.FunctionSpace) -> None:
    if not isinstance(V, dolfinx.fem.FunctionSpace):
        raise TypeError(f"V must be a dolfinx.fem.FunctionSpace, got {type(V).__name__}.")
    element = V.ufl_element()
    family = element.family_name
    if family not in POINT_EVALUATION_FAMILIES:
        raise ValueError(
            f"NeuralFunction needs a space whose dofs are point values (Lagrange, DG or a basix "
            f"quadrature element, scalar or blocked); got element family {family!r} ({element})."
        )
    if len(V.value_shape) > 1:
        raise ValueError(
            f"NeuralFunction supports scalar and vector spaces; got value shape {V.value_shape}."
        )


class NeuralFunction:
    """A network ``net: R^gdim -> R^bs`` evaluated at the owned dof points of ``V``.

    Calling the object evaluates the network once per owned dof point, writes the values into
    :attr:`function` (ghosts updated) and returns them as a float64 tensor of the owned dofs,
    differentiable with respect to the network's parameters.

    Args:
        net: torch module mapping points of shape ``(n, gdim)`` to ``(n, bs)`` (or ``(n,)`` for
            a scalar space). It may be float32 and live on any device.
        V: a scalar or vector space: Lagrange of any degree, DG, or a basix quadrature element.
        device: where the points are sent; by default the device of the network's parameters.
        name: name of the created function (shown in ParaView).
        function: an existing function on ``V`` to write into (e.g. one already used in a
            form); by default a new one is created.

    Example:
        >>> qn = NeuralFunction(net, V)
        >>> q_t = qn()                    # owned dofs, differentiable
        >>> a = qn.function * inner(grad(u), grad(v)) * dx
    """

    def __init__(
        self,
        net: torch.nn.Module,
        V: dolfinx.fem.FunctionSpace,
        *,
        device: torch.device | str | None = None,
        name: str = "q",
        function: dolfinx.fem.Function | None = None,
    ) -> None:
        if not callable(net):
            raise TypeError(f"net must be a torch module or callable, got {type(net).__name__}.")
        _check_space(V)
        self.net = net
        self.V = V
        if function is None:
            function = dolfinx.fem.Function(V, name=name)
        elif not isinstance(function, dolfinx.fem.Function) or function.function_space != V:
            raise ValueError("function must be a dolfinx.fem.Function on the space V.")
        self.function = function
        self.comm: MPI.Comm = V.mesh.comm
        self.block_size = V.dofmap.index_map_bs
        self.num_owned = owned_size(V)
        params = list(net.parameters()) if isinstance(net, torch.nn.Module) else []
        self.device = check_device(device, self.comm) if device is not None else (
            params[0].device if params else torch.device("cpu")
        )
        self.dtype = params[0].dtype if params else torch.float64
        gdim = V.mesh.geometry.dim
        nodes = V.dofmap.index_map.size_local
        coords = V.tabulate_dof_coordinates()[:nodes, :gdim]
        self.points = torch.from_numpy(np.ascontiguousarray(coords))
        self._points_on_device = self.points.to(self.device, self.dtype)

    def __call__(self, parameters: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Evaluate the network and return the owned dof values (float64, on the CPU).

        Args:
            parameters: optional replacement parameters (``torch.func.functional_call``), e.g.
                for Taylor tests with respect to the weights.
        """
        x = self._points_on_device
        error: Exception | None = None
        out = None
        try:  # a rank's error (a shape, inside the network) is raised on every rank
            if parameters is None:
                out = self.net(x)
            else:
                out = torch.func.functional_call(self.net, dict(parameters), (x,))
            self._check_shape(out)
        except Exception as e:  # noqa: BLE001
            error = e
        raise_on_all_ranks(error, self.comm)
        return self._to_dofs(cast(torch.Tensor, out))  # no rank raised: out is set

    def _check_shape(self, out: torch.Tensor) -> None:
        n_points = self.points.shape[0]
        bs = self.block_size
        expected = (n_points,) if bs == 1 else (n_points, bs)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) not in {expected, (n_points, bs)}:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            column = f" or {(n_points, 1)}" if bs == 1 else ""
            raise ValueError(
                f"network output has shape {shape} at {n_points} points, but the space "
                f"has block size {bs}: expected {expected}{column}."
            )

    def _to_dofs(self, out: torch.Tensor) -> torch.Tensor:
        return _WriteDofs.apply(self, out.to("cpu", torch.float64).reshape(-1))


class _WriteDofs(torch.autograd.Function):
    """Identity on the dof values that also writes them into the Function (a side effect).

    An autograd.Function so that torch.func transforms hand it plain tensors: the write
    works under ``torch.func.grad``, and forward-mode tangents pass through unchanged.
    """

    @staticmethod
    def forward(nf: NeuralFunction, values: torch.Tensor) -> torch.Tensor:
        array = values.detach().numpy()
        check_finite(array, nf.comm, "network output")
        assign_owned(nf.function, array)
        return values.clone()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, grad

    @staticmethod
    def jvp(ctx, _, tangent: torch.Tensor) -> torch.Tensor:
        return tangent
