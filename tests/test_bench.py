"""The benchmarks' shared timing and a tiny run of `dolfinx-nn bench operator` (serial and MPI)."""

from __future__ import annotations

import argparse
import json
import pathlib

from mpi4py import MPI

from dolfinx_nn.bench import operator
from dolfinx_nn.timing import median_wall_time

COMM = MPI.COMM_WORLD


def test_median_wall_time_calls_and_agrees_over_ranks():
    calls = []
    t = median_wall_time(lambda: calls.append(sum(range(1000))), COMM, 3)
    assert len(calls) == 3
    assert t > 0.0
    assert t == COMM.bcast(t, root=0)  # the slowest rank's time, the same on every rank
    local = median_wall_time(lambda: calls.append(0), None, 2)
    assert len(calls) == 5 and local > 0.0


def test_bench_operator_small(tmp_path):
    out = pathlib.Path(COMM.bcast(str(tmp_path), root=0)) / "op.json"
    args = argparse.Namespace(dofs=[1e3], width=4, repeats=1, threads=1, out=str(out))
    assert operator.run(args) == 0
    COMM.Barrier()
    (row,) = json.loads(out.read_text())["rows"]
    n = 31  # round(sqrt(1e3)) - 1 cells per side
    assert row["dofs"] == (n + 1) ** 2 and row["ranks"] == COMM.size
    assert row["quadrature_points"] == 2 * n * n * 3  # triangles x points of the degree-2 rule
    for key in ("ratio_residual", "ratio_jacobian", "ratio_newton_solve"):
        assert row[key] > 0.0
    assert 2 <= row["network_newton_iterations"] <= 10
    assert 2 <= row["ufl_newton_iterations"] <= 10


def test_bench_hessian_small(tmp_path):
    """A tiny run of `dolfinx-nn bench hessian` (the peer comparison is the benchmark's)."""
    from dolfinx_nn.bench import hessian

    out = pathlib.Path(COMM.bcast(str(tmp_path), root=0)) / "hessian.json"
    args = argparse.Namespace(dofs=[400], problems=["linear", "nonlinear"], repeats=1,
                              no_peer=True, out=str(out))
    assert hessian.run(args) == 0
    COMM.Barrier()
    rows = json.loads(out.read_text())["results"]
    assert [r["problem"] for r in rows] == ["linear", "nonlinear"]
    for row in rows:
        assert row["dofs"] == 400 and row["ranks"] == COMM.size
        for key in ("gradient_s", "hvp_s", "hvp_from_scratch_s", "hvp_gradient_ratio"):
            assert row[key] > 0.0
