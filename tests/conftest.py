"""Shared fixtures; teardown as in DOLFINx's own test suite."""

from __future__ import annotations

import gc

from mpi4py import MPI

import dolfinx
import dolfinx.fem
import dolfinx.mesh
import pytest
import torch

from dolfinx_nn.petsc_problems import collect_garbage

# Meshes and function spaces made during a test, kept until its teardown.  Under MPI, petsc4py
# does not destroy a dropped object but puts it in PETSc's garbage of the object's communicator
# (destroying is collective), and only PETSc.garbage_cleanup(comm) on that communicator frees
# it.  DOLFINx makes a communicator per mesh and per index map; once they are gone, nothing can
# reach that garbage, and a suite of a thousand small problems exhausts MPI's 2048
# communicators.  The teardown cleans every such communicator while it still exists.
_MADE: list = []


def _record(cls: type) -> None:
    init = cls.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        _MADE.append(self)

    cls.__init__ = __init__


_record(dolfinx.mesh.Mesh)
_record(dolfinx.fem.FunctionSpace)


def _communicators(obj) -> list[MPI.Comm]:
    if isinstance(obj, dolfinx.mesh.Mesh):
        return [obj.comm]
    return [obj.dofmap.index_map.comm]


@pytest.fixture(autouse=True)
def _collect_and_sync():
    """Collect PETSc objects at the same point on every rank and keep ranks in step."""
    yield
    gc.collect()
    for obj in _MADE:  # made in the same order on every rank of each communicator
        for comm in _communicators(obj):
            collect_garbage(comm)
    _MADE.clear()
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


def pytest_collection_finish(session):
    # The teardown's gc.collect() walks every object the collector tracks: after collection,
    # ~240k objects of imported modules (torch, ufl, sympy, ...), 0.3 s per call and half of
    # the suite's time.  Objects that survive a full collection are frozen (out of the
    # collector's reach) here and at each test module's end, where they are unfrozen and
    # collected again first; everything made during a module's tests stays tracked, so its
    # cycles are collected in each test's teardown before the PETSc garbage is cleaned, as
    # before, and a cycle made of older objects at the latest when the module ends.
    gc.collect()
    gc.freeze()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    if nextitem is None or nextitem.path != item.path:  # the module's fixtures are finalised
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        collect_garbage(MPI.COMM_WORLD)


def pytest_collection_modifyitems(config, items):
    if MPI.COMM_WORLD.size > 1:
        skip = pytest.mark.skip(reason="runs on one rank only")
        for item in items:
            if "skip_in_parallel" in item.keywords:
                item.add_marker(skip)
