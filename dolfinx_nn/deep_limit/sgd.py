"""Plain mini-batch SGD on a fixed batch sequence, recording the parameter trajectory.

The deep-limit theorem compares SGD runs of different depths step by step, so the batches and
the step size are inputs, and every iterate is kept.  The steps are the SGD phase of the
shared :func:`~dolfinx_nn.training.train` (its per-step callback picks the next batch and
records the iterate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mpi4py import MPI

import torch
from torch import nn

from dolfinx_nn.deep_limit.classifier import parameter_vector
from dolfinx_nn.training import TrainingConfig, train


@dataclass
class SGDRun:
    """One SGD run.

    Attributes:
        parameters: iterates ``theta_0, ..., theta_K``, shape ``(K + 1, P)``.
        losses: mini-batch loss at each step, shape ``(K,)`` (before the update).
    """

    parameters: torch.Tensor
    losses: torch.Tensor


def bce_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of the logits ``model(x)`` against labels ``y`` in {0, 1}."""
    return nn.functional.binary_cross_entropy_with_logits(model(x), y)


def fixed_batches(
    n: int, batch_size: int, steps: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Index batches for ``steps`` SGD steps: epochs of random permutations of ``range(n)``."""
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, {n}], got {batch_size!r}")
    batches: list[torch.Tensor] = []
    while len(batches) < steps:
        perm = torch.randperm(n, generator=generator)
        batches.extend(perm[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size))
    return batches[:steps]


def run_sgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batches: Sequence[torch.Tensor],
    lr: float,
    record: bool = True,
) -> SGDRun:
    """SGD with step ``lr`` on ``bce_loss`` over the given index batches.

    Args:
        model: trained in place.
        x, y: the data set.
        batches: one index tensor per step.
        lr: step size.
        record: keep every iterate (else only the first and last).

    Raises:
        ValueError: ``lr`` is not positive.
        FloatingPointError: the loss or its gradient is not finite (naming the step).
    """
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    iterates = [parameter_vector(model)]
    done = [0]  # steps taken: the index of the next batch
    dtypes: list[torch.dtype] = []

    def batch_loss() -> torch.Tensor:
        idx = batches[done[0]]
        loss = bce_loss(model, x[idx], y[idx])
        dtypes[:] = [loss.dtype]
        return loss

    def after_step(steps: int, loss: float) -> None:
        done[0] = steps
        if record:
            iterates.append(parameter_vector(model))

    config = TrainingConfig(adam_steps=0, lbfgs_steps=0, sgd_steps=len(batches), sgd_lr=lr,
                            phases=("sgd",), seed=None)
    # every rank runs the same replicated SGD: no gradient sum, no progress display
    history = train(batch_loss, model, config, comm=MPI.COMM_SELF, desc=None,
                    callback=after_step)
    if not record:
        iterates.append(parameter_vector(model))
    losses = torch.tensor(history.losses, dtype=dtypes[0] if dtypes else torch.float64)
    return SGDRun(torch.stack(iterates), losses)
