"""Monge-Ampere building blocks: convexity of the ICNN, Hessians, determinants, cases, loss."""

from __future__ import annotations

from mpi4py import MPI

import numpy as np
import pytest
import torch

from dolfinx_nn.monge_ampere import (
    CASES,
    Ball,
    Box,
    MongeAmpereLoss,
    batched_det,
    get_case,
    make_domain,
    make_network,
    min_eigenvalues,
)
from dolfinx_nn.networks.pointwise import hessian


@pytest.mark.parametrize("dim", [2, 3, 5])
@pytest.mark.parametrize("activation", ["softplus", "elu"])
def test_icnn_is_convex_for_random_weights(dim, activation):
    rng = np.random.default_rng(dim)
    worst = np.inf
    for trial in range(3):
        torch.manual_seed(100 * dim + trial)
        net = make_network("icnn", dim, width=16, depth=3, activation=activation)
        with torch.no_grad():  # far from the initialisation: large, mixed-sign raw weights
            for p in net.parameters():
                p.copy_(3.0 * torch.randn_like(p))
        x = torch.as_tensor(rng.uniform(-2.0, 3.0, size=(500, dim)))
        _, _, hess = hessian(net, x, create_graph=False)
        worst = min(worst, float(min_eigenvalues(hess).min()))
    assert worst >= -1e-10


def test_ffnn_is_not_convex_in_general():
    torch.manual_seed(1)
    net = make_network("ffnn", 2, width=16, depth=2)
    x = torch.rand(500, 2, dtype=torch.float64)
    _, _, hess = hessian(net, x, create_graph=False)
    assert float(min_eigenvalues(hess).min()) < -1e-6


@pytest.mark.parametrize("dim", [2, 3, 4, 6])
def test_batched_det_matches_numpy_on_spd(dim):
    rng = np.random.default_rng(dim)
    a = rng.standard_normal((50, dim, dim))
    spd = a @ a.transpose(0, 2, 1) + 0.1 * np.eye(dim)
    ours = batched_det(torch.as_tensor(spd)).numpy()
    np.testing.assert_allclose(ours, np.linalg.det(spd), rtol=1e-12)
    assert np.all(ours > 0)


def test_hessians_of_a_quadratic_are_exact():
    a = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 3.0]], dtype=torch.float64)
    x = torch.rand(20, 3, dtype=torch.float64)
    values, _, hess = hessian(lambda y: 0.5 * ((y @ a) * y).sum(-1), x)
    torch.testing.assert_close(hess, a.expand(20, 3, 3))
    torch.testing.assert_close(values, 0.5 * ((x @ a) * x).sum(-1))


@pytest.mark.parametrize(
    "name,dim,domain", [("smooth", 2, "cube"), ("smooth", 4, "ball"), ("brenner", 2, "cube"),
                        ("singular", 2, "cube"), ("degenerate", 2, "cube"),
                        ("degenerate", 3, "ball")],
)
def test_case_sources_are_determinants_of_the_exact_hessian(name, dim, domain):
    """The formulas for f agree with det D^2 u computed by autograd from u."""
    case = get_case(name)
    dom = make_domain(domain, dim)
    x = torch.as_tensor(dom.sample_interior(400, np.random.default_rng(0), MPI.COMM_SELF))
    center = list(dom.center)
    _, _, hess = hessian(lambda y: case.u_torch(y, center), x, create_graph=False)
    f = case.f_torch(x, center)
    torch.testing.assert_close(batched_det(hess), f, rtol=1e-9, atol=1e-9)
    assert float(min_eigenvalues(hess).min()) >= -1e-9  # the exact solutions are convex


