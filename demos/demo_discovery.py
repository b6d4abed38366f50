# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: light
# ---

# # Discovering a PDE from scattered data on a domain with a hole
#
# We observe a field $u(x, t)$ (by default heat spreading from two bumps, $u_t = 0.05\Delta u$)
# at scattered stations of a plate with a circular hole, with 1 % measurement noise, and ask
# which equation $u_t = F(u, \nabla u, D^2 u)$ produced it.  The
# method follows Berg & Nyström: fit a network surrogate $u_\theta(x, t)$ to the data,
# differentiate it with autograd, and select the terms of $F$ from a library of candidates
# by sparse regression.  Finally we simulate the discovered equation with DOLFINx from the
# first snapshot and compare it with later data that discovery never saw.
#
# Run it with `python demos/demo_discovery.py` or `mpiexec -n 2 python demos/demo_discovery.py`
# (`--help` lists the settings).

# +
from __future__ import annotations

import argparse
import json
import pathlib

from mpi4py import MPI

from dolfinx_nn.discovery import DiscoveryConfig
from dolfinx_nn.discovery.datasets import PROBLEMS, simulate_dataset
from dolfinx_nn.discovery.pipeline import regress, regress_weak
from dolfinx_nn.discovery.simulation import boundary_distance
from dolfinx_nn.discovery.surrogate import fit_surrogate
from dolfinx_nn.discovery.validation import validate_candidates, window_surrogate
from dolfinx_nn.meshes import create_mesh
from dolfinx_nn.output import prepare_output_dir, print0, write_json

parser = argparse.ArgumentParser(description="PDE discovery on a plate with a hole")
parser.add_argument("--problem", choices=list(PROBLEMS), default="heat")
parser.add_argument("--resolution", type=int, default=16)
parser.add_argument("--points", type=int, default=2000)
parser.add_argument("--noise", type=float, default=0.01)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/demo_discovery"))
args = parser.parse_args()
comm = MPI.COMM_WORLD
out = prepare_output_dir(args.out, comm)
# -

# ## The data
#
# The domain is the unit square minus a disk of radius 0.25, meshed by gmsh and distributed
# over the MPI ranks.  A built-in data set simulates the chosen equation with P2 elements and
# Crank–Nicolson steps (the boundary keeps its initial values; one bump sits next to the
# hole), and records it at random stations inside the domain (the same stations on every
# rank) at 41 times.  Noise with standard deviation 1 % of the spread of the values is added.

mesh = create_mesh(comm, "square-with-hole", args.resolution)
data, truth = simulate_dataset(args.problem, mesh, args.points, 41, args.noise, seed=args.seed)
print0(f"{data.num_observed} observations at {data.x.shape[0]} stations, {data.t.size} times")
print0("true equation coefficients:", truth)

# ## Discovery
#
# The first three quarters of the time span are used for discovery; the rest is held out.
# The surrogate works in normalised variables (centred and scaled coordinates, scaled values);
# the regression happens there and the coefficients are converted back to the data's units
# exactly.
#
# Every station is observed at every snapshot, so the default surrogate is the *separable*
# one, $u_\theta(x, t) = \sum_{jk} C_{jk}\,\phi_j(x)\,T_k(t)$: random tanh features in space
# times Legendre polynomials (or cubic B-splines) in time.  Its least-squares fit is a
# Kronecker product, solved exactly for every Tikhonov parameter.  Nothing is set by hand:
# the input scale of the features, the basis and resolution in time and the Tikhonov
# parameter are all chosen by generalised cross-validation (a pattern search on a grid).

train, held_out = data.split(0.75)
surrogate, fit = fit_surrogate(train)
print0(f"surrogate: {fit.kind}, chosen scales {fit.scales}, GCV RMS {fit.cv_rmse:.2e}")

# Two regressions use this surrogate.  The *strong* form differentiates it (autograd) and
# regresses $u_t$ on the library: all products of at most two of $u$ and its first and second
# derivatives (27 terms in 2D).  The *weak* form integrates its values against smooth test
# functions supported in balls inside the domain (away from the boundary and the hole), so no
# derivative of the noisy fit is needed; its library holds $\partial^\alpha (u^p)$.  Both
# select a model along a path of thresholds by the one-standard-error rule of
# cross-validation over blocks in time.

config = DiscoveryConfig()
distance = boundary_distance(mesh, data.x)
strong = regress(surrogate, fit, train, config, distance=distance)
weak = regress_weak(surrogate, fit, train, config, distance)
for found in (strong, weak):
    print0(f"{found.formulation:>6} form: {found.equation}")

# ## Validation with DOLFINx
#
# Each discovered equation becomes a UFL form; we integrate it over the held-out window,
# from the data's state at the last training snapshot and with the data's boundary values
# (from a surrogate of that window's observations), and compare with the held-out
# observations.  The two equations are compared side by side; the one that predicts the
# held-out data better is the answer.

boundary = window_surrogate(data, float(train.t[-1]), fit)
rows = validate_candidates(
    [strong.coefficients, weak.coefficients], boundary, mesh, data, float(train.t[-1])
)
for found, row in zip((strong, weak), rows, strict=True):
    error = row["rel_l2_error"]
    print0(f"{found.formulation:>6} form held-out error: "
           f"{'failed: ' + row['failure'] if error is None else f'{error:.3e}'}")
scored = [(row["rel_l2_error"], i) for i, row in enumerate(rows) if row["rel_l2_error"] is not None]
chosen = (strong, weak)[min(scored)[1]] if scored else strong
validation_error = min(scored)[0] if scored else None
print0(f"discovered ({chosen.formulation} form): {chosen.equation}")

# On this domain, with 1 % noise, the weak form recovers the heat equation within about 2 %
# and no other term; the strong form's second derivatives of the noisy fit near the hole
# bring in spurious terms, and its re-simulation predicts the held-out data less well (see
# `docs/discovery.md` for the measured numbers).

# ## Results
#
# `results.json` holds the discovered and the true coefficients and the validation errors.

errors = {k: abs(chosen.coefficients.get(k, 0.0) - v) / abs(v) for k, v in truth.items()}
write_json(
    out / "results.json",
    {
        "equation": chosen.equation,
        "formulation": chosen.formulation,
        "coefficients": chosen.coefficients,
        "true_coefficients": truth,
        "coefficient_errors": errors,
        "validation_rel_l2_error": validation_error,
        "validation": rows,
        "surrogate": fit.as_dict(),
    },
    comm,
)
print0(json.dumps(errors, indent=1))
