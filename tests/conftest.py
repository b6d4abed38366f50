"""Shared fixtures; teardown as in DOLFINx's own test suite."""

from __future__ import annotations

import gc

from mpi4py import MPI

import pytest
import torch

from dolfinx_nn.petsc_problems import collect_garbage


@pytest.fixture(autouse=True)
def _collect_and_sync():
    """Collect PETSc objects at the same point on every rank and keep ranks in step."""
    yield
    gc.collect()
    collect_garbage(MPI.COMM_WORLD)
    MPI.COMM_WORLD.Barrier()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def comm() -> MPI.Comm:
    return MPI.COMM_WORLD


def pytest_configure(config):
    # One thread per process: the suite runs with one rank per core, and torch's own
    # thread pool would oversubscribe the cores (training steps get many times slower).
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if MPI.COMM_WORLD.size > 1:
        skip = pytest.mark.skip(reason="runs on one rank only")
        for item in items:
            if "skip_in_parallel" in item.keywords:
                item.add_marker(skip)
