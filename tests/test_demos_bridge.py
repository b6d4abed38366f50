"""The bridge demo runs (serially and under mpiexec) and recovers the coefficient."""

from __future__ import annotations

import importlib.util
import pathlib


DEMOS = pathlib.Path(__file__).resolve().parents[1] / "demos"


def load_demo(name: str):
    spec = importlib.util.spec_from_file_location(name, DEMOS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_bridge():
    result = load_demo("demo_bridge").main(n=16, adam_steps=50, lbfgs_steps=15)
    assert all(1.9 <= r <= 2.1 for r in result["rates"]), result["rates"]
    assert result["coefficient_rel_l2_error"] < 0.05
    assert result["loss"] < 1e-4
