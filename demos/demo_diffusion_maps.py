# # Diffusion maps of an SGD trajectory
#
# Most eigenvalues of the loss Hessian of an over-parameterised network are close to zero and
# only a few are large, which suggests that stochastic gradient descent moves on a
# low-dimensional set.  This demo records the parameter vectors visited by SGD, embeds that
# point cloud with a diffusion map (Coifman & Lafon), estimates its intrinsic dimension and
# compares the directions it finds with the top eigenvectors of the Hessian at the end point.
#
# Run it with `python demos/demo_diffusion_maps.py` or under `mpiexec -n 2` (the computation
# is replicated on every rank; rank 0 prints and writes).  The full experiments, with plots
# and JSON output, are `dolfinx-nn diffmap --experiment {regression,digits,inverse}`.

# +
from __future__ import annotations

import pathlib
import sys
import tempfile

from mpi4py import MPI

import numpy as np
import torch

from dolfinx_nn.diffusion_maps import (
    DiffusionMap,
    HessianOperator,
    TrajectoryRecorder,
    estimate_dimension,
    load_trajectory,
    spectral_density,
    top_eigenpairs,
)
from dolfinx_nn.diffusion_maps.experiment import alignment
from dolfinx_nn.networks import mlp
from dolfinx_nn.output import print0

comm = MPI.COMM_WORLD
# -

# ## 1. A sanity check: a noisy circle in R^50
#
# Points on a circle, rotated into 50 dimensions and perturbed by noise.  With the
# automatic bandwidth and `alpha = 1` the first two diffusion coordinates are `cos` and
# `sin` of the angle (up to a rotation).  (Its intrinsic dimension is not asked for here: at
# the scale of a few nearest neighbours the noise, of norm 0.02 * sqrt(50) = 0.14, is larger
# than the spacing of the points, and a local estimator rightly sees a 50-dimensional blur.)


def circle_check(n: int = 600, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0, 2 * np.pi, n)
    frame, _ = np.linalg.qr(rng.standard_normal((50, 2)))
    X = np.c_[np.cos(theta), np.sin(theta)] @ frame.T + 0.02 * rng.standard_normal((n, 50))
    dm = DiffusionMap(n_components=2).fit(X)
    c = dm.coordinates_ / dm.coordinates_.std(axis=0)
    recovered = np.arctan2(c[:, 1], c[:, 0])
    # mean resultant length of the angle error, up to rotation and reflection (1 = exact)
    concentration = max(np.abs(np.exp(1j * (recovered - s * theta)).mean()) for s in (1, -1))
    return {"epsilon": dm.epsilon_, "eigenvalues": dm.eigenvalues_,
            "angle_concentration": float(concentration)}


# ## 2. Record an SGD trajectory
#
# A 1-64-64-1 tanh network (4353 parameters) is fitted to 32 noisy samples of `sin(3x)` with
# plain mini-batch SGD.  The `TrajectoryRecorder` hooks into the optimizer
# (`recorder.attach(optimizer)`) and streams every `every`-th parameter vector to disk; for a
# large model, `projection_dim=...` would store a random projection instead.


def train_with_recorder(folder: pathlib.Path, steps: int, every: int, seed: int = 0):
    torch.manual_seed(seed)
    x = torch.linspace(-1, 1, 32, dtype=torch.float64)[:, None]
    y = torch.sin(3 * x) + 0.05 * torch.randn(x.shape, dtype=torch.float64)
    net = mlp([1, 64, 64, 1], "tanh", init_dtype=torch.float32)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(seed)
    with TrajectoryRecorder(net, folder, every=every, comm=comm) as recorder:
        recorder.attach(optimizer)
        for _ in range(steps):
            batch = torch.randperm(32, generator=generator)[:8]
            optimizer.zero_grad()
            ((net(x[batch]) - y[batch]) ** 2).mean().backward()
            optimizer.step()
    return net, (lambda: ((net(x) - y) ** 2).mean())


# ## 3. Analyse it
#
# The diffusion map of the trajectory, its dimension, the top Hessian eigenvalues at the end
# point (Lanczos on Hessian-vector products from `torch.func`), the Hessian spectral density
# (stochastic Lanczos quadrature) and the alignment of the diffusion directions with the
# top Hessian eigenvectors.


def analyse(folder: pathlib.Path, net, loss, k: int = 6) -> dict:
    X, steps = load_trajectory(folder)
    X = np.array(X)
    dm = DiffusionMap(n_components=4).fit(X)
    H = HessianOperator(net, loss)
    lam, V = top_eigenpairs(H, k=k, tol=1e-8)
    density = spectral_density(H, n_probes=2, steps=30)
    near_zero = np.mean([w[np.abs(x) < 0.01 * lam[0]].sum()
                         for x, w in zip(density.nodes, density.weights, strict=True)])
    align = alignment(X, dm.eigenvectors_, V)
    order = np.corrcoef(np.argsort(np.argsort(dm.eigenvectors_[:, 0])), steps)[0, 1]
    return {
        "points": X.shape[0],
        "diffusion_eigenvalues": dm.eigenvalues_,
        "spearman_psi1_vs_step": float(order),
        "dimension": estimate_dimension(X),
        "hessian_top": lam,
        "fraction_near_zero": float(near_zero),
        "in_top_k_span": align["fraction_in_top_k_span"],
        "random_baseline": align["random_direction_baseline"],
    }


def main(steps: int = 2000, every: int = 2) -> dict:
    circle = circle_check()
    print0(f"circle in R^50: angle concentration {circle['angle_concentration']:.4f}")
    folder = tempfile.mkdtemp() if comm.rank == 0 else None
    folder = pathlib.Path(comm.bcast(folder, root=0)) / "trajectory"
    net, loss = train_with_recorder(folder, steps, every)
    result = analyse(folder, net, loss)
    print0(f"{result['points']} SGD iterates; diffusion eigenvalues "
           f"{np.round(result['diffusion_eigenvalues'], 4)}")
    spearman = result["spearman_psi1_vs_step"]
    print0(f"first diffusion coordinate vs. SGD step: Spearman {spearman:.3f}")
    print0(f"estimated dimension of the trajectory: {result['dimension']}")
    print0(f"top Hessian eigenvalues {np.round(result['hessian_top'], 4)}; "
           f"{100 * result['fraction_near_zero']:.1f}% of the spectrum within 1% of zero")
    print0(f"diffusion directions in the top-6 Hessian span: "
           f"{np.round(result['in_top_k_span'], 3)} (random: {result['random_baseline']:.3f})")
    return {"circle": circle, "trajectory": result}


# The trajectory of SGD from a fresh start is essentially a curve: the first diffusion
# coordinate orders the iterates in time (|Spearman| close to 1) and the next ones are its
# harmonics.  The Hessian at the end point has a handful of large eigenvalues and a bulk
# at zero.

if __name__ == "__main__":
    quick = "--quick" in sys.argv
    torch.set_num_threads(1)
    main(steps=200 if quick else 2000, every=2)
