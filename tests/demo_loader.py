"""Import a literate demo from demos/ as a module, so a test can call its ``main``."""

from __future__ import annotations

import importlib.util
import pathlib
from types import ModuleType

DEMOS = pathlib.Path(__file__).resolve().parents[1] / "demos"


def load_demo(name: str) -> ModuleType:
    """Execute ``demos/<name>.py`` (without its ``__main__`` block) and return it."""
    spec = importlib.util.spec_from_file_location(name, DEMOS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
