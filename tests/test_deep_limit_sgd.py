"""SGD on constant-weight ResNets follows SGD on the neural ODE, at first order in 1/N."""

from __future__ import annotations

from mpi4py import MPI

import pytest
import torch

from dolfinx_nn.deep_limit.sgd import fixed_batches, run_sgd
from dolfinx_nn.deep_limit.sgd_convergence import SGDConfig, sgd_convergence

DEPTHS = (1, 2, 4, 8, 16, 32)


@pytest.fixture(scope="module")
def result() -> dict:
    config = SGDConfig(
        activation="tanh", n_train=32, batch_size=8, steps=10, lr=0.1, depths=DEPTHS,
        ode_options={"method": "dopri5", "rtol": 1e-10, "atol": 1e-10},
    )
    return sgd_convergence(config, MPI.COMM_WORLD)


def test_trajectory_distance_decreases_monotonically(result: dict):
    d = result["trajectory_distance"]
    tail = [d[i] for i, n in enumerate(DEPTHS) if n >= 4]
    assert all(a > b for a, b in zip(tail, tail[1:], strict=False)), d


def test_trajectories_and_losses_converge_at_first_order(result: dict):
    for key in ("trajectory_ratio", "loss_gap_ratio"):
        ratios = result[key][DEPTHS.index(4):]
        assert all(1.8 <= r <= 2.2 for r in ratios), (key, ratios)
    assert abs(result["trajectory_order"] - 1) < 0.1
    assert abs(result["loss_gap_order"] - 1) < 0.1
    assert result["trajectory_distance"][-1] < 1e-3


def test_every_rank_holds_the_same_result(result: dict):
    comm = MPI.COMM_WORLD
    values = comm.allgather(result["trajectory_distance"])
    assert all(v == values[0] for v in values)


def test_fixed_batches_cover_each_epoch():
    g = torch.Generator().manual_seed(0)
    batches = fixed_batches(10, 5, 4, g)
    assert len(batches) == 4
    assert sorted(torch.cat(batches[:2]).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="batch_size"):
        fixed_batches(10, 11, 1, g)


def test_sgd_rejects_non_finite_loss():
    model = torch.nn.Linear(2, 1).double()
    x = torch.tensor([[float("nan"), 0.0]], dtype=torch.float64)
    y = torch.zeros(1, dtype=torch.float64)
    with pytest.raises(FloatingPointError, match="nan"):
        run_sgd(torch.nn.Sequential(model, torch.nn.Flatten(0)), x, y, [torch.tensor([0])], 0.1)
