# # Learning a diffusion coefficient with a network inside a DOLFINx form
#
# This demo shows the three pieces of the bridge working together:
#
# 1. `NeuralFunction`: a network $q_\theta(x)$ evaluated at the dof points of a P1 space,
#    which gives a `dolfinx.fem.Function` we can put in any UFL form;
# 2. `fem_operator`: the solve of $-\nabla\cdot(q \nabla u) = f$ as a differentiable torch
#    operation $q \mapsto u$ whose backward pass is one adjoint solve with PETSc;
# 3. `fem_functional`: the data misfit $\frac12\int (u - u_d)^2\,dx$ as a torch scalar.
#
# We learn $q_\theta$ from a FEM solution $u_d$ computed with a known coefficient, first with
# Adam and then with L-BFGS, check the gradient with a Taylor test and report the error of the
# recovered coefficient. It runs in serial and in parallel:
#
#     python demos/demo_bridge.py
#     mpiexec -n 2 python demos/demo_bridge.py

# +
from __future__ import annotations

import argparse

from mpi4py import MPI

import numpy as np
import torch
import ufl
from dolfinx import fem, mesh

import dolfinx_nn as dnn
from dolfinx_nn.networks import mlp
from dolfinx_nn.output import print0

# -

# ## Problem set-up
#
# The true coefficient is smooth and positive. Data come from a FEM solve with it, on the
# same P1 space (the inverse problems module uses a finer data mesh and noise; here we keep
# the demo about the mechanics).


# +
def true_coefficient(x: np.ndarray) -> np.ndarray:
    return 1.0 + 0.5 * np.sin(np.pi * x[0]) * np.sin(np.pi * x[1])


def main(n: int = 24, adam_steps: int = 100, lbfgs_steps: int = 20, seed: int = 0) -> dict:
    comm = MPI.COMM_WORLD
    torch.manual_seed(seed)
    msh = mesh.create_unit_square(comm, n, n)
    V = fem.functionspace(msh, ("Lagrange", 1))
    tdim = msh.topology.dim
    msh.topology.create_connectivity(tdim - 1, tdim)
    boundary = mesh.exterior_facet_indices(msh.topology)
    bc = fem.dirichletbc(0.0, fem.locate_dofs_topological(V, tdim - 1, boundary), V)
    x = ufl.SpatialCoordinate(msh)
    f = 10.0 * (1.0 + x[0])  # a source that keeps grad u away from zero in most of the domain
    # -

    # The network is a small MLP; `softplus` keeps the coefficient positive, so the forward
    # problem stays elliptic for any weights.

    # +
    class Coefficient(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mlp = mlp([2, 20, 20, 1], "tanh", init_dtype=torch.float32)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 0.1 + torch.nn.functional.softplus(self.mlp(x))

    net = Coefficient().double()
    qn = dnn.NeuralFunction(net, V)
    q = qn.function
    # -

    # The state equation in residual form, and the operator $q \mapsto u$. `fem_operator`
    # sees that the residual is linear in `u` and uses a KSP (LU by default). The operator
    # is symmetric, so the adjoint solve reuses the forward factorization.

    # +
    u = fem.Function(V, name="u")
    v = ufl.TestFunction(V)
    F = q * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - f * v * ufl.dx
    solve = dnn.fem_operator(F, u, controls=[q], bcs=[bc], petsc_options_prefix="demo_bridge_")

    q_true = fem.Function(V)
    q_true.interpolate(true_coefficient)
    u_data = fem.Function(V, name="u_data")
    solve(dnn.to_torch(q_true))  # leaves the solution in u
    u_data.x.array[:] = u.x.array
    scale = 1.0 / float(comm.allreduce(fem.assemble_scalar(fem.form(u_data**2 * ufl.dx))))
    misfit = dnn.fem_functional(0.5 * scale * (u - u_data) ** 2 * ufl.dx, controls=[u])

    def loss(params=None) -> torch.Tensor:
        return misfit(solve(qn(params)))

    # -

    # ## Gradient check
    #
    # The Taylor remainder $|J(\theta + h\,d\theta) - J(\theta) - h\,\nabla J\cdot d\theta|$
    # must decay like $h^2$. Each rank holds its share of the gradient, hence `comm`.

    # +
    params = {k: p.detach().clone() for k, p in net.named_parameters()}
    directions = {k: torch.randn_like(p) for k, p in params.items()}
    rates = dnn.taylor_test(loss, params, directions, comm=comm)
    print0(f"Taylor test rates: {', '.join(f'{r:.3f}' for r in rates)}")
    # -

    # ## Training: Adam, then L-BFGS
    #
    # The loss has the same value on every rank; `sync_gradients` sums the ranks' shares of
    # the gradient before each step, so every rank takes the same step.

    # +
    adam = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(adam_steps):
        adam.zero_grad()
        value = loss()
        value.backward()
        dnn.sync_gradients(net, comm)
        adam.step()
        if step % 100 == 0:
            print0(f"adam {step:4d}  loss {value.item():.3e}")

    lbfgs = torch.optim.LBFGS(
        net.parameters(), lr=1.0, max_iter=20, history_size=50, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        lbfgs.zero_grad()
        value = loss()
        value.backward()
        dnn.sync_gradients(net, comm)
        return value

    for step in range(lbfgs_steps):
        value = lbfgs.step(closure)
        if step % 10 == 0:
            print0(f"lbfgs {step:3d}  loss {float(value.detach()):.3e}")
    # -

    # ## Result
    #
    # The relative $L^2$ error of the recovered coefficient, computed by DOLFINx (a global
    # quantity: the same on every rank).

    # +
    with torch.no_grad():
        qn()
    err = fem.form((q - q_true) ** 2 * ufl.dx)
    ref = fem.form(q_true**2 * ufl.dx)
    error = np.sqrt(
        comm.allreduce(fem.assemble_scalar(err)) / comm.allreduce(fem.assemble_scalar(ref))
    )
    with torch.no_grad():
        final = float(loss())
    print0(f"final loss {final:.3e}; relative L2 error of q: {error:.3e}")
    return {"rates": rates, "coefficient_rel_l2_error": float(error), "loss": final}


# -

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=24, help="cells per side")
    parser.add_argument("--adam-steps", type=int, default=100)
    parser.add_argument("--lbfgs-steps", type=int, default=20)
    args = parser.parse_args()
    main(args.n, args.adam_steps, args.lbfgs_steps)
