"""Diffusion maps against a peer implementation, and their cost for 1e4 and 1e5 points.

Peer check: pydiffmap (optional, `pip install pydiffmap`) on the same points, the same
bandwidth and alpha = 1 with all neighbours kept, so both compute the same Markov matrix.
pydiffmap's kernel is exp(-d^2 / (4 eps)) and it returns eigenvalues of the generator
L = (P - I) / eps, so its eigenvalues are mapped by lambda = 1 + eps * ev before comparing.

Timing: swiss rolls in R^3 with 1e4 and 1e5 points (option --sizes), sparse kernel on the
k = 32 nearest-neighbour graph, 5 non-trivial eigenpairs by ARPACK, our solver and (where
installed) pydiffmap with the same k and epsilon.  The analysis is replicated on every rank;
rank 0 writes BENCH_diffmap.json (into --out).

Example:
  dolfinx-nn bench diffmap --out results/bench
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import time

from mpi4py import MPI

import numpy as np

from dolfinx_nn.diffusion_maps.diffusion_map import DiffusionMap
from dolfinx_nn.output import prepare_output_dir, print0, write_json


def swiss_roll(n: int, seed: int = 0) -> np.ndarray:
    """``n`` points of the swiss roll ``(u cos u, h, u sin u)``, u in [1.5 pi, 4.5 pi]."""
    rng = np.random.default_rng(seed)
    u, h = rng.uniform(1.5 * np.pi, 4.5 * np.pi, n), rng.uniform(0, 10, n)
    return np.c_[u * np.cos(u), h, u * np.sin(u)]


def _import_pydiffmap():
    try:
        return importlib.import_module("pydiffmap.diffusion_map")
    except ImportError as err:
        raise ImportError(
            "the peer check needs pydiffmap (optional, benchmark only): pip install pydiffmap"
        ) from err


def pydiffmap_eigenvalues(X: np.ndarray, epsilon: float, k: int, m: int) -> np.ndarray:
    """Non-trivial Markov eigenvalues from pydiffmap for our ``epsilon`` (alpha = 1)."""
    dm_module = _import_pydiffmap()
    eps_pd = epsilon / 4.0
    dmap = dm_module.DiffusionMap.from_sklearn(
        n_evecs=m, epsilon=eps_pd, alpha=1.0, k=k, neighbor_params={"n_jobs": 1}
    )
    dmap.fit(X)
    return np.sort(1.0 + eps_pd * np.asarray(dmap.evals))[::-1]


def peer_check(n: int, epsilon: float, m: int = 6) -> dict:
    X = swiss_roll(n, seed=1)
    ours = DiffusionMap(m, epsilon=epsilon, alpha=1.0, method="dense").fit(X).eigenvalues_
    theirs = pydiffmap_eigenvalues(X, epsilon, k=n, m=m)
    return {
        "n_points": n,
        "epsilon": epsilon,
        "ours": ours,
        "pydiffmap": theirs,
        "max_abs_difference": float(np.abs(ours - theirs).max()),
    }


def timing(n: int, k: int, epsilon: float, m: int, with_peer: bool) -> dict:
    X = swiss_roll(n, seed=2)
    start = time.perf_counter()
    dm = DiffusionMap(m, epsilon=epsilon, method="sparse", k=k).fit(X)
    row = {"n_points": n, "k": k, "epsilon": epsilon, "seconds": time.perf_counter() - start,
           "eigenvalues": dm.eigenvalues_}
    if with_peer:
        start = time.perf_counter()
        theirs = pydiffmap_eigenvalues(X, epsilon, k=k, m=m)
        row["pydiffmap_seconds"] = time.perf_counter() - start
        row["pydiffmap_eigenvalues"] = theirs
        row["max_abs_difference"] = float(np.abs(dm.eigenvalues_ - theirs).max())
    return row


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dolfinx-nn bench diffmap``."""
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("."))
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--k", type=int, default=32, help="neighbours of the sparse kernel")
    parser.add_argument("--epsilon", type=float, default=2.0, help="kernel bandwidth")
    parser.add_argument("--components", type=int, default=5)
    parser.add_argument("--peer-points", type=int, default=1500, help="points of the peer check")
    parser.add_argument("--no-peer", action="store_true", help="skip pydiffmap")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and write BENCH_diffmap.json."""
    comm = MPI.COMM_WORLD
    out = prepare_output_dir(args.out, comm)
    result: dict = {"mpi_ranks": comm.size}
    with_peer = not args.no_peer
    if with_peer:
        _import_pydiffmap()
        result["peer_check"] = peer_check(args.peer_points, args.epsilon, args.components)
        print0(f"peer check (pydiffmap): max |difference| "
               f"{result['peer_check']['max_abs_difference']:.2e}")
    result["timing"] = []
    for n in args.sizes:
        row = timing(n, args.k, args.epsilon, args.components, with_peer)
        result["timing"].append(row)
        peer = f", pydiffmap {row['pydiffmap_seconds']:.2f} s" if with_peer else ""
        print0(f"{n} points: {row['seconds']:.2f} s{peer}")
    write_json(out / "BENCH_diffmap.json", result, comm)
    print0(f"wrote {out / 'BENCH_diffmap.json'}")
    return 0
