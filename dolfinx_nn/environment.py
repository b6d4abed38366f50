"""Import-time checks of the numerical stack (run by ``import dolfinx_nn``; public so that a
user can call :func:`check_environment` to diagnose an installation).

mpi4py must be imported before DOLFINx (the PyPI wheels load ``libmpi`` through it), and
dolfinx_nn supports one DOLFINx minor series at a time.
"""

from __future__ import annotations

import importlib

SUPPORTED_DOLFINX = ((0, 11), (0, 12))  # [lower, upper)


def _missing(package: str, hint: str) -> ImportError:
    return ImportError(f"dolfinx_nn needs {package}, which could not be imported. {hint}")


def check_environment() -> None:
    """Import mpi4py, DOLFINx, petsc4py and torch in the right order, or fail clearly."""
    try:
        from mpi4py import MPI  # noqa: F401  (must precede dolfinx)
    except ImportError as e:
        raise _missing("mpi4py", "Install it with `pip install mpi4py`.") from e
    try:
        dolfinx = importlib.import_module("dolfinx")
    except ImportError as e:
        raise _missing(
            "DOLFINx 0.11",
            "Install it with `pip install dolfinx_nn[dolfinx]` (PyPI wheel "
            "dolfinx-solver-real, Python >= 3.12), or use conda/Spack/the official Docker image.",
        ) from e
    version = tuple(int(p) for p in dolfinx.__version__.split(".")[:2])
    lo, hi = SUPPORTED_DOLFINX
    if not lo <= version < hi:
        raise ImportError(
            f"dolfinx_nn supports DOLFINx >= {lo[0]}.{lo[1]}, < {hi[0]}.{hi[1]}; "
            f"found DOLFINx {dolfinx.__version__}."
        )
    try:
        from petsc4py import PETSc  # noqa: F401
    except ImportError as e:
        raise _missing("petsc4py", "It ships with the DOLFINx wheels and conda packages.") from e
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise _missing("PyTorch", "Install it with `pip install torch`.") from e
