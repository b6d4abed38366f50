"""Taylor tests: the first-order remainder of a correct gradient decays like h^2."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from mpi4py import MPI

import numpy as np
import torch

Control = torch.Tensor | Sequence[torch.Tensor] | Mapping[str, torch.Tensor]


def _as_list(m: Control) -> tuple[list[torch.Tensor], Callable[[list[torch.Tensor]], Control]]:
    if isinstance(m, torch.Tensor):
        return [m], lambda xs: xs[0]
    if isinstance(m, Mapping):
        keys = list(m)
        return [m[k] for k in keys], lambda xs: dict(zip(keys, xs, strict=True))
    return list(m), lambda xs: type(m)(xs) if isinstance(m, tuple) else list(xs)


def taylor_test(
    f: Callable[[Control], torch.Tensor],
    m: Control,
    dm: Control,
    *,
    h: float = 1e-2,
    steps: int = 4,
    comm: MPI.Comm | None = None,
) -> list[float]:
    """Observed convergence rates of ``|f(m + h dm) - f(m) - h <grad f(m), dm>|``.

    A correct gradient gives rates close to 2 (until round-off takes over).

    Args:
        f: maps the control (same structure as ``m``) to a 0-dim tensor; under MPI its value
            must be global (as bridge functionals are).
        m: control: a tensor, a sequence of tensors, or a name -> tensor mapping (e.g. network
            parameters for ``torch.func.functional_call``).
        dm: perturbation direction, same structure and shapes as ``m`` (a mapping's entries
            are paired with ``m``'s by key).
        h: first step; each later step halves it.
        steps: number of step sizes (``steps - 1`` rates are returned).
        comm: communicator over which ``<grad, dm>`` is summed. Pass the mesh communicator when
            ``f`` involves bridge operations (each rank then holds its share of the gradient);
            leave ``None`` when the gradient is already complete on each rank.

    Returns:
        The ``steps - 1`` observed rates.
    """
    ms, rebuild = _as_list(m)
    if isinstance(m, Mapping):
        if not isinstance(dm, Mapping) or set(dm) != set(m):
            got = sorted(dm) if isinstance(dm, Mapping) else type(dm).__name__
            raise ValueError(f"dm must have the keys of m ({sorted(m)}), got {got}.")
        dm = {k: dm[k] for k in m}  # pair the entries by key, not by position
    dms, _ = _as_list(dm)
    if len(ms) != len(dms) or any(a.shape != b.shape for a, b in zip(ms, dms, strict=True)):
        raise ValueError("m and dm must have the same structure and shapes.")
    if steps < 2:
        raise ValueError(f"steps must be >= 2 to observe a rate, got {steps}.")
    leaves = [x.detach().clone().requires_grad_(True) for x in ms]
    f0 = f(rebuild(leaves))
    grads = torch.autograd.grad(f0, leaves, allow_unused=True)
    local = sum(
        float((g * d).sum()) for g, d in zip(grads, dms, strict=True) if g is not None
    )
    directional = comm.allreduce(local, op=MPI.SUM) if comm is not None else local
    value0 = float(f0.detach())
    residuals = []
    with torch.no_grad():
        for k in range(steps):
            step = h / 2**k
            perturbed = [x.detach() + step * d for x, d in zip(ms, dms, strict=True)]
            residuals.append(abs(float(f(rebuild(perturbed))) - value0 - step * directional))
    r = np.asarray(residuals)
    return [float(np.log2(r[i] / r[i + 1])) for i in range(len(r) - 1)]
