"""Import-time checks and the command line's self-description."""

from __future__ import annotations

import subprocess
import sys

from mpi4py import MPI

import pytest

import dolfinx_nn
from dolfinx_nn import cli, environment


@pytest.mark.skip_in_parallel  # a child Python would inherit the MPI launcher's environment
@pytest.mark.parametrize("missing", ["torch", "petsc4py", "dolfinx"])
def test_missing_dependency_is_named(missing):
    code = f"import sys; sys.modules[{missing!r}] = None; import dolfinx_nn"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert "dolfinx_nn needs" in result.stderr
    names = {"torch": "PyTorch", "petsc4py": "petsc4py", "dolfinx": "DOLFINx"}
    assert names[missing] in result.stderr


def test_unsupported_dolfinx_version(monkeypatch):
    import dolfinx

    monkeypatch.setattr(dolfinx, "__version__", "0.10.0")
    with pytest.raises(ImportError,
                       match=r"supports DOLFINx >= 0.11, < 0.12; found DOLFINx 0.10.0"):
        environment.check_environment()


def test_version():
    assert dolfinx_nn.__version__


def test_top_level_help_lists_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    if MPI.COMM_WORLD.rank != 0:  # printed once, by rank 0
        assert out == ""
        return
    assert "usage: dolfinx-nn" in out
    for name in cli._available(cli.COMMANDS):
        assert name in out


def test_unknown_command_lists_choices(capsys):
    assert cli.main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert MPI.COMM_WORLD.rank != 0 or "unknown command 'no-such-command'; choose one of:" in err


@pytest.mark.parametrize("registry", ["COMMANDS", "BENCHMARKS"])
def test_every_available_command_explains_itself(registry, capsys):
    """Each module's --help prints its description and options and exits 0."""
    available = cli._available(getattr(cli, registry))
    assert available, f"no {registry.lower()} available"
    for name in available:
        argv = [name, "--help"] if registry == "COMMANDS" else ["bench", name, "--help"]
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 0
        out = capsys.readouterr().out
        if MPI.COMM_WORLD.rank != 0:
            assert out == ""
            continue
        assert "usage: dolfinx-nn" in out and "options:" in out, name
        assert len(out.splitlines()) > 5, f"{name}: --help says too little"
