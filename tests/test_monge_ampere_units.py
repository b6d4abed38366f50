"""The Monge-Ampere network and FEM reference give the same answer in any unit of length.

``det D^2 u = f`` is invariant under ``x = L y``, ``u = L^2 w``: the same domain given in
metres, millimetres or kilometres is the same problem, and the relative errors must not
depend on the unit.  Serial and under ``mpiexec -n 2``.
"""

from __future__ import annotations

from mpi4py import MPI

import dolfinx
import numpy as np
import pytest
import torch

from dolfinx_nn.monge_ampere import Ball, Box, PowerOfTwoUnits, formula_case, solve_fem
from dolfinx_nn.monge_ampere.network_solver import NetworkConfig, solve_network
from dolfinx_nn.monge_ampere.networks import length_exponent
from dolfinx_nn.training import TrainingConfig

#: a short run: enough to tell a trained network from one that cannot move (the failure in
#: millimetres was a relative L2 error of 0.79 against 5.4e-2 in metres)
SHORT = NetworkConfig(n_interior=400, n_boundary=200, n_test=2000,
                      training=TrainingConfig(adam_steps=40, adam_lr=1e-2, lbfgs_steps=10,
                                              seed=None, log_every=10))


def _smooth(length: float):
    """``u = L^2 exp(|x/L|^2 / 2)`` (the ``smooth`` case seen in units of ``L``)."""
    r2 = f"((x[0]/{length!r})**2 + (x[1]/{length!r})**2)"
    u = f"{length * length!r}*exp({r2}/2)"
    return formula_case(f"(1 + {r2})*exp({r2})", u, dim=2, exact=u)


@pytest.mark.parametrize(("volume", "dim", "k"), [
    (1.0, 2, 0), (np.pi, 2, 0), (4.0 * np.pi / 3.0, 3, 0), (np.pi**2 / 2.0, 4, 0),
    (4.0, 2, 1), (4.0 * np.pi, 2, 1), (0.25, 2, -1), (1e6, 2, 9), (1e-6, 2, -10),
    (8.0, 3, 1), (7.99, 3, 0), (2.0, 1, 1), (0.5, 1, -1)])
def test_length_exponent_brings_the_volume_to_one_to_two_to_the_d(volume, dim, k):
    """The unit cube and the unit balls keep k = 0; a domain scaled by 2 gets k + 1."""
    assert length_exponent(volume, dim) == k
    assert 1.0 <= volume * 2.0 ** (-k * dim) < 2.0**dim
    assert length_exponent(volume * 2.0**dim, dim) == k + 1


@pytest.mark.parametrize("volume", [0.0, -1.0, np.inf, np.nan])
def test_length_exponent_refuses_a_degenerate_domain(volume):
    with pytest.raises(ValueError, match="volume must be finite and positive"):
        length_exponent(volume, 2)


def test_a_power_of_two_unit_trains_bit_for_bit_alike():
    """The unit square and the square of side 1024 (the same problem in units of 1/1024):
    identical training, relative errors equal to round-off, absolute ones scaled by 1024^2."""
    comm = MPI.COMM_WORLD
    base = solve_network(_smooth(1.0), Box(2, [0, 0], [1, 1]), SHORT, comm)
    big = solve_network(_smooth(1024.0), Box(2, [0, 0], [1024, 1024]), SHORT, comm)
    assert not isinstance(base.net, PowerOfTwoUnits)  # the unit square is solved as it is
    assert isinstance(big.net, PowerOfTwoUnits) and big.net.exponent == 10
    assert big.rel_l2_error == pytest.approx(base.rel_l2_error, rel=1e-10)
    assert big.relative_residual == pytest.approx(base.relative_residual, rel=1e-10)
    assert big.max_error == pytest.approx(1024.0**2 * base.max_error, rel=1e-10)
    assert big.final_loss == pytest.approx(base.final_loss, rel=1e-10)
    # the unit disk and the disk of radius 2 (extents 2 and 4): the same problem too
    disk = solve_network(_smooth(1.0), Ball(2), SHORT, comm)
    double = solve_network(_smooth(2.0), Ball(2, radius=2.0), SHORT, comm)
    assert not isinstance(disk.net, PowerOfTwoUnits)
    assert isinstance(double.net, PowerOfTwoUnits) and double.net.exponent == 1
    assert double.rel_l2_error == pytest.approx(disk.rel_l2_error, rel=1e-10)
    assert double.relative_residual == pytest.approx(disk.relative_residual, rel=1e-10)
    # the trained network takes the user's coordinates
    x = torch.tensor([[0.25, 0.5]], dtype=torch.float64)
    with torch.no_grad():
        assert float(big.net(1024.0 * x)) == pytest.approx(1024.0**2 * float(base.net(x)),
                                                           rel=1e-10)


def test_millimetres_train_like_metres():
    """Side 1 and side 1000 (not a power of two: a domain 0.977 times the size in the
    network's units): the same accuracy, not 15 times worse as before the network worked in
    units of 2^k."""
    comm = MPI.COMM_WORLD
    metres = solve_network(_smooth(1.0), Box(2, [0, 0], [1, 1]), SHORT, comm)
    millimetres = solve_network(_smooth(1000.0), Box(2, [0, 0], [1000, 1000]), SHORT, comm)
    ratio = millimetres.rel_l2_error / metres.rel_l2_error
    assert 1 / 1.5 < ratio < 1.5, (metres.rel_l2_error, millimetres.rel_l2_error)


@pytest.mark.parametrize("length", [1e-3, 1e3])
def test_fem_converges_alike_in_every_unit(length):
    """Newton's absolute tolerance follows int |f| dx: the same iterations and errors as on the
    unit square (with a fixed 1e-10 the square in millimetres failed its line search on the
    round-off of the exact discrete solution, and in kilometres Newton stopped early)."""
    comm = MPI.COMM_WORLD
    results = []
    for side in (1.0, length):
        mesh = dolfinx.mesh.create_rectangle(comm, [[0.0, 0.0], [side, side]], [8, 8])
        results.append(solve_fem(_smooth(side), mesh))
    unit, scaled = results
    assert scaled.newton_iterations == unit.newton_iterations
    assert scaled.rel_l2_error == pytest.approx(unit.rel_l2_error, rel=1e-6)
    assert scaled.rel_h1_error == pytest.approx(unit.rel_h1_error, rel=1e-6)
    # absolute: u ~ L^2 over an area ~ L^2, so the norm scales like L^3
    assert scaled.h1_error == pytest.approx(length**3 * unit.h1_error, rel=1e-6)
    # the quadratic case whose Poisson guess is the exact discrete solution: no Newton step
    for side in (1.0, length):
        mesh = dolfinx.mesh.create_rectangle(comm, [[0.0, 0.0], [side, side]], [6, 6])
        quadratic = formula_case("1", "(x[0]**2 + x[1]**2)/2", dim=2,
                                 exact="(x[0]**2 + x[1]**2)/2")
        result = solve_fem(quadratic, mesh)
        assert result.newton_iterations == 0 and result.rel_l2_error < 1e-12
