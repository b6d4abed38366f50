"""Trajectory experiments and the ``diffmap`` command, with small settings.

The regression runs replicated on every rank; the inverse problem goes through the bridge
and is distributed, so under ``mpiexec -n 2`` its Hessian-vector products are sums of shares.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from dolfinx_nn.diffusion_maps import HessianOperator, top_eigenpairs
from dolfinx_nn.diffusion_maps import cli as diffmap_cli
from dolfinx_nn.diffusion_maps.experiment import ExperimentConfig, alignment
from dolfinx_nn.diffusion_maps.problems import inverse


def _shared_tmp(tmp_path_factory, comm):
    folder = tmp_path_factory.mktemp("diffmap") if comm.rank == 0 else None
    return comm.bcast(folder, root=0)


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    diffmap_cli.add_arguments(parser)
    return diffmap_cli.run(parser.parse_args(argv))


def test_alignment_of_a_straight_trajectory_is_exact():
    rng = np.random.default_rng(0)
    direction = rng.standard_normal(50)
    direction /= np.linalg.norm(direction)
    s = np.linspace(0, 1, 40)
    X = s[:, None] * direction[None, :]
    others = np.linalg.qr(rng.standard_normal((50, 3)))[0]
    V = np.c_[others[:, :2], direction]
    result = alignment(X, s[:, None], V)
    assert abs(result["cosines"][0, 2] - 1.0) < 1e-12
    assert result["cosines"][0, :2].max() < 0.5
    assert abs(result["fraction_in_top_k_span"][0] - 1.0) < 1e-12


def test_regression_command_writes_results_and_plot(tmp_path_factory, comm):
    out = _shared_tmp(tmp_path_factory, comm) / "regression"
    code = _run_cli([
        "--experiment", "regression", "--out", str(out), "--steps", "120", "--every", "2",
        "--components", "3", "--hessian-k", "3", "--slq-probes", "1", "--slq-steps", "12",
    ])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert (out / "diffmap_regression.png").stat().st_size > 10_000
    assert results["recorded_points"] == 61 and results["n_parameters"] == 4353
    lam = np.array(results["diffusion_map"]["eigenvalues"])
    assert np.all(lam > 0) and np.all(lam < 1) and np.all(np.diff(lam) <= 0)
    # SGD from a fresh start moves along a curve: the first coordinate orders the iterates
    assert abs(results["diffusion_map"]["spearman_psi1_vs_step"]) > 0.95
    top = np.array(results["hessian"]["top_eigenvalues"])
    assert top[0] > top[1] > top[2] > 0
    assert results["final_loss"] < results["loss_history"][0]
    comm.Barrier()


def test_inverse_prior_hessian_by_finite_differences_matches_dense(comm):
    problem = inverse(resolution=6, width=3, comm=comm)
    H = HessianOperator(problem.module, problem.full_loss, mode=problem.hvp_mode, comm=comm)
    dense = H.dense()
    exact = np.sort(np.linalg.eigvalsh(dense))[::-1]
    lam, _ = top_eigenpairs(H, k=2, tol=1e-10)
    assert np.abs(lam - exact[:2]).max() < 1e-6 * exact[0]
    # central differences of adjoint gradients give a symmetric matrix up to O(h^2)
    assert np.abs(dense - H.dense().T).max() < 1e-5 * np.abs(dense).max()


def test_inverse_command_through_the_bridge(tmp_path_factory, comm):
    out = _shared_tmp(tmp_path_factory, comm) / "inverse"
    code = _run_cli([
        "--experiment", "inverse", "--out", str(out), "--steps", "40", "--resolution", "6",
        "--components", "3", "--hessian-k", "2", "--slq-probes", "1", "--slq-steps", "8",
    ])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["mpi_ranks"] == comm.size
    assert results["final_loss"] < 0.5 * results["loss_history"][0]
    assert results["hessian"]["top_eigenvalues"][0] > 0
    assert list(out.glob("inverse_fields_*.bp"))
    comm.Barrier()


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="recorded points are too few"):
        ExperimentConfig(steps=10, every=5)
    with pytest.raises(ValueError, match="lr"):
        ExperimentConfig(lr=-1.0)
    with pytest.raises(SystemExit):  # refused while parsing
        _run_cli(["--experiment", "regression", "--out", "/nonexistent", "--epsilon", "wide"])
    for bad, match in [({"alpha": 7.0}, r"alpha must lie in \[0, 1\].*7\.0"),
                       ({"t": -2.0}, r"diffusion time t.*-2\.0"),
                       ({"t": float("inf")}, r"diffusion time t.*inf"),
                       ({"lr": float("nan")}, r"lr.*nan"),
                       ({"momentum": -0.5}, r"momentum.*-0\.5"),
                       ({"momentum": 1.0}, r"momentum must lie in \[0, 1\).*1\.0"),
                       ({"epsilon": 0.0}, r"epsilon.*0\.0"),
                       ({"projection_dim": 0}, r"projection_dim.*0")]:
        with pytest.raises(ValueError, match=match):
            ExperimentConfig(**bad)


@pytest.mark.parametrize("option", [["--t", "-2"], ["--alpha", "7"],
                                    ["--projection-dim", "4353"]])
def test_diffusion_settings_are_refused_before_training(tmp_path_factory, comm, option):
    """A bad diffusion-map setting stops the command before the trajectory is recorded (it
    used to be refused only after minutes of training), on every rank, and writes nothing
    (a projection onto 4353 directions, as many as the regression network has parameters,
    is refused once the network is built, before its first step)."""
    out = _shared_tmp(tmp_path_factory, comm) / "never"
    with pytest.raises(ValueError, match=option[0].lstrip("-").replace("-", "_")
                       if option[0] == "--projection-dim" else option[0].lstrip("-")):
        _run_cli(["--experiment", "regression", "--out", str(out), *option])
    comm.Barrier()
    assert not (out / "results.json").exists() and not list(out.rglob("trajectory.bin"))
