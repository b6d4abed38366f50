"""One trajectory experiment: train with SGD while recording, then analyse the trajectory.

Steps: (1) SGD on the problem's mini-batch loss, the parameters recorded every ``every``
steps by a :class:`~dolfinx_nn.diffusion_maps.TrajectoryRecorder`; (2) diffusion map of the
recorded point cloud (automatic epsilon, alpha = 1; its choice, the merged duplicate iterates
and the spanning-tree bridges are reported) and its intrinsic dimension; (3) top
Hessian eigenpairs of the full loss at the end point (Lanczos) and its spectral density
(stochastic Lanczos quadrature); (4) alignment of the leading diffusion coordinates with
the top Hessian eigenvectors.

Alignment: a diffusion coordinate ``psi_k`` is a function on the trajectory, so its direction
in parameter space is taken as the least-squares slope ``w_k ~ X_c^T psi_k`` of the centred
trajectory against it (the direction in which the parameters move when ``psi_k`` grows).
Reported: ``|cos(w_k, v_j)|`` for each Hessian eigenvector ``v_j``, and the fraction
``|Q^T w_k|`` of ``w_k`` in the span of the top-k eigenvectors, next to ``sqrt(k / dim)``, its
expected value for a random direction.  With a random projection both live in the projected
space.
"""

from __future__ import annotations

import pathlib
import time
from dataclasses import dataclass

from mpi4py import MPI

import numpy as np
import scipy.stats
import torch

from dolfinx_nn.diffusion_maps.diffusion_map import DiffusionMap
from dolfinx_nn.diffusion_maps.dimension import estimate_dimension, mle_dimension
from dolfinx_nn.diffusion_maps.hessian import HessianOperator, spectral_density, top_eigenpairs
from dolfinx_nn.diffusion_maps.problems import TrainingProblem
from dolfinx_nn.diffusion_maps.recorder import (
    TrajectoryRecorder,
    load_trajectory,
    project_columns,
)
from dolfinx_nn.training import TrainingConfig, train


@dataclass(frozen=True)
class ExperimentConfig:
    """Settings of :func:`run_experiment` (see the CLI for their meaning)."""

    steps: int = 3000
    lr: float = 0.05
    momentum: float = 0.0
    every: int = 2
    projection_dim: int | None = None
    n_components: int = 6
    epsilon: float | str = "auto"
    alpha: float = 1.0
    t: float = 1.0
    hessian_k: int = 10
    slq_probes: int = 4
    slq_steps: int = 60
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "every", "n_components", "hessian_k", "slq_probes", "slq_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if not 0.0 < self.lr < float("inf"):
            raise ValueError(f"lr must be a finite positive number; got {self.lr!r}")
        if not 0.0 <= self.momentum < 1.0:  # heavy-ball SGD diverges from momentum 1 on
            raise ValueError(f"momentum must lie in [0, 1); got {self.momentum!r}")
        # the diffusion-map settings, checked before minutes of training by the estimator
        # that uses them after it
        DiffusionMap(self.n_components, epsilon=self.epsilon, alpha=self.alpha, t=self.t)
        if self.projection_dim is not None and (
                not isinstance(self.projection_dim, int) or self.projection_dim < 1):
            raise ValueError(
                f"projection_dim must be a positive integer or None; got {self.projection_dim!r}")
        if self.steps // self.every < max(self.n_components + 2, 22):
            raise ValueError(
                f"steps/every = {self.steps // self.every} recorded points are too few; "
                f"need at least {max(self.n_components + 2, 22)}"
            )


def train_and_record(
    problem: TrainingProblem, cfg: ExperimentConfig, directory: pathlib.Path, comm: MPI.Comm
) -> list[float]:
    """Plain SGD (optionally with momentum) on the mini-batch loss, recording the parameters.

    The SGD phase of the shared :func:`~dolfinx_nn.training.train`; its per-step callback
    records the iterate.  A distributed problem's gradient is the rank's share, summed over
    ``comm``; otherwise every rank runs the whole (replicated) problem alone.

    Returns:
        The mini-batch loss of each step, before its update.
    """
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    training = TrainingConfig(adam_steps=0, lbfgs_steps=0, sgd_steps=cfg.steps, sgd_lr=cfg.lr,
                              sgd_momentum=cfg.momentum, phases=("sgd",), seed=None)
    with TrajectoryRecorder(
        problem.module, directory, every=cfg.every, projection_dim=cfg.projection_dim,
        seed=cfg.seed, comm=comm,
    ) as recorder:
        recorder.record(0)
        history = train(
            lambda: problem.batch_loss(generator), problem.module, training,
            comm=comm if problem.distributed else MPI.COMM_SELF,
            desc=f"SGD {problem.name}" if comm.rank == 0 else None,
            callback=lambda step, loss: recorder.record(step),
        )
    return history.losses


