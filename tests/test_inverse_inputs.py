"""Inputs of the inverse module: formulas, options, measurement files, noise and gradients."""

from __future__ import annotations

import argparse
import json
import pathlib

from mpi4py import MPI

import numpy as np
import pytest
import torch

from dolfinx_nn import NeuralFunction, taylor_test
from dolfinx_nn.expressions import parse_expression
from dolfinx_nn.inverse import (
    ProblemSpec,
    TikhonovConfig,
    build_problem,
)
from dolfinx_nn.inverse.cli import _formula, add_arguments, configs_from_args, run
from dolfinx_nn.meshes import bounding_box
from dolfinx_nn.models.data import read_point_data
from dolfinx_nn.models.noise import standard_normal_at
from dolfinx_nn.networks.coefficient import CoefficientNetwork


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    "formula",
    [
        "__import__('os').system('touch pwned')",
        "x[0].__class__",
        "open('/etc/passwd')",
        "(lambda: 1)()",
        "exec('1')",
    ],
)
def test_formulas_never_execute_code(formula, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(argparse.ArgumentTypeError):
        _formula(formula)
    with pytest.raises(ValueError):
        build_problem(ProblemSpec(dim=1, resolution=4, coefficient=formula))
    assert not (tmp_path / "pwned").exists()


def test_bad_options_name_the_valid_choices():
    with pytest.raises(ValueError, match="all.*subdomain.*points"):
        ProblemSpec(observe="everywhere")
    with pytest.raises(ValueError, match="dim must be one of"):
        ProblemSpec(dim=4)
    with pytest.raises(ValueError, match="noise"):
        ProblemSpec(noise=float("nan"))
    with pytest.raises(ValueError, match="h1.*l2"):
        TikhonovConfig(regularization="tv")
    with pytest.raises(ValueError, match="alphas"):
        TikhonovConfig(alphas=(1e-3, -1.0))
    with pytest.raises(SystemExit):
        parse(["--prior", "bayesian"])
    with pytest.raises(ValueError, match="contains no cell"):
        build_problem(ProblemSpec(dim=1, resolution=4, observe="subdomain",
                                  subdomain="where(x[0] > 2, 1, 0)"))


def test_noise_depends_on_the_point_only():
    points = np.random.default_rng(0).random((5000, 2))
    z = standard_normal_at(points, seed=1)
    assert np.array_equal(z[::-1], standard_normal_at(points[::-1], seed=1))
    assert not np.array_equal(z, standard_normal_at(points, seed=2))
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1.0) < 0.05


def test_noise_level_matches_the_request():
    problem = build_problem(ProblemSpec(dim=2, resolution=8, degree=2, noise=0.05, seed=1))
    exact = problem.exact_state
    q = problem.model.interpolate_coefficient(problem.true_coefficient)
    # at the true coefficient the residual is the noise (plus a small discretisation error)
    residual = problem.errors(q)["data_residual"]
    assert residual == pytest.approx(problem.noise_norm, rel=0.15)
    assert exact is not None


def test_misfit_gradient_with_respect_to_the_weights_taylor():
    problem = build_problem(ProblemSpec(dim=2, resolution=6, noise=0.01))
    torch.manual_seed(0)
    net = CoefficientNetwork(*bounding_box(problem.model.mesh), width=8)
    q = NeuralFunction(net, problem.model.Q)
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    directions = {k: torch.randn_like(v) for k, v in params.items()}
    rates = taylor_test(lambda p: problem.loss(q(p)), params, directions, h=0.05,
                        comm=problem.comm)
    assert min(rates) > 1.9


def test_measurements_from_a_csv_file(tmp_path):
    comm = MPI.COMM_WORLD
    synthetic = build_problem(ProblemSpec(dim=2, resolution=8, observe="points", num_points=60))
    points, values = synthetic.observation.points, synthetic.observation.values
    path = pathlib.Path(comm.bcast(str(tmp_path / "measurements.csv"), root=0))
    if comm.rank == 0:
        table = np.column_stack([points, values])
        np.savetxt(path, table, delimiter=",", header="x,y,u", comments="")
    comm.Barrier()
    read_points, read_values = read_point_data(str(path), comm)
    assert np.allclose(read_points, points, atol=1e-15, rtol=1e-15)
    assert np.allclose(read_values, values, atol=1e-15, rtol=1e-15)
    problem = build_problem(ProblemSpec(dim=2, resolution=8, data_file=str(path)), comm)
    q = problem.model.interpolate_coefficient(synthetic.true_coefficient)
    assert float(problem.loss(q)) == pytest.approx(float(synthetic.loss(q)), rel=1e-10)
    with pytest.raises(ValueError, match="cannot read"):
        read_point_data(str(tmp_path / "missing.csv"), comm)


def test_command_line_run_writes_results_plot_and_paraview_files(tmp_path):
    comm = MPI.COMM_WORLD
    out = pathlib.Path(comm.bcast(str(tmp_path / "run"), root=0))
    args = parse(["--dim", "2", "--resolution", "6", "--noise", "0.01", "--prior", "both",
                  "--adam-steps", "10", "--lbfgs-steps", "10", "--alphas", "1e-4",
                  "--width", "8", "--out", str(out)])
    assert run(args) == 0
    if comm.rank == 0:
        results = json.loads((out / "results.json").read_text())
        for prior in ("network", "tikhonov"):
            for key in ("coefficient_rel_l2_error", "state_rel_l2_error", "iterations",
                        "wall_time_s"):
                assert np.isfinite(results[prior][key]), (prior, key)
        assert results["network"]["iterations"] == 20
        assert results["tikhonov"]["coefficient_rel_l2_error"] < 0.5
        assert (out / "inverse.png").stat().st_size > 10_000
        assert (out / "coefficients.bp").is_dir() and (out / "state.bp").is_dir()
        assert (out / "network.ckpt").is_file()
    spec, config = configs_from_args(args)
    assert config.priors == ("network", "tikhonov") and spec.noise == 0.01


def test_models_free_their_petsc_objects_on_request():
    """The PETSc rule for the shared models: destroy() or a with block, then refusal."""
    spec = ProblemSpec(dim=2, resolution=4, observe="points", num_points=5, noise=0.0)
    problem = build_problem(spec, MPI.COMM_WORLD)
    with problem.model as model, problem.observation as observation:
        q = model.interpolate_coefficient(parse_expression("1 + x[0]"))
        assert float(observation.misfit(model.solve(q))) >= 0.0
    assert model.destroyed and observation.destroyed
    with pytest.raises(RuntimeError, match="destroyed"):
        model.solve(q)
    with pytest.raises(RuntimeError, match="destroyed"):
        observation.misfit(torch.zeros(model.num_owned_state, dtype=torch.float64))
