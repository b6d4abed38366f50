"""Data-driven discovery of PDEs from scattered space-time data (after Berg & Nystroem).

A surrogate ``u(x, t)`` is fitted to the observations with every scale chosen from the data
(:mod:`.surrogate`, :mod:`.scale_search`: random spatial features times a basis in time for
stations observed at every snapshot, Gaussian kernels for scattered data), and
``u_t = sum_k c_k T_k`` is found by sparse regression with model selection over a library of
candidate terms (:mod:`.regression`, :mod:`.library`), on the surrogate's derivatives (strong
form, :mod:`.pipeline`) and on integrals of its values against test functions (weak form,
:mod:`.weak`).  Coefficients are reported in the data's own units: the normalisation of the
surrogate is undone exactly.  The candidate equations become UFL forms and are simulated with
DOLFINx over a held-out time window with the data's boundary values (:mod:`.validation`).

Modules: :mod:`.data` (data sets, ``.npz``/``.csv``/``.mat``), :mod:`.datasets` (built-in
DOLFINx simulations, PDE-FIND's Burgers data), :mod:`.simulation` (time integration, point
evaluation), :mod:`.equation` (formula and UFL form), :mod:`.pipeline` (:func:`discover`),
:mod:`.network_rhs` (a network ``F`` when no linear library fits), :mod:`.peers` and
:mod:`.comparison` (PySINDy comparisons).
"""

from __future__ import annotations

from dolfinx_nn.discovery.data import SpaceTimeData, load_data, save_npz, with_noise
from dolfinx_nn.discovery.pipeline import Discovery, DiscoveryConfig, discover
from dolfinx_nn.discovery.surrogate import Normalisation, SurrogateConfig

__all__ = [
    "Discovery",
    "DiscoveryConfig",
    "Normalisation",
    "SpaceTimeData",
    "SurrogateConfig",
    "discover",
    "load_data",
    "save_npz",
    "with_noise",
]
