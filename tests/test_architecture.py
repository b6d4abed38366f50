"""The layering of docs/architecture.md: core < shared layer < topics < command line.

Read from the source with :mod:`ast` (nothing is imported): every ``import`` of a
``dolfinx_nn`` module, including imports inside functions, must go down or sideways within
its own topic.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "dolfinx_nn"
TOPICS = {"ansatz", "inverse", "monge_ampere", "discovery", "deep_limit", "diffusion_maps",
          "bench"}
SHARED = {"networks", "training", "models", "plotting", "timing", "cli_options"}


def _layer(module: str) -> str:
    """``core``, ``shared``, ``topic:<name>`` or ``cli`` for a dotted module name."""
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else ""
    if head == "cli" or (head in TOPICS and len(parts) == 3 and parts[-1] in ("cli", "bench")):
        return "cli"  # command entry points: dolfinx-nn <command> and dolfinx-nn bench <topic>
    if head in TOPICS:
        return f"topic:{head}"
    if head in SHARED:
        return "shared"
    return "core"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every dolfinx_nn module (or name) that ``path`` imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("dolfinx_nn")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "dolfinx_nn":  # "from dolfinx_nn import x": x may be a module
                found += [(node.lineno, f"dolfinx_nn.{a.name}") for a in node.names]
            elif node.module.startswith("dolfinx_nn."):
                found.append((node.lineno, node.module))
    return found


ALLOWED = {
    "core": {"core"},
    "shared": {"core", "shared"},
    "cli": {"core", "shared", "cli", "topic"},
}


def _violations() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _layer(_module_name(path))
        for line, target in _imports(path):
            if target == "dolfinx_nn":
                kind = "core"
            else:
                kind = _layer(target)
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
            private = any(p.startswith("_") and p != "__init__" for p in target.split(".")[1:])
            if private and source != "core":
                bad.append(f"{where} (a private core module outside the core)")
            if source.startswith("topic:"):
                if kind.startswith("topic:") and kind != source:
                    bad.append(f"{where} (one topic imports another)")
                elif kind == "cli":
                    bad.append(f"{where} (a topic imports the command line)")
            elif kind.startswith("topic:") and source != "cli":
                bad.append(f"{where} (the {source} layer imports a topic)")
            elif not kind.startswith("topic:") and kind not in ALLOWED[source]:
                bad.append(f"{where} (the {source} layer imports the {kind} layer)")
    return bad


def test_imports_go_down_the_layers():
    assert _violations() == []


@pytest.mark.parametrize("folder", ["tests", "demos"])
def test_tests_and_demos_use_the_public_api(folder):
    """No test or demo reaches into a private core module (``dolfinx_nn._*``)."""
    bad = []
    for path in sorted((PACKAGE.parent / folder).glob("*.py")):
        for line, target in _imports(path):
            if any(p.startswith("_") for p in target.split(".")[1:]):
                bad.append(f"{path.name}:{line} imports {target}")
    assert bad == []
