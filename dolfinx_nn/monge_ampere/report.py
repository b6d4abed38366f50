"""Tables for the documentation: every case with ICNN, FFNN and FEM, and the ICNN as d grows.

Run (any number of ranks; rank 0 writes)::

    python -m dolfinx_nn.monge_ampere.report --out results/monge_ampere

It writes ``DIR/tables.md`` (Markdown tables), ``DIR/report.json`` (all numbers) and one
``DIR/monge_ampere_<case>_<domain>_<d>d_<ansatz>.png`` per network run.  ``--parts`` selects the
comparison of all cases, the ICNN against d, the FEM convergence study of every case (mesh
sequencing, 4 -> 32 cells per edge), the FEM of the 2D cases at the resolutions of
``FEM_RESOLUTIONS`` (6 to 64 cells per edge, each reached by its own mesh sequence) and the
ICNN with its *default* settings on the ball and the cube over ``--seeds`` seeds
(``--default-dims``).  Step counts of the first two parts are
options, so that a quick run (``--adam-steps 50 --lbfgs-steps 10``) checks the pipeline.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, replace

from mpi4py import MPI

import numpy as np

from dolfinx_nn.cli_options import (
    add_threads_argument,
    add_training_arguments,
    apply_options,
    training_from_args,
)
from dolfinx_nn.errors import SolverError
from dolfinx_nn.monge_ampere.cases import get_case
from dolfinx_nn.monge_ampere.domains import Ball, Box
from dolfinx_nn.monge_ampere.network_solver import DEFAULT_TRAINING, NetworkConfig, solve_network
from dolfinx_nn.output import (
    format_value,
    markdown_table,
    prepare_output_dir,
    print0,
    write_json,
    write_text,
)
from dolfinx_nn.plotting import write_figure

#: (case, d, noise) rows of the comparison table, all on the unit cube
COMPARISON: tuple[tuple[str, int, float], ...] = (
    ("smooth", 2, 0.0),
    ("brenner", 2, 0.0),
    ("singular", 2, 0.0),
    ("degenerate", 2, 0.0),
    ("smooth", 2, 0.05),
    ("smooth", 3, 0.0),
)
#: parts of the report
PARTS = ("comparison", "dimensions", "fem-convergence", "fem-resolutions", "defaults")
#: FEM mesh resolution (cells per edge) per dimension
FEM_RESOLUTION = {2: 16, 3: 6}


def _fem_row(case_name: str, dim: int, noise: float, comm: MPI.Comm) -> dict:
    from dolfinx_nn.meshes import create_mesh
    from dolfinx_nn.monge_ampere.fem import sequence_resolutions, solve_fem_sequence

    meshes = (create_mesh(comm, {2: "square", 3: "cube"}[dim], n)
              for n in sequence_resolutions(FEM_RESOLUTION[dim]))
    try:
        res = solve_fem_sequence(get_case(case_name), meshes, center=[0.5] * dim, noise=noise)
    except SolverError as e:
        return {"status": f"failed: {e.reason_name}"}
    return {**res[-1].summary(), "status": "ok"}


def _network_row(case_name, domain, noise, ansatz, config: NetworkConfig, out, comm) -> dict:
    from dolfinx_nn.monge_ampere.plots import DPI, solution_figure

    cfg = replace(config, ansatz=ansatz, noise=noise)
    case = get_case(case_name)
    res = solve_network(case, domain, cfg, comm)
    name = f"monge_ampere_{case_name}_{domain.name}_{domain.dim}d_{ansatz}"
    name += "_noisy" if noise else ""
    write_figure(out / f"{name}.png", lambda: solution_figure(
        res.net, case, domain, f"{case_name}, d = {domain.dim}, {ansatz}"), comm, dpi=DPI)
    return {"status": "ok", **res.summary()}


def comparison_table(rows: Sequence[dict]) -> str:
    """Markdown: one line per (case, d, noise, method)."""
    cells = []
    for r in rows:
        base = [r["case"], r["dim"], r["noise"], r["method"]]
        if r["status"] != "ok":
            cells.append([*base, r["status"]])
            continue
        cells.append([*base, format_value(r, "rel_l2_error"), format_value(r, "max_error"),
                      format_value(r, "convexity_violation_fraction", ".4f"),
                      format_value(r, "wall_time_s", ".1f"), r.get("newton_iterations", "-"),
                      r.get("dofs", "-")])
    return markdown_table(["case", "d", "noise", "method", "rel. L2 error", "max error",
                           "convexity violations", "time [s]", "Newton its", "dofs"], cells)


def dimension_table(rows: Sequence[dict]) -> str:
    """Markdown: ICNN error against d on the unit ball."""
    return markdown_table(
        ["d", "rel. L2 error", "max error", "convexity violations", "time [s]"],
        [[r["dim"], format_value(r, "rel_l2_error"), format_value(r, "max_error"),
          format_value(r, "convexity_violation_fraction", ".4f"),
          format_value(r, "wall_time_s", ".1f")] for r in rows])


#: FEM convergence study: (case, d, cells per edge), each mesh started from the previous one
FEM_STUDY: tuple[tuple[str, int, tuple[int, ...]], ...] = (
    ("smooth", 2, (4, 8, 16, 32)),
    ("brenner", 2, (4, 8, 16, 32)),
    ("degenerate", 2, (4, 8, 16, 32)),
    ("singular", 2, (4, 8, 16, 32)),
    ("smooth", 3, (2, 4, 8)),
)


def fem_convergence(comm: MPI.Comm, study=FEM_STUDY) -> list[dict]:
    """FEM errors of every case under uniform refinement (mesh sequencing), with rates."""
    from dolfinx_nn.meshes import create_mesh
    from dolfinx_nn.monge_ampere.fem import FEMSolveError, solve_fem_sequence

    rows = []
    for case_name, dim, resolutions in study:
        meshes = (create_mesh(comm, {2: "square", 3: "cube"}[dim], n) for n in resolutions)
        try:
            results = solve_fem_sequence(get_case(case_name), meshes, center=[0.5] * dim)
            failure = None
        except FEMSolveError as err:
            results, failure = err.results, str(err)
        prev = None
        for n, res in zip(resolutions, results, strict=False):
            row = {"case": case_name, "dim": dim, "resolution": n, **res.summary()}
            _add_rates(row, prev)
            rows.append(row)
            prev = row
            print0(f"fem {case_name} d={dim} n={n}: L2 {row['rel_l2_error']:.2e}, "
                   f"H1 {row['h1_error']:.2e}, {row['strategy']}")
        if failure is not None:
            rows.append({"case": case_name, "dim": dim,
                         "resolution": resolutions[len(results)], "status": failure})
    return rows


def _add_rates(row: dict, prev: dict | None) -> None:
    """``l2_rate`` and ``h1_rate`` of ``row`` against the coarser ``prev`` (none without it)."""
    if prev is not None:
        ratio = np.log(prev["h"] / row["h"])
        row["l2_rate"] = np.log(prev["rel_l2_error"] / row["rel_l2_error"]) / ratio
        row["h1_rate"] = np.log(prev["h1_error"] / row["h1_error"]) / ratio


#: cells per edge of the ``fem-resolutions`` part (2D cases, unit square)
FEM_RESOLUTIONS = (6, 10, 12, 20, 24, 28, 32, 40, 48, 64)


def fem_resolutions(comm: MPI.Comm, resolutions: Sequence[int] = FEM_RESOLUTIONS) -> list[dict]:
    """The FEM reference of every 2D case at each resolution, reached by its own mesh
    sequence (:func:`~dolfinx_nn.monge_ampere.fem.sequence_resolutions`: 24 -> 6, 12, 24);
    rates against the previous resolution of the list; times are those of the sequence."""
    from dolfinx_nn.meshes import create_mesh
    from dolfinx_nn.monge_ampere.fem import FEMSolveError, sequence_resolutions, solve_fem_sequence

    rows = []
    for case_name in ("smooth", "brenner", "degenerate", "singular"):
        prev = None
        for n in resolutions:
            chain = sequence_resolutions(n)
            base = {"case": case_name, "dim": 2, "resolution": n, "sequence": chain}
            meshes = (create_mesh(comm, "square", m) for m in chain)
            try:
                res = solve_fem_sequence(get_case(case_name), meshes, center=[0.5, 0.5])
            except FEMSolveError as err:
                rows.append({**base, "status": str(err)})
                print0(f"fem {case_name} n={n}: failed ({err})")
                prev = None
                continue
            row = {**base, **res[-1].summary(),
                   "wall_time_s": float(sum(r.wall_time_s for r in res))}
            _add_rates(row, prev)
            rows.append(row)
            prev = row
            print0(f"fem {case_name} n={n}: L2 {row['rel_l2_error']:.2e}, "
                   f"H1 {row['h1_error']:.2e}, {row['strategy']}")
    return rows


def resolutions_table(rows: Sequence[dict]) -> str:
    """Markdown: the FEM at each resolution (``fem-resolutions``)."""
    cells = []
    for r in rows:
        base = [r["case"], r["resolution"], " ".join(map(str, r["sequence"]))]
        if r.get("status", "converged") != "converged":
            cells.append([*base, f"failed: {r['status']}"])
            continue
        cells.append([*base, r["strategy"], f"{r['newton_solves']} ({r['newton_iterations']})",
                      format_value(r, "rel_l2_error"), format_value(r, "l2_rate", ".2f"),
                      format_value(r, "h1_error"), format_value(r, "h1_rate", ".2f"),
                      format_value(r, "min_hessian_eigenvalue_relative", ".1e"),
                      format_value(r, "wall_time_s", ".1f")])
    return markdown_table(["case", "cells/edge", "sequence", "strategy", "Newton solves (its)",
                           "rel. L2 error", "rate", "H1 error", "rate", "min eig. D^2 u_h",
                           "time [s] (sequence)"], cells)


def icnn_defaults(comm: MPI.Comm, dims: Sequence[int], seeds: int) -> list[dict]:
    """The ICNN with the default :class:`NetworkConfig` (no tuning), smooth case, on the unit
    ball and the unit cube, per dimension and seed."""
    rows = []
    for dim in dims:
        for domain in (Ball(dim), Box(dim)):
            for seed in range(seeds):
                res = solve_network(get_case("smooth"), domain, NetworkConfig(seed=seed), comm)
                rows.append({"dim": dim, "domain": domain.name, "seed": seed, **res.summary()})
                print0(f"defaults: {domain.name} d={dim} seed {seed}: "
                       f"{res.rel_l2_error:.2e} ({res.wall_time_s:.0f} s)")
    return rows


def defaults_table(rows: Sequence[dict]) -> str:
    """Markdown: median, min and max relative L2 error over seeds, per domain and d."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["domain"], r["dim"]), []).append(r)
    cells = []
    for (domain, dim), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        err = np.array([r["rel_l2_error"] for r in rs])
        steps = np.median([r["training_steps"] for r in rs])
        wall = np.median([r["wall_time_s"] for r in rs])
        cells.append([domain, dim, len(rs), f"{np.median(err):.2e}", f"{err.min():.2e}",
                      f"{err.max():.2e}", f"{steps:.0f}", f"{wall:.0f}"])
    return markdown_table(["domain", "d", "seeds", "rel. L2 error: median", "min", "max",
                           "training steps (median)", "time [s] (median)"], cells)


