"""Library presets, weak terms, MATLAB files, complex data, equations of order 3 and 4, and
the partial results of a command whose later stage fails."""

from __future__ import annotations

import json
import pathlib

from mpi4py import MPI

import dolfinx
import numpy as np
import pytest
import scipy.io

from dolfinx_nn.cli import main
from dolfinx_nn.discovery.data import SpaceTimeData, load_data, save_npz
from dolfinx_nn.discovery.library import parse_library, term_name
from dolfinx_nn.discovery.surrogate import SurrogateConfig, fit_surrogate
from dolfinx_nn.discovery.validation import validate, window_surrogate
from dolfinx_nn.discovery.weak import expand, strong_coefficients, weak_library, weak_name


@pytest.fixture
def shared_dir(tmp_path) -> pathlib.Path:
    return pathlib.Path(MPI.COMM_WORLD.bcast(str(tmp_path), root=0))


def test_pde_find_library_preset():
    names = [term_name(t) for t in parse_library("pde-find", 1)]
    assert len(names) == 15  # {1, u, u^2} x {1, u_x, u_xx, u_xxx, u_xxxx}
    assert {"1", "u**2", "u_xxxx", "u*u_xxx", "u**2*u_xxxx"} <= set(names)
    assert "u_x*u_xx" not in names  # one derivative per term, as in PDE-FIND
    assert len(parse_library("pde-find", 2)) == 3 * 15  # 14 derivatives up to order 4 in 2D


def test_weak_terms_expand_by_the_product_rule():
    terms = weak_library(1, order=2, degree=2)
    assert [weak_name(t) for t in terms] == ["u", "u**2", "u_x", "(u**2)_x", "u_xx", "(u**2)_xx"]
    assert {term_name(k): v for k, v in expand((2, (0, 0))).items()} == {
        "u*u_xx": 2.0, "u_x**2": 2.0
    }
    # Burgers in conservation form: -(u^2)_x / 2 + 0.1 u_xx
    assert strong_coefficients({(2, (0,)): -0.5, (1, (0, 0)): 0.1}) == {
        "u*u_x": -1.0, "u_xx": 0.1
    }


def _write_mat(path: pathlib.Path, **arrays) -> None:
    if MPI.COMM_WORLD.rank == 0:
        scipy.io.savemat(str(path), arrays)
    MPI.COMM_WORLD.Barrier()


def test_mat_files_like_pde_finds(shared_dir):
    x, t = np.linspace(0.0, 1.0, 7), np.linspace(0.0, 2.0, 5)
    u = np.outer(np.sin(x), np.exp(-t))  # (x, t), as PDE-FIND stores it
    _write_mat(shared_dir / "a.mat", x=x[None], t=t[:, None], usol=u + 1e-9j)
    data = load_data(shared_dir / "a.mat")  # round-off imaginary parts are dropped
    assert data.u.shape == (5, 7) and np.allclose(data.u, u.T)
    _write_mat(shared_dir / "nls.mat", x=x[None], tt=t[None], usol=u * (1 + 1j))
    with pytest.raises(ValueError, match="is complex .* system of two real"):
        load_data(shared_dir / "nls.mat")
    _write_mat(shared_dir / "two.mat", x=x[None], t=t[None], u=u, uu=u)
    with pytest.raises(ValueError, match="exactly one field"):
        load_data(shared_dir / "two.mat")
    with pytest.raises(ValueError, match="complex values"):
        SpaceTimeData(x[:, None], t, (u * 1j).T)


@pytest.mark.parametrize(
    ("coefficients", "exact"),
    [
        ({"u_xxx": -1.0}, lambda x, t: np.sin(x + t)),  # u_t = -u_xxx
        ({"u_xxxx": -1.0}, lambda x, t: np.exp(-t) * np.sin(x)),  # u_t = -u_xxxx
    ],
)
def test_equations_of_order_three_and_four_are_resimulated(coefficients, exact):
    """Third and fourth derivatives need the mixed formulation (Hessian as a field)."""
    x = np.linspace(0.0, 2.0 * np.pi, 101)
    t = np.linspace(0.0, 1.0, 21)
    data = SpaceTimeData(x[:, None], t, exact(x[None, :], t[:, None]))
    _, fit = fit_surrogate(data.split(0.75)[0], SurrogateConfig(time_degree=8))
    train_end = float(data.split(0.75)[0].t[-1])
    boundary = window_surrogate(data, train_end, fit)
    mesh = dolfinx.mesh.create_interval(MPI.COMM_WORLD, 64, [0.0, 2.0 * np.pi])
    check = validate(coefficients, boundary, mesh, data, train_end)
    assert check.formulation == "mixed"
    assert check.rel_l2_error < 1e-3  # measured: see docs/discovery.md


def test_failing_stage_leaves_partial_results(shared_dir):
    rng = np.random.default_rng(0)
    u = rng.random((11, 20))
    u[3, 4] = np.nan  # a missing value: the separable surrogate refuses it
    if MPI.COMM_WORLD.rank == 0:
        save_npz(shared_dir / "gap.npz", SpaceTimeData(np.linspace(0, 1, 20), np.arange(11.0), u))
    MPI.COMM_WORLD.Barrier()
    out = shared_dir / "gap"
    code = main(["discover", "--data", str(shared_dir / "gap.npz"), "--surrogate", "separable",
                 "--out", str(out)])
    assert code == 1
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "failed"
    assert results["failure"]["stage"] == "surrogate"
    assert "missing values" in results["failure"]["error"]
    assert results["data"]["observed"] == 219  # what the earlier stage found is kept
