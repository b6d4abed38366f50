"""Solve one PDE with FEM and with the network ansatz u = G + D*N, on the same mesh and data.

The source, Dirichlet data and initial value come from the exact (manufactured) solution EXPR,
symbolically (UFL for FEM, torch autograd for the network).  FEM (P1, P2; SUPG when advection
dominates) runs on the mesh refined 0..LEVELS-1 times (default: up to 4 meshes, at most 400000
cells on the finest); the network's G and D are fitted on the mesh and N is trained on the PDE
residual (Adam, then L-BFGS), in dimensionless variables (results in the user's units).  Errors
in L2, H1 and max norm are measured by DOLFINx quadrature of degree 8 (network: on the finest
refinement of the base mesh whose quadrature points do not outnumber the points its training
evaluated).  Rank 0 prints every phase with its elapsed time.

How long the defaults take: on a 2D gmsh mesh of 2590 triangles (an ellipse with two holes,
docs/ansatz.md), 2 ranks of an otherwise idle 2-core machine: FEM 7 s, fits of G and D 8 s,
1000 L-BFGS steps of N 28 s, error measurement 15 s, plots and ParaView files 8 s; 72 s in all
(2 min 40 s when other jobs kept the machine busy, load average 5).  Training
time grows with --points and --lbfgs-steps, not with the mesh; the FEM part grows with the
mesh (--levels), the error measurement too but never beyond the points training evaluated.

Writes to DIR (--out; results.json first, then the plots and the ParaView file):
  results.json   fem: [{degree, level, dofs, l2_error, h1_error, h1_seminorm_error, max_error,
                 relative_*, h1_length, wall_time_s, rates}], network: {parameters, the same
                 errors, boundary_max_error, final_loss, wall_time_s, ...}; H1 errors weight the
                 seminorm by h1_length (the domain's largest extent), so relative errors do not
                 depend on the unit of length.  Data and options are checked before anything
                 is solved; if a later stage fails, results.json holds the other and failures
  errors.png     relative L2 error versus wall time and versus unknowns
  fields.png     FEM and network solutions and their errors side by side
  fields.bp      ParaView (VTX) file: FEM, network and exact solution in the finest FEM space
  (results.json also holds the scales of the nondimensionalisation, the boundary misfits of the
  fits of G and D, and the time of every phase)

Runs under MPI: FEM is distributed, the network is trained data-parallel (each rank holds the
collocation points in its cells; gradients are summed over ranks).

--checkpoint FILE keeps the network's training state; a later run with the same FILE
continues it (more --lbfgs-steps extend it) and refuses a different problem (mesh, --exact,
--pde, network, ...), listing the differences.

Examples:
  mpiexec -n 2 dolfinx-nn compare --mesh square-with-hole --pde poisson \\
      --exact "sin(2*x[0] + 0.5)*cos(3*x[1]) + x[0]*x[1]" --out results/poisson
  dolfinx-nn compare --mesh square --pde advection-diffusion --exact "x[0]*x[1]*exp(x[0])" \\
      --advection "1, 0.5" --diffusion 0.01 --out results/ad
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

from mpi4py import MPI

from dolfinx_nn.ansatz.compare import CompareConfig, check_mesh, compare
from dolfinx_nn.ansatz.equations import PDES
from dolfinx_nn.ansatz.fem_reference import STABILIZATIONS
from dolfinx_nn.ansatz.fitted_fields import FIT_TOLERANCE
from dolfinx_nn.ansatz.network_solver import COLLOCATION, LOSSES, NetworkConfig
from dolfinx_nn.ansatz.pdes import Problem
from dolfinx_nn.cli_options import (
    about_option,
    add_output_arguments,
    add_seed_argument,
    add_threads_argument,
    add_training_arguments,
    formula,
    formula_list,
    mesh_spec,
    positive_int,
    training_from_args,
)
from dolfinx_nn.output import OutputError, file_sha256, prepare_output_dir, print0

#: Measured with ``time`` on an idle 2-core machine (the phases: the module docstring).
RUN_TIME = ("compare has no default problem (--exact is required); with every other option at "
            "its default, a 2D mesh of 2590 triangles takes 72 s on 2 ranks of an idle 2-core "
            "machine (2 min 40 s under load); rank 0 prints every phase as it starts and ends")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dolfinx-nn compare``."""
    p = parser.add_argument_group("problem")
    p.add_argument("--mesh", type=mesh_spec, default="square-with-hole",
                   help="built-in mesh name or mesh file (default: square-with-hole)")
    p.add_argument("--resolution", type=int, default=8,
                   help="cells per unit length of a built-in base mesh (default: 8)")
    p.add_argument("--pde", choices=sorted(PDES), default="poisson")
    p.add_argument("--exact", type=formula, required=True,
                   help="exact solution, e.g. 'sin(pi*x[0])*x[1]' (uses t for heat-advection)")
    p.add_argument("--advection", type=formula_list, default=None,
                   help="advection field, comma-separated formulas, e.g. '1, 0.5'")
    p.add_argument("--diffusion", type=float, default=1.0, help="diffusion coefficient")
    p.add_argument("--final-time", type=float, default=1.0, help="T of heat-advection")
    f = parser.add_argument_group("FEM")
    f.add_argument("--levels", type=int, default=None,
                   help="number of FEM meshes (uniform refinements of the base mesh; default: "
                        "up to 4, with at most 400000 cells on the finest)")
    f.add_argument("--degrees", type=_degrees, default=(1, 2),
                   help="Lagrange degrees, comma-separated (default: 1,2)")
    f.add_argument("--stabilization", choices=STABILIZATIONS, default="auto")
    n = parser.add_argument_group("network")
    n.add_argument("--width", type=int, default=20)
    n.add_argument("--depth", type=int, default=4)
    n.add_argument("--loss", choices=sorted(LOSSES), default="strong")
    n.add_argument("--collocation", choices=COLLOCATION, default="random")
    n.add_argument("--points", type=int, default=2000, help="global collocation points")
    default_degree = NetworkConfig().quadrature_degree
    n.add_argument("--quadrature-degree", type=positive_int, default=default_degree,
                   help="degree of the quadrature rule of the network's loss: the Ritz "
                        "energy (--loss ritz) and the collocation points of --collocation "
                        "quadrature (the mesh is refined until there are 1.5 points per "
                        "parameter of N); random collocation does not use it "
                        f"(default: {default_degree})")
    add_training_arguments(n, NetworkConfig().training)
    add_seed_argument(n)
    n.add_argument("--fit-features", type=int, default=500,
                   help="random features of the G and D fits (default: 500)")
    n.add_argument("--fit-boundary-points", type=int, default=4000,
                   help="boundary points of the G and D fits (default: 4000)")
    n.add_argument("--fit-tolerance", type=float, default=FIT_TOLERANCE,
                   help="largest relative boundary misfit of the G and D fits; the smoothest "
                        "fits within it are chosen; D's is at least the misfit a smooth D "
                        "leaves on the chords of a curved boundary (results.json: "
                        f"network.fits.D.chord_misfit) (default: {FIT_TOLERANCE:g})")
    n.add_argument("--distance-scale", type=float, default=None,
                   help="frequency scale of the features of D (default: 1 in 2D, 1.5 in 3D)")
    n.add_argument("--checkpoint", default=None,
                   help="training checkpoint file (continued if it exists and is of the same "
                        "problem)")
    add_threads_argument(parser)
    add_output_arguments(parser, "compare")


