"""The literate demo runs (quick settings) serially and under MPI and shows first order."""

from __future__ import annotations

import pathlib
import runpy

from mpi4py import MPI

DEMO = pathlib.Path(__file__).resolve().parents[1] / "demos" / "demo_deep_limit.py"


def test_demo_deep_limit(monkeypatch):
    monkeypatch.setenv("DOLFINX_NN_DEMO_QUICK", "1")
    results = runpy.run_path(str(DEMO), run_name="__main__")["results"]
    assert abs(results["forward_order"] - 1) < 0.1
    assert all(1.8 <= r <= 2.2 for r in results["forward_ratios"][2:])
    assert abs(results["trajectory_order"] - 1) < 0.15
    assert abs(results["loss_gap_order"] - 1) < 0.15
    distance = results["trajectory_distance"]
    assert all(a > b for a, b in zip(distance[2:], distance[3:], strict=False))
    assert MPI.COMM_WORLD.allgather(distance) == [distance] * MPI.COMM_WORLD.size