def alignment(X: np.ndarray, psi: np.ndarray, V: np.ndarray) -> dict:
    """Cosines between trajectory directions of diffusion coordinates and Hessian vectors.

    Args:
        X: trajectory (n, dim); psi: diffusion eigenvectors (n, m); V: Hessian vectors (dim, k).
    """
    Xc = X - X.mean(axis=0)
    W = Xc.T @ (psi - psi.mean(axis=0))
    W /= np.linalg.norm(W, axis=0)
    Q, _ = np.linalg.qr(V)
    Vn = V / np.linalg.norm(V, axis=0)
    cosines = np.abs(W.T @ Vn)
    in_span = np.linalg.norm(Q.T @ W, axis=0)
    # the top principal direction of the trajectory, for comparison
    pc = np.linalg.svd(Xc, full_matrices=False)[2][0]
    return {
        "cosines": cosines,
        "fraction_in_top_k_span": in_span,
        "random_direction_baseline": float(np.sqrt(V.shape[1] / X.shape[1])),
        "first_principal_direction_in_top_k_span": float(np.linalg.norm(Q.T @ pc)),
    }


def run_experiment(
    problem: TrainingProblem,
    cfg: ExperimentConfig,
    out: pathlib.Path,
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> dict:
    """Train, record and analyse; returns the results (identical on every rank)."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    trajectory_dir = out / "trajectory"
    losses = train_and_record(problem, cfg, trajectory_dir, comm)
    timings["training"] = time.perf_counter() - start
    # rank 0 wrote the trajectory; every rank reads it (replicated analysis)
    X, steps = load_trajectory(trajectory_dir)
    X = np.array(X)

    start = time.perf_counter()
    dm = DiffusionMap(cfg.n_components, epsilon=cfg.epsilon, alpha=cfg.alpha, t=cfg.t).fit(X)
    dimension = estimate_dimension(X)
    dimension_raw = mle_dimension(X)
    # a trajectory is ordered in time: how monotone is the first coordinate along it?
    spearman = float(scipy.stats.spearmanr(dm.eigenvectors_[:, 0], steps).statistic)
    timings["diffusion_map"] = time.perf_counter() - start

    start = time.perf_counter()
    H = HessianOperator(
        problem.module, problem.full_loss, mode=problem.hvp_mode,
        comm=comm if problem.distributed else None,
    )
    k = min(cfg.hessian_k, H.shape[0] - 2)
    lam, V = top_eigenpairs(H, k=k, tol=1e-8, seed=cfg.seed)
    n_top = H.n_products
    density = spectral_density(H, n_probes=cfg.slq_probes, steps=cfg.slq_steps, seed=cfg.seed)
    timings["hessian"] = time.perf_counter() - start
    lo, hi = min(min(x.min() for x in density.nodes), 0.0), max(x.max() for x in density.nodes)
    grid = np.linspace(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo), 600)
    sigma = 0.01 * (hi - lo) + 1e-12
    rho = density.density(grid, sigma)
    bulk = float(np.mean([w[np.abs(x) < 0.01 * hi].sum() for x, w in
                          zip(density.nodes, density.weights, strict=True)]))

    align = alignment(X, dm.eigenvectors_, project_columns(V, cfg.projection_dim, cfg.seed))

    return {
        "experiment": problem.name,
        "config": cfg.__dict__,
        "n_parameters": int(H.shape[0]),
        "recorded_points": int(X.shape[0]),
        "recorded_dim": int(X.shape[1]),
        "final_loss": losses[-1],
        "loss_history": losses[:: max(1, len(losses) // 500)],
        "metrics": problem.metrics(),
        "diffusion_map": {
            "epsilon": dm.epsilon_,
            "alpha": cfg.alpha,
            "t": cfg.t,
            "method": dm.method_,
            "eigenvalues": dm.eigenvalues_,
            "kernel_sum_dimension": dm.kernel_dimension_,
            "bandwidth": dm.bandwidth_.summary() if dm.bandwidth_ is not None else None,
            "spearman_psi1_vs_step": spearman,
            "coordinates": dm.coordinates_[:, :3],
            "steps": steps,
        },
        "estimated_dimension": dimension,
        "mle_dimension_unrounded": dimension_raw,
        "hessian": {
            "mode": problem.hvp_mode,
            "top_eigenvalues": lam,
            "hvp_products_lanczos": n_top,
            "slq_grid": grid,
            "slq_density": rho,
            "slq_sigma": sigma,
            "slq_trace_estimate": density.quadrature(lambda x: x) * H.shape[0],
            "fraction_of_spectrum_near_zero": bulk,
        },
        "alignment": align,
        "timings_s": timings,
    }
