"""Point observations: exact values, ownership, adjoint and gradients (serial and MPI)."""

from __future__ import annotations

import gc
import weakref

from mpi4py import MPI

import dolfinx
import dolfinx.fem
import numpy as np
import pytest
import torch

import dolfinx_nn as dnn
from dolfinx_nn.meshes import create_mesh
from dolfinx_nn.point_evaluation import PointObservation


def polynomial(degree: int, gdim: int, bs: int):
    """A polynomial of the given degree that the Lagrange space represents exactly."""

    def scalar(x):
        if degree == 1:
            return 1.0 + x[0] - 2.0 * x[gdim - 1]
        return x[0] ** 2 - 3.0 * x[0] * x[gdim - 1] + 0.5 * x[gdim - 1] + 2.0

    def f(x):
        values = scalar(x)
        return values if bs == 1 else np.stack([(c + 1) * values + c for c in range(bs)])

    return f


def random_points(comm: MPI.Comm, m: int, gdim: int, seed: int = 0) -> np.ndarray:
    """The same random points on every rank."""
    return comm.bcast(np.random.default_rng(seed).random((m, gdim)), root=0)


CASES = [
    ("square", 4, ("Lagrange", 1)),
    ("square", 4, ("Lagrange", 2)),
    ("square", 4, ("Lagrange", 1, (2,))),
    ("cube", 2, ("Lagrange", 1)),
    ("cube", 2, ("Lagrange", 2)),
    ("cube", 2, ("Lagrange", 1, (3,))),
    ("square", 3, ("DG", 2, (2, 2))),
]


@pytest.mark.parametrize("kind, resolution, element", CASES)
def test_values_match_exact_polynomial_and_eval(comm, kind, resolution, element):
    mesh = create_mesh(comm, kind, resolution)
    gdim = mesh.geometry.dim
    V = dolfinx.fem.functionspace(mesh, element)
    bs = V.dofmap.index_map_bs
    f = polynomial(element[1], gdim, bs)
    u = dolfinx.fem.Function(V)
    u.interpolate(f)
    points = random_points(comm, 40, gdim)
    obs = PointObservation(V, points)
    expected_shape = (obs.num_local_points, *(int(s) for s in V.element.value_shape))

    values = obs(dnn.to_torch(u))
    assert values.shape == expected_shape and values.dtype == torch.float64
    exact = f(points[obs.local_indices].T).T.reshape(expected_shape)
    np.testing.assert_allclose(values.numpy(), exact, atol=1e-12, rtol=0)
    np.testing.assert_allclose(obs.evaluate(u), exact, atol=1e-12, rtol=0)

    padded = np.zeros((obs.num_local_points, 3))
    padded[:, :gdim] = points[obs.local_indices]
    reference = u.eval(padded, obs.cells).reshape(expected_shape)
    np.testing.assert_allclose(values.numpy(), reference, atol=1e-12, rtol=0)

    gathered = obs.gather(values.numpy())
    if comm.rank == 0:
        assert gathered.shape == (40, *expected_shape[1:])
        np.testing.assert_allclose(gathered, f(points.T).T.reshape(gathered.shape), atol=1e-12)
    else:
        assert gathered is None


@pytest.mark.parametrize("cell", ["quadrilateral", "hexahedron"])
def test_tensor_product_cells(comm, cell):
    gdim = 2 if cell == "quadrilateral" else 3
    cell_type = dolfinx.mesh.CellType[cell]
    if gdim == 2:
        mesh = dolfinx.mesh.create_unit_square(comm, 3, 4, cell_type)
    else:
        mesh = dolfinx.mesh.create_unit_cube(comm, 2, 2, 3, cell_type)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 2))
    f = polynomial(2, gdim, 1)
    u = dolfinx.fem.Function(V)
    u.interpolate(f)
    points = random_points(comm, 30, gdim)
    obs = PointObservation(V, points)
    exact = f(points[obs.local_indices].T)
    np.testing.assert_allclose(obs(dnn.to_torch(u)).numpy(), exact, atol=1e-12)
    assert comm.allreduce(obs.num_local_points) == 30


def test_padding_extends_to_points_just_outside(comm):
    # data slightly outside the meshed domain (e.g. on a curved boundary that the mesh
    # approximates) is evaluated by extending the nearest cell's polynomial: exact for P1 data
    mesh = create_mesh(comm, "square", 5)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    f = polynomial(1, 2, 1)
    u = dolfinx.fem.Function(V)
    u.interpolate(f)
    s = np.linspace(0.05, 0.95, 12)
    points = np.vstack([np.column_stack([s, -1e-3 * s]), np.column_stack([1.0 + 1e-3 * s, s])])
    with pytest.raises(ValueError, match="24 point.*outside the mesh"):
        PointObservation(V, points)
    with pytest.raises(ValueError, match="outside the mesh"):
        PointObservation(V, points, padding=5e-4)
    obs = PointObservation(V, points, padding=1e-3)
    assert comm.allreduce(obs.num_local_points) == 24
    np.testing.assert_allclose(obs.evaluate(u), f(points[obs.local_indices].T), atol=1e-12)


