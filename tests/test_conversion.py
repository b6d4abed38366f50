"""to_torch / from_torch: the rank's owned dofs, block size flattened, ghosts updated."""

from __future__ import annotations

from mpi4py import MPI

import numpy as np
import pytest
import torch
from dolfinx import fem, mesh

import dolfinx_nn as dnn


@pytest.fixture(params=[("Lagrange", 1, ()), ("Lagrange", 2, (2,)), ("DG", 0, ())],
                ids=["P1", "P2-vector", "DG0"])
def space(request):
    family, degree, shape = request.param
    msh = mesh.create_unit_square(MPI.COMM_WORLD, 5, 4)
    return fem.functionspace(msh, (family, degree, shape))


def _field(x):
    return np.vstack([np.sin(3 * x[0]) + x[1], x[0] * x[1]])


def test_round_trip_owned_dofs_and_ghosts(space):
    V = space
    f = fem.Function(V)
    bs = V.dofmap.index_map_bs
    f.interpolate(lambda x: _field(x)[:bs] if bs > 1 else _field(x)[0])
    imap = V.dofmap.index_map
    n = imap.size_local * bs
    t = dnn.to_torch(f)
    assert t.shape == (n,) and t.dtype == torch.float64
    np.testing.assert_array_equal(t.numpy(), f.x.array[:n])
    t += 1.0  # a copy: f is unchanged
    assert not np.array_equal(t.numpy(), f.x.array[:n])

    g = fem.Function(V)
    assert dnn.from_torch(2.0 * dnn.to_torch(f), g) is g
    # owned values and ghosts both equal 2 f: the ghosts came from their owners
    np.testing.assert_allclose(g.x.array, 2.0 * f.x.array, rtol=0, atol=1e-14)
    if bs > 1:  # (nodes, components), DOLFINx's order, is accepted too
        h = fem.Function(V)
        dnn.from_torch(dnn.to_torch(f).reshape(-1, bs).float(), h)
        np.testing.assert_allclose(h.x.array, f.x.array, atol=1e-6)
    total = MPI.COMM_WORLD.allreduce(n)
    assert total == imap.size_global * bs


def test_dtype_and_errors():
    msh = mesh.create_unit_square(MPI.COMM_WORLD, 3, 3)
    V = fem.functionspace(msh, ("Lagrange", 1))
    f = fem.Function(V)
    assert dnn.to_torch(f, dtype=torch.float32).dtype == torch.float32
    with pytest.raises(TypeError, match="floating"):
        dnn.to_torch(f, dtype=torch.int64)
    with pytest.raises(TypeError, match="dolfinx.fem.Function"):
        dnn.to_torch(f.x.array)
    n = V.dofmap.index_map.size_local
    # a wrong length on one rank only raises on every rank (no hang), naming the count
    bad = torch.zeros(n + (1 if MPI.COMM_WORLD.rank == 0 else 0))
    with pytest.raises(ValueError, match="owned"):
        dnn.from_torch(bad, f)
    with pytest.raises(ValueError, match="shape"):
        dnn.from_torch(torch.zeros(1, n) if n > 1 else torch.zeros(1, 1, 2), f)


def test_views_of_a_mixed_function_are_refused():
    """``w.sub(1)`` shares the whole mixed vector: reading or writing it as a tensor would
    touch every component. Refused, with the collapsed copy as the way out."""
    import basix.ufl

    msh = mesh.create_unit_square(MPI.COMM_WORLD, 4, 4)
    P2 = basix.ufl.element("Lagrange", "triangle", 2, shape=(2,))
    P1 = basix.ufl.element("Lagrange", "triangle", 1)
    W = fem.functionspace(msh, basix.ufl.mixed_element([P2, P1]))
    w = fem.Function(W)
    w.sub(0).interpolate(lambda x: np.vstack([1.0 + x[0], 1.0 + x[1]]))
    before = w.x.array.copy()
    with pytest.raises(ValueError, match=r"collapse"):
        dnn.to_torch(w.sub(1))
    with pytest.raises(ValueError, match=r"collapse"):
        dnn.from_torch(torch.zeros(3), w.sub(1))
    np.testing.assert_array_equal(w.x.array, before)
    p, _ = W.sub(1).collapse()
    t = dnn.to_torch(w.sub(1).collapse())  # the collapsed copy has the sub-space's size
    assert t.numel() == p.dofmap.index_map.size_local * p.dofmap.index_map_bs
