"""Figures never switch the user's matplotlib backend; a figure is written once, on rank 0."""

from __future__ import annotations

import importlib
import pathlib

from mpi4py import MPI

import matplotlib
import matplotlib.image
import numpy as np
import pytest

from dolfinx_nn.output import OutputError, collective_output
from dolfinx_nn.plotting import save_figure, subplots, write_figure

COMM = MPI.COMM_WORLD

#: Every topic's plots module (reloaded: their module-level code runs again).
PLOT_MODULES = (
    "dolfinx_nn.plotting",
    "dolfinx_nn.ansatz.plots",
    "dolfinx_nn.deep_limit.plots",
    "dolfinx_nn.diffusion_maps.plots",
    "dolfinx_nn.inverse.plots",
    "dolfinx_nn.monge_ampere.plots",
)
#: Other modules that draw figures (imported, not reloaded: they define classes tests use).
DRAWING_MODULES = ("dolfinx_nn.inverse.posterior", "dolfinx_nn.discovery.cli")


@pytest.fixture
def user_backend():
    """A backend the user chose (not Agg), restored afterwards."""
    previous = matplotlib.get_backend()
    matplotlib.use("svg", force=True)
    yield "svg"
    matplotlib.use(previous, force=True)


def test_plots_keep_the_users_backend(user_backend, tmp_path):
    for name in PLOT_MODULES:
        importlib.reload(importlib.import_module(name))
        assert matplotlib.get_backend() == user_backend, name
    for name in DRAWING_MODULES:
        importlib.import_module(name)
        assert matplotlib.get_backend() == user_backend, name
    module = importlib.import_module("dolfinx_nn.deep_limit.plots")
    depths = [1, 2, 4, 8]
    result = {"depths": depths, "resnet_error": [1.0 / n for n in depths],
              "resnet_gradient_error": [2.0 / n for n in depths],
              "rk4_error": [1.0 / n**4 for n in depths], "resnet_order": 1.0,
              "resnet_gradient_order": 1.0, "rk4_order": 4.0}
    folder = pathlib.Path(COMM.bcast(str(tmp_path), root=0))
    path = write_figure(folder / "forward.png", lambda: module.forward_figure(result), COMM,
                        dpi=module.DPI)
    assert matplotlib.get_backend() == user_backend
    COMM.Barrier()
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (4 * module.DPI, int(5.5 * module.DPI))  # figsize (5.5, 4)
    assert float(np.ptp(image[..., :3])) > 0.5  # something is drawn


def test_write_figure_on_rank_zero(tmp_path):
    folder = pathlib.Path(COMM.bcast(str(tmp_path), root=0))
    calls = []

    def draw():
        calls.append(COMM.rank)
        fig, ax = subplots(figsize=(2.0, 1.5))
        ax.plot([0.0, 1.0], [0.0, 1.0])
        return fig

    path = write_figure(folder / "line.png", draw, COMM, dpi=50)
    assert calls == ([0] if COMM.rank == 0 else [])
    COMM.Barrier()
    assert matplotlib.image.imread(path).shape[:2] == (75, 100)
    assert sorted(p.name for p in folder.iterdir()) == ["line.png"]  # no temporary file left
    # a failure on rank 0 is the same error on every rank
    with pytest.raises(OutputError, match="cannot write .*missing.*line.png"):
        write_figure(folder / "missing" / "line.png", draw, COMM)
    # inside a collective block (as the commands write their figures) it stays that error
    with pytest.raises(OutputError, match="cannot write .*missing.*line.png"):
        with collective_output("cannot write the figures", COMM):
            write_figure(folder / "missing" / "line.png", draw, COMM)


def test_save_figure_format_from_suffix(tmp_path):
    fig, ax = subplots(1, 2, figsize=(3.0, 2.0), squeeze=False)
    assert ax.shape == (1, 2)
    path = save_figure(fig, tmp_path / f"grid-{COMM.rank}.svg")
    assert path.read_text().lstrip().startswith("<?xml")
