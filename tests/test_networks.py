"""The shared network layer: activation registry, MLP builder, pointwise derivatives."""

from __future__ import annotations

from mpi4py import MPI

import numpy as np
import pytest
import torch

from dolfinx_nn.networks import ACTIVATIONS, CoefficientNetwork, activation, mlp
from dolfinx_nn.networks.activations import SMOOTH
from dolfinx_nn.networks.pointwise import gradient, hessian, laplacian, partial_derivatives

RANK = MPI.COMM_WORLD.rank


def points(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 100 * RANK)  # other points on each rank
    return 2.0 * torch.rand(n, d, generator=g, dtype=torch.float64) - 1.0


def test_unknown_activation_lists_the_valid_names():
    with pytest.raises(ValueError, match="'swish'.*" + ", ".join(ACTIVATIONS)):
        activation("swish")
    with pytest.raises(ValueError, match="relu") as info:
        mlp([2, 3, 1], "relu6")
    assert all(name in str(info.value) for name in ACTIVATIONS)
    with pytest.raises(ValueError, match="choose one of: tanh, sigmoid, softplus"):
        activation("relu", allowed=SMOOTH)
    assert activation("sin")()(torch.tensor([np.pi / 2])).item() == 1.0


@pytest.mark.parametrize("sizes", [[0, 4, 1], [2], [2, 2.5, 1], [2, True, 1]])
def test_bad_mlp_sizes_are_rejected(sizes):
    with pytest.raises(ValueError, match=r"size.*" + str(sizes).replace("[", r"\[")):
        mlp(sizes)


def test_mlp_layout_shapes_and_dtype():
    torch.manual_seed(0)
    net = mlp([3, 8, 5, 2], "gelu", output_activation="softplus")
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Linear", "GELU", "Linear", "GELU", "Linear", "Softplus"]
    assert [p.shape for p in net.parameters()] == [
        (8, 3), (8,), (5, 8), (5,), (2, 5), (2,)
    ]
    y = net(points(7, 3, 0))
    assert y.shape == (7, 2) and y.dtype == torch.float64 and bool((y > 0).all())
    # sizes from numpy (e.g. a width computed with numpy) are integers too
    assert [p.shape for p in mlp(np.array([3, 8, 2]), "tanh").parameters()][0] == (8, 3)
    # the same seed gives the hand-written network (PyTorch's default initialisation)
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    torch.manual_seed(0)
    ours = mlp([3, 8, 1], init_dtype=torch.float32)
    for a, b in zip(ref.double().parameters(), ours.parameters(), strict=True):
        assert torch.equal(a, b)


def test_coefficient_network_starts_at_q_init():
    torch.manual_seed(0)
    net = CoefficientNetwork(np.zeros(2), np.ones(2), width=8, q_min=0.1, q_init=2.0)
    q = net(points(50, 2, 1))
    assert q.shape == (50,)
    # last weights scaled by 0.1: the untrained field is close to, not exactly, q_init
    assert torch.allclose(q, torch.full_like(q, 2.0), atol=0.2)
    with pytest.raises(ValueError, match="q_min"):
        CoefficientNetwork(np.zeros(2), np.ones(2), q_min=1.0, q_init=0.5)


def field(x: torch.Tensor) -> torch.Tensor:
    """``sin(x0) x1^2 + x0 x2^3``."""
    return torch.sin(x[:, 0]) * x[:, 1] ** 2 + x[:, 0] * x[:, 2] ** 3


def test_pointwise_derivatives_of_a_known_field():
    x = points(20, 3, 2)
    x0, x1, x2 = x.T
    grad_exact = torch.stack(
        [torch.cos(x0) * x1**2 + x2**3, 2 * torch.sin(x0) * x1, 3 * x0 * x2**2], dim=1
    )
    hess_exact = torch.zeros(20, 3, 3, dtype=torch.float64)
    hess_exact[:, 0, 0] = -torch.sin(x0) * x1**2
    hess_exact[:, 0, 1] = hess_exact[:, 1, 0] = 2 * torch.cos(x0) * x1
    hess_exact[:, 0, 2] = hess_exact[:, 2, 0] = 3 * x2**2
    hess_exact[:, 1, 1] = 2 * torch.sin(x0)
    hess_exact[:, 2, 2] = 6 * x0 * x2
    values, grad = gradient(field, x)
    torch.testing.assert_close(values, field(x), rtol=0, atol=1e-15)
    torch.testing.assert_close(grad, grad_exact, rtol=1e-14, atol=1e-14)
    v2, g2, hess = hessian(field, x)
    torch.testing.assert_close(hess, hess_exact, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(g2, grad_exact, rtol=1e-14, atol=1e-14)
    for dims in (2, 3):  # the Laplacian over the leading coordinates only
        _, _, lap = laplacian(field, x, dims)
        exact = torch.diagonal(hess_exact, dim1=1, dim2=2)[:, :dims].sum(1)
        torch.testing.assert_close(lap, exact, rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match="dims must be in 1..3"):
        laplacian(field, x, 4)
    with pytest.raises(ValueError, match="one value per point"):
        gradient(lambda y: y, x)
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        hessian(field, x[0])


def test_pointwise_derivatives_of_an_mlp_match_autograd_and_train():
    torch.manual_seed(3)
    net = mlp([3, 16, 16, 1], "tanh")
    x = points(6, 3, 4)
    values, grad, hess = hessian(net, x)
    for i in range(x.shape[0]):
        ref = torch.autograd.functional.hessian(lambda p: net(p[None])[0, 0], x[i])
        torch.testing.assert_close(hess[i], ref, rtol=1e-12, atol=1e-12)
    _, _, lap = laplacian(net, x, 2)
    torch.testing.assert_close(lap, hess[:, 0, 0] + hess[:, 1, 1], rtol=1e-12, atol=1e-12)
    # differentiable with respect to the parameters (a residual loss), by double backward
    params = [p for p in net.parameters()][:-1]  # the last bias does not enter a Laplacian
    ours = torch.autograd.grad((lap**2).sum(), params)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xr).sum(), xr, create_graph=True)
    lap_ref = sum(torch.autograd.grad(g[:, i].sum(), xr, create_graph=True)[0][:, i]
                  for i in range(2))
    ref = torch.autograd.grad((lap_ref**2).sum(), params)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    # evaluation only: no graph
    _, _, h = hessian(net, x, create_graph=False)
    assert not h.requires_grad and torch.equal(h, hess.detach())


