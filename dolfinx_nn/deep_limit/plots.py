"""Figures of the deep-limit experiments (written with :mod:`dolfinx_nn.plotting`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dolfinx_nn.plotting import subplots

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Resolution of the written figures (dots per inch).
DPI = 110


def _slope_guide(ax, depths, errors, order: int, label: str) -> None:
    n = np.asarray(depths, dtype=float)
    e0 = errors[len(errors) // 2] * (n[len(n) // 2] / n) ** order
    ax.loglog(n, e0, "k:", lw=1, label=label)


def forward_figure(result: dict) -> Figure:
    """Output and gradient errors of the ResNet (and RK4) versus N."""
    depths = result["depths"]
    fig, ax = subplots(figsize=(5.5, 4))
    ax.loglog(depths, result["resnet_error"], "o-",
              label=f"ResNet output (order {result['resnet_order']:.2f})")
    ax.loglog(depths, result["resnet_gradient_error"], "s-",
              label=f"ResNet gradient (order {result['resnet_gradient_order']:.2f})")
    ax.loglog(depths, result["rk4_error"], "^-",
              label=f"RK4, N steps (order {result['rk4_order']:.2f})")
    _slope_guide(ax, depths, result["resnet_error"], 1, "slope -1")
    ax.set_xlabel("depth N (steps)")
    ax.set_ylabel("error vs neural ODE")
    ax.set_title("Fixed weights: ResNet -> neural ODE")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def sgd_figure(result: dict) -> Figure:
    """Trajectory distance and loss gap versus N, and loss curves."""
    depths = result["depths"]
    fig, (a, b) = subplots(1, 2, figsize=(10, 4))
    a.loglog(depths, result["trajectory_distance"], "o-",
             label=f"max_k |theta_N - theta_ODE| (order {result['trajectory_order']:.2f})")
    a.loglog(depths, result["loss_gap"], "s-",
             label=f"max_k |L_N - L_ODE| (order {result['loss_gap_order']:.2f})")
    _slope_guide(a, depths, result["trajectory_distance"], 1, "slope -1")
    a.set_xlabel("depth N")
    a.set_title("SGD: ResNet trajectories -> neural-ODE trajectory")
    a.grid(True, which="both", alpha=0.3)
    a.legend(fontsize=8)
    ode = np.asarray(result["ode_loss_curve"])
    for n in depths[:: max(1, len(depths) // 5)]:
        gap = np.abs(np.asarray(result["loss_curves"][str(n)]) - ode)
        b.semilogy(np.maximum(gap, 1e-16), lw=1, label=f"N = {n}")
    b.set_xlabel("SGD step k")
    b.set_ylabel("|L_N(k) - L_ODE(k)|")
    b.set_title("loss gap along the SGD run")
    b.grid(True, which="both", alpha=0.3)
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def annulus_figure(result: dict) -> Figure:
    """Test accuracy and loss (mean and std over seeds) versus N, ODE as a band."""
    labels = [lab for lab in result["labels"] if lab != "ode"]
    depths = [int(lab) for lab in labels]
    summary = result["summary"]
    fig, axes = subplots(1, 2, figsize=(10, 4))
    for ax, key, title in zip(axes, ("test_accuracy", "test_loss"),
                              ("test accuracy", "test loss"), strict=True):
        mean = [summary[lab][key]["mean"] for lab in labels]
        std = [summary[lab][key]["std"] for lab in labels]
        ax.errorbar(depths, mean, yerr=std, fmt="o-", capsize=3, label="ResNet, N layers")
        ode = summary["ode"][key]
        ax.axhline(ode["mean"], color="k", ls="--", label="neural ODE")
        ax.axhspan(ode["mean"] - ode["std"], ode["mean"] + ode["std"], color="k", alpha=0.1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("depth N")
        ax.set_title(f"annulus: {title} ({len(result['config']['seeds'])} seeds)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def inverse_figure(result: dict) -> Figure:
    """Distance of the recovered coefficient to the ODE-prior one versus N."""
    depths = result["depths"]
    fig, ax = subplots(figsize=(5.5, 4))
    ax.loglog(depths, result["coefficient_distance"], "o-",
              label=f"|q_N - q_ODE| / |q_ODE| (order {result['coefficient_order']:.2f})")
    ax.loglog(depths, result["misfit_gap"], "s-",
              label=f"|J_N - J_ODE| / J_ODE (order {result['misfit_gap_order']:.2f})")
    _slope_guide(ax, depths, result["coefficient_distance"], 1, "slope -1")
    ax.set_xlabel("depth N")
    ax.set_title("Inverse problem with a ResNet prior")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
