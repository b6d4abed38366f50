"""The bridge demo runs (serially and under mpiexec) and recovers the coefficient."""

from __future__ import annotations

from demo_loader import load_demo


def test_demo_bridge():
    result = load_demo("demo_bridge").main(n=16, adam_steps=50, lbfgs_steps=15)
    assert all(1.9 <= r <= 2.1 for r in result["rates"]), result["rates"]
    assert result["coefficient_rel_l2_error"] < 0.05
    assert result["loss"] < 1e-4
