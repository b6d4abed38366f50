"""Scales of a problem, from its data: the network side works in dimensionless variables.

A user's domain may be given in metres, millimetres or kilometres and the solution in any unit.
The strong residual of ``u(x)`` scales like ``U / L^2`` (its square, the loss, like ``L^-4``),
so an optimizer that sees physical units sees a different problem in every unit system.  The
network side is therefore made dimensionless (the usual nondimensionalisation of a PDE, e.g.
Langtangen & Pedersen, *Scaling of Differential Equations*, Springer 2016, ch. 3):

- coordinates: ``N`` and the random features of ``G`` and ``D`` see their inputs mapped onto
  ``[-1, 1]^d`` (:class:`~dolfinx_nn.ansatz.networks.BoxScaling`), and the Laplacian rows of the
  ``G`` and ``D`` fits are multiplied by a length squared
  (:mod:`~dolfinx_nn.ansatz.fitted_fields`);
- the length ``l = sqrt(max phi)``, ``phi`` the torsion function of the domain (``-lap phi = 1``,
  ``phi = 0`` on the boundary; ``max phi = R^2 / 4`` on a disk of radius ``R``): the distance
  over which the solution of a Poisson problem varies, whatever the shape of the domain;
- the residual scale ``S``: the root mean square over the domain of the residual of ``u = G``
  (``N = 0``), i.e. of ``L G - f``: training minimises ``mean((r / S)^2)``, which is 1 for
  ``N = 0`` in any units;
- the operator scale ``lambda = k / l^2 + max |b| / l (+ 1 / T)``: the size of the operator
  ``L = -k lap + b . grad (+ d/dt)`` on a field that varies over ``l`` (and ``T``);
- the solution scale ``U = max |f| / lambda``, by which the output of ``N`` is multiplied.
  For Poisson ``U = max |f| l^2 / k`` is the comparison-principle bound of the correction
  ``u - H`` to the harmonic extension ``H`` of the boundary data (``-k lap (u - H) = f``,
  ``u - H = 0`` on the boundary, so ``|u - H| <= max |f| max phi / k``).  The residual of
  ``G`` is no measure of it: a fitted ``G`` may follow ``u`` more closely than ``H`` does
  (on the square with a hole ``rms(L G - f)`` is 0.3 of ``rms f``, and ``U`` from it was 20
  times too small: 0.13 instead of 2.2e-3 after 200 Ritz steps).  With ``f = 0`` the scale
  of ``G`` is taken.

Changing the unit of length or of the solution changes every input of the optimizer by exact
factors only: the loss and ``N`` are the same up to round-off.  The network side computes
these scales on the canonical copy of the problem (:mod:`~dolfinx_nn.ansatz.units`), whose
data are rounded so that they are the same bit for bit in every unit system; round-off alone
would part the runs of the default optimizer.  Results are reported in the user's units, and
the scales are reported too (``results.json``: ``network.scales``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mpi4py import MPI

import dolfinx
import numpy as np
import torch

from dolfinx_nn.ansatz.fitted_fields import quadrature_points
from dolfinx_nn.ansatz.pdes import Problem
from dolfinx_nn.networks.pointwise import laplacian

#: Quadrature degree of the points on which the residual scale is measured.
SCALE_DEGREE = 4

#: Gauss-Legendre points in time of the residual scale of time-dependent problems.
SCALE_TIMES = 4


@dataclass(frozen=True)
class Scales:
    """Characteristic scales of a problem, in the user's units.

    Attributes:
        length: ``l = sqrt(max phi)`` (unit of ``x``).
        residual: ``S``, root mean square of ``L G - f`` (unit of ``f``).
        operator: ``lambda = k / l^2 + max |b| / l (+ 1 / T)`` (unit of ``f / u``).
        solution: ``U = max |f| / lambda`` (unit of ``u``), the output scale of ``N``.
        volume: measure of the domain (unit of ``x^d``).
        diffusion: ``k``.
    """

    length: float
    residual: float
    operator: float
    solution: float
    volume: float
    diffusion: float

    @property
    def energy(self) -> float:
        """Scale of the Ritz energy ``int k/2 |grad u|^2 - f u``: ``k U^2 |Omega| / l^2``."""
        return self.diffusion * self.solution**2 * self.volume / self.length**2

    def as_dict(self) -> dict[str, float]:
        """JSON-friendly summary."""
        return {**asdict(self), "energy": self.energy}


def _space_time_points(
    problem: Problem, mesh: dolfinx.mesh.Mesh
) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature points and weights of the domain (times ``[0, T]`` if time-dependent)."""
    x, w, _ = quadrature_points(mesh, SCALE_DEGREE)
    if not problem.time_dependent:
        return x, w
    nodes, weights = np.polynomial.legendre.leggauss(SCALE_TIMES)
    times = 0.5 * problem.final_time * (nodes + 1.0)
    xt = np.concatenate([np.column_stack([x, np.full(len(x), t)]) for t in times])
    wt = np.concatenate([w * 0.5 * wi for wi in weights])  # mean in time, not the integral
    return xt, wt


