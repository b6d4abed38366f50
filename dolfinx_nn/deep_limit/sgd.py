"""Plain mini-batch SGD on a fixed batch sequence, recording the parameter trajectory.

The deep-limit theorem compares SGD runs of different depths step by step, so the batches and
the step size are inputs, and every iterate is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dolfinx_nn.deep_limit.classifier import parameter_vector


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
    """
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    iterates = [parameter_vector(model)]
    losses = []
    for idx in batches:
        optimizer.zero_grad()
        loss = bce_loss(model, x[idx], y[idx])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"SGD loss became {loss.item()} at step {len(losses)}")
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        if record:
            iterates.append(parameter_vector(model))
    if not record:
        iterates.append(parameter_vector(model))
    return SGDRun(torch.stack(iterates), torch.stack(losses))
