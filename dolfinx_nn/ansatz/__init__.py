"""Neural solution ansatz ``u = G + D * N`` in meshed geometries, compared with FEM.

The method of Berg & Nystrom (2018): ``G`` smoothly extends the Dirichlet data, ``D`` is a
smooth approximate distance to the Dirichlet boundary (zero there, positive inside) and ``N``
is a feed-forward network trained on the PDE residual.  ``G`` and ``D`` are small networks
fitted once, on points of the mesh, so any meshed geometry works.

Modules:

- :mod:`~dolfinx_nn.ansatz.networks`: feed-forward and random-feature networks;
- :mod:`~dolfinx_nn.ansatz.fitted_fields`: fitting ``G`` and ``D`` on the mesh;
- :mod:`~dolfinx_nn.ansatz.corners`: re-entrant corners of 2D meshes and their singular
  functions (in the basis of ``D``);
- :mod:`~dolfinx_nn.ansatz.ansatz`: the ansatz and its derivatives (product rule over
  :func:`dolfinx_nn.networks.pointwise.laplacian`);
- :mod:`~dolfinx_nn.ansatz.equations`: the registry of PDEs (Poisson, advection-diffusion,
  heat-advection), one class each: operator, weak form, properties;
- :mod:`~dolfinx_nn.ansatz.pdes`: a PDE with a manufactured solution (source, data);
- :mod:`~dolfinx_nn.ansatz.losses`: strong-form residual and Ritz energy losses;
- :mod:`~dolfinx_nn.ansatz.fem_reference`: the DOLFINx solver on the same problem;
- :mod:`~dolfinx_nn.ansatz.errors`: L2, H1 and max errors by DOLFINx quadrature;
- :mod:`~dolfinx_nn.ansatz.scaling`: the scales that make the network side dimensionless;
- :mod:`~dolfinx_nn.ansatz.units`: the canonical copy of a problem on which the network
  trains, the same bit for bit in every unit system;
- :mod:`~dolfinx_nn.ansatz.rounding`: the grids to which its data (and the fitted FEM fields)
  are rounded;
- :mod:`~dolfinx_nn.ansatz.compare`: both methods on one problem, tables and plots;
- :mod:`~dolfinx_nn.ansatz.depth`: deep versus shallow ``N`` at equal parameter count, over
  seeds;
- :mod:`~dolfinx_nn.ansatz.gallery`: ``compare`` with its defaults on unseen gmsh geometries.
"""

from __future__ import annotations

from dolfinx_nn.ansatz.ansatz import DirichletAnsatz
from dolfinx_nn.ansatz.equations import PDE, PDES, get_pde
from dolfinx_nn.ansatz.fitted_fields import fit_boundary_extension, fit_distance
from dolfinx_nn.ansatz.networks import RandomFeatureNetwork, feed_forward, width_for_parameters
from dolfinx_nn.ansatz.pdes import Problem

__all__ = [
    "PDE",
    "PDES",
    "DirichletAnsatz",
    "Problem",
    "RandomFeatureNetwork",
    "feed_forward",
    "fit_boundary_extension",
    "fit_distance",
    "get_pde",
    "width_for_parameters",
]
