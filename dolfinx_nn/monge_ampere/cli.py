"""Solve the Monge-Ampere Dirichlet problem det D^2 u = f, u = g with a network (and FEM).

Trains an input convex network (--ansatz icnn, convex by construction) or a plain
feed-forward network with a convexity penalty (--ansatz ffnn) on a collocation loss whose
residual uses autograd Hessians, in any dimension, on the unit cube, the unit ball or a mesh
file.  With --fem, also solves the problem with the C0 penalty finite element method of
Brenner-Gudi-Neilan (P2, Newton/SNES; d = 2, 3 on the cube or a mesh file), globalized by
mesh sequencing (on the cube: ceil(N/2^k) cells per edge for N = --resolution, k = ..., 1, 0,
from the coarsest with at least 4, e.g. 16 -> 4, 8, 16; 17 -> 5, 9, 17; 24 -> 6, 12, 24;
each solve started from the previous one, interpolated) and continuation in the data; see
docs/monge_ampere.md.  To watch the Newton solves: PETSC_OPTIONS="-monge_ampere_snes_monitor".

Problem: a built-in case (--case; exact solution u, f = det D^2 u): smooth (exp(|x|^2/2),
any d), brenner (20 exp(x^6/6 + y), d = 2), singular (-sqrt(2 - |x|^2), d = 2), degenerate
(max(|x - x0| - 0.2, 0)^2 / 2, f = 0 on a disk); or your own formulas in x[0], x[1], ...:
--f (source, >= 0), --g (boundary data) and optionally --exact (then errors are reported),
e.g. --f "(1 + x[0]**2 + x[1]**2)*exp(x[0]**2 + x[1]**2)" --g "exp((x[0]**2 + x[1]**2)/2)".
Before any training or solve, f must be finite and >= 0 at every collocation point and FEM
quadrature point, and g finite at every boundary collocation point and FEM boundary node;
otherwise the command stops with the value and the point.
--noise L multiplies f by (1 + L xi), xi ~ N(0, 1), at every collocation point (FEM: by
1 + L xi_h, xi_h the P1 function with such values at its nodes).

Writes to --out (results.json first, then the plots and the ParaView file):
  results.json        network: rel_l2_error, max_error (with an exact solution),
                      relative_residual, convexity_violation_fraction (lambda_min(D^2 u) <
                      -tol at >= 1e4 test points), wall_time_s, training_steps,
                      loss_scales (the scales the loss terms are divided by);
                      fem: status, rel_l2_error, h1_error (absolute, the gradient term
                      weighted by the domain's length), rel_h1_error, newton_iterations,
                      strategy, dofs, wall_time_s, or status "failed" with the reason
  solution.png        network, exact solution and error (plane through the centre for d > 2)
  loss.png            training history
  solution.bp/        ParaView (VTX) file with the network, exact and FEM solutions
                      (with --fem: the FEM mesh)

Exit status: 0 on success; 3 if the FEM reference failed (the network result and the
reason are in results.json).

Example:
  mpiexec -n 2 dolfinx-nn monge-ampere --case smooth --dim 2 --ansatz icnn --fem --out ma
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from typing import Any

from mpi4py import MPI

import numpy as np
import torch

from dolfinx_nn.cli_options import (
    OptionError,
    about_option,
    add_device_argument,
    add_output_arguments,
    add_seed_argument,
    add_threads_argument,
    add_training_arguments,
    formula,
    mesh_spec,
    training_from_args,
)
from dolfinx_nn.monge_ampere.cases import CASES, formula_case, get_case
from dolfinx_nn.monge_ampere.domains import SHAPES, MeshDomain, as_sequence, make_domain
from dolfinx_nn.monge_ampere.network_solver import DEFAULT_TRAINING, NetworkConfig, solve_network
from dolfinx_nn.monge_ampere.networks import ANSATZE
from dolfinx_nn.output import (
    check_writable,
    collective_output,
    prepare_output_dir,
    print0,
    write_json,
)

_FEM_SHAPES = {2: "square", 3: "cube"}

#: Measured with /usr/bin/time (user + sys, per rank) on a shared 2-core machine.
RUN_TIME = ("the default run (smooth case, d = 2, ICNN, no FEM) takes about 80 s of CPU time "
            "on one rank (the wall time of an idle machine)")


def _domain(text: str) -> str:
    """argparse type: a built-in shape or an existing mesh file."""
    return text if text in SHAPES else mesh_spec(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dolfinx-nn monge-ampere``."""
    defaults = NetworkConfig()
    parser.add_argument("--case", choices=list(CASES), default=None,
                        help="built-in case (default smooth; not with --f/--g)")
    parser.add_argument("--f", type=formula, default=None,
                        help="source formula in x[0], x[1], ... (>= 0)")
    parser.add_argument("--g", type=formula, default=None, help="boundary data formula (with --f)")
    parser.add_argument("--exact", type=formula, default=None,
                        help="exact solution formula, if known (errors are then reported)")
    parser.add_argument("--dim", type=int, default=None,
                        help="space dimension d (default: 2, or the mesh file's)")
    parser.add_argument("--domain", type=_domain, default="cube",
                        help=f"{', '.join(SHAPES)} (unit cube/ball) or a mesh file (default cube)")
    parser.add_argument("--ansatz", choices=list(ANSATZE), default="icnn")
    parser.add_argument("--noise", type=float, default=0.0, help="relative noise level in f")
    parser.add_argument("--fem", action="store_true", help="also run the FEM reference")
    parser.add_argument("--resolution", type=int, default=16,
                        help="cells per edge N of the finest FEM mesh of the cube; the meshes "
                             "before it have ceil(N/2^k) >= 4 (default 16)")
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--depth", type=int, default=defaults.depth)
    parser.add_argument("--n-interior", type=int, default=defaults.n_interior)
    parser.add_argument("--n-boundary", type=int, default=defaults.n_boundary)
    parser.add_argument("--n-test", type=int, default=defaults.n_test)
    add_training_arguments(parser, DEFAULT_TRAINING)
    parser.add_argument("--boundary-weight", type=float, default=defaults.boundary_weight)
    parser.add_argument("--convexity-weight", type=float, default=defaults.convexity_weight,
                        help="weight of the convexity penalty (ffnn only)")
    add_seed_argument(parser)
    add_device_argument(parser)
    add_threads_argument(parser)
    add_output_arguments(parser, "monge-ampere")


