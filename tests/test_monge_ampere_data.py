"""Monge-Ampere data: loss scales that cannot vanish, checks of f and g, singular and noisy
data in the FEM reference, mesh sequencing for every resolution."""

from __future__ import annotations

from dataclasses import replace

import dolfinx
import numpy as np
import pytest
import torch

from dolfinx_nn.monge_ampere import (
    DEFAULT_TRAINING,
    Ball,
    Box,
    MongeAmpereLoss,
    NetworkConfig,
    formula_case,
    get_case,
    make_network,
    sequence_resolutions,
    solve_fem,
    solve_fem_sequence,
    solve_network,
)


def test_loss_is_invariant_to_shifting_g(comm):
    """L(u + c; g + c) = L(u; g), also for g = 0 (the old scale mean g^2 vanished there)."""
    rng = np.random.default_rng(comm.rank)
    dom = Ball(2)
    xi = torch.as_tensor(dom.sample_interior(60, rng, comm))
    xb = torch.as_tensor(dom.sample_boundary(30, rng, comm))
    f = torch.ones(len(xi), dtype=torch.float64)
    torch.manual_seed(0)
    net = make_network("ffnn", 2, width=8, depth=2)
    values = {}
    for shift in (0.0, 1.0, 1e3):
        loss = MongeAmpereLoss(xi, f, xb, torch.full((len(xb),), shift, dtype=torch.float64),
                               convexity_weight=1.0, comm=comm)
        values[shift] = float(loss(lambda x, c=shift: net(x) + c).detach())
        assert loss.solution_scale == pytest.approx(0.5, rel=1e-3)  # |x|^2/2 on the unit ball
    assert values[1.0] == pytest.approx(values[0.0], rel=1e-9)
    assert values[1e3] == pytest.approx(values[0.0], rel=1e-6)
    # f = 0 and affine g: the residual scale comes from g's variation, finite and non-zero
    loss = MongeAmpereLoss(xi, 0 * f, xb, xb[:, 0] + 2.0, comm=comm)
    assert 0.0 < loss.residual_scale < np.inf and loss.scales["set_by"] == "g"


def test_zero_boundary_data_train_like_shifted_data(comm):
    """f = 1, g = 0 on the unit ball (u = (|x|^2 - 1)/2) and the same problem shifted by 1:
    the old loss gave error 1.46 (final loss 3e300) for g = 0 and 4.5e-4 for g = 1."""
    config = NetworkConfig(training=replace(DEFAULT_TRAINING, adam_steps=60, lbfgs_steps=20),
                           n_interior=200, n_boundary=100, n_test=2000)
    results = {}
    for shift in (0, 1):
        case = formula_case("1", str(shift), f"(x[0]**2 + x[1]**2 - 1)/2 + {shift}", dim=2)
        results[shift] = solve_network(case, Ball(2), config)
    assert results[0].rel_l2_error < 1e-2
    assert results[0].max_error < 3 * results[1].max_error + 1e-3
    assert results[0].loss_scales["solution_scale"] == results[1].loss_scales["solution_scale"]


def test_bad_data_are_refused_before_training_or_solving(comm):
    square = dolfinx.mesh.create_unit_square(comm, 4, 4)
    config = NetworkConfig(training=replace(DEFAULT_TRAINING, adam_steps=1, lbfgs_steps=0),
                           n_interior=20, n_boundary=10, n_test=10)
    with pytest.raises(ValueError, match=r"f must be finite and >= 0: f = -1 at x = \("):
        solve_network(formula_case("-1", "0", dim=2), Box(2), config)
    with pytest.raises(ValueError, match="g must be finite: g = inf .*boundary collocation"):
        solve_network(formula_case("1", "1/x[0]", dim=2), Box(2), config)
    # the FEM's own points: quadrature points for f, boundary nodes for g
    with pytest.raises(ValueError, match=r"f = -.* \(FEM quadrature point\)"):
        solve_fem(formula_case("x[0] - 0.5", "0", dim=2), square)
    with pytest.raises(ValueError, match=r"f = nan .*FEM quadrature point"):
        solve_fem(formula_case("sqrt(x[0] - 0.01)", "0", dim=2), square)
    with pytest.raises(ValueError, match=r"g = inf at x = \(.*FEM boundary node"):
        solve_fem(formula_case("1", "1/x[0]", dim=2), square)


def test_noisy_singular_case_has_a_fem_reference(comm):
    """f of `singular` is infinite at the corner vertex (1, 1); the noise is a P1 factor, so f
    is only evaluated at quadrature points (it used to fail with NANORINF after 0 its)."""
    meshes = (dolfinx.mesh.create_unit_square(comm, n, n) for n in (4, 8))
    results = solve_fem_sequence(get_case("singular"), meshes, center=[0.5, 0.5], noise=0.01)
    # noise-free: 7.89e-3 at 8 x 8 (docs/monge_ampere.md)
    assert results[-1].rel_l2_error < 1.2e-2
    assert results[-1].min_hessian_eigenvalue > 0.1


def test_mesh_sequencing_works_for_every_resolution(comm):
    assert sequence_resolutions(32) == [4, 8, 16, 32]
    assert sequence_resolutions(15) == [4, 8, 15]
    assert sequence_resolutions(17) == [5, 9, 17]
    assert sequence_resolutions(24) == [6, 12, 24]
    assert sequence_resolutions(6) == [6]
    # brenner at 15 cells per edge used to get a single mesh and fail after 3 Newton solves
    meshes = (dolfinx.mesh.create_unit_square(comm, n, n) for n in sequence_resolutions(15))
    results = solve_fem_sequence(get_case("brenner"), meshes, center=[0.5, 0.5])
    assert results[-1].strategy == "interpolated"
    assert results[-1].rel_l2_error < 1e-4  # 3.2e-5 measured (32 x 32: 6.0e-6)


def test_fem_failure_says_how_to_monitor_newton(comm):
    from dolfinx_nn.monge_ampere import FEMSolveError

    case = formula_case("1", "-(x[0]**2 + x[1]**2)", dim=2)
    with pytest.raises(FEMSolveError, match='PETSC_OPTIONS="-monge_ampere_snes_monitor"'):
        solve_fem(case, dolfinx.mesh.create_unit_square(comm, 2, 2))


def test_check_data_takes_ranks_without_points(comm):
    """A rank holding no points (a small mesh on many ranks) joins the check and its error."""
    from dolfinx_nn.monge_ampere.cases import check_data

    empty = np.empty((0, 2))
    check_data("g", empty, np.empty(0), comm)  # nothing to refuse anywhere
    check_data("g", empty.ravel(), np.empty(0), comm)  # flat points, no width to infer
    if comm.rank == 0:
        points, values = np.array([[0.5, 0.25]]), np.array([np.nan])
    else:
        points, values = empty, np.empty(0)
    with pytest.raises(ValueError, match=r"g = nan at x = \(0.5, 0.25\).*1 such point"):
        check_data("g", points, values, comm)
