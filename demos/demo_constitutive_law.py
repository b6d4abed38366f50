# # Learning a nonlinear constitutive law from FEM solutions
#
# A diffusion problem whose diffusivity depends on the unknown,
#
# $$ -\nabla\cdot\big(k(u)\,\nabla u\big) = f \ \text{in } \Omega = (0,1)^2, \qquad u = g
#    \ \text{on } \partial\Omega, $$
#
# is solved for several loadings $(f, g)$ with the law $k(u) = 1 + u^2$. From these solutions alone
# we learn a network $k_\theta(u)$ that is used *inside* the nonlinear form:
#
# 1. `NeuralOperator(net, operands=(u,), space=Q)` evaluates $k_\theta$ at the quadrature
#    points of the current Newton iterate (one batched network call) and gives a coefficient
#    to write the residual with;
# 2. `fem_operator(..., operators=[k])` solves with PETSc SNES: the Jacobian contains
#    $k_\theta'(u)$ from `torch.func` at the quadrature points, assembled sparsely by DOLFINx;
# 3. its backward pass is one adjoint solve, whose result is pulled back through the network,
#    so the misfit of the solutions is differentiable in the network's parameters.
#
# Finally the learned law is compared with $1 + u^2$ on the range of $u$ seen in the data, and
# the solution for a loading not used in training is predicted. It runs in serial and in
# parallel:
#
#     python demos/demo_constitutive_law.py
#     mpiexec -n 2 python demos/demo_constitutive_law.py

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
from dolfinx_nn.quadrature import quadrature_space
from dolfinx_nn.training import TrainingConfig, train

# -

# ## The problem
#
# A loading is a source $f = a\,\sin(\pi x)\sin(\pi y)$ and boundary data $g = b\,x$. Why both:
# the data only constrain the flux $k(u)\nabla u$, so $k$ is weakly identified where
# $\nabla u = 0$. With $g = 0$ the largest values of $u$ sit at an interior maximum, exactly
# where the gradient vanishes; with $f = 0$ and $g = b\,x$ the largest value is taken on the
# boundary, where (Hopf's lemma) the gradient does not vanish. Both $f$ and $g$ are controls of
# the solver (a Dirichlet-data control is simply the Function the condition is built from).
#
# The residual is written once with a coefficient `k` that is either the UFL law or the
# network operator. All integrals use the measure of the quadrature space of the operator, so
# both residuals are integrated by the same rule.


# +
def true_law(u):
    return 1.0 + u**2


