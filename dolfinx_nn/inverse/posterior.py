"""Pointwise posterior standard deviation of the coefficient by a Laplace approximation.

Read as a negative log posterior, the objective of each prior is ``J / s`` with ``s`` the
noise scale below: the data-misfit term ``1/2 ||B u - d||^2 / ||d||^2`` divided by ``s`` is
the Gaussian log-likelihood of noise whose expected norm is the relative noise level ``eps``
spread over the ``N`` observations (``s = eps^2 / N``).  ``eps`` is the known noise level of
the data, or, for exact or file data, the relative data residual at the recovered
coefficient (reported as such).  The posterior around the recovered coefficient is then

- **Tikhonov** (a Gaussian prior on ``q``): precision ``(H + B) / s`` with ``H`` the
  Gauss-Newton Hessian of the data misfit with respect to the dofs of ``q``
  (:class:`dolfinx_nn.hessian.GaussNewtonHessian`, matrix-free) and ``B`` the Hessian of the
  regularisation term, ``alpha M / |Omega|`` (``"l2"``) or ``alpha (K + M / L^2) / |Omega|``
  (``"h1"``: the seminorm ``K`` alone does not bound constants, the ``L^2`` term with ``L`` the
  diameter of the domain's bounding box makes the prior proper with a correlation length of
  the domain's size).  The low-rank decomposition of :mod:`.laplace` gives
  ``var q_i = s (diag(B^{-1}) - sum_k d_k v_k^2)_i``.
- **Network** (linearised: Laplace in the parameters ``theta``, pushed forward through
  ``q(theta)``): precision ``H_theta / s + delta I`` with ``H_theta`` the Gauss-Newton Hessian
  with respect to the parameters (its largest eigenpairs by scipy's Lanczos, ``eigsh``) and
  the prior precision ``delta`` chosen by maximising the evidence (MacKay, "Bayesian
  interpolation", Neural Comput. 4 (1992) 415, eq. 4.11: ``delta = gamma / |theta - theta_0|^2``
  with ``gamma = sum mu_i / (mu_i + delta)`` the number of well-determined parameters);
  ``var q_i = g_i^T (H_theta / s + delta I)^{-1} g_i`` with ``g_i = dq_i / dtheta``.

The positivity map of each prior is not part of the approximation (Gaussian in ``q``, resp.
linear in ``theta``).  Files: ``posterior.json``, ``posterior.png`` (recovered ``q`` and its
standard deviation per prior) and ``posterior.bp`` (ParaView: ``q_<prior>`` and
``q_std_<prior>``).
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from mpi4py import MPI
from petsc4py import PETSc

import dolfinx
import dolfinx.fem.petsc
import dolfinx.io
import numpy as np
import scipy.sparse.linalg
import torch
import ufl

from dolfinx_nn.conversion import from_torch
from dolfinx_nn.hessian import GaussNewtonHessian
from dolfinx_nn.inverse.laplace import EIGENVALUE_THRESHOLD, INITIAL_RANK, low_rank_posterior
from dolfinx_nn.inverse.result import PriorResult
from dolfinx_nn.meshes import bounding_box, mesh_volume
from dolfinx_nn.models.inverse_problem import InverseProblem
from dolfinx_nn.models.observations import FieldObservation
from dolfinx_nn.output import write_json
from dolfinx_nn.plotting import subplots, write_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class Posterior:
    """The posterior standard deviation of one prior's coefficient.

    Attributes:
        prior: ``"tikhonov"`` or ``"network"``.
        mean: owned dofs of the recovered coefficient.
        std: owned dofs of the pointwise posterior standard deviation.
        details: what was computed (noise scale, rank, eigenvalues, prior precision, ...).
    """

    prior: str
    mean: np.ndarray
    std: np.ndarray
    details: dict[str, Any] = field(default_factory=dict)


def observation_count(problem: InverseProblem) -> int:
    """Number of measured values: observed state dofs, or points (collective)."""
    observation = problem.observation
    if isinstance(observation, FieldObservation):
        V = observation.u.function_space
        w = ufl.TestFunction(V)
        vec = dolfinx.fem.petsc.assemble_vector(
            dolfinx.fem.form(observation.indicator * w * ufl.dx))
        vec.ghostUpdate(addv=cast(PETSc.InsertMode, PETSc.InsertMode.ADD),  # stub: members int
                        mode=cast(PETSc.ScatterMode, PETSc.ScatterMode.REVERSE))
        local = int(np.count_nonzero(vec.array_r > 0))
        vec.destroy()
        return problem.comm.allreduce(local, op=MPI.SUM)
    return int(len(observation.values))


def noise_scale(problem: InverseProblem, result: PriorResult) -> tuple[float, dict]:
    """``s = eps^2 / N``: the known relative noise level, else the relative data residual."""
    eps, source = problem.noise_norm, "noise level of the data"
    if not eps > 0:
        eps, source = result.errors["data_residual"], "data residual at the recovered q"
    if not eps > 0:
        raise ValueError(
            "the Laplace approximation needs a noise level: the data are exact and the "
            "recovered coefficient fits them exactly (zero residual)."
        )
    n = observation_count(problem)
    return eps**2 / n, {"relative_noise": eps, "noise_from": source, "observations": n,
                        "noise_scale": eps**2 / n}


def tikhonov_prior_precision(
    problem: InverseProblem, regularization: str, alpha: float
) -> tuple[PETSc.Mat, dict]:
    """``B``: the Hessian of ``alpha/2 R(q) / |Omega|`` (made proper for ``"h1"``)."""
    Q = problem.model.Q
    mesh = Q.mesh
    p, w = ufl.TrialFunction(Q), ufl.TestFunction(Q)
    volume = mesh_volume(mesh)
    info: dict[str, Any] = {"regularization": regularization, "alpha": alpha}
    if regularization == "l2":
        form = (alpha / volume) * p * w * ufl.dx
    elif regularization == "h1":
        low, high = bounding_box(mesh)
        length = float(np.linalg.norm(high - low))
        form = (alpha / volume) * (ufl.inner(ufl.grad(p), ufl.grad(w)) + p * w / length**2) \
            * ufl.dx
        info["length_scale"] = length
    else:
        raise ValueError(f"unknown regularization {regularization!r}; expected 'h1' or 'l2'.")
    B = dolfinx.fem.petsc.assemble_matrix(dolfinx.fem.form(form))
    B.assemble()
    return B, info


def tikhonov_posterior(
    problem: InverseProblem, result: PriorResult, *, threshold: float = EIGENVALUE_THRESHOLD,
) -> Posterior:
    """The Laplace posterior of the Tikhonov coefficient (collective)."""
    start = time.perf_counter()
    model = problem.model
    q = result.coefficient.detach().to(torch.float64)
    s, noise = noise_scale(problem, result)
    B, prior = tikhonov_prior_precision(problem, result.details["regularization"],
                                        float(result.details["alpha"]))
    H = GaussNewtonHessian(lambda ms: model.solve(ms[0]), problem.observation.misfit, [q],
                           comm=problem.comm)
    A = H.petsc_mat()
    low_rank = low_rank_posterior(A, B, threshold=threshold)
    variance = s * np.maximum(low_rank.variance, 0.0)
    for obj in (A, B):
        obj.destroy()
    details = {**noise, "prior_precision": prior, **low_rank.summary(),
               "hessian_products": H.n_products, "wall_time_s": time.perf_counter() - start}
    return Posterior("tikhonov", q.numpy().copy(), np.sqrt(variance),
                     _with_range(details, np.sqrt(variance), problem.comm))


def _with_range(details: dict, std: np.ndarray, comm: MPI.Comm) -> dict:
    local = std if std.size else np.array([np.inf])
    details["std_min"] = comm.allreduce(float(local.min()), op=MPI.MIN)
    details["std_max"] = comm.allreduce(float(std.max(initial=-np.inf)), op=MPI.MAX)
    return details


def _parameters(net: torch.nn.Module) -> tuple[list[str], list[torch.Tensor]]:
    names = [k for k, p in net.named_parameters() if p.requires_grad]
    values = [p.detach().clone() for k, p in net.named_parameters() if p.requires_grad]
    return names, values


def network_posterior(
    problem: InverseProblem, result: PriorResult, net: torch.nn.Module,
    initial: Mapping[str, torch.Tensor], *, threshold: float = EIGENVALUE_THRESHOLD,
) -> Posterior:
    """The linearised Laplace posterior of the network coefficient (collective).

    Args:
        problem: the inverse problem.
        result: the network prior's fit (its coefficient is checked against ``net``).
        net: the trained network.
        initial: its parameters before training (the prior mean ``theta_0``).
        threshold: keep the eigenpairs with ``mu / (mu + delta) >= threshold``.
    """
    from dolfinx_nn.neural_function import NeuralFunction

    start = time.perf_counter()
    comm = problem.comm
    model = problem.model
    qn = NeuralFunction(net, model.Q)
    names, theta = _parameters(net)
    with torch.no_grad():
        q = qn()
    mismatch = comm.allreduce(float((q - result.coefficient).abs().max()) if q.numel() else 0.0,
                              op=MPI.MAX)
    if mismatch > 1e-10 * (1.0 + float(result.coefficient.abs().max())):
        raise ValueError(
            f"the network does not reproduce the recovered coefficient (difference "
            f"{mismatch:.2e}); pass the trained network."
        )
    s, noise = noise_scale(problem, result)

    def state(ps: list[torch.Tensor]) -> torch.Tensor:
        return model.solve(qn(dict(zip(names, ps, strict=True))))

    H = GaussNewtonHessian(state, problem.observation.misfit, theta, comm=comm,
                           replicated=[True] * len(theta))
    operator = H.linear_operator()
    n = operator.shape[0]
    flat = torch.cat([t.reshape(-1) for t in theta]).numpy()
    flat0 = torch.cat([initial[k].detach().reshape(-1) for k in names]).numpy()
    distance2 = float(np.sum((flat - flat0) ** 2))
    if not distance2 > 0:
        raise ValueError("the trained parameters equal the initial ones: no evidence for a "
                         "prior precision.")
    k = min(INITIAL_RANK, n - 2)
    tried = []
    while True:
        tried.append(k)
        v0 = np.random.default_rng(0).standard_normal(n)
        mu, V = scipy.sparse.linalg.eigsh(operator, k=k, which="LA", tol=1e-8, v0=v0)
        order = np.argsort(mu)[::-1]
        mu, V = np.maximum(mu[order], 0.0) / s, V[:, order]
        delta = _evidence_precision(mu, distance2, n)
        if mu[-1] / (mu[-1] + delta) < threshold or k >= n - 2:
            break
        k = min(2 * k, n - 2)
    keep = mu / (mu + delta) >= threshold
    mu, V = mu[keep], V[:, keep]
    c = mu / (mu + delta)
    variance = _pushforward_variance(qn, names, theta, V, c, delta)
    details = {**noise, "prior_precision_delta": delta,
               "well_determined_parameters": float(np.sum(mu / (mu + delta))),
               "parameters": n, "rank": int(len(mu)), "eigenvalues": [float(x) for x in mu],
               "ranks_tried": tried, "truncation_threshold": threshold,
               "hessian_products": H.n_products, "wall_time_s": time.perf_counter() - start}
    std = np.sqrt(np.maximum(variance, 0.0))
    return Posterior("network", q.numpy().copy(), std, _with_range(details, std, comm))


def _evidence_precision(mu: np.ndarray, distance2: float, n: int) -> float:
    """MacKay's fixed point ``delta = gamma / |theta - theta_0|^2``, ``gamma(delta)``."""
    delta = n / distance2
    for _ in range(200):
        gamma = float(np.sum(mu / (mu + delta)))
        new = max(gamma, 1e-12) / distance2
        if abs(new - delta) <= 1e-12 * delta:
            return new
        delta = new
    return delta


