"""The Dirichlet problem for the Monge-Ampere equation, ``det D^2 u = f``, ``u = g``.

Two routes to the unique convex solution, compared on cases with exact solutions:

- a network ansatz trained on a collocation loss (residual by autograd Hessians), either an
  input convex network (:class:`ICNN`, convex by construction) or a plain feed-forward network
  (:class:`FFNN`) with a convexity penalty; any dimension, on boxes, balls or meshes;
- a finite element reference (:func:`solve_fem`, :func:`solve_fem_sequence`): the C0 penalty
  method of Brenner, Gudi and Neilan with P2 elements and Newton's method (PETSc SNES),
  globalized by mesh sequencing and continuation in the data, d = 2, 3.

Problems: the built-in :data:`CASES` or user formulas (:func:`formula_case`).

Command line: ``dolfinx-nn monge-ampere --help``; benchmark: ``dolfinx-nn bench monge-ampere``.
"""

from __future__ import annotations

from dolfinx_nn.monge_ampere.cases import CASES, Case, formula_case, get_case
from dolfinx_nn.monge_ampere.domains import Ball, Box, MeshDomain, make_domain
from dolfinx_nn.monge_ampere.fem import (
    FEMResult,
    FEMSolveError,
    sequence_resolutions,
    solve_fem,
    solve_fem_sequence,
)
from dolfinx_nn.monge_ampere.hessian import batched_det, min_eigenvalues
from dolfinx_nn.monge_ampere.loss import MongeAmpereLoss
from dolfinx_nn.monge_ampere.network_solver import (
    DEFAULT_TRAINING,
    NetworkConfig,
    NetworkResult,
    evaluate,
    solve_network,
)
from dolfinx_nn.monge_ampere.networks import FFNN, ICNN, PowerOfTwoUnits, make_network

__all__ = [
    "CASES",
    "DEFAULT_TRAINING",
    "FFNN",
    "ICNN",
    "Ball",
    "Box",
    "Case",
    "FEMResult",
    "FEMSolveError",
    "MeshDomain",
    "MongeAmpereLoss",
    "NetworkConfig",
    "NetworkResult",
    "PowerOfTwoUnits",
    "batched_det",
    "evaluate",
    "formula_case",
    "get_case",
    "make_domain",
    "make_network",
    "min_eigenvalues",
    "sequence_resolutions",
    "solve_fem",
    "solve_fem_sequence",
    "solve_network",
]
