"""The constitutive-law demo runs (serially and under mpiexec) and learns k(u) = 1 + u^2."""

from __future__ import annotations

from demo_loader import load_demo


def test_demo_constitutive_law():
    # L-BFGS is at its plateau by step 70 on 1 and 2 ranks: the loss (1.0435e-7 vs 1.0433e-7),
    # the law's error (1.058e-2) and the prediction's (5.12e-4) are those of 100 steps.
    result = load_demo("demo_constitutive_law").main(n=12, adam_steps=30, lbfgs_steps=70)
    assert all(1.9 <= r <= 2.1 for r in result["rates"]), result["rates"]
    assert result["u_range"][1] > 1.0  # the law is learnt over a genuinely nonlinear range
    assert result["law_max_rel_error"] < 0.02
    assert result["prediction_max_rel_error"] < 0.01
    assert abs(result["newton_network"] - result["newton_ufl"]) <= 1