@pytest.mark.parametrize("ghosts", [False, True])
def test_every_point_owned_once_on_shared_vertices(comm, ghosts):
    # vertices of the mesh: many sit on facets shared by the ranks' partitions; with ghost
    # cells a rank also sees its neighbours' cells, which must not make it an owner
    mode = dolfinx.mesh.GhostMode.shared_facet if ghosts else dolfinx.mesh.GhostMode.none
    mesh = dolfinx.mesh.create_unit_square(comm, 4, 4, ghost_mode=mode)
    grid = np.stack(np.meshgrid(*[np.linspace(0.0, 1.0, 5)] * 2), axis=-1).reshape(-1, 2)
    obs = PointObservation(dolfinx.fem.functionspace(mesh, ("Lagrange", 1)), grid)
    owned = np.concatenate(comm.allgather(obs.local_indices))
    assert np.array_equal(np.sort(owned), np.arange(grid.shape[0]))
    counts = comm.allgather(obs.num_local_points)
    assert sum(counts) == 25
    everywhere = obs.gather(obs.local_indices.astype(float), root=None)
    np.testing.assert_array_equal(everywhere, np.arange(25.0))


def test_distributed_points(comm):
    mesh = create_mesh(comm, "square-with-hole", 6)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 2))
    f = polynomial(2, 2, 1)
    u = dolfinx.fem.Function(V)
    u.interpolate(f)
    rng = np.random.default_rng(10 + comm.rank)
    mine = rng.random((30 + comm.rank, 2))
    mine = mine[np.linalg.norm(mine - 0.5, axis=1) > 0.3]
    obs = PointObservation(V, mine, distributed=True)
    everyone = np.concatenate(comm.allgather(mine))
    assert obs.num_points == everyone.shape[0]
    np.testing.assert_allclose(obs.owned(mine, distributed=True), everyone[obs.local_indices])
    gathered = obs.gather(obs.evaluate(u), root=None)
    np.testing.assert_allclose(gathered, f(everyone.T), atol=1e-12)


def test_adjoint_identity(comm):
    mesh = create_mesh(comm, "cube", 2)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 2, (3,)))
    obs = PointObservation(V, random_points(comm, 25, 3))
    rng = np.random.default_rng(comm.rank)
    u = rng.standard_normal(V.dofmap.index_map.size_local * 3)
    g = rng.standard_normal((obs.num_local_points, 3))
    lhs = comm.allreduce(float(obs(torch.tensor(u)).numpy().ravel() @ g.ravel()))
    rhs = comm.allreduce(float(u @ obs.transpose(g)))
    assert lhs == pytest.approx(rhs, rel=1e-13)
    assert abs(lhs) > 1e-3


class _Scatter(torch.autograd.Function):
    """Global vector (same on every rank) -> this rank's owned slice; backward sums the shares."""

    @staticmethod
    def forward(ctx, z, begin, end, comm):
        ctx.shape, ctx.begin, ctx.end, ctx.comm = z.shape, begin, end, comm
        return z[begin:end].clone()

    @staticmethod
    def backward(ctx, g):
        full = torch.zeros(ctx.shape, dtype=g.dtype)
        full[ctx.begin : ctx.end] = g
        return torch.from_numpy(ctx.comm.allreduce(full.numpy(), op=MPI.SUM)), None, None, None


class _Collect(torch.autograd.Function):
    """Rank-local values at owned points -> all values in global point order, on every rank."""

    @staticmethod
    def forward(ctx, y, obs):
        ctx.obs = obs
        return torch.from_numpy(obs.gather(y.numpy(), root=None))

    @staticmethod
    def backward(ctx, g):
        return g[ctx.obs.local_indices].clone(), None


def test_gradcheck(comm):
    # The op couples ranks (off-rank dofs), so check the global map z -> y with z and y
    # replicated on every rank; every rank then makes the same collective calls.
    mesh = create_mesh(comm, "square", 2)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 2, (2,)))
    obs = PointObservation(V, random_points(comm, 6, 2))
    begin, end = (2 * r for r in V.dofmap.index_map.local_range)
    size = 2 * V.dofmap.index_map.size_global

    def global_map(z: torch.Tensor) -> torch.Tensor:
        return _Collect.apply(obs(_Scatter.apply(z, begin, end, comm)), obs)

    z = torch.from_numpy(comm.bcast(np.random.default_rng(1).standard_normal(size)))
    assert torch.autograd.gradcheck(global_map, (z.requires_grad_(),), eps=1e-6, atol=1e-8)


def test_backward_matches_transpose(comm):
    mesh = create_mesh(comm, "square", 4)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    obs = PointObservation(V, random_points(comm, 30, 2))
    u = torch.zeros(V.dofmap.index_map.size_local, dtype=torch.float64, requires_grad=True)
    weights = torch.linspace(1.0, 2.0, obs.num_local_points, dtype=torch.float64)
    (obs(u) * weights).sum().backward()
    np.testing.assert_allclose(u.grad.numpy(), obs.transpose(weights.numpy()), atol=1e-15)
    # every point carries a partition of unity: B^T 1 sums to the number of points
    assert comm.allreduce(float(obs.transpose(np.ones(obs.num_local_points)).sum())) == (
        pytest.approx(30.0, rel=1e-12)
    )


