"""The optimizer phases of :func:`~dolfinx_nn.training.train`, one registry entry each.

A phase is a ``torch.optim`` optimizer run for ``<name>_steps`` steps of
:class:`~dolfinx_nn.training.TrainingConfig`; the phases run in the order of
``TrainingConfig.phases``.  Adding an optimizer is one entry of :data:`PHASES` (its factory
and the config fields that change its trajectory) plus those fields in
:class:`~dolfinx_nn.training.TrainingConfig`.

Two kinds of step:

* plain (``line_search=False``: Adam, SGD): one loss evaluation, then ``optimizer.step()``;
* line search (``line_search=True``: L-BFGS): ``optimizer.step(closure)``, which evaluates the
  loss several times and moves the parameters through trial points.  The loop keeps a copy of
  the parameters and of the optimizer's state (which such optimizers keep under the first
  parameter, as ``torch.optim.LBFGS`` does) to return to the last completed step if the
  step is interrupted, and it ends the run as ``"stationary"`` when a step leaves the
  parameters unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from dolfinx_nn.training.config import TrainingConfig

__all__ = ["LBFGS_MAX_LINE_SEARCH", "PHASES", "Phase", "get_phase", "make_optimizer"]

#: Function evaluations allowed in one L-BFGS line search.
LBFGS_MAX_LINE_SEARCH = 25


@dataclass(frozen=True)
class Phase:
    """One optimizer phase.

    Attributes:
        name: key in :data:`PHASES`; the phase runs ``TrainingConfig.<name>_steps`` steps.
        label: name shown in messages (``"Adam"``).
        make: ``make(parameters, config)`` returns the ``torch.optim.Optimizer``.
        settings: the :class:`~dolfinx_nn.training.TrainingConfig` fields that change the
            phase's trajectory (a resumed run must use the checkpoint's values).
        line_search: the optimizer's ``step(closure)`` evaluates the loss several times and
            moves the parameters through trial points (see the module docstring).
    """

    name: str
    label: str
    make: Callable[[list[torch.Tensor], TrainingConfig], torch.optim.Optimizer]
    settings: tuple[str, ...]
    line_search: bool = False


def _lbfgs(plist: list[torch.Tensor], cfg: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.LBFGS(
        plist,
        lr=cfg.lbfgs_lr,
        max_iter=1,
        max_eval=1 + LBFGS_MAX_LINE_SEARCH,
        history_size=cfg.lbfgs_history,
        line_search_fn="strong_wolfe",
        # Absolute thresholds would stall losses of small magnitude; a step that cannot
        # move the parameters ends the run as "stationary" instead.
        tolerance_grad=0.0,
        tolerance_change=0.0,
    )


#: The optimizer phases by name.
PHASES: dict[str, Phase] = {
    phase.name: phase
    for phase in (
        Phase("adam", "Adam", lambda p, cfg: torch.optim.Adam(p, lr=cfg.adam_lr), ("adam_lr",)),
        Phase("lbfgs", "L-BFGS", _lbfgs, ("lbfgs_lr", "lbfgs_history"), line_search=True),
        Phase(
            "sgd",
            "SGD",
            lambda p, cfg: torch.optim.SGD(p, lr=cfg.sgd_lr, momentum=cfg.sgd_momentum),
            ("sgd_lr", "sgd_momentum"),
        ),
    )
}


def get_phase(name: str) -> Phase:
    """The registry entry of phase ``name``.

    Raises:
        ValueError: ``name`` is not in :data:`PHASES` (the message lists the valid names).
    """
    try:
        return PHASES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown optimizer phase {name!r}; choose one of: {', '.join(PHASES)}"
        ) from None


def make_optimizer(
    name: str, plist: list[torch.Tensor], cfg: TrainingConfig
) -> torch.optim.Optimizer:
    """The optimizer of phase ``name`` over ``plist`` with the settings of ``cfg``."""
    return get_phase(name).make(plist, cfg)
