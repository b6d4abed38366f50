"""The deep-limit command: results.json, plots, ParaView output, the ResNet prior's limit."""

from __future__ import annotations

import json
import pathlib

from mpi4py import MPI

import pytest

from dolfinx_nn.cli import main


@pytest.fixture
def out_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(MPI.COMM_WORLD.bcast(str(tmp_path), root=0))


def test_inverse_experiment_recovered_coefficient_converges(out_dir: pathlib.Path):
    """Experiment (d) through the bridge: q_N -> q_ODE as N grows, under MPI too."""
    argv = ["deep-limit", "--experiment", "inverse", "--quick", "--max-depth", "16",
            "--out", str(out_dir)]
    assert main(argv) == 0
    result = json.loads((out_dir / "results.json").read_text())
    assert (out_dir / "inverse.png").is_file()
    assert (out_dir / "coefficients.bp").is_dir()
    distance = result["coefficient_distance"]
    assert result["depths"] == [1, 2, 4, 8, 16]
    assert all(a > b for a, b in zip(distance, distance[1:], strict=False)), distance
    assert 0.8 <= result["coefficient_order"] <= 1.2, distance
    assert distance[-1] < 0.01
    assert result["ode_coefficient_error"] < 0.5


def test_forward_experiment_writes_rates(out_dir: pathlib.Path):
    argv = ["deep-limit", "--experiment", "forward", "--quick", "--max-depth", "32",
            "--out", str(out_dir)]
    assert main(argv) == 0
    result = json.loads((out_dir / "results.json").read_text())
    assert (out_dir / "forward.png").is_file()
    assert abs(result["resnet_order"] - 1) < 0.1
    assert abs(result["resnet_gradient_order"] - 1) < 0.15
    assert "observed order" in (out_dir / "rates.md").read_text()


def test_bad_dimension_is_rejected(out_dir: pathlib.Path):
    with pytest.raises(SystemExit) as info:  # refused while parsing, on every rank
        main(["deep-limit", "--dim", "1", "--out", str(out_dir)])
    assert info.value.code == 2
