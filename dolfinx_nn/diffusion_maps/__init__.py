"""Diffusion maps of optimizer trajectories and Hessian spectra.

Following Fjellstrom & Nystrom, the parameter vectors visited by an optimizer are recorded
(:class:`TrajectoryRecorder`) and the point cloud is analysed with diffusion maps
(:func:`diffusion_map`, :class:`DiffusionMap`), an intrinsic-dimension estimate
(:func:`estimate_dimension`) and the spectrum of the loss Hessian at the end point
(:class:`HessianOperator`, :func:`top_eigenpairs`, :func:`spectral_density`).
"""

from __future__ import annotations

from dolfinx_nn.diffusion_maps.diffusion_map import DiffusionMap, diffusion_map
from dolfinx_nn.diffusion_maps.dimension import estimate_dimension
from dolfinx_nn.diffusion_maps.hessian import (
    HessianOperator,
    SpectralDensity,
    spectral_density,
    top_eigenpairs,
)
from dolfinx_nn.diffusion_maps.recorder import TrajectoryRecorder, load_trajectory

__all__ = [
    "DiffusionMap",
    "HessianOperator",
    "SpectralDensity",
    "TrajectoryRecorder",
    "diffusion_map",
    "estimate_dimension",
    "load_trajectory",
    "spectral_density",
    "top_eigenpairs",
]
