"""Network ansatze for the Monge-Ampere equation: input-convex and plain feed-forward.

An input convex neural network (ICNN; Amos, Xu & Kolter 2017) is convex in its input for
*every* choice of weights: each hidden layer is ``z_{k+1} = s(W_k x + U_k z_k + b_k)`` with
``U_k >= 0`` and ``s`` convex and non-decreasing, and the output is a non-negative
combination of the last layer plus an affine function of ``x``.  Non-negativity is enforced
by the parametrization ``U = softplus(raw)``, so plain gradient descent keeps it.  A convex
quadratic skip ``|A x|^2 / 2`` (any ``A``) lets the network set its curvature directly.

Both networks first map the input affinely from the bounding box ``[lower, upper]`` of the
domain to ``[-1, 1]^d``; an affine change of variables preserves convexity.

**Initialisation of the ICNN.**  Each unit of the first layer is a softplus ridge
``softplus(w.s + b)`` whose curvature is concentrated in a band of width ``~1/|w|`` about the
hyperplane ``w.s + b = 0``.  With PyTorch's default ``|w| ~ 1`` on ``[-1, 1]^d`` the ridges are
nearly flat across the domain, the network starts as (and for hundreds of steps stays) close
to its quadratic skip, and ``det D^2 u`` cannot follow a varying ``f``: on the unit ball in
d = 3 (``smooth`` case) the relative L2 error stalled at 3.6e-2 with a 42 % residual.  The
input weights and biases of every layer are therefore scaled by ``feature_scale`` (default
10): ridges of width ~1/10 of the domain, crossing it at uniformly spread offsets; the output
weights start at ``1/(width feature_scale)`` so that the initial Hessian stays near that of
the quadratic skip.  The error of the same run drops to 1.2e-3 (docs/monge_ampere.md has
the spread over seeds, dimensions and domains).
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn
from torch.nn import functional as F

from dolfinx_nn.networks.activations import SMOOTH
from dolfinx_nn.networks.activations import activation as activation_class
from dolfinx_nn.networks.mlp import mlp

#: Convex, non-decreasing activations allowed in an ICNN (names of the shared registry).
CONVEX_ACTIVATIONS: tuple[str, ...] = ("softplus", "elu")


class _Normalized(nn.Module):
    """Common input scaling from the bounding box to ``[-1, 1]^d``."""

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, dim: int, lower: ArrayLike | None, upper: ArrayLike | None):
        super().__init__()
        if dim < 1:
            raise ValueError(f"input dimension must be >= 1, got {dim}")
        lo = np.zeros(dim) if lower is None else np.asarray(lower, dtype=float)
        hi = np.ones(dim) if upper is None else np.asarray(upper, dtype=float)
        if lo.shape != (dim,) or hi.shape != (dim,) or np.any(hi <= lo):
            raise ValueError(f"need lower < upper, each of length {dim}; got {lo}, {hi}")
        self.dim = dim
        self.register_buffer("shift", torch.as_tensor(0.5 * (lo + hi)))
        self.register_buffer("scale", torch.as_tensor(0.5 * (hi - lo)))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected points shaped (n, {self.dim}), got {tuple(x.shape)}")
        return (x - self.shift) / self.scale


class ICNN(_Normalized):
    """Input convex network ``R^d -> R``, convex for any weights.

    Args:
        dim: input dimension ``d``.
        width: neurons per hidden layer.
        depth: number of hidden layers (``>= 1``).
        activation: a key of :data:`CONVEX_ACTIVATIONS`.
        lower, upper: bounding box of the domain (input scaling).
        feature_scale: factor on the initial input weights and biases (see module docstring).
    """

    def __init__(
        self,
        dim: int,
        width: int = 32,
        depth: int = 3,
        activation: str = "softplus",
        lower: ArrayLike | None = None,
        upper: ArrayLike | None = None,
        feature_scale: float = 10.0,
    ):
        super().__init__(dim, lower, upper)
        if width < 1 or depth < 1:
            raise ValueError(f"width and depth must be >= 1, got {width}, {depth}")
        if not feature_scale > 0:
            raise ValueError(f"feature_scale must be > 0, got {feature_scale}")
        self.activation = activation_class(activation, allowed=CONVEX_ACTIVATIONS)()
        self.input_layers = nn.ModuleList(nn.Linear(dim, width) for _ in range(depth))
        with torch.no_grad():
            for layer in self.input_layers:
                assert isinstance(layer, nn.Linear)
                layer.weight.mul_(feature_scale)
                layer.bias.mul_(feature_scale)
        # raw parameters of the non-negative hidden-to-hidden weights, softplus(raw) ~ 1/width
        init = float(np.log(np.expm1(1.0 / width)))
        self.hidden_raw = nn.ParameterList(
            nn.Parameter(init + 0.1 * torch.randn(width, width)) for _ in range(depth - 1)
        )
        # output weights ~ 1/(width feature_scale): the ridges' curvature grows with the scale,
        # the network's initial Hessian should not (it starts near its quadratic skip)
        out = float(np.log(np.expm1(1.0 / (width * feature_scale))))
        self.output_raw = nn.Parameter(out + 0.1 * torch.randn(width))
        self.affine = nn.Linear(dim, 1)
        # convex quadratic skip 0.5 |A s|^2 (PSD for any A)
        self.quadratic = nn.Parameter(torch.eye(dim))

    def set_curvature(self, eigenvalue: float) -> None:
        """Scale the quadratic skip so that ``D^2 u`` starts near ``eigenvalue * I`` in ``x``.

        A good start for ``det D^2 u = f`` is ``eigenvalue = mean(f)^(1/d)``.
        """
        if not eigenvalue > 0:
            raise ValueError(f"eigenvalue must be > 0, got {eigenvalue}")
        with torch.no_grad():
            self.quadratic.copy_(torch.diag(self.scale * float(eigenvalue) ** 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Values at points ``x`` shaped ``(n, d)``; returns shape ``(n,)``."""
        s = self.normalize(x)
        z = self.activation(self.input_layers[0](s))
        for layer, raw in zip(self.input_layers[1:], self.hidden_raw, strict=True):
            z = self.activation(layer(s) + z @ F.softplus(raw).T)
        quad = 0.5 * ((s @ self.quadratic.T) ** 2).sum(-1)
        return z @ F.softplus(self.output_raw) + self.affine(s).squeeze(-1) + quad


