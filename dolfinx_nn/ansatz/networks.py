"""Networks of the ansatz: feed-forward ``N`` and random-feature ``G`` and ``D``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mpi4py import MPI

import numpy as np
import torch

from dolfinx_nn.networks.activations import SMOOTH
from dolfinx_nn.networks.activations import activation as activation_class
from dolfinx_nn.networks.mlp import mlp

if TYPE_CHECKING:
    from dolfinx_nn.ansatz.corners import CornerFunctions

#: A corner ``(d,)`` of a bounding box: a sequence of floats or an array
#: (:func:`dolfinx_nn.meshes.bounding_box` gives arrays).
Corner = Sequence[float] | np.ndarray


class BoxScaling(torch.nn.Module):
    """Affine map of the bounding box ``[lower, upper]`` onto ``[-1, 1]^d``."""

    centre: torch.Tensor
    half_width: torch.Tensor

    def __init__(self, lower: Corner, upper: Corner) -> None:
        super().__init__()
        lower_t = torch.as_tensor(np.asarray(lower, dtype=np.float64))
        upper_t = torch.as_tensor(np.asarray(upper, dtype=np.float64))
        if torch.any(upper_t <= lower_t):
            raise ValueError(f"empty bounding box: lower {lower}, upper {upper}")
        self.register_buffer("centre", 0.5 * (upper_t + lower_t))
        self.register_buffer("half_width", 0.5 * (upper_t - lower_t))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.centre) / self.half_width


class OutputScaling(torch.nn.Module):
    """Multiplication by a fixed scale: a dimensionless network output in the user's units."""

    scale: torch.Tensor

    def __init__(self, scale: float) -> None:
        super().__init__()
        if not (np.isfinite(scale) and scale > 0.0):
            raise ValueError(f"the output scale must be a positive number, got {scale!r}")
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def feed_forward(
    in_dim: int,
    width: int,
    depth: int,
    *,
    box: tuple[Corner, Corner] | None = None,
    output_scale: float | None = None,
    activation: str = "tanh",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.nn.Sequential:
    """A fully connected network ``R^in_dim -> R`` with ``depth`` hidden layers.

    Args:
        in_dim: number of inputs (space dimension, plus one for time).
        width: neurons per hidden layer.
        depth: number of hidden layers (>= 1).
        box: optional bounding box ``(lower, upper)`` of the inputs, mapped onto ``[-1, 1]^d``.
        output_scale: optional factor of the output (:class:`OutputScaling`, not trained).
        activation: a smooth activation (:data:`~dolfinx_nn.networks.activations.SMOOTH`):
            the Laplacian of the network enters the loss.
        dtype: parameter dtype (float64 for tight derivative checks).
        device: where the parameters live.
    """
    if depth < 1 or width < 1:
        raise ValueError(f"width and depth must be >= 1, got width={width}, depth={depth}")
    activation_class(activation, allowed=SMOOTH)
    # weights drawn in float32, then cast: the networks (and results) of earlier versions
    body = mlp([in_dim] + [width] * depth + [1], activation, dtype=dtype,
               init_dtype=torch.float32)
    layers: list[torch.nn.Module] = [] if box is None else [BoxScaling(*box)]
    layers += list(body)
    if output_scale is not None:
        layers.append(OutputScaling(output_scale))
    return torch.nn.Sequential(*layers).to(device=device, dtype=dtype)


def parameter_count(in_dim: int, width: int, depth: int) -> int:
    """Number of parameters of :func:`feed_forward` ``(in_dim, width, depth)``."""
    return (in_dim + 1) * width + (depth - 1) * (width + 1) * width + width + 1


def width_for_parameters(in_dim: int, depth: int, parameters: int) -> int:
    """The width whose :func:`feed_forward` network has closest to ``parameters`` parameters."""
    widths = np.arange(1, max(parameters, 2))
    counts = np.array([parameter_count(in_dim, int(w), depth) for w in widths])
    return int(widths[np.argmin(np.abs(counts - parameters))])


class RandomFeatureNetwork(torch.nn.Module):
    """One hidden tanh layer with fixed random weights and a linear output fitted by least squares.

    The hidden layer is ``tanh(scale * (W x + b))`` on inputs mapped to ``[-1, 1]^d``, with
    ``W`` standard normal and ``b`` uniform in ``[-1, 1]``; its weights are drawn from a
    generator seeded identically on every rank.  Only the output layer is fitted.

    ``extra_boxes`` adds groups of features of the same kind on other boxes, e.g. around the
    small holes of a domain: features scaled to the whole domain vary too slowly to vanish on a
    small hole without large cancelling coefficients, features scaled to the hole do not.

    ``corners`` adds the singular functions of re-entrant corners
    (:class:`~dolfinx_nn.ansatz.corners.CornerFunctions`, one column each, after the random
    features and before the constant), which no combination of smooth features can follow.

    Args:
        in_dim: number of inputs.
        features: number of hidden neurons on ``box``.
        box: bounding box ``(lower, upper)`` of the inputs.
        scale: frequency scale of the features.
        seed: seed of the hidden weights.
        extra_boxes: ``(lower, upper, features)`` of further groups (seeds ``seed + 1000 k``).
        corners: singular functions of the first two inputs (None: none).
    """

    coefficients: torch.Tensor
    #: Set by the fits of :mod:`~dolfinx_nn.ansatz.fitted_fields`: the chosen boundary weight
    #: and the boundary misfit (absent on a network that was not fitted there).
    fit_report: dict[str, Any]
    #: Set by :func:`~dolfinx_nn.ansatz.fitted_fields.fit_distance`: ``sqrt(max phi)``.
    length_scale: float

    def __init__(
        self,
        in_dim: int,
        features: int,
        box: tuple[Corner, Corner],
        *,
        scale: float = 3.0,
        seed: int = 0,
        extra_boxes: Sequence[tuple[Corner, Corner, int]] = (),
        corners: CornerFunctions | None = None,
    ) -> None:
        super().__init__()
        groups = [(box[0], box[1], features), *((lo, hi, c) for lo, hi, c in extra_boxes)]
        if any(count < 1 for _, _, count in groups):
            raise ValueError(f"features must be >= 1, got {[c for _, _, c in groups]}")
        self.scalings = torch.nn.ModuleList()
        self.groups = len(groups)
        for k, (lower, upper, count) in enumerate(groups):
            gen = torch.Generator().manual_seed(seed + 1000 * k)
            self.scalings.append(BoxScaling(lower, upper))
            weight = scale * torch.randn(in_dim, count, generator=gen, dtype=torch.float64)
            bias = scale * (2.0 * torch.rand(count, generator=gen, dtype=torch.float64) - 1.0)
            self.register_buffer(f"weight{k}", weight)
            self.register_buffer(f"bias{k}", bias)
        self.corners = corners
        total = sum(count for _, _, count in groups) + (0 if corners is None else len(corners))
        self.register_buffer("coefficients", torch.zeros(total + 1, dtype=torch.float64))

    @property
    def scaling(self) -> BoxScaling:
        """The box map of the first group (the whole input box)."""
        return self._group(0)[0]

    def _group(self, k: int) -> tuple[BoxScaling, torch.Tensor, torch.Tensor]:
        scaling = self.scalings[k]
        assert isinstance(scaling, BoxScaling)
        return scaling, getattr(self, f"weight{k}"), getattr(self, f"bias{k}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden features (and corner functions) and a constant column, ``(n, columns)``."""
        hs = []
        for k in range(self.groups):
            scaling, weight, bias = self._group(k)
            hs.append(torch.tanh(scaling(x) @ weight + bias))
        if self.corners is not None:
            hs.append(self.corners(x))
        return torch.cat(hs + [torch.ones_like(x[:, :1])], dim=1)

    def laplacian_features(self, x: torch.Tensor, spatial_dim: int | None = None) -> torch.Tensor:
        """Laplacians of the features (over the first ``spatial_dim`` inputs), analytically."""
        dims = x.shape[1] if spatial_dim is None else spatial_dim
        laps = []
        for k in range(self.groups):
            scaling, weight, bias = self._group(k)
            h = torch.tanh(scaling(x) @ weight + bias)
            w = weight[:dims] / scaling.half_width[:dims, None]
            laps.append(-2.0 * h * (1.0 - h**2) * (w**2).sum(dim=0))
        if self.corners is not None:  # functions of the first two (spatial) inputs
            laps.append(self.corners.laplacian(x))
        return torch.cat(laps + [torch.zeros_like(x[:, :1])], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x) @ self.coefficients

    @torch.no_grad()
    def factor(self, rows: torch.Tensor, y: torch.Tensor, comm: MPI.Comm) -> torch.Tensor:
        """Triangular factor ``R`` of ``[rows | y]`` over all ranks (``R^T R = A^T A``).

        Each rank reduces its rows by QR; the stacked factors are reduced once more, so the
        factor (and every least-squares solution built from it) does not depend on the
        partition beyond round-off.  Collective.
        """
        a = torch.cat([rows, y[:, None]], dim=1)
        r = torch.linalg.qr(a, mode="r").R if a.shape[0] else a
        stacked = torch.from_numpy(np.concatenate(comm.allgather(r.numpy())))
        return torch.linalg.qr(stacked, mode="r").R

    @torch.no_grad()
    def solve_factors(
        self, factors: Sequence[torch.Tensor], weights: Sequence[float], ridge: float = 1e-10
    ) -> None:
        """Set the coefficients to ``argmin sum_b w_b^2 ||A_b c - y_b||^2 + penalty``.

        ``factors`` are :meth:`factor` results of the blocks ``[A_b | y_b]``; the Tikhonov
        penalty ``ridge * sqrt(sum_b w_b^2) * ||c||^2`` is that of :meth:`fit`.  Identical on
        every rank.
        """
        stacked = torch.cat([w * f for f, w in zip(factors, weights, strict=True)])
        scale = float(np.sqrt(sum(w**2 for w in weights)))
        n = stacked.shape[1] - 1
        penalty = torch.zeros(n, n + 1, dtype=stacked.dtype)
        penalty[:, :-1] = np.sqrt(ridge * scale) * torch.eye(n, dtype=stacked.dtype)
        stacked = torch.cat([stacked, penalty])
        solution = torch.linalg.lstsq(
            stacked[:, :-1], stacked[:, -1:], driver="gelsd", rcond=1e-13
        ).solution
        self.coefficients.copy_(solution[:, 0])

    @torch.no_grad()
    def fit(
        self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, comm: MPI.Comm,
        *, rows: torch.Tensor | None = None, ridge: float = 1e-10,
    ) -> None:
        """Weighted least squares ``min sum_i w_i^2 (A_i c - y_i)^2`` over all ranks.

        ``A`` holds the features at ``x`` (value rows), or the given ``rows`` (e.g. value
        rows stacked with :meth:`laplacian_features` rows).  ``ridge`` adds
        ``ridge * ||w||_2 * ||c||^2`` (Tikhonov), which keeps the coefficients moderate and
        the fitted field free of cancellation round-off.

        Each rank reduces its rows to a triangular factor (QR); the factors of all ranks are
        stacked and solved identically on every rank, so the result does not depend on the
        partition beyond round-off.
        """
        matrix = self.features(x) if rows is None else rows
        a = torch.cat([matrix, y[:, None]], dim=1) * weights[:, None]
        r = torch.linalg.qr(a, mode="r").R if a.shape[0] else a
        stacked = torch.from_numpy(np.concatenate(comm.allgather(r.numpy())))
        scale = float(np.sqrt(comm.allreduce(float((weights**2).sum()), op=MPI.SUM)))
        penalty = torch.zeros(a.shape[1] - 1, a.shape[1], dtype=a.dtype)
        penalty[:, :-1] = np.sqrt(ridge * scale) * torch.eye(a.shape[1] - 1, dtype=a.dtype)
        stacked = torch.cat([stacked, penalty])
        solution = torch.linalg.lstsq(
            stacked[:, :-1], stacked[:, -1:], driver="gelsd", rcond=1e-13
        ).solution
        self.coefficients.copy_(solution[:, 0])
