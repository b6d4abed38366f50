"""A network right-hand side ``u_t = F(u, grad u, D^2 u)`` when no linear library fits.

``F`` is a small fully connected network of the *base factors* (``u`` and its derivatives
up to the library's order), trained by Adam (the shared :func:`~dolfinx_nn.training.train`)
on the surrogate's features in normalised variables.  Its relative residual, compared with
that of the sparse linear model, tells whether the library misses something.  The fit is
cheap and runs identically on every rank.
"""

from __future__ import annotations

import dataclasses

from mpi4py import MPI

import numpy as np
import torch

from dolfinx_nn.discovery.library import Term, base_factors, term_name
from dolfinx_nn.discovery.surrogate import SurrogateBase, term_features
from dolfinx_nn.networks.mlp import mlp
from dolfinx_nn.training import TrainingConfig, train

__all__ = ["DEFAULT_TRAINING", "NetworkRHS", "fit_network_rhs"]

#: Default optimizer settings of :func:`fit_network_rhs`: 2000 full-batch Adam steps at learning
#: rate 3e-3 (the initial weights are seeded by its ``seed``; the training does not reseed).
DEFAULT_TRAINING = TrainingConfig(adam_steps=2000, adam_lr=3e-3, lbfgs_steps=0, seed=None)


@dataclasses.dataclass
class NetworkRHS:
    """A trained ``F`` and how well it explains ``v_tau``."""

    network: torch.nn.Module
    inputs: list[str]  # names of the base factors fed to F
    rel_error: float  # ||v_tau - F|| / ||v_tau|| on held-out points
    input_scale: np.ndarray  # features are divided by these before F

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """``F`` (normalised variables) at base-factor values of shape (n, len(inputs))."""
        with torch.no_grad():
            z = torch.as_tensor(features / self.input_scale)
            return self.network(z)[:, 0].numpy()


def fit_network_rhs(
    surrogate: SurrogateBase,
    x: np.ndarray,
    t: np.ndarray,
    order: int = 2,
    width: int = 32,
    training: TrainingConfig = DEFAULT_TRAINING,
    seed: int = 0,
) -> NetworkRHS:
    """Fit ``v_tau = F(v, v_xi, v_xixi, ...)`` with a network F.

    Args:
        surrogate: fitted surrogate.
        x: feature points, shape (n, d); t: their times, shape (n,).
        order: highest derivative order among the inputs of F.
        width: neurons of the two hidden layers of F.
        training: optimizer settings (full batch; default :data:`DEFAULT_TRAINING`, 2000
            Adam steps at learning rate 3e-3).
        seed: seed of the initial weights and the 80/20 train/test split.

    Returns:
        The trained network and its relative error on the 20 % test points.

    Raises:
        ValueError: no training step, or ``width`` below 1.
        FloatingPointError: the training loss or its gradient is not finite.
    """
    steps = training.total_steps
    if steps < 1 or width < 1:
        raise ValueError(f"need training steps >= 1 and width >= 1, got {steps}, {width}")
    factors: list[Term] = [(f,) for f in base_factors(surrogate.dim, order)]
    theta, v_tau = term_features(surrogate, x, t, factors)
    scale = np.maximum(np.abs(theta).max(axis=0), 1e-300)
    rng = np.random.default_rng(seed)
    test = rng.random(v_tau.size) < 0.2
    torch.manual_seed(seed)
    net = mlp([theta.shape[1], width, width, 1], "tanh")
    z = torch.as_tensor(theta / scale)
    y = torch.as_tensor(v_tau)
    train_idx = torch.as_tensor(np.flatnonzero(~test))
    # the fit is replicated: every rank trains alone, silently
    train(lambda: torch.mean((net(z[train_idx])[:, 0] - y[train_idx]) ** 2), net, training,
          comm=MPI.COMM_SELF, desc=None)
    with torch.no_grad():
        pred = net(z)[:, 0].numpy()
    err = float(np.linalg.norm(pred[test] - v_tau[test]) / (np.linalg.norm(v_tau[test]) or 1.0))
    return NetworkRHS(net, [term_name(f) for f in factors], err, scale)