def test_partial_derivatives_of_any_order_of_a_known_field():
    """Mixed partials up to order 3 of ``sin(x0) x1^2 + x0 x2^3`` against their formulas."""
    x = points(20, 3, 5)
    x0, x1, x2 = x.T
    zero = torch.zeros_like(x0)
    exact = {
        (): field(x),
        (2,): 3 * x0 * x2**2,
        (0, 1): 2 * torch.cos(x0) * x1,
        (1, 0): 2 * torch.cos(x0) * x1,  # any order of the coordinates
        (0, 0, 1): -2 * torch.sin(x0) * x1,
        (1, 0, 0): -2 * torch.sin(x0) * x1,
        (0, 0, 0): -torch.cos(x0) * x1**2,
        (0, 1, 1): 2 * torch.cos(x0),
        (0, 2, 2): 6 * x2,
        (2, 2, 2): 6 * x0,
        (0, 1, 2): zero,
        (1, 1, 1): zero,  # past the last power of x1: a constant, no graph
    }
    out = partial_derivatives(field, x, exact)
    assert set(out) == set(exact)
    for index, value in exact.items():
        torch.testing.assert_close(out[index], value, rtol=1e-14, atol=1e-14, msg=str(index))
    # the same coordinates split into blocks (space (n, 2), time (n,)): the same numbers
    blocks = partial_derivatives(
        lambda xy, t: field(torch.cat([xy, t[:, None]], dim=1)), (x[:, :2], x[:, 2]), exact
    )
    for index, value in exact.items():
        torch.testing.assert_close(blocks[index], value, rtol=1e-14, atol=1e-14, msg=str(index))
    with pytest.raises(ValueError, match=r"outside 0..2"):
        partial_derivatives(field, x, [(0, 3)])
    with pytest.raises(ValueError, match="one value per point"):
        partial_derivatives(lambda y: y, x, [(0,)])
    with pytest.raises(ValueError, match="number of points"):
        partial_derivatives(lambda a, b: a[:, 0] * b, (x[:, :2], x[:5, 2]), [(0,)])


def test_partial_derivatives_of_an_mlp_match_the_hessian_and_train():
    """Third partials of a network: symmetric in the coordinates, second ones equal to the
    Hessian's entries, and differentiable with respect to the parameters."""
    torch.manual_seed(4)
    net = mlp([2, 12, 12, 1], "tanh")
    x = points(30, 2, 6)
    wanted = [(0, 0), (0, 1), (1, 1), (0, 0, 1), (1, 0, 0), (0, 1, 0), (1, 1, 1)]
    out = partial_derivatives(net, x, wanted)
    _, _, hess = hessian(net, x)
    for i, j in ((0, 0), (0, 1), (1, 1)):
        torch.testing.assert_close(out[(i, j)], hess[:, i, j], rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(out[(1, 0, 0)], out[(0, 0, 1)], rtol=0, atol=0)
    # d/dx1 of the Hessian entry (0, 0) by three plain reverse passes
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xr).sum(), xr, create_graph=True)
    (h0,) = torch.autograd.grad(g[:, 0].sum(), xr, create_graph=True)
    (ref,) = torch.autograd.grad(h0[:, 0].sum(), xr)
    torch.testing.assert_close(out[(0, 0, 1)], ref[:, 1], rtol=1e-11, atol=1e-12)
    loss = (out[(1, 1, 1)] ** 2).sum()
    grads = torch.autograd.grad(loss, list(net.parameters())[:2])
    assert all(torch.isfinite(g).all() and g.abs().max() > 0 for g in grads)
    detached = partial_derivatives(net, x, wanted, create_graph=False)
    assert not any(v.requires_grad for v in detached.values())
    assert all(torch.equal(detached[k], out[k].detach()) for k in wanted)
