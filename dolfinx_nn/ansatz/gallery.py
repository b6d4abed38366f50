"""``dolfinx-nn compare`` with its defaults on gmsh geometries the defaults were not tuned on.

Each geometry is meshed by gmsh (OpenCASCADE) with a few thousand triangles, written to a
``.msh`` file and read back like a user's mesh; ``compare`` then runs with every setting at its
default (the ``dolfinx-nn compare`` defaults: :class:`~dolfinx_nn.ansatz.compare.CompareConfig`
and :class:`~dolfinx_nn.ansatz.network_solver.NetworkConfig`).  The table of
``docs/ansatz.md`` comes from::

    mpiexec -n 2 python -m dolfinx_nn.ansatz.gallery --out results/gallery

``--seeds 0,1,2`` repeats each geometry with those seeds of the network (collocation points and
initial weights; the fits of ``G`` and ``D`` do not depend on it) and prints the median and
range of the network's error per geometry: one run of the L-BFGS training is one draw.

Geometries (none is a built-in mesh):

=======================  ==============================================================
ellipse-two-holes        ellipse with semi-axes 1 and 0.6 minus two disks (radii 0.15, 0.2)
l-shape                  [0, 1]^2 minus [0.5, 1]^2 (a re-entrant corner)
flower                   the curve r = 0.6 + 0.15 cos(5 theta) (a B-spline through 100 points)
disk-square-hole         disk of radius 1 minus a square of side 0.6 rotated by 30 degrees
channel-three-holes      [0, 4] x [0, 1] minus three disks of radius 0.12 (elongated)
ellipse-two-holes-mm     the first geometry's mesh in millimetres (coordinates times 1e-3)
=======================  ==============================================================

The exact solution is ``sin(2 x + 0.5) cos(3 y) + x y`` in the geometry's own unit (for the
millimetre plate ``x, y`` are the coordinates divided by 1e-3).
"""

from __future__ import annotations

import argparse
import math
import pathlib
import time
from collections.abc import Callable, Sequence

from mpi4py import MPI

import numpy as np

#: Exact solution in the geometry's coordinates ``X``, ``Y`` (formulas of ``x[0]``, ``x[1]``).
EXACT = "sin(2*X + 0.5)*cos(3*Y) + X*Y"


def _ellipse_two_holes(occ) -> list[tuple[int, int]]:
    outer = occ.addDisk(0.0, 0.0, 0.0, 1.0, 0.6)
    holes = [occ.addDisk(-0.45, 0.0, 0.0, 0.15, 0.15), occ.addDisk(0.45, 0.1, 0.0, 0.2, 0.2)]
    domain, _ = occ.cut([(2, outer)], [(2, h) for h in holes])
    return domain


def _l_shape(occ) -> list[tuple[int, int]]:
    domain, _ = occ.cut([(2, occ.addRectangle(0.0, 0.0, 0.0, 1.0, 1.0))],
                        [(2, occ.addRectangle(0.5, 0.5, 0.0, 0.5, 0.5))])
    return domain


def _flower(occ) -> list[tuple[int, int]]:
    theta = np.linspace(0.0, 2.0 * math.pi, 101)[:-1]
    r = 0.6 + 0.15 * np.cos(5.0 * theta)
    points = [occ.addPoint(float(ri * np.cos(t)), float(ri * np.sin(t)), 0.0)
              for ri, t in zip(r, theta, strict=True)]
    curve = occ.addBSpline(points + [points[0]])
    return [(2, occ.addPlaneSurface([occ.addCurveLoop([curve])]))]


def _disk_square_hole(occ) -> list[tuple[int, int]]:
    square = occ.addRectangle(-0.3, -0.3, 0.0, 0.6, 0.6)
    occ.rotate([(2, square)], 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, math.pi / 6)
    domain, _ = occ.cut([(2, occ.addDisk(0.0, 0.0, 0.0, 1.0, 1.0))], [(2, square)])
    return domain