def test_domains_sample_inside_and_on_the_boundary(comm):
    rng = np.random.default_rng(comm.rank)
    box, ball = Box(3), Ball(4, radius=2.0)
    xi = box.sample_interior(1000, rng, comm)
    xb = box.sample_boundary(1000, rng, comm)
    assert comm.allreduce(len(xi), op=MPI.SUM) == 1000
    assert np.all((xi >= 0) & (xi <= 1))
    assert np.allclose(np.min(np.minimum(xb, 1 - xb), axis=1), 0.0)
    assert np.all(np.linalg.norm(ball.sample_interior(500, rng, comm), axis=1) <= 2.0)
    np.testing.assert_allclose(np.linalg.norm(ball.sample_boundary(500, rng, comm), axis=1), 2.0)


def test_loss_is_global_and_gradients_sum_to_the_serial_ones(comm):
    """Points split over ranks give the loss and (after syncing) gradient of all points."""
    from dolfinx_nn.parallel import sync_gradients

    case, dom = get_case("smooth"), Box(2)
    rng = np.random.default_rng(7)  # same stream on every rank: the full point sets
    xi_all = torch.as_tensor(dom.sample_interior(60, rng, MPI.COMM_SELF))
    xb_all = torch.as_tensor(dom.sample_boundary(20, rng, MPI.COMM_SELF))
    mine = slice(comm.rank, None, comm.size)

    def loss_on(xi, xb, c):
        return MongeAmpereLoss(xi, case.f_torch(xi, [0.5, 0.5]), xb, case.u_torch(xb, [0.5, 0.5]),
                               convexity_weight=1.0, comm=c)

    torch.manual_seed(3)
    net = make_network("ffnn", 2, width=8, depth=2)
    serial = loss_on(xi_all, xb_all, MPI.COMM_SELF)(net)
    serial.backward()
    serial_grad = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    split = loss_on(xi_all[mine], xb_all[mine], comm)(net)
    split.backward()
    sync_gradients(net, comm)
    assert comm.allreduce(split.item(), op=MPI.MAX) == pytest.approx(serial.item(), rel=1e-12)
    for p, g in zip(net.parameters(), serial_grad, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12)


def test_bad_input_is_rejected_with_the_valid_choices():
    with pytest.raises(ValueError, match="smooth"):
        get_case("gaussian")
    with pytest.raises(ValueError, match="icnn"):
        make_network("resnet", 2)
    with pytest.raises(ValueError, match="softplus"):
        make_network("icnn", 2, activation="tanh")  # not convex and non-decreasing
    with pytest.raises(ValueError, match="d = 3"):
        CASES["brenner"].check_dim(3)
    with pytest.raises(ValueError, match="cube, ball"):
        make_domain("sphere", 2)
    x = torch.rand(10, 2, dtype=torch.float64)
    f = torch.full((10,), float("nan"), dtype=torch.float64)
    with pytest.raises(ValueError, match="non-finite"):
        MongeAmpereLoss(x, f, x, x[:, 0], comm=MPI.COMM_SELF)


def test_mesh_domain_samples_from_a_distributed_mesh(comm):
    """Collocation points on a gmsh-built domain with a hole, split over the ranks."""
    from dolfinx_nn.meshes import HOLE_CENTER, HOLE_RADIUS, create_mesh
    from dolfinx_nn.monge_ampere import MeshDomain

    domain = MeshDomain(create_mesh(comm, "square-with-hole", 8))
    np.testing.assert_allclose(domain.bounds[0], [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(domain.bounds[1], [1.0, 1.0], atol=1e-12)
    rng = np.random.default_rng(comm.rank)
    xi = domain.sample_interior(400, rng, comm)
    xb = domain.sample_boundary(200, rng, comm)
    assert comm.allreduce(len(xi), op=MPI.SUM) == 400
    assert comm.allreduce(len(xb), op=MPI.SUM) == 200
    assert xi.shape[1] == 2
    # polygonal hole: its vertices lie on the circle, points stay outside the inscribed one
    dist = np.linalg.norm(xi - np.asarray(HOLE_CENTER[:2]), axis=1)
    assert np.all(dist > 0.9 * HOLE_RADIUS)
