"""The literate demo runs and identifies the logistic reaction."""

from __future__ import annotations

import json
import pathlib
import runpy
import sys

from mpi4py import MPI

import pytest

DEMO = pathlib.Path(__file__).parents[1] / "demos" / "demo_discovery.py"


def test_demo_on_plate_with_hole(tmp_path, monkeypatch):
    out = pathlib.Path(MPI.COMM_WORLD.bcast(str(tmp_path), root=0)) / "demo"
    monkeypatch.setattr(sys, "argv", [str(DEMO), "--out", str(out)])
    runpy.run_path(str(DEMO), run_name="__main__")
    results = json.loads((out / "results.json").read_text())
    c = results["coefficients"]
    # measured at the default (small) settings: u_t = 1.03 u - 1.12 u**2, 14.5 % held-out error
    assert {"u", "u**2"} <= set(c)
    assert c["u"] > 0 and c["u**2"] / c["u"] == pytest.approx(-1.0, abs=0.15)
    assert results["validation_rel_l2_error"] is not None
    assert results["validation_rel_l2_error"] < 0.2