class Diffusivity(torch.nn.Module):
    """A small MLP of u; softplus keeps the diffusivity positive, hence Newton well posed."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.mlp = mlp([1, width, width, 1], "tanh", init_dtype=torch.float32)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(self.mlp(u) + 0.5413)  # softplus(0.5413) = 1


def residual(k, u, f, v, dx):
    return k * ufl.inner(ufl.grad(u), ufl.grad(v)) * dx - f * v * dx


def main(
    n: int = 24,
    loadings: tuple[tuple[float, float], ...] = ((20.0, 0.0), (40.0, 0.0), (0.0, 1.3), (20.0, 0.7)),
    test_loading: tuple[float, float] = (30.0, 0.4),
    adam_steps: int = 50,
    lbfgs_steps: int = 150,
    seed: int = 0,
) -> dict:
    comm = MPI.COMM_WORLD
    torch.manual_seed(seed)
    msh = mesh.create_unit_square(comm, n, n)
    V = fem.functionspace(msh, ("Lagrange", 1))
    tdim = msh.topology.dim
    msh.topology.create_connectivity(tdim - 1, tdim)
    boundary = mesh.exterior_facet_indices(msh.topology)
    g = fem.Function(V, name="g")
    bc = fem.dirichletbc(g, fem.locate_dofs_topological(V, tdim - 1, boundary))
    Q = quadrature_space(msh, 2)  # P1 x P1 gradients: degree 2 is what the plain form needs
    v = ufl.TestFunction(V)
    f = fem.Function(V, name="f")
    shape = fem.Function(V)
    shape.interpolate(lambda x: np.sin(np.pi * x[0]) * np.sin(np.pi * x[1]))
    ramp = fem.Function(V)
    ramp.interpolate(lambda x: x[0])
    shape_t = dnn.to_torch(shape)  # tensors hold the owned dofs of the rank
    ramp_t = dnn.to_torch(ramp)

    def controls(loading: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = loading
        return a * shape_t, b * ramp_t
    # -

    # ## Data: FEM solutions with the true law
    #
    # The reference solver is the same `fem_operator` with the law written in UFL.

    # +
    u_ref = fem.Function(V, name="u_ref")
    dx = ufl.Measure("dx", domain=msh, metadata={"quadrature_degree": 2})
    reference = dnn.fem_operator(
        residual(true_law(u_ref), u_ref, f, v, dx), u_ref, controls=[f, g], bcs=[bc],
        petsc_options_prefix="law_ufl_",
    )
    data = [reference(*controls(load)) for load in loadings]
    u_min = comm.allreduce(min(float(d.min()) for d in data), op=MPI.MIN)
    u_max = comm.allreduce(max(float(d.max()) for d in data), op=MPI.MAX)
    print0(f"data: {len(loadings)} loadings, u in [{u_min:.3f}, {u_max:.3f}], "
           f"{reference.iterations} Newton steps for the last one")
    # -

    # ## The network inside the form
    #
    # `k` is a `dolfinx.fem.Function` on `Q` that the SNES refreshes from each iterate. The loss
    # is the relative squared misfit of the predicted solutions, summed over the loadings;
    # `global_sum` makes it the same on every rank while each rank keeps its share of the
    # gradient (the training loop sums the shares).

    # +
    net = Diffusivity().double()
    u = fem.Function(V, name="u")
    k = dnn.NeuralOperator(net, operands=(u,), space=Q, name="k")
    solve = dnn.fem_operator(
        residual(k, u, f, v, k.measure), u, controls=[f, g], bcs=[bc], operators=[k],
        petsc_options_prefix="law_net_",
    )
    scale = sum(dnn.global_sum((d**2).sum(), comm) for d in data).detach()

    def loss() -> torch.Tensor:
        misfit = sum(
            dnn.global_sum(((solve(*controls(load)) - d) ** 2).sum(), comm)
            for load, d in zip(loadings, data, strict=True)
        )
        return misfit / scale

    # A Taylor test of the gradient with respect to the network's parameters.
    params = {name: p.detach().clone() for name, p in net.named_parameters()}
    directions = {name: torch.randn_like(p) for name, p in params.items()}
    for d in directions.values():
        comm.Bcast(d.numpy(), root=0)  # same direction on every rank

    def misfit_of(m):
        return dnn.global_sum(
            ((solve(*controls(loadings[-1]), operator_inputs=[list(m.values())]) - data[-1]) ** 2)
            .sum(), comm,
        )

    rates = dnn.taylor_test(misfit_of, params, directions, comm=comm)
    print0(f"Taylor rates w.r.t. the network parameters: {np.round(rates, 3).tolist()}")
    # -

    # ## Training
    #
    # Adam to get close, then L-BFGS; each loss evaluation is one Newton solve per loading and
    # each gradient one adjoint solve per loading.

    # +
    config = TrainingConfig(adam_steps=adam_steps, adam_lr=1e-2, lbfgs_steps=lbfgs_steps,
                            tolerance=1e-14, log_every=10)
    history = train(loss, net, config, comm=comm, desc="constitutive law")
    final = history.losses[-1]
    print0(f"final loss {final:.3e} after {len(history.losses)} steps ({history.stopped_because})")
    # -

    # ## The learned law and a prediction
    #
    # The law is only identifiable on the values of $u$ the data visit, so it is compared there.
    # The prediction uses a loading not seen in training.

    # +
    s = torch.linspace(u_min, u_max, 201, dtype=torch.float64)[:, None]
    with torch.no_grad():
        learned = net(s).reshape(-1)
    relative = (learned - true_law(s.reshape(-1))).abs() / true_law(s.reshape(-1))
    law_error, worst = float(relative.max()), float(s[int(relative.argmax())])
    with torch.no_grad():
        predicted = solve(*controls(test_loading))
        expected = reference(*controls(test_loading))
    diff = comm.allreduce(float((predicted - expected).abs().max()), op=MPI.MAX)
    size = comm.allreduce(float(expected.abs().max()), op=MPI.MAX)
    prediction_error = diff / size
    print0(f"learned law vs 1 + u^2 on [{u_min:.3f}, {u_max:.3f}]: max relative error "
           f"{law_error:.2e} (at u = {worst:.3f})")
    print0(f"loading (a, b) = {test_loading} (not in training): max-norm relative error "
           f"{prediction_error:.2e}, Newton steps {solve.iterations} (UFL law: "
           f"{reference.iterations})")
    return {
        "rates": rates,
        "loss": final,
        "law_max_rel_error": law_error,
        "prediction_max_rel_error": prediction_error,
        "u_range": (u_min, u_max),
        "newton_network": solve.iterations,
        "newton_ufl": reference.iterations,
    }


# -

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=24, help="cells per side")
    parser.add_argument("--adam-steps", type=int, default=50)
    parser.add_argument("--lbfgs-steps", type=int, default=150)
    args = parser.parse_args()
    main(args.n, adam_steps=args.adam_steps, lbfgs_steps=args.lbfgs_steps)
