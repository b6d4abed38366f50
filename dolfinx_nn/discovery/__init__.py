"""Data-driven discovery of PDEs from scattered space-time data (after Berg & Nystroem).

A network surrogate ``u_theta(x, t)`` is fitted to noisy scattered observations
(:mod:`.surrogate`: a network of ``(x, t)``, or random spatial features times Legendre
polynomials in time for stations observed at every snapshot), differentiated with autograd to get ``u_t, u_x, u_xx, ...``
(:func:`.surrogate.term_features`), and ``u_t = sum_k c_k T_k`` is found by sparse regression
with model selection over a library of candidate terms (:mod:`.regression`,
:mod:`.library`).  Coefficients are reported in the data's own units: the normalisation of
the surrogate is undone exactly.  The discovered equation becomes a UFL form and is simulated
with DOLFINx to check it against held-out later data (:mod:`.validation`).

Modules: :mod:`.data` (data sets, ``.npz``/``.csv``), :mod:`.datasets` (built-in DOLFINx
simulations), :mod:`.simulation` (time integration, point evaluation), :mod:`.equation`
(formula and UFL form), :mod:`.pipeline` (:func:`discover`), :mod:`.network_rhs` (a network
``F`` when no linear library fits), :mod:`.peers` (PDE-FIND comparison).
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
