# # A neural ansatz versus FEM on a domain with a hole
#
# We solve the Poisson problem $-\Delta u = f$ on the unit square with a circular hole, with
# Dirichlet data on the whole boundary, twice: with Lagrange finite elements (DOLFINx) and with
# the network ansatz of Berg & Nystrom,
#
# $$u(x) = G(x) + D(x)\,N(x),$$
#
# where $G$ extends the boundary data, $D$ is a smooth approximate distance to the boundary and
# $N$ a feed-forward network.  The data come from a manufactured solution, so both errors are
# measured exactly (by DOLFINx quadrature).  Run it with `python demos/demo_ansatz_vs_fem.py` or
# `mpiexec -n 2 python demos/demo_ansatz_vs_fem.py`.

# +
from __future__ import annotations

import os
import pathlib

from mpi4py import MPI

import torch

from dolfinx_nn.ansatz import Problem
from dolfinx_nn.ansatz.compare import CompareConfig, compare
from dolfinx_nn.ansatz.network_solver import NetworkConfig
from dolfinx_nn.output import prepare_output_dir, print0, write_json
from dolfinx_nn.training import TrainingConfig

torch.set_num_threads(1)
# -

# ## The problem
#
# The exact solution is a formula of `x[0]`, `x[1]`; the source $f = -\Delta u$ and the
# boundary data are derived from it: by UFL for FEM and by torch autograd for the network.

EXACT = "sin(pi*x[0])*sin(pi*x[1]) + x[0]*x[1]"


def main(out: str = "results/demo_ansatz", lbfgs_steps: int = 300, levels: int = 4) -> dict:
    """Run FEM (P1, P2 on ``levels`` meshes) and the network; return results.json's content."""
    comm = MPI.COMM_WORLD
    problem = Problem.from_text("poisson", EXACT, 2)

    # ## The two solvers
    #
    # FEM solves on the gmsh mesh of the square with a hole (resolution 6) and its uniform
    # refinements.  The network is trained on the coarsest mesh: $G$ and $D$ are fitted there
    # once (a least-squares fit to FEM lifts of the data), and $N$ (4 hidden layers of 20 tanh
    # neurons) minimises the Ritz energy $\int \frac12|\nabla u|^2 - f u\,dx$, assembled by
    # DOLFINx quadrature through the bridge, with L-BFGS.
    network = NetworkConfig(width=20, depth=4, loss="ritz", fit_features=300,
                            fit_boundary_points=2000,
                            training=TrainingConfig(adam_steps=0, lbfgs_steps=lbfgs_steps))
    config = CompareConfig(mesh="square-with-hole", resolution=6, levels=levels,
                           degrees=(1, 2), network=network)
    path = prepare_output_dir(pathlib.Path(out), comm)
    results = compare(problem, config, comm, path)
    write_json(path / "results.json", results, comm)

    # ## What we get
    #
    # For each FEM run: unknowns, errors and wall time; for the network: parameters, errors,
    # the boundary error (set by the fits of $G$ and $D$) and the fit + training time.
    for row in results["fem"]:
        print0(f"P{row['degree']}  dofs {row['dofs']:7d}  rel. L2 {row['relative_l2_error']:.2e}"
               f"  time {row['wall_time_s']:.3f} s")
    net = results["network"]
    print0(f"network  parameters {net['parameters']}  rel. L2 {net['relative_l2_error']:.2e}"
           f"  boundary {net['boundary_relative_max_error']:.1e}  time {net['wall_time_s']:.1f} s")
    return results


# The figures `errors.png` (error against time and unknowns) and `fields.png` (both solutions
# and their errors) and the ParaView file `fields.bp` are written next to `results.json`.

if __name__ == "__main__":
    main(lbfgs_steps=int(os.environ.get("DEMO_LBFGS_STEPS", "300")))