def _fem_meshes(domain, dim: int, resolution: int, comm: MPI.Comm) -> list:
    """The FEM meshes, coarse to fine (mesh sequencing on the cube), or a ValueError."""
    if isinstance(domain, MeshDomain):
        return [domain.mesh]
    if domain.name != "cube" or dim not in _FEM_SHAPES:
        raise ValueError(
            f"--fem needs d = 2 or 3 on the cube or a mesh file; got d = {dim} on {domain.name!r}"
        )
    if resolution < 1:
        raise ValueError(f"--resolution must be a positive integer, got {resolution}")
    from dolfinx_nn.meshes import create_mesh
    from dolfinx_nn.monge_ampere.fem import sequence_resolutions

    return [create_mesh(comm, _FEM_SHAPES[dim], n) for n in sequence_resolutions(resolution)]


def make_case(args: argparse.Namespace):
    """The built-in case of ``--case`` or the formulas of ``--f``, ``--g``, ``--exact``."""
    formulas = [args.f, args.g, args.exact]
    if any(v is not None for v in formulas):
        if args.case is not None:
            raise ValueError("give either --case or the formulas --f/--g/--exact, not both")
        if args.f is None or args.g is None:
            raise ValueError("a problem from formulas needs both --f (source) and --g "
                             "(boundary data); --exact is optional")
        return formula_case(args.f, args.g, args.exact, dim=args.dim)
    return get_case(args.case or "smooth")