def problem_scales(
    problem: Problem, mesh: dolfinx.mesh.Mesh, extension: torch.nn.Module, length: float
) -> Scales:
    """The scales of ``problem`` on ``mesh`` with the fitted extension ``G`` (collective).

    Args:
        problem: the PDE.
        mesh: the mesh of the fits.
        extension: ``G``, maps inputs ``(n, input_dim)`` to ``(n,)``.
        length: ``l = sqrt(max phi)`` from the distance fit
            (:func:`~dolfinx_nn.ansatz.fitted_fields.fit_distance`).

    Returns:
        The :class:`Scales`; identical on every rank.

    Raises:
        ValueError: ``length`` is not a positive finite number.
    """
    if not (np.isfinite(length) and length > 0.0):
        raise ValueError(f"the length scale must be a positive number, got {length!r}")
    comm = mesh.comm
    x, w = _space_time_points(problem, mesh)
    xt = torch.from_numpy(np.ascontiguousarray(x))
    if len(xt):
        g_t, grad, lap = laplacian(extension, xt, problem.gdim, create_graph=False)
        f = problem.source_torch(xt).numpy()
        r0 = problem.apply(xt, g_t, grad, lap).numpy() - f
        g = g_t.numpy()
        speed = np.zeros(len(xt))
        t = xt[:, problem.gdim] if problem.time_dependent else None
        for b in problem.advection:
            speed += b.torch(xt[:, : problem.gdim], t).numpy() ** 2
    else:
        r0 = g = f = speed = np.zeros(0)
    sums = comm.allreduce(np.array([float(w @ r0**2), float(w @ g**2), float(w.sum())]),
                          op=MPI.SUM)
    bmax = float(np.sqrt(comm.allreduce(float(speed.max(initial=0.0)), op=MPI.MAX)))
    fmax = comm.allreduce(float(np.abs(f).max(initial=0.0)), op=MPI.MAX)
    volume = float(sums[2])  # in time the weights average: their sum is |Omega|
    operator = problem.diffusion / length**2 + bmax / length
    if problem.time_dependent:
        operator += 1.0 / problem.final_time
    g_rms = float(np.sqrt(sums[1] / sums[2]))
    solution = fmax / operator if fmax > 0.0 else (g_rms if g_rms > 0.0 else 1.0)
    residual = float(np.sqrt(sums[0] / sums[2]))
    if not residual > 0.0:  # G solves the problem: any scale will do
        residual = operator * solution
    return Scales(length=float(length), residual=residual, operator=float(operator),
                  solution=float(solution), volume=volume, diffusion=float(problem.diffusion))


#: The 1D problem of the unit-invariance check: ``L`` is substituted (``docs/ansatz.md``).
UNITS_EXACT = "sin(2*pi*x[0]/L)*cos(4*pi*x[0]/L) + 1"


def main(argv: list[str] | None = None) -> dict:
    """Relative errors of the 1D problem on ``[0, L]`` for several ``L`` and seeds (defaults).

    ``python -m dolfinx_nn.ansatz.scaling --lengths 1e-3,1,1e3 --seeds 5`` prints, per length,
    the median and range over seeds of the network's relative L2 error with the default
    network settings, and per seed the ratio of the largest to the smallest error over the
    lengths (the table of ``docs/ansatz.md``).
    """
    import argparse

    from dolfinx_nn.ansatz.compare import refine
    from dolfinx_nn.ansatz.errors import network_errors, relative_l2
    from dolfinx_nn.ansatz.network_solver import NetworkConfig, solve_network
    from dolfinx_nn.output import print0, write_json
    from dolfinx_nn.training import TrainingConfig

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--lengths", default="1e-3,1,1e3")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cells", type=int, default=64)
    parser.add_argument("--out", default=None, help="JSON file of the results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    rows = []
    for length in (float(v) for v in args.lengths.split(",")):
        mesh = dolfinx.mesh.create_interval(comm, args.cells, [0.0, length])
        reference = refine(mesh)
        problem = Problem.from_text("poisson", UNITS_EXACT.replace("L", repr(length)), 1)
        errors = []
        for seed in range(args.seeds):
            defaults = NetworkConfig()
            config = NetworkConfig(seed=seed, training=TrainingConfig(
                **{**defaults.training.as_dict(), "seed": seed}))
            sol = solve_network(problem, mesh, config, desc=f"L={length:g} seed {seed}")
            errors.append(relative_l2(network_errors(problem, sol.ansatz, reference)))
        rows.append({"length": length, "errors": errors, "median": float(np.median(errors)),
                     "min": float(np.min(errors)), "max": float(np.max(errors)),
                     "scales": sol.scales.as_dict()})
        print0(f"L = {length:g}: median {rows[-1]['median']:.2e}, range "
               f"[{rows[-1]['min']:.2e}, {rows[-1]['max']:.2e}] over {args.seeds} seeds")
    per_seed = np.array([row["errors"] for row in rows])  # (lengths, seeds)
    ratios = (per_seed.max(axis=0) / per_seed.min(axis=0)).tolist()
    print0("largest / smallest error over the lengths, per seed: "
           + ", ".join(f"{r:.3g}" for r in ratios))
    result = {"ranks": comm.size, "settings": vars(args), "rows": rows,
              "ratio_over_lengths_per_seed": ratios}
    if args.out:
        write_json(args.out, result, comm)
    return result


if __name__ == "__main__":
    main()
