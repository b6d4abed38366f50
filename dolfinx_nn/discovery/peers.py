"""PDE-FIND (PySINDy) on gridded 1D data, for side-by-side comparisons.

PySINDy is an optional dependency of the benchmark only (``pip install pysindy``); it is
imported when :func:`pde_find` runs.  PDE-FIND differentiates the gridded data by smoothed
finite differences and selects terms by sequentially thresholded least squares (STLSQ) on
normalised columns.
"""

from __future__ import annotations

import re

import numpy as np

from dolfinx_nn.discovery.data import SpaceTimeData

__all__ = ["pde_find", "weak_pde_find"]


def _import_pysindy():
    try:
        import pysindy
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the PDE-FIND comparison needs the optional package 'pysindy': "
            "pip install 'dolfinx_nn[bench]' (or pip install pysindy)"
        ) from exc
    return pysindy


def _term_name(feature: str) -> str:
    """PySINDy's ``x0``, ``x0_11``, ``x0x0_1``, ``x0^2`` -> ``u``, ``u_xx``, ``u*u_x``, ``u**2``."""
    factors = []
    for match in re.finditer(r"x0(?:_(\d+))?(?:\^(\d+))?", feature):
        derivative, power = match.group(1), match.group(2)
        name = "u" if derivative is None else "u_" + "x" * len(derivative)
        factors += [name] * int(power or 1)
    factors.sort(key=lambda f: (len(f), f))
    out = []
    for name in dict.fromkeys(factors):
        k = factors.count(name)
        out.append(name if k == 1 else f"{name}**{k}")
    return "*".join(out)


def _check_grid(data: SpaceTimeData) -> None:
    if data.dim != 1:
        raise ValueError(f"pde_find compares on 1D grids; got {data.dim}D data")
    x = data.x[:, 0]
    if np.any(np.diff(x) <= 0) or not np.allclose(np.diff(x), x[1] - x[0], rtol=1e-6):
        raise ValueError("pde_find needs sorted, uniformly spaced points (a grid)")
    if np.isnan(data.u).any():
        raise ValueError("pde_find needs data without missing values")


def pde_find(
    data: SpaceTimeData, threshold: float = 0.05, degree: int = 2, order: int = 2,
    constant: bool = False,
) -> dict[str, float]:
    """Run PDE-FIND on 1D data observed on a uniform grid at uniform times.

    Args:
        data: 1D data with sorted, uniformly spaced points and no missing values.
        threshold: STLSQ threshold on the normalised coefficients.
        degree: polynomial degree in ``u`` multiplying the derivatives.
        order: highest derivative order.
        constant: include the constant term.

    Returns:
        Selected term name -> coefficient, in the data's units.
    """
    ps = _import_pysindy()
    _check_grid(data)
    x = data.x[:, 0]
    library = ps.PDELibrary(
        function_library=ps.PolynomialLibrary(degree=degree, include_bias=False),
        derivative_order=order,
        spatial_grid=x,
        include_bias=constant,
        differentiation_method=ps.SmoothedFiniteDifference,
    )
    model = ps.SINDy(
        optimizer=ps.STLSQ(threshold=threshold, alpha=1e-5, normalize_columns=True),
        feature_library=library,
        differentiation_method=ps.SmoothedFiniteDifference(axis=1),
    )
    u = data.u.T[:, :, None]  # (space, time, 1)
    model.fit(u, t=float(data.t[1] - data.t[0]))
    return _found(model)


def _found(model) -> dict[str, float]:
    names = model.get_feature_names()
    coef = model.coefficients()[0]
    return {
        _term_name(n) or "1": float(c) for n, c in zip(names, coef, strict=True) if c != 0.0
    }


def weak_pde_find(
    data: SpaceTimeData, threshold: float = 0.05, degree: int = 2, order: int = 2,
    constant: bool = False, test_functions: int = 200,
) -> dict[str, float]:
    """PySINDy's weak-form library (weak SINDy, Messenger & Bortz 2021) on 1D gridded data.

    Args:
        data: as for :func:`pde_find`.
        threshold: STLSQ threshold on the normalised coefficients.
        degree: polynomial degree in ``u``.
        order: highest derivative order.
        constant: include the constant term.
        test_functions: number of space-time subdomains (PySINDy's ``K``).
    """
    ps = _import_pysindy()
    _check_grid(data)
    grid = np.stack(np.meshgrid(data.x[:, 0], data.t, indexing="ij"), axis=-1)
    library = ps.WeakPDELibrary(
        function_library=ps.PolynomialLibrary(degree=degree, include_bias=False),
        derivative_order=order,
        spatiotemporal_grid=grid,
        is_uniform=True,
        K=test_functions,
        include_bias=constant,
    )
    model = ps.SINDy(
        optimizer=ps.STLSQ(threshold=threshold, alpha=1e-12, normalize_columns=True),
        feature_library=library,
    )
    model.fit(data.u.T[:, :, None], t=float(data.t[1] - data.t[0]))
    return _found(model)
