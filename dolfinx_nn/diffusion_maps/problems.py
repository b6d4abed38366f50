"""Training problems whose optimizer trajectories are analysed.

Each builder returns a :class:`TrainingProblem`: a module, a mini-batch loss for the
optimizer, the full loss whose Hessian is examined at the end point, and how its
Hessian-vector products are taken.

- ``regression``: an over-parameterised tanh MLP (1-64-64-1, 4353 parameters) fitted to 32
  noisy samples of ``sin(3x)``; pure torch, replicated on every rank.
- ``digits``: the 8x8 handwritten digits of scikit-learn (1797 images; 1500 for training),
  classified by a 64-32-10 tanh MLP (2410 parameters) with cross-entropy; replicated.
- ``inverse``: the network prior of :mod:`dolfinx_nn.inverse` (``q = q_min + softplus(MLP)``)
  recovering the coefficient of ``-div(q grad u) = 1`` on the unit square from full-field
  data, through the bridge; distributed over the ranks, Hessian by finite differences of
  adjoint gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mpi4py import MPI

import numpy as np
import torch

from dolfinx_nn.networks.mlp import mlp


@dataclass
class TrainingProblem:
    """Everything an experiment needs from a problem.

    Attributes:
        name: problem name.
        module: the trained network.
        batch_loss: ``batch_loss(generator) -> loss`` for one optimizer step.
        full_loss: ``full_loss() -> loss`` whose Hessian is analysed.
        hvp_mode: Hessian-vector mode (see :class:`~dolfinx_nn.diffusion_maps.HessianOperator`).
        distributed: whether gradients are rank shares to be summed (package MPI convention).
        metrics: ``metrics() -> dict`` of problem-specific end results.
        fields: ``fields() -> list of dolfinx Functions`` to write for ParaView (FEM only).
    """

    name: str
    module: torch.nn.Module
    batch_loss: Callable[[torch.Generator], torch.Tensor]
    full_loss: Callable[[], torch.Tensor]
    hvp_mode: str = "autodiff"
    distributed: bool = False
    metrics: Callable[[], dict] = field(default=lambda: {})
    fields: Callable[[], list] = field(default=lambda: [])


def _batch(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=generator)[:size]


def regression(seed: int = 0, batch_size: int = 8, comm: MPI.Comm = MPI.COMM_WORLD):
    """Over-parameterised 1-64-64-1 regression of 32 noisy samples of ``sin(3x)``."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.linspace(-1, 1, 32, dtype=torch.float64)[:, None]
    y = torch.sin(3 * x) + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    net = mlp([1, 64, 64, 1], "tanh")

    def batch_loss(generator: torch.Generator) -> torch.Tensor:
        i = _batch(len(x), batch_size, generator)
        return ((net(x[i]) - y[i]) ** 2).mean()

    def full_loss() -> torch.Tensor:
        return ((net(x) - y) ** 2).mean()

    def metrics() -> dict:
        with torch.no_grad():
            return {"train_mse": float(full_loss()), "n_samples": len(x)}

    return TrainingProblem("regression", net, batch_loss, full_loss, metrics=metrics)