class FFNN(_Normalized):
    """Plain feed-forward network ``R^d -> R`` (no convexity built in).

    Args:
        dim: input dimension ``d``.
        width: neurons per hidden layer.
        depth: number of hidden layers (``>= 1``).
        activation: a smooth activation (:data:`~dolfinx_nn.networks.activations.SMOOTH`),
            so that Hessians exist.
        lower, upper: bounding box of the domain (input scaling).
    """

    def __init__(
        self,
        dim: int,
        width: int = 32,
        depth: int = 3,
        activation: str = "tanh",
        lower: ArrayLike | None = None,
        upper: ArrayLike | None = None,
    ):
        super().__init__(dim, lower, upper)
        if width < 1 or depth < 1:
            raise ValueError(f"width and depth must be >= 1, got {width}, {depth}")
        activation_class(activation, allowed=SMOOTH)
        # PyTorch's default dtype, as the other layers here (cast by make_network)
        self.mlp = mlp([dim] + [width] * depth + [1], activation,
                       dtype=torch.get_default_dtype())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Values at points ``x`` shaped ``(n, d)``; returns shape ``(n,)``."""
        return self.mlp(self.normalize(x)).squeeze(-1)


def length_exponent(volume: float, dim: int) -> int:
    """The ``k`` of :class:`PowerOfTwoUnits` for a domain of ``volume`` (area, length) in
    ``R^dim``.

    The ``k`` with the volume in units of ``2^k`` in ``[1, 2^d)``: ``floor((e - 1) / d)`` for
    ``volume = m 2^e``, ``m`` in ``[1/2, 1)``.  It depends on the binary exponent alone, so a
    domain scaled by ``2^j`` gets ``k + j`` exactly and the same problem in the network's
    units; the unit cube (volume 1) and the unit balls of ``d = 2`` to 12 (volumes 1.3 to 5.3)
    get ``k = 0``.  (Taken from the volume, not the extent: the unit cube and the unit disk,
    extents 1 and 2, cannot both keep ``k = 0`` under a rule of the extent that treats a
    domain and its double alike.)

    Raises:
        ValueError: the volume is not a finite positive number, or ``dim < 1``.
    """
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if not (np.isfinite(volume) and volume > 0.0):
        raise ValueError(f"the domain's volume must be finite and positive, got {volume}")
    return (int(np.frexp(volume)[1]) - 1) // int(dim)


class PowerOfTwoUnits(nn.Module):
    """``u(x) = 4^k w(x / 2^k)``: a network ``w`` of coordinates in units of ``2^k``.

    ``det D^2 u = f`` is invariant under ``x = L y``, ``u = L^2 w`` (``D^2_x u = D^2_y w``), so
    ``w`` solves the same equation with the same ``f`` on the domain shrunk by ``L``.  With
    ``L = 2^k`` (:func:`length_exponent`) ``w`` sees a domain of volume 1 to ``2^d`` whatever
    the user's unit of length, and the change of units is exact in floating point: a domain
    given in metres and the same domain scaled by a power of two train bit for bit alike.  Without
    it the network's ridges and affine part (outputs of order 1) could not reach a solution of
    order ``10^6`` on a domain given in millimetres: a short run on a D-shaped domain gave a
    relative L2 error of 5.4e-2 in metres and 0.79 in millimetres.

    Args:
        network: ``w``, built on the box divided by ``2^k``.
        exponent: ``k``.
    """

    def __init__(self, network: nn.Module, exponent: int):
        super().__init__()
        self.network = network
        self.exponent = int(exponent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Values at points ``x`` (user units) shaped ``(n, d)``; returns shape ``(n,)``."""
        return self.network(x * 2.0**-self.exponent) * 4.0**self.exponent


#: ansatz name -> network class; ``convex`` says whether convexity is built in.
ANSATZE: dict[str, type[ICNN] | type[FFNN]] = {"icnn": ICNN, "ffnn": FFNN}


def make_network(
    ansatz: str,
    dim: int,
    *,
    width: int = 32,
    depth: int = 3,
    activation: str | None = None,
    lower: ArrayLike | None = None,
    upper: ArrayLike | None = None,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> nn.Module:
    """Build the network of an ansatz by name (``"icnn"`` or ``"ffnn"``).

    ``activation=None`` picks softplus for the ICNN and tanh for the FFNN.
    """
    if ansatz not in ANSATZE:
        raise ValueError(f"unknown ansatz {ansatz!r}; choose one of: {', '.join(ANSATZE)}")
    cls = ANSATZE[ansatz]
    if activation is None:
        net = cls(dim, width=width, depth=depth, lower=lower, upper=upper)
    else:
        net = cls(dim, width=width, depth=depth, activation=activation, lower=lower, upper=upper)
    return net.to(dtype=dtype, device=device)