def _pushforward_variance(qn, names, theta, V: np.ndarray, c: np.ndarray, delta: float,
                          chunk: int = 2048) -> np.ndarray:
    """``g_i^T (I - V diag(c) V^T) g_i / delta`` for the owned dofs, by chunks of points."""
    sizes = [t.numel() for t in theta]
    shapes = [t.shape for t in theta]
    flat = torch.cat([t.reshape(-1) for t in theta])
    points = qn.points.to(flat.dtype)
    net = qn.net

    def values(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        params = dict(zip(names, [b.reshape(s) for b, s in
                                  zip(torch.split(p, sizes), shapes, strict=True)], strict=True))
        return torch.func.functional_call(net, params, (x,)).reshape(-1)

    Vt = torch.from_numpy(V)
    out = []
    for x in torch.split(points, chunk):
        G = torch.func.jacrev(values)(flat, x)  # (points, parameters)
        projected = G @ Vt
        out.append(((G**2).sum(1) - (projected**2 * torch.from_numpy(c)).sum(1)) / delta)
    if not out:
        return np.zeros(0)
    return torch.cat(out).numpy()


def write_posterior(
    folder: pathlib.Path, problem: InverseProblem, posteriors: Mapping[str, Posterior],
    comm: MPI.Comm, extra: Mapping[str, Any] | None = None,
) -> None:
    """``posterior.json``, ``posterior.png`` and ``posterior.bp`` (collective)."""
    from dolfinx_nn.inverse.plots import gather_cells

    write_json(folder / "posterior.json",
               {**(extra or {}), **{k: p.details for k, p in posteriors.items()}}, comm=comm)
    Q = problem.model.Q
    fields = []
    for name, p in posteriors.items():
        mean = dolfinx.fem.Function(Q, name=f"q_{name}")
        std = dolfinx.fem.Function(Q, name=f"q_std_{name}")
        from_torch(torch.from_numpy(p.mean), mean)
        from_torch(torch.from_numpy(p.std), std)
        fields += [mean, std]
    with dolfinx.io.VTXWriter(comm, folder / "posterior.bp", fields) as vtx:
        vtx.write(0.0)
    gathered = [gather_cells(f) for f in fields]
    if fields:
        write_figure(folder / "posterior.png", lambda: _draw_posteriors(posteriors, gathered),
                     comm, dpi=80, bbox_inches="tight")


def _draw_posteriors(posteriors: Mapping[str, Posterior], gathered: list) -> Figure:
    """Recovered coefficient and its posterior std per prior (rank 0, gathered cells)."""
    from dolfinx_nn.inverse.plots import _draw_field

    rows = len(posteriors)
    fig, axes = subplots(rows, 2, figsize=(9, 3.8 * rows), squeeze=False)
    gdim = gathered[0][0].shape[2]
    for row, name in enumerate(posteriors):
        for col, label in enumerate(("recovered q", "posterior std of q")):
            cells, values = gathered[2 * row + col]
            ax = axes[row, col]
            ax.set_title(f"{name}: {label}")
            if gdim <= 2:
                image = _draw_field(ax, cells, values, float(values.min()), float(values.max()))
                if image is not None:
                    fig.colorbar(image, ax=ax, shrink=0.8)
            else:
                ax.hist(values.reshape(-1), bins=40)
                ax.set_xlabel(label)
    return fig


def load_network(problem: InverseProblem, network, checkpoint: pathlib.Path):
    """The trained network prior from its checkpoint, and its initial parameters."""
    from dolfinx_nn.networks.coefficient import CoefficientNetwork

    def build():
        torch.manual_seed(network.seed)  # as fit_network_prior does
        low, high = bounding_box(problem.model.mesh)
        return CoefficientNetwork(low, high, width=network.width, depth=network.depth,
                                  q_min=network.q_min, q_init=network.q_init)

    initial = {k: p.detach().clone() for k, p in build().named_parameters()}
    net = build()
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    net.load_state_dict(payload["params"])
    return net, initial


def run_posterior(experiment, config, folder: pathlib.Path | None, comm: MPI.Comm
                  ) -> dict[str, Posterior]:
    """The Laplace posterior of each fitted prior; files in ``folder`` (collective)."""
    problem = experiment.problem
    posteriors: dict[str, Posterior] = {}
    for name, result in experiment.results.items():
        if name == "tikhonov":
            posteriors[name] = tikhonov_posterior(problem, result)
        elif name == "network":
            if folder is None or not (folder / "network.ckpt").exists():
                raise FileNotFoundError("the network posterior needs the trained network's "
                                        "checkpoint (network.ckpt in the output folder).")
            net, initial = load_network(problem, config.network, folder / "network.ckpt")
            posteriors[name] = network_posterior(problem, result, net, initial)
    if folder is not None:
        write_posterior(folder, problem, posteriors, comm)
    return posteriors


def summary_lines(posteriors: Mapping[str, Posterior]) -> str:
    """One line per prior: the range of the posterior standard deviation and the rank."""
    lines = []
    for name, p in posteriors.items():
        d = p.details
        lines.append(
            f"posterior std of q ({name}): {d['std_min']:.3g} .. {d['std_max']:.3g} "
            f"(rank {d['rank']}, noise {100 * d['relative_noise']:.3g} % from "
            f"{d['noise_from']})"
        )
    return "\n".join(lines)

