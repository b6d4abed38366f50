"""The README's bridge example runs as written (serially and under mpiexec)."""

from __future__ import annotations

import pathlib
import re

import torch

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_bridge_example_runs():
    text = README.read_text()
    section = text[text.index("## The bridge") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    net = namespace["net"]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert namespace["j"].item() > 0.0