def convergence_table(rows: Sequence[dict]) -> str:
    """Markdown: FEM errors and rates under refinement."""
    cells = []
    for r in rows:
        base = [r["case"], r["dim"], r["resolution"]]
        if r.get("status", "converged") != "converged":
            cells.append([*base, "", f"failed: {r['status']}"])
            continue
        cells.append([*base, r["dofs"], r["strategy"],
                      f"{r['newton_solves']} ({r['newton_iterations']})",
                      format_value(r, "rel_l2_error"), format_value(r, "l2_rate", ".2f"),
                      format_value(r, "h1_error"), format_value(r, "h1_rate", ".2f"),
                      format_value(r, "min_hessian_eigenvalue_relative", ".1e"),
                      format_value(r, "wall_time_s", ".2f")])
    return markdown_table(["case", "d", "cells/edge", "dofs", "strategy", "Newton solves (its)",
                           "rel. L2 error", "rate", "H1 error", "rate", "min eig. D^2 u_h",
                           "time [s]"], cells)


#: Training settings of the first two parts: the solver's ``DEFAULT_TRAINING`` with more steps.
TRAINING = replace(DEFAULT_TRAINING, adam_steps=400, lbfgs_steps=300)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    add_training_arguments(parser, TRAINING)
    parser.add_argument("--n-interior", type=int, default=1000)
    parser.add_argument("--n-boundary", type=int, default=400)
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3, 4, 5, 6])
    add_threads_argument(parser)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the 'defaults' part")
    parser.add_argument("--default-dims", type=int, nargs="+", default=[2, 3, 4],
                        help="dimensions of the 'defaults' part")
    args = parser.parse_args(argv)
    apply_options(args)
    comm = MPI.COMM_WORLD
    out = prepare_output_dir(args.out, comm)
    config = NetworkConfig(training=training_from_args(args, TRAINING),
                           n_interior=args.n_interior, n_boundary=args.n_boundary)
    rows, dims, conv, text = [], [], [], ""
    if "comparison" in args.parts:
        for case_name, dim, noise in COMPARISON:
            base = {"case": case_name, "dim": dim, "noise": noise}
            for ansatz in ("icnn", "ffnn"):
                print0(f"{case_name} d={dim} noise={noise} {ansatz}")
                row = _network_row(case_name, Box(dim), noise, ansatz, config, out, comm)
                rows.append({**base, "method": ansatz, **row})
            print0(f"{case_name} d={dim} noise={noise} fem")
            rows.append({**base, "method": "fem (P2)", **_fem_row(case_name, dim, noise, comm)})
            write_json(out / "comparison.json", rows, comm)  # partial results survive
        text += "## Comparison (unit cube)\n\n" + comparison_table(rows) + "\n\n"
    if "dimensions" in args.parts:
        for dim in args.dims:
            print0(f"smooth, ball, d={dim}, icnn")
            row = _network_row("smooth", Ball(dim), 0.0, "icnn", config, out, comm)
            dims.append({"dim": dim, **row})
            write_json(out / "dimensions.json", dims, comm)  # partial results survive
        text += ("## ICNN, smooth case on the unit ball, growing d\n\n"
                 + dimension_table(dims) + "\n\n")
    defaults = []
    if "defaults" in args.parts:
        defaults = icnn_defaults(comm, args.default_dims, args.seeds)
        text += ("## ICNN with its default settings (smooth case)\n\n"
                 + defaults_table(defaults) + "\n\n")
    if "fem-convergence" in args.parts:
        conv = fem_convergence(comm)
        text += "## FEM reference under refinement\n\n" + convergence_table(conv) + "\n"
    resolutions: list[dict] = []
    if "fem-resolutions" in args.parts:
        resolutions = fem_resolutions(comm)
        text += ("\n## FEM reference at other resolutions\n\n"
                 + resolutions_table(resolutions) + "\n")
    write_json(out / "report.json", {"config": asdict(config), "ranks": comm.size,
                                     "comparison": rows, "dimensions": dims,
                                     "fem_convergence": conv, "fem_resolutions": resolutions,
                                     "defaults": defaults}, comm)
    write_text(out / "tables.md", text, comm)
    print0(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
