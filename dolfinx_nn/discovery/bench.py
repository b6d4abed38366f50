"""Cost of PDE discovery vs number of data points, and noise robustness vs PDE-FIND.

Times the three stages of `dolfinx-nn discover` (surrogate fit, derivative features,
sparse regression) on 1D heat-equation data with 1e4..1e6 observations (a DOLFINx simulation
observed at random points, 41 snapshots).  With --compare it also runs the noise sweep of
this method against PDE-FIND on the same gridded data; PDE-FIND needs the optional package
pysindy (pip install 'dolfinx_nn[bench]'), without it its column is skipped with a note.

Writes DIR/BENCH_discover.json (and DIR/discover_comparison.md with --compare).

With --pdefind DIR it instead compares the defaults of `dolfinx-nn discover` with PySINDy's
PDE-FIND and weak-form library on PDE-FIND's Burgers, KdV and Kuramoto-Sivashinsky data
(DIR/pdefind_comparison.md).

Examples:
  dolfinx-nn bench discover --sizes 10000 100000 1000000 --compare --out bench
  dolfinx-nn bench discover --pdefind PDE-FIND/Datasets --out bench
"""

from __future__ import annotations

import argparse
import pathlib

from mpi4py import MPI

from dolfinx_nn.cli_options import add_device_argument
from dolfinx_nn.discovery.cli import benchmark_table
from dolfinx_nn.discovery.comparison import benchmark_markdown, markdown_table, noise_comparison
from dolfinx_nn.discovery.data import SpaceTimeData
from dolfinx_nn.discovery.datasets import simulate_dataset
from dolfinx_nn.discovery.pipeline import DiscoveryConfig, discover
from dolfinx_nn.discovery.surrogate import SURROGATE_KINDS, SurrogateConfig
from dolfinx_nn.meshes import create_mesh
from dolfinx_nn.output import prepare_output_dir, print0, write_json, write_on_root

NUM_TIMES = 41


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                        help="numbers of observations")
    parser.add_argument("--surrogate", choices=list(SURROGATE_KINDS), default="space-time",
                        help="kind of surrogate (see dolfinx-nn discover --help)")
    parser.add_argument("--width", type=int, default=400, help="neurons of the surrogate")
    add_device_argument(parser, default="cpu")
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--compare", action="store_true",
                        help="also run the noise sweep against PDE-FIND (its column needs "
                             "pysindy: pip install 'dolfinx_nn[bench]')")
    parser.add_argument("--compare-problems", nargs="+", default=["heat", "advection-diffusion"],
                        choices=["heat", "advection-diffusion"],
                        help="problems of the --compare sweep")
    parser.add_argument("--compare-noise", type=float, nargs="+",
                        default=[0.0, 0.001, 0.01, 0.05],
                        help="noise levels of the --compare sweep")
    parser.add_argument("--pdefind", type=pathlib.Path, default=None,
                        help="folder with PDE-FIND's burgers.mat, kdv.mat and "
                        "kuramoto_sivishinky.mat: run only the comparison with PySINDy on them")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("."))


def run(args: argparse.Namespace) -> int:
    comm = MPI.COMM_WORLD
    if min(args.sizes) < 2 * NUM_TIMES:
        raise ValueError(f"--sizes must be >= {2 * NUM_TIMES}, got {args.sizes}")
    out = prepare_output_dir(args.out, comm)
    if args.pdefind is not None:
        rows = benchmark_table(args.pdefind, out, comm=comm)
        write_on_root(out / "pdefind_comparison.md",
                      lambda path: path.write_text(benchmark_markdown(rows)), comm)
        print0(benchmark_markdown(rows))
        write_json(out / "BENCH_discover_pdefind.json", {"rows": rows}, comm)
        return 0
    mesh = create_mesh(comm, "interval", 128)
    points = max(args.sizes) // NUM_TIMES
    full, truth = simulate_dataset("heat", mesh, points, NUM_TIMES, args.noise, seed=0)
    rows = []
    for size in sorted(args.sizes):
        n = size // NUM_TIMES
        data = SpaceTimeData(full.x[:n], full.t, full.u[:, :n])
        config = DiscoveryConfig(
            max_feature_points=size,
            surrogate=SurrogateConfig(
                kind=args.surrogate, width=args.width, time_degree=10, device=args.device
            ),
        )
        found = discover(data, config, comm=comm)
        err = max(abs(found.coefficients.get(k, 0.0) - v) / abs(v) for k, v in truth.items())
        rows.append({"observations": n * NUM_TIMES, **found.timings,
                     "equation": found.equation, "max_rel_coefficient_error": err})
        print0(f"{n * NUM_TIMES:>9d} obs: fit {found.timings['surrogate_fit_s']:.2f} s, "
               f"features {found.timings['features_s']:.2f} s, "
               f"regression {found.timings['regression_s']:.2f} s   {found.equation}")
    result = {"benchmark": "discover", "ranks": comm.size, "device": args.device,
              "surrogate": args.surrogate,
              "width": args.width, "noise": args.noise, "rows": rows}
    if args.compare:
        import importlib.util

        with_peer = importlib.util.find_spec("pysindy") is not None
        if not with_peer:
            print0("PDE-FIND column skipped: it needs the optional package pysindy "
                   "(pip install 'dolfinx_nn[bench]')")
        sweep = noise_comparison(problems=tuple(args.compare_problems),
                                 noise_levels=tuple(args.compare_noise), comm=comm,
                                 with_peer=with_peer)
        result["noise_comparison"] = sweep
        result["pde_find"] = "run" if with_peer else "skipped: pysindy is not installed"
        write_on_root(out / "discover_comparison.md",
                      lambda path: path.write_text(markdown_table(sweep)), comm)
        print0(markdown_table(sweep))
    write_json(out / "BENCH_discover.json", result, comm)
    print0(f"wrote {out / 'BENCH_discover.json'}")
    return 0
