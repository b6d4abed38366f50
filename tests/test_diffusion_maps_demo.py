"""The diffusion-maps demo runs (serially and on 2 ranks) and finds what its prose says."""

from __future__ import annotations

import numpy as np
from demo_loader import load_demo


def test_demo_finds_a_curve_and_a_sharp_hessian_spectrum():
    demo = load_demo("demo_diffusion_maps")
    result = demo.main(steps=200, every=2)
    assert result["circle"]["angle_concentration"] > 0.99
    traj = result["trajectory"]
    assert traj["points"] == 100
    assert abs(traj["spearman_psi1_vs_step"]) > 0.95
    top = np.asarray(traj["hessian_top"])
    assert np.all(np.diff(top) <= 0) and top[0] > 10 * top[-1] > 0
    assert traj["fraction_near_zero"] > 0.5
    assert np.max(traj["in_top_k_span"]) > 2 * traj["random_baseline"]
