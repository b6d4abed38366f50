"""The literate demo runs (quick settings) serially and under MPI and recovers q."""

from __future__ import annotations

import pathlib
import runpy

import torch

DEMO = pathlib.Path(__file__).resolve().parents[1] / "demos" / "demo_inverse_poisson.py"


def test_demo_inverse_poisson(monkeypatch):
    monkeypatch.setenv("DOLFINX_NN_DEMO_QUICK", "1")
    threads = torch.get_num_threads()
    try:
        namespace = runpy.run_path(str(DEMO), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
    results = namespace["results"]
    assert results["tikhonov"] < 0.15
    assert results["network"] < 0.15
    assert results["tikhonov_best"] <= results["tikhonov"]