def _write_paraview(path: pathlib.Path, net, case, fem_u, center, comm: MPI.Comm) -> None:
    import dolfinx
    import ufl

    V = fem_u.function_space
    dim = V.mesh.topology.dim
    param = next(net.parameters())

    def network(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            pts = torch.as_tensor(x[:dim].T.copy(), dtype=param.dtype, device=param.device)
            return net(pts).cpu().numpy()

    u_net = dolfinx.fem.Function(V, name="network")
    u_net.interpolate(network)
    functions = [u_net]
    if case.has_exact:
        u_ex = dolfinx.fem.Function(V, name="exact")
        xs = ufl.SpatialCoordinate(V.mesh)
        expr = case.u([xs[i] for i in range(dim)], "ufl", center)
        u_ex.interpolate(dolfinx.fem.Expression(expr, V.element.interpolation_points))
        functions.append(u_ex)
    fem_u.name = "fem"
    check_writable(path.parent, comm)
    with collective_output(f"cannot write {path}", comm):
        with dolfinx.io.VTXWriter(comm, path, [*functions, fem_u], engine="BP4") as writer:
            writer.write(0.0)


def _run_fem(case, meshes, center, args) -> tuple[dict, Any]:
    """FEM reference on the mesh sequence: (summary, solution) or (failure record, None)."""
    from dolfinx_nn.monge_ampere.fem import FEMSolveError, solve_fem_sequence

    try:
        results = solve_fem_sequence(case, meshes, center=center, noise=args.noise,
                                     seed=args.seed)
    except FEMSolveError as err:
        done = getattr(err, "results", [])
        return {
            "status": "failed",
            "reason": str(err),
            "reason_name": err.reason_name,
            "failed_on_mesh": len(done) + 1,
            "meshes": len(meshes),
            "path": err.path[-20:],
            "coarser_meshes": [r.summary() for r in done],
        }, None
    final = results[-1]
    return {**final.summary(), "sequence": [r.summary() for r in results[:-1]]}, final


def run(args: argparse.Namespace) -> int:
    """Run one experiment and write results.json, plots and ParaView files."""
    comm = MPI.COMM_WORLD
    if args.noise < 0 or not np.isfinite(args.noise):
        raise OptionError(f"--noise must be a finite number >= 0, got {args.noise}")
    if args.domain in SHAPES:
        args.dim = 2 if args.dim is None else args.dim
        domain = make_domain(args.domain, args.dim, comm, args.resolution)
    else:
        from dolfinx_nn.meshes import create_mesh

        with about_option("--domain"):
            domain = MeshDomain(create_mesh(comm, args.domain, args.resolution),
                                name=args.domain)
        if args.dim is not None and args.dim != domain.dim:
            raise OptionError(f"--dim {args.dim} does not match the mesh {args.domain!r}, which "
                              f"is {domain.dim}-dimensional; leave --dim out to use the mesh's")
        args.dim = domain.dim
    with about_option("--f/--g/--exact" if args.f or args.g or args.exact else "--case"):
        case = make_case(args)
    with about_option("--dim"):
        case.check_dim(args.dim)
    with about_option("--fem"):
        meshes = _fem_meshes(domain, args.dim, args.resolution, comm) if args.fem else None
    if meshes is not None:  # the FEM's data, checked before the (long) training
        from dolfinx_nn.monge_ampere.fem import check_fem_data

        with about_option("--f/--g" if args.f or args.g else "--case"):
            for mesh in meshes:
                check_fem_data(case, mesh, as_sequence(domain.center))
    out = prepare_output_dir(args.out, comm)
    config = NetworkConfig(
        ansatz=args.ansatz, width=args.width, depth=args.depth, n_interior=args.n_interior,
        n_boundary=args.n_boundary, n_test=args.n_test,
        training=training_from_args(args, DEFAULT_TRAINING),
        boundary_weight=args.boundary_weight, convexity_weight=args.convexity_weight,
        noise=args.noise, seed=args.seed, device=args.device,
    )
    print0(f"monge-ampere: case {case.name}, d = {args.dim}, {domain.name}, {args.ansatz}, "
           f"{comm.size} rank(s)")
    result = solve_network(case, domain, config, comm)  # checks f and g before training
    center = as_sequence(domain.center)
    results: dict = {
        "case": case.name, "problem": case.description, "dim": args.dim,
        "domain": domain.name, "ansatz": args.ansatz, "noise": args.noise, "ranks": comm.size,
        "config": dataclasses.asdict(config), "network": result.summary(),
    }
    print0("network:", {k: (f"{v:.3e}" if isinstance(v, float) else v)
                        for k, v in result.summary().items()})
    write_json(out / "results.json", results, comm)  # the network result survives what follows
    status = 0
    if meshes is not None:
        fem, final = _run_fem(case, meshes, center, args)
        results["fem"] = fem
        write_json(out / "results.json", results, comm)
        if final is None:
            status = 3
            print0(f"monge-ampere: the FEM reference failed ({fem['reason']}); the network "
                   f"result and the failure are in {out / 'results.json'}")
        else:
            print0("fem:", {k: v for k, v in fem.items() if k != "sequence"})
            _write_paraview(out / "solution.bp", result.net, case, final.u, center, comm)
    from dolfinx_nn.monge_ampere.plots import DPI, history_figure, solution_figure
    from dolfinx_nn.plotting import write_figure

    title = f"{case.name}, d = {args.dim}, {args.ansatz}"
    write_figure(out / "solution.png", lambda: solution_figure(result.net, case, domain, title),
                 comm, dpi=DPI)
    write_figure(out / "loss.png", lambda: history_figure(result.history, title), comm, dpi=DPI)
    print0(f"wrote {out / 'results.json'}")
    return status
