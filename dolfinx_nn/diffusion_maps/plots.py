"""Figures of a trajectory experiment (written with :mod:`dolfinx_nn.plotting`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dolfinx_nn.plotting import subplots

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Resolution of the written figure (dots per inch).
DPI = 90


def experiment_figure(results: dict) -> Figure:
    """Four panels: embedding, diffusion eigenvalues, Hessian spectrum, alignment.

    Args:
        results: what :func:`~dolfinx_nn.diffusion_maps.experiment.run_experiment` returns.

    Returns:
        The figure (write it with :func:`dolfinx_nn.plotting.write_figure`, ``dpi=DPI``).
    """
    dmap, hess, align = results["diffusion_map"], results["hessian"], results["alignment"]
    coords = np.asarray(dmap["coordinates"])
    steps = np.asarray(dmap["steps"])
    fig, ax = subplots(2, 2, figsize=(10, 8))
    fig.suptitle(
        f"{results['experiment']}: {results['n_parameters']} parameters, "
        f"{results['recorded_points']} recorded SGD iterates, "
        f"estimated dimension {results['estimated_dimension']}"
    )
    a = ax[0, 0]
    sc = a.scatter(coords[:, 0], coords[:, 1], c=steps, s=6, cmap="viridis")
    fig.colorbar(sc, ax=a, label="SGD step")
    a.set_xlabel(r"$\lambda_1^t\psi_1$")
    a.set_ylabel(r"$\lambda_2^t\psi_2$")
    a.set_title(f"diffusion map (epsilon={dmap['epsilon']:.3g}, alpha={dmap['alpha']:g})")

    a = ax[0, 1]
    lam = np.asarray(dmap["eigenvalues"])
    a.plot(np.arange(1, len(lam) + 1), lam, "o-")
    a.set_xlabel("k")
    a.set_ylabel(r"$\lambda_k$")
    a.set_title("diffusion-map eigenvalues of the trajectory")
    a.grid(alpha=0.3)

    a = ax[1, 0]
    grid, rho = np.asarray(hess["slq_grid"]), np.asarray(hess["slq_density"])
    a.semilogy(grid, np.maximum(rho, 1e-8), label="SLQ density")
    top = np.asarray(hess["top_eigenvalues"])
    for value in top:
        a.axvline(value, color="C3", lw=0.8, alpha=0.7)
    a.plot([], [], color="C3", lw=0.8, label="Lanczos top eigenvalues")
    a.set_xlabel("Hessian eigenvalue")
    a.set_ylabel("density")
    a.set_ylim(1e-6, None)
    a.legend(loc="upper right", fontsize=8)
    a.set_title("Hessian spectrum at the end point")

    a = ax[1, 1]
    cos = np.asarray(align["cosines"])
    im = a.imshow(cos, vmin=0, vmax=1, cmap="magma", aspect="auto")
    fig.colorbar(im, ax=a, label="|cos|")
    a.set_xlabel("Hessian eigenvector j")
    a.set_ylabel("diffusion coordinate k (as a direction)")
    a.set_title(
        "alignment (in top-k span: "
        + ", ".join(f"{v:.2f}" for v in np.asarray(align["fraction_in_top_k_span"])[:3])
        + f"; random {align['random_direction_baseline']:.2f})",
        fontsize=9,
    )
    fig.tight_layout()
    return fig