def load_digits_data() -> tuple[np.ndarray, np.ndarray]:
    """The scikit-learn digits (images scaled to [0, 1], labels); needs scikit-learn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError(
            "the 'digits' experiment needs scikit-learn (it ships the data set): "
            "pip install scikit-learn"
        ) from err
    data = load_digits()
    return data.data / 16.0, data.target


def digits(seed: int = 0, batch_size: int = 32, comm: MPI.Comm = MPI.COMM_WORLD):
    """64-32-10 classifier of the scikit-learn digits (1500 training, 297 test images)."""
    images, labels = load_digits_data()
    torch.manual_seed(seed)
    order = np.random.default_rng(seed).permutation(len(labels))
    X = torch.from_numpy(images[order])
    Y = torch.from_numpy(labels[order]).long()
    Xtr, Ytr, Xte, Yte = X[:1500], Y[:1500], X[1500:], Y[1500:]
    net = mlp([64, 32, 10], "tanh")
    ce = torch.nn.functional.cross_entropy

    def batch_loss(generator: torch.Generator) -> torch.Tensor:
        i = _batch(len(Xtr), batch_size, generator)
        return ce(net(Xtr[i]), Ytr[i])

    def full_loss() -> torch.Tensor:
        return ce(net(Xtr), Ytr)

    def metrics() -> dict:
        with torch.no_grad():
            return {
                "train_loss": float(full_loss()),
                "train_accuracy": float((net(Xtr).argmax(1) == Ytr).double().mean()),
                "test_accuracy": float((net(Xte).argmax(1) == Yte).double().mean()),
            }

    return TrainingProblem("digits", net, batch_loss, full_loss, metrics=metrics)


def inverse(
    seed: int = 0,
    resolution: int = 16,
    width: int = 10,
    comm: MPI.Comm = MPI.COMM_WORLD,
    coefficient: str = "1 + 0.5*sin(pi*x[0])*sin(pi*x[1])",
):
    """Network prior of the coefficient of ``-div(q grad u) = 1``, ``u = 0`` on the boundary.

    The data are the state of ``coefficient`` on the same mesh (no noise); the loss is the
    normalised misfit ``1/2 ||u - d||^2 / ||d||^2`` over the whole domain.
    """
    import dolfinx

    from dolfinx_nn import NeuralFunction
    from dolfinx_nn.conversion import from_torch
    from dolfinx_nn.expressions import parse_expression
    from dolfinx_nn.meshes import bounding_box, create_mesh
    from dolfinx_nn.models.observations import FieldObservation, region_indicator
    from dolfinx_nn.models.poisson import PoissonModel
    from dolfinx_nn.networks.coefficient import CoefficientNetwork

    torch.manual_seed(seed)
    mesh = create_mesh(comm, "square", resolution)
    model = PoissonModel(mesh, parse_expression("1"), parse_expression("0"))
    q_true = model.interpolate_coefficient(parse_expression(coefficient))
    data = dolfinx.fem.Function(model.V, name="data")
    from_torch(model.solve(q_true).detach(), data)
    observation = FieldObservation(model.u, data, region_indicator(mesh, None))
    low, high = bounding_box(mesh)
    net = CoefficientNetwork(low, high, width=width, depth=2)
    qn = NeuralFunction(net, model.Q, name="q")

    def full_loss() -> torch.Tensor:
        return observation.misfit(model.solve(qn()))

    def batch_loss(generator: torch.Generator) -> torch.Tensor:
        return full_loss()

    def metrics() -> dict:
        with torch.no_grad():
            q = qn().numpy()
        err2 = comm.allreduce(float(((q - q_true.numpy()) ** 2).sum()), op=MPI.SUM)
        ref2 = comm.allreduce(float((q_true.numpy() ** 2).sum()), op=MPI.SUM)
        with torch.no_grad():
            misfit = float(full_loss())
        return {
            "misfit": misfit,
            "coefficient_relative_error_dofs": float(np.sqrt(err2 / ref2)),
            "num_dofs_coefficient": model.Q.dofmap.index_map.size_global,
        }

    def fields() -> list:
        with torch.no_grad():
            model.solve(qn())
        q_ref = dolfinx.fem.Function(model.Q, name="q_true")
        from_torch(q_true, q_ref)
        return [qn.function, q_ref, model.u, data]

    return TrainingProblem(
        "inverse", net, batch_loss, full_loss, hvp_mode="finite-difference",
        distributed=True, metrics=metrics, fields=fields,
    )


#: experiment name -> problem builder(seed=..., comm=...)
PROBLEMS: dict[str, Callable[..., TrainingProblem]] = {
    "regression": regression,
    "digits": digits,
    "inverse": inverse,
}
