"""The README's examples run as written (serially and under mpiexec).

- the bridge example (Python) is executed;
- every shell command of the README that runs this package (``make demo``'s command,
  ``dolfinx-nn ...``, ``python demos/...``, with or without ``mpiexec`` or ``.venv/bin/``) is
  run from the README's own text, with the quick options the README's table gives for it and
  its ``--out`` pointed at a temporary folder; under ``mpiexec -n 2 pytest`` each runs on the
  2 ranks.  Installation and environment lines (conda, pip, docker, source, make test/bench)
  are only checked to be known.
"""

from __future__ import annotations

import json
import pathlib
import re
import runpy
import shlex
import shutil
import sys
import tempfile

from mpi4py import MPI

import pytest
import torch

from dolfinx_nn.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: First words of README commands that set up an environment rather than run this package.
NOT_RUN = {"conda", "pip", "docker", "source", "PYTHON=/path/to/python3.12", "scripts/bootstrap.sh"}
#: make targets that are the test suite itself or install peers.
MAKE_NOT_RUN = {"test", "bench", "setup", "clean"}


def test_bridge_example_runs():
    text = README.read_text()
    section = text[text.index("## The bridge") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    net = namespace["net"]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert namespace["j"].item() > 0.0


def shell_commands(text: str) -> list[list[str]]:
    """The commands of the README's ``bash``/``sh`` blocks (continuation lines joined) and its
    inline commands with options (`` `dolfinx-nn bench bridge --dofs 1e5` ``)."""
    commands = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    inline = r"`((?:mpiexec -n \d+ )?(?:\.venv/bin/)?dolfinx-nn [^`]*--[^`]*)`"
    commands += [shlex.split(c) for c in re.findall(inline, prose)]
    return commands


def quick_options(text: str) -> dict[str, list[str]]:
    """The README's table of quick options: command -> options."""
    table = text[text.index("| command | quick options |") :].split("\n\n")[0]
    rows = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|$", table, re.M)
    return {name.removeprefix("dolfinx-nn "): shlex.split(options) for name, options in rows}


def make_target(target: str) -> list[str]:
    """The command of a Makefile target (one line, ``$(VENV)/bin/`` and ``$(OUT)`` expanded)."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(rf"^{target}:.*\n\t(.*)$", makefile, re.M).group(1)
    return shlex.split(recipe.replace("$(VENV)/bin/", "").replace("$(OUT)", "results"))


def strip_launcher(words: list[str]) -> list[str]:
    """Drop ``mpiexec -n N`` (the test runs on its own ranks) and ``.venv/bin/``."""
    words = [w.removeprefix(".venv/bin/") for w in words]
    if words[0] == "mpiexec":
        words = words[3:]
    return words


def _informative(words: list[str]) -> bool:
    """``--help`` or ``--version``: prints and exits, runs nothing."""
    return "--help" in words or "--version" in words


def _runs() -> list[tuple[str, list[str]]]:
    text = README.read_text()
    runs = []
    for words in shell_commands(text):
        if words[0] in NOT_RUN:
            continue
        if words[0] == "make":
            if words[1] in MAKE_NOT_RUN:
                continue
            assert words[1] == "demo", f"unknown make target in README: {words}"
            words = make_target("demo")
        words = [w if w != "COMMAND" else "inverse" for w in strip_launcher(words)]
        assert words[0] in ("dolfinx-nn", "python"), f"README command not covered: {words}"
        if all(" ".join(words) != name for name, _ in runs):
            runs.append((" ".join(words), words))
    return runs


def test_every_readme_command_is_covered():
    runs = _runs()
    names = {w[1] if w[0] == "dolfinx-nn" and w[1] != "bench" else " ".join(w[:3])
             for _, w in runs}
    for command in ("inverse", "compare", "monge-ampere", "discover", "deep-limit", "diffmap"):
        assert command in names, f"the README has no example of dolfinx-nn {command}"
    quick = quick_options(README.read_text())
    for _, words in runs:
        if _informative(words):
            continue
        key = (" ".join(words[1:3]) if words[1] == "bench" else words[1]) if (
            words[0] == "dolfinx-nn") else words[1]
        assert key in quick, f"no quick options in the README for {key!r}"


@pytest.fixture(scope="module")
def shared_tmp():
    comm = MPI.COMM_WORLD
    path = comm.bcast(tempfile.mkdtemp(prefix="dolfinx_nn_readme_") if comm.rank == 0 else None)
    yield pathlib.Path(path)
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("index", range(len(_runs())), ids=[r[0][:60] for r in _runs()])
@pytest.mark.timeout(240)
def test_readme_command_runs(index, shared_tmp, monkeypatch):
    _, words = _runs()[index]
    quick = quick_options(README.read_text())
    out = shared_tmp / f"run{index}"
    if words[0] == "python":
        script = ROOT / words[1]
        argv = [*words[2:], *quick[words[1]]]
        monkeypatch.setattr(sys, "argv", [str(script), *argv])
        threads = torch.get_num_threads()
        try:
            runpy.run_path(str(script), run_name="__main__")
        finally:
            torch.set_num_threads(threads)
        return
    args = list(words[1:])
    if _informative(words):
        try:
            code = main(args)
        except SystemExit as exc:
            code = exc.code
        assert code == 0
        return
    key = " ".join(args[:2]) if args[0] == "bench" else args[0]
    if "--out" in args:
        args[args.index("--out") + 1] = str(out)
    else:
        args += ["--out", str(out)]
    assert main([*args, *quick[key]]) == 0
    if MPI.COMM_WORLD.rank == 0:
        written = list(out.glob("*.json")) if out.is_dir() else [out]
        assert written, f"{' '.join(words)} wrote no JSON in {out}"
        for path in written:
            assert json.loads(path.read_text())