def _channel_three_holes(occ) -> list[tuple[int, int]]:
    holes = [occ.addDisk(x, y, 0.0, 0.12, 0.12) for x, y in ((1.0, 0.5), (2.0, 0.35),
                                                               (3.0, 0.6))]
    domain, _ = occ.cut([(2, occ.addRectangle(0.0, 0.0, 0.0, 4.0, 1.0))],
                        [(2, h) for h in holes])
    return domain


#: name -> (builder, mesh size, unit of length)
GEOMETRIES: dict[str, tuple[Callable, float, float]] = {
    "ellipse-two-holes": (_ellipse_two_holes, 0.04, 1.0),
    "l-shape": (_l_shape, 0.025, 1.0),
    "flower": (_flower, 0.03, 1.0),
    "disk-square-hole": (_disk_square_hole, 0.05, 1.0),
    "channel-three-holes": (_channel_three_holes, 0.06, 1.0),
    "ellipse-two-holes-mm": (_ellipse_two_holes, 0.04, 1e-3),
}


def write_geometry(name: str, path: pathlib.Path) -> int:
    """Mesh geometry ``name`` with gmsh and write it to ``path`` (one process); cell count."""
    import gmsh

    build, size, unit = GEOMETRIES[name]
    gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add(name)
        domain = build(gmsh.model.occ)
        gmsh.model.occ.synchronize()
        gmsh.model.addPhysicalGroup(2, [tag for _, tag in domain], 1)
        gmsh.option.setNumber("Mesh.CharacteristicLengthMin", size)
        gmsh.option.setNumber("Mesh.CharacteristicLengthMax", size)
        gmsh.model.mesh.generate(2)
        if unit != 1.0:  # the same mesh in another unit (meshing the dilated geometry differs)
            gmsh.model.mesh.affineTransform([unit, 0.0, 0.0, 0.0, 0.0, unit, 0.0, 0.0,
                                             0.0, 0.0, unit, 0.0])
        gmsh.write(str(path))
        return len(gmsh.model.mesh.getElementsByType(2)[0])
    finally:
        gmsh.finalize()


def exact_solution(name: str) -> str:
    """The exact solution of geometry ``name`` as a formula of ``x[0]``, ``x[1]``."""
    unit = GEOMETRIES[name][2]
    scale = "" if unit == 1.0 else f"/{unit!r}"
    return EXACT.replace("X", f"(x[0]{scale})").replace("Y", f"(x[1]{scale})")


def run(
    names: Sequence[str], out: pathlib.Path, comm: MPI.Comm = MPI.COMM_WORLD,
    seeds: Sequence[int] = (0,),
) -> list[dict]:
    """Mesh, then ``compare`` with defaults, every geometry in ``names`` with every network
    seed in ``seeds``; rows of the table (one per geometry and seed)."""
    from dolfinx_nn.output import write_json

    rows = []
    for name in names:
        path = out / f"{name}.msh"
        cells = write_geometry(name, path) if comm.rank == 0 else None
        cells = comm.bcast(cells, root=0)
        for seed in seeds:
            rows.append(_run_one(name, path, cells, seed, comm))
            write_json(out / "gallery.json", {"ranks": comm.size, "rows": rows}, comm)
    return rows