def test_point_outside_mesh_raises_on_every_rank(comm):
    mesh = create_mesh(comm, "square-with-hole", 4)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    points = np.array([[0.1, 0.1], [0.5, 0.5], [1.5, 0.2]])
    with pytest.raises(ValueError, match=r"#1 \[0.5, 0.5\], #2 \[1.5, 0.2\]"):
        PointObservation(V, points)


def test_bad_input(comm):
    mesh = create_mesh(comm, "square", 2)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    with pytest.raises(ValueError, match=r"shape \(m, 2\)"):
        PointObservation(V, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="not finite"):
        PointObservation(V, np.array([[0.5, np.nan]]))
    with pytest.raises(ValueError, match="Lagrange and DG"):
        PointObservation(dolfinx.fem.functionspace(mesh, ("N1curl", 1)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="collapse"):
        PointObservation(dolfinx.fem.functionspace(mesh, ("Lagrange", 1, (2,))).sub(1), [[0, 0]])
    obs = PointObservation(V, np.full((2, 2), 0.5))
    u = torch.zeros(V.dofmap.index_map.size_local, dtype=torch.float64)
    if comm.rank == 0:  # one rank's NaN must stop every rank before the collective product
        u[0:1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        obs(u)
    mine = np.full((1, 2), 0.5) if comm.rank else np.array([[0.5, np.inf]])
    with pytest.raises(ValueError, match="not finite"):
        PointObservation(V, mine, distributed=True)
    with pytest.raises(ValueError, match="owned dofs"):
        obs(torch.zeros(V.dofmap.index_map.size_local + 1, dtype=torch.float64))


def test_no_reference_cycles(comm):
    mesh = create_mesh(comm, "square", 2)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    obs = PointObservation(V, np.full((3, 2), 0.25))
    u = torch.ones(V.dofmap.index_map.size_local, dtype=torch.float64, requires_grad=True)
    obs(u).sum().backward()
    ref = weakref.ref(obs)
    del obs
    assert ref() is None


def test_network_fit_to_point_data_taylor(comm):
    # misfit of a network (through NeuralFunction) against point data: the gradient with
    # respect to the weights passes the Taylor test on any number of ranks
    from dolfinx_nn import NeuralFunction, global_sum, taylor_test

    mesh = create_mesh(comm, "square", 4)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 2, (2,)))
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    net = net.double()
    qn = NeuralFunction(net, V)
    points = random_points(comm, 20, 2, seed=3)
    obs = PointObservation(V, points)
    data = torch.from_numpy(obs.owned(np.column_stack([np.sin(points[:, 0]), points[:, 1]])))

    def misfit(params):
        return global_sum(((obs(qn(params)) - data) ** 2).sum(), comm)

    params = {k: v.detach() for k, v in net.named_parameters()}
    directions = {k: torch.randn_like(v) for k, v in params.items()}
    rates = taylor_test(misfit, params, directions, comm=comm)
    assert min(rates) > 1.9


def test_destroy_rule(comm):
    # destroy() frees the PETSc objects (collective) and the observation then refuses use;
    # the garbage collector never destroys them: a matrix still referenced stays usable
    mesh = create_mesh(comm, "square", 2)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    u = torch.ones(V.dofmap.index_map.size_local, dtype=torch.float64)
    with PointObservation(V, np.full((3, 2), 0.25)) as obs:
        np.testing.assert_allclose(obs(u).numpy(), np.ones(obs.num_local_points), atol=1e-14)
    assert obs.destroyed
    obs.destroy()
    with pytest.raises(RuntimeError, match="PointObservation was destroyed"):
        obs(u)
    with pytest.raises(RuntimeError, match="PointObservation was destroyed"):
        obs.transpose(np.ones(obs.num_local_points))
    with pytest.raises(RuntimeError, match="PointObservation was destroyed"):
        obs.matrix  # noqa: B018 (the freed Mat is not handed out)
    kept = PointObservation(V, np.full((3, 2), 0.25))
    matrix = kept.matrix
    del kept
    gc.collect()
    assert matrix.getSize() == (3, V.dofmap.index_map.size_global)
    matrix.destroy()


def test_bad_input_on_one_rank_raises_on_every_rank(comm):
    """A wrong row count or a non-tensor on one rank only: every rank raises (no hang)."""
    mesh = create_mesh(comm, "square", 2)
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
    obs = PointObservation(V, np.full((3, 2), 0.25))
    values = np.zeros(obs.num_local_points + (1 if comm.rank == 0 else 0))
    with pytest.raises(ValueError, match="rows"):
        obs.gather(values)
    u = torch.ones(V.dofmap.index_map.size_local, dtype=torch.float64)
    with pytest.raises(TypeError, match="torch.Tensor"):
        obs(u.numpy() if comm.rank == 0 else u)
    rows = np.zeros((3 + (1 if comm.rank == 0 else 0), 2))
    with pytest.raises(ValueError, match="rows"):
        obs.owned(rows)
    obs.destroy()
