"""The literate Monge-Ampere demo runs (in quick mode) and reaches its stated results."""

from __future__ import annotations

import pathlib
import runpy
import sys

import pytest
import torch

DEMO = pathlib.Path(__file__).resolve().parents[1] / "demos" / "demo_monge_ampere.py"


@pytest.fixture
def _restore_threads():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def test_demo_monge_ampere(monkeypatch, _restore_threads):
    monkeypatch.setattr(sys, "argv", [str(DEMO), "--quick"])
    summary = runpy.run_path(str(DEMO), run_name="__main__")["summary"]
    assert summary["icnn_rel_l2"] < 1e-2
    assert summary["icnn_violations"] == 0.0
    assert summary["fem_rel_l2"] < 5e-5
    assert summary["fem_newton"] <= 10
