"""The training layer shared by every experiment: optimizer phases, the loop, checkpoints.

:func:`train` minimises ``loss_fn()`` over the parameters of a module (or a list of tensors)
with the optimizer phases of a :class:`TrainingConfig`, in order: by default
``torch.optim.Adam`` for ``adam_steps`` steps, then ``torch.optim.LBFGS`` (strong Wolfe line
search, one iteration per step) for ``lbfgs_steps`` steps; ``torch.optim.SGD`` is another
phase (``sgd_steps``, ``phases=("sgd", ...)``).  The phases come from the registry
:data:`~dolfinx_nn.training.phases.PHASES`.

Under MPI every rank holds the same parameters; :func:`train` sums the ranks' gradient shares
before every optimizer step and takes every decision identically on every rank (see
:mod:`dolfinx_nn.training.loop`).

Checkpoints (rank 0 writes them atomically) hold the parameters, optimizer state, step,
history, RNG states, configuration and, optionally, a description of the problem being solved
(``problem=``: mesh, data, formulas, options); ``resume=True`` continues a run exactly where it
stopped, to the last bit, and refuses a checkpoint of another problem or configuration,
listing the differences (:mod:`dolfinx_nn.training.checkpoint`).  Ctrl-C writes a checkpoint
of the last completed step first.  A checkpoint that cannot be written (full disk, read-only
folder) raises :class:`~dolfinx_nn.output.OutputError` on every rank; at the end of training
the result is kept instead and the failure recorded in :attr:`History.checkpoint_error`.

Example:
    >>> cfg = TrainingConfig(adam_steps=500, lbfgs_steps=50, tolerance=1e-8)
    >>> history = train(lambda: ((net(x) - y) ** 2).mean(), net, cfg)  # doctest: +SKIP
    >>> history.losses[-1], history.stopped_because  # doctest: +SKIP
"""

from __future__ import annotations

from dolfinx_nn.training.checkpoint import CHECKPOINT_FORMAT, RESULT_FIELDS, RESUME_RTOL
from dolfinx_nn.training.config import TrainingConfig
from dolfinx_nn.training.history import History
from dolfinx_nn.training.loop import Params, train
from dolfinx_nn.training.phases import LBFGS_MAX_LINE_SEARCH, PHASES, Phase, get_phase

__all__ = [
    "CHECKPOINT_FORMAT",
    "LBFGS_MAX_LINE_SEARCH",
    "PHASES",
    "RESULT_FIELDS",
    "RESUME_RTOL",
    "History",
    "Params",
    "Phase",
    "TrainingConfig",
    "get_phase",
    "train",
]