def _run_one(name: str, path: pathlib.Path, cells: int, seed: int, comm: MPI.Comm) -> dict:
    """One row: ``compare`` with defaults, network seed ``seed``, on the mesh file ``path``."""
    from dataclasses import replace

    from dolfinx_nn.ansatz.compare import CompareConfig, compare
    from dolfinx_nn.ansatz.pdes import Problem
    from dolfinx_nn.output import print0

    print0(f"== {name}: {cells} triangles, seed {seed}", comm=comm)
    start = time.perf_counter()
    config = CompareConfig(mesh=str(path))
    config = replace(config, network=replace(config.network, seed=seed))
    problem = Problem.from_text("poisson", exact_solution(name), 2)
    try:
        results = compare(problem, config, comm)
        error = None
    except Exception as exc:  # one geometry's failure is a row of the table
        results, error = None, f"{type(exc).__name__}: {exc}"
    wall = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    row = {"geometry": name, "cells": cells, "seed": seed, "exact": exact_solution(name),
           "wall_time_s": wall, "error": error}
    if results is not None:
        net = results["network"]
        p2 = [r for r in results["fem"] if r["degree"] == 2]
        row.update({
            "network_relative_l2_error": net["relative_l2_error"],
            "network_boundary_relative_max_error": net["boundary_relative_max_error"],
            "distance_min_relative": net["distance_min_relative"],
            "network_time_s": net["wall_time_s"], "fits": net["fits"],
            "scales": net["scales"], "fem_p2_base_relative_l2_error":
                p2[0]["relative_l2_error"] if p2 else None,
            "phase_times_s": results["phase_times_s"],
        })
    return row


def table(rows: Sequence[dict]) -> str:
    """The markdown table of ``docs/ansatz.md`` (a seed column when there are several)."""
    from dolfinx_nn.output import markdown_table

    seeds = len({r.get("seed", 0) for r in rows}) > 1
    cells = []
    for r in rows:
        first = [r["geometry"], r["cells"]] + ([r.get("seed", 0)] if seeds else [])
        if r.get("error"):
            cells.append(first + [f"failed: {r['error']}", "", "", "",
                                  f"{r['wall_time_s']:.0f}"])
            continue
        cells.append(first + [f"{r['network_relative_l2_error']:.2e}",
                              f"{r['network_boundary_relative_max_error']:.1e}",
                              f"{r['fem_p2_base_relative_l2_error']:.1e}",
                              f"{r['network_time_s']:.0f}", f"{r['wall_time_s']:.0f}"])
    header = (["geometry", "triangles"] + (["seed"] if seeds else [])
              + ["network rel. L2", "boundary (rel. max)", "FEM P2 (base mesh) rel. L2",
                 "network time [s]", "whole run [s]"])
    return markdown_table(header, cells, align="l" + "r" * (len(header) - 1))


def spread(rows: Sequence[dict]) -> str:
    """Per geometry: median, smallest and largest network error over the seeds run."""
    lines = []
    for name in dict.fromkeys(r["geometry"] for r in rows):
        errors = [r["network_relative_l2_error"] for r in rows
                  if r["geometry"] == name and not r.get("error")]
        if errors:
            lines.append(f"{name}: network rel. L2 over {len(errors)} seeds: median "
                         f"{np.median(errors):.2e}, range {min(errors):.2e} to "
                         f"{max(errors):.2e}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geometries", default=",".join(GEOMETRIES),
                        help=f"comma-separated subset of {', '.join(GEOMETRIES)}")
    parser.add_argument("--seeds", type=seed_list, default=[0],
                        help="comma-separated seeds of the network (default 0)")
    parser.add_argument("--out", required=True, help="folder for the meshes and gallery.json")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.geometries.split(",") if n.strip()]
    unknown = sorted(set(names) - set(GEOMETRIES))
    if unknown:
        raise SystemExit(f"unknown geometries {unknown}; choose from {list(GEOMETRIES)}")
    import torch

    from dolfinx_nn.output import prepare_output_dir, print0

    torch.set_num_threads(1)
    out = prepare_output_dir(pathlib.Path(args.out), MPI.COMM_WORLD)
    rows = run(names, out, seeds=args.seeds)
    print0(table(rows))
    if len(args.seeds) > 1:
        print0(spread(rows))
    return 0


def seed_list(text: str) -> list[int]:
    """``--seeds``: comma-separated non-negative integers, at least one."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated non-negative integers, e.g. 0,1,2; got {text!r}")
    return seeds


if __name__ == "__main__":
    raise SystemExit(main())
