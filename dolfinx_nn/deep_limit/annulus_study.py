"""Experiment (c): test accuracy and loss on the annulus set versus depth, over seeds.

For each seed, every depth (and the neural ODE) starts from the same weights and sees the same
mini-batches; the seed changes the data, the initialization and the batch order.  Runs are
spread over MPI ranks; every rank returns the whole table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from mpi4py import MPI

import numpy as np
import torch
from torch import nn

from dolfinx_nn.deep_limit.annulus import annulus
from dolfinx_nn.deep_limit.blocks import dense_block
from dolfinx_nn.deep_limit.classifier import ODE, classifier
from dolfinx_nn.deep_limit.distribute import map_over_ranks
from dolfinx_nn.deep_limit.sgd import bce_loss, fixed_batches, run_sgd


@dataclass
class AnnulusConfig:
    """Settings of the annulus study."""

    dim: int = 3
    width: int = 16
    activation: str = "relu"
    n_train: int = 400
    n_test: int = 1000
    batch_size: int = 20
    epochs: int = 10
    lr: float = 0.05
    depths: Sequence[int] = (1, 2, 4, 8, 16, 32, 64)
    seeds: Sequence[int] = (0, 1, 2)
    ode_options: dict = field(default_factory=lambda: {"method": "rk4", "steps": 64})


def _one_run(config: AnnulusConfig, seed: int, depth: int | str) -> dict[str, float]:
    g = torch.Generator().manual_seed(seed)
    block = dense_block(config.dim, config.width, config.activation, generator=g)
    readout = nn.Linear(config.dim, 1).to(torch.float64)
    with torch.no_grad():
        bound = 1.0 / config.dim**0.5
        readout.weight.uniform_(-bound, bound, generator=g)
        readout.bias.uniform_(-bound, bound, generator=g)
    x, y = annulus(config.n_train, config.dim, generator=g)
    x_test, y_test = annulus(config.n_test, config.dim, generator=g)
    steps = config.epochs * (config.n_train // config.batch_size)
    batches = fixed_batches(config.n_train, config.batch_size, steps, g)
    model = classifier(block, readout, depth, config.ode_options)
    run = run_sgd(model, x, y, batches, config.lr, record=False)
    with torch.no_grad():
        logits = model(x_test)
        return {
            "test_loss": float(bce_loss(model, x_test, y_test)),
            "test_accuracy": float(((logits > 0).to(y_test.dtype) == y_test).double().mean()),
            "train_loss": float(bce_loss(model, x, y)),
            "last_batch_loss": float(run.losses[-1]),
        }


def annulus_study(config: AnnulusConfig, comm: MPI.Comm = MPI.COMM_WORLD) -> dict:
    """Run experiment (c).

    Returns:
        ``runs[label][metric]``: one value per seed; ``mean``/``std`` per label and metric,
        where labels are the depths (as strings) and ``"ode"``.
    """
    labels: list[int | str] = [*(int(n) for n in config.depths), ODE]
    jobs = [(seed, label) for seed in config.seeds for label in labels]
    values = map_over_ranks(lambda job: _one_run(config, *job), jobs, comm)
    runs: dict[str, dict[str, list[float]]] = {}
    for (_, label), metrics in zip(jobs, values, strict=True):
        entry = runs.setdefault(str(label), {})
        for key, value in metrics.items():
            entry.setdefault(key, []).append(value)
    summary = {
        label: {k: {"mean": float(np.mean(v)), "std": float(np.std(v))} for k, v in m.items()}
        for label, m in runs.items()
    }
    return {"config": asdict(config), "labels": [str(n) for n in labels], "runs": runs,
            "summary": summary}