def _degrees(text: str) -> tuple[int, ...]:
    try:
        degrees = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 1,2, got {text!r}") from None
    if not degrees or min(degrees) < 1:
        raise argparse.ArgumentTypeError(f"degrees must be >= 1, got {text!r}")
    return degrees


def config_from_args(args: argparse.Namespace) -> CompareConfig:
    """The comparison settings from parsed options."""
    training = dataclasses.replace(training_from_args(args, NetworkConfig().training),
                                   seed=args.seed)
    network = NetworkConfig(width=args.width, depth=args.depth, loss=args.loss,
                            collocation=args.collocation, points=args.points,
                            quadrature_degree=args.quadrature_degree,
                            fit_features=args.fit_features,
                            fit_boundary_points=args.fit_boundary_points,
                            fit_tolerance=args.fit_tolerance,
                            distance_scale=args.distance_scale, training=training,
                            seed=args.seed)
    return CompareConfig(mesh=args.mesh, resolution=args.resolution, levels=args.levels,
                         degrees=tuple(args.degrees), stabilization=args.stabilization,
                         network=network)


def run(args: argparse.Namespace) -> int:
    """Run the comparison and write DIR."""
    comm = MPI.COMM_WORLD
    config = config_from_args(args)
    from dolfinx_nn.meshes import create_mesh

    print0(f"reading the mesh {config.mesh} ...")
    with about_option("--mesh"):
        base = create_mesh(comm, config.mesh, config.resolution)
    problem = Problem.from_text(args.pde, args.exact, base.geometry.dim, diffusion=args.diffusion,
                                advection=args.advection, final_time=args.final_time)
    with about_option("--mesh"):
        check_mesh(base, problem, str(config.mesh))
    out = prepare_output_dir(pathlib.Path(args.out), comm)
    record = None
    if args.checkpoint is not None:
        from dolfinx_nn.ansatz.compare import _config_dict

        settings = _config_dict(config)
        for fem_only in ("levels", "degrees", "stabilization", "error_degree"):
            settings.pop(fem_only)
        settings["network"].pop("training")  # its own check allows more steps
        record = {**problem.describe(), **settings,
                  "mesh_sha256": file_sha256(config.mesh, comm)}
    results = compare(problem, config, comm, out, checkpoint=args.checkpoint, base=base,
                      problem_record=record)
    print0(f"wrote {out / 'results.json'}, errors.png, fields.png, fields.bp")
    error = results["network"].get("checkpoint_error")
    if error:
        raise OutputError(f"{error} (results.json holds the finished results)")
    return 0
