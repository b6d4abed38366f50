"""The shared training loop: convergence, data parallelism, exact resume, early stopping, errors."""

from __future__ import annotations

import math
import pathlib
import shutil
import tempfile

from mpi4py import MPI

import numpy as np
import pytest
import torch

from dolfinx_nn.parallel import global_sum, sync_gradients
from dolfinx_nn.training import History, TrainingConfig, train

DTYPE = torch.float64


@pytest.fixture
def shared_dir(comm):
    """A directory that every rank sees under the same name."""
    path = comm.bcast(tempfile.mkdtemp(prefix="dolfinx_nn_training_") if comm.rank == 0 else None)
    yield pathlib.Path(path)
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(path, ignore_errors=True)


def regression_data(n: int = 64, seed: int = 1):
    """Targets that a linear model fits exactly; the same arrays on every rank."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.uniform(-1, 1, (n, 3)))
    w_true = torch.tensor([[0.5, -1.5, 2.0]], dtype=DTYPE)
    return x, x @ w_true.T + 0.25, w_true


def mse(model, x, y, comm):
    """Mean squared error over the rows of all ranks; this rank holds rows rank::size."""
    local = ((model(x[comm.rank :: comm.size]) - y[comm.rank :: comm.size]) ** 2).sum()
    return global_sum(local, comm) / x.shape[0]


def mlp() -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).to(
        DTYPE
    )


def test_regression_solved_to_tolerance(comm):
    x, y, w_true = regression_data()
    model = torch.nn.Linear(3, 1).to(DTYPE)
    cfg = TrainingConfig(adam_steps=100, adam_lr=0.05, lbfgs_steps=100, tolerance=1e-20)
    history = train(lambda: mse(model, x, y, comm), model, cfg, comm=comm)
    assert history.stopped_because == "tolerance"
    assert history.losses[-1] <= 1e-20 < min(history.losses[:-1])
    assert history.phases[0] == "adam" and history.phases[-1] == "lbfgs"
    assert len(history.losses) == len(history.phases) == len(history.times) == history.steps
    assert history.steps < 200 and history.wall_time_s > 0
    torch.testing.assert_close(model.weight.detach(), w_true, rtol=0, atol=1e-9)
    assert abs(model.bias.item() - 0.25) < 1e-9
    assert history.as_dict()["stopped_because"] == "tolerance"
    assert History.from_dict(history.as_dict()).losses == history.losses


def test_data_parallel_matches_serial_run(comm):
    """Each rank holds 1/size of the data; the result equals one rank holding all of it."""
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.uniform(-1, 1, (40, 1)))
    y = torch.sin(3 * x)
    cfg = TrainingConfig(adam_steps=60, adam_lr=0.02, lbfgs_steps=20, seed=0)

    parallel = mlp()
    h_parallel = train(lambda: mse(parallel, x, y, comm), parallel, cfg, comm=comm)
    serial = mlp()
    h_serial = train(lambda: mse(serial, x, y, MPI.COMM_SELF), serial, cfg, comm=MPI.COMM_SELF)

    assert h_parallel.steps == h_serial.steps == 80
    assert h_parallel.losses[-1] < 0.2 * h_parallel.losses[0]
    np.testing.assert_allclose(h_parallel.losses, h_serial.losses, rtol=1e-10, atol=0)
    for p, q in zip(parallel.parameters(), serial.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-10)


class SineFit:
    """Fit sin(3x) on [-1, 1] with points split over the ranks (rows rank::size).

    With ``resample`` the points are redrawn from the global torch generator at every
    evaluation (as in a stochastic Adam phase); otherwise they are fixed (as L-BFGS needs).
    ``interrupt_at_call`` raises KeyboardInterrupt at that evaluation, as Ctrl-C would.
    """

    def __init__(self, model, comm, resample: bool, interrupt_at_call: int | None = None):
        self.model, self.comm, self.resample = model, comm, resample
        self.calls = 0
        self.interrupt_at_call = interrupt_at_call
        self.fixed = torch.linspace(-1, 1, 16, dtype=DTYPE)[:, None]

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.interrupt_at_call:
            raise KeyboardInterrupt
        x = torch.rand(16, 1, dtype=DTYPE) * 2 - 1 if self.resample else self.fixed
        mine = x[self.comm.rank :: self.comm.size]
        local = ((self.model(mine) - torch.sin(3 * mine)) ** 2).sum()
        return global_sum(local, self.comm) / x.shape[0]


RESUME_CASES = {
    # phase: (config, resample the points?, [(interrupt after step, or inside step), ...])
    "adam": (TrainingConfig(12, 0.01, 0, checkpoint_every=5), True, [(7, None), (None, 8)]),
    "lbfgs": (TrainingConfig(5, 0.01, 12, checkpoint_every=4), False, [(10, None), (None, 9)]),
}


@pytest.mark.parametrize("phase", list(RESUME_CASES))
def test_interrupted_run_resumes_exactly(comm, shared_dir, phase):
    """Ctrl-C after a step, or inside one (in an L-BFGS line search), then resume=True."""
    cfg, resample, interruptions = RESUME_CASES[phase]
    ref_model = mlp()
    calls_after: list[int] = [0]
    ref_loss = SineFit(ref_model, comm, resample)
    ref = train(
        ref_loss,
        ref_model,
        cfg,
        comm=comm,
        callback=lambda s, v: calls_after.append(ref_loss.calls),
    )
    assert ref.steps == cfg.total_steps and ref.stopped_because == "completed"

    for after_step, inside_step in interruptions:
        interrupt_at_call = None
        if inside_step is not None:
            # the first evaluation of an Adam step; the second (a line-search trial) of L-BFGS's
            evaluations = calls_after[inside_step] - calls_after[inside_step - 1]
            trial = 1 if cfg.phase_of(inside_step - 1) == "adam" else 2
            assert cfg.phase_of(inside_step - 1) == phase and evaluations >= trial
            interrupt_at_call = calls_after[inside_step - 1] + trial

        def ctrl_c(step, loss, after_step=after_step):
            if step == after_step:
                raise KeyboardInterrupt

        model = mlp()
        path = shared_dir / f"{after_step}-{inside_step}" / "checkpoint.pt"
        loss = SineFit(model, comm, resample, interrupt_at_call)
        with pytest.raises(KeyboardInterrupt):
            train(loss, model, cfg, comm=comm, checkpoint=path, callback=ctrl_c)
        completed = after_step if after_step is not None else inside_step - 1
        # the model holds the last completed step, not a partial update or line-search trial
        replayed = _replay(cfg, resample, comm, completed)
        for p, q in zip(model.parameters(), replayed.parameters(), strict=True):
            assert torch.equal(p, q)
        comm.Barrier()  # rank 0 wrote the checkpoint without a collective call
        assert path.is_file()

        fresh = torch.nn.Sequential(
            torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
        ).to(DTYPE)
        torch.manual_seed(12345)  # other initial values and generator state: checkpoint rules
        history = train(
            SineFit(fresh, comm, resample), fresh, cfg, comm=comm, checkpoint=path, resume=True
        )
        assert history.losses == ref.losses  # bitwise
        assert history.phases == ref.phases
        assert history.stopped_because == "completed"
        for p, q in zip(fresh.parameters(), ref_model.parameters(), strict=True):
            assert torch.equal(p, q)


def _replay(cfg: TrainingConfig, resample: bool, comm, steps: int) -> torch.nn.Module:
    """The model after the first ``steps`` steps of an uninterrupted run."""
    model = mlp()

    def stop(step, loss):
        return step == steps

    train(SineFit(model, comm, resample), model, cfg, comm=comm, callback=stop)
    return model


def test_patience_stops_on_a_plateau(comm):
    w = torch.zeros(2, dtype=DTYPE, requires_grad=True)
    target = torch.tensor([1.0, -2.0], dtype=DTYPE)
    cfg = TrainingConfig(adam_steps=2000, adam_lr=0.1, lbfgs_steps=0, patience=10, min_delta=1e-3)
    history = train(lambda: ((w - target) ** 2).sum() + 1.0, [w], cfg, comm=comm)
    assert history.stopped_because == "patience"
    assert history.steps < 2000
    losses = history.losses
    best_before = min(losses[:-10])
    assert min(losses[-10:]) >= best_before * (1 - 1e-3)
    assert losses[-11] == best_before  # the last improvement came exactly `patience` steps ago
    assert best_before < 1.1 and losses[0] == 6.0


def test_callback_stops_on_every_rank(comm):
    w = torch.zeros(1, dtype=DTYPE, requires_grad=True)
    cfg = TrainingConfig(adam_steps=50, lbfgs_steps=0)
    history = train(
        lambda: ((w - 1) ** 2).sum(),
        [w],
        cfg,
        comm=comm,
        callback=lambda step, loss: step == 4 and comm.rank == comm.size - 1,
    )
    assert history.steps == 4 and history.stopped_because == "callback"


def test_bad_losses_raise_on_every_rank(comm):
    """NaN on one rank, a NaN gradient, or a rank-dependent loss: a clear error everywhere."""
    w = torch.ones(3, dtype=DTYPE, requires_grad=True)
    calls = [0]

    def nan_on_last_rank():
        calls[0] += 1
        value = (w**2).sum()
        if calls[0] == 4 and comm.rank == comm.size - 1:
            value = value * math.nan
        return value

    with pytest.raises(FloatingPointError, match=r"not finite.*step 3 \(adam phase\)"):
        train(nan_on_last_rank, [w], TrainingConfig(adam_steps=10, lbfgs_steps=0), comm=comm)

    v = torch.tensor([0.0, 1.0], dtype=DTYPE, requires_grad=True)
    with pytest.raises(FloatingPointError, match="gradient of parameter 0"):
        train(lambda: torch.sqrt(v).sum(), [v], TrainingConfig(adam_steps=3), comm=comm)
    assert v.tolist() == [0.0, 1.0]  # no update was applied

    cfg = TrainingConfig(adam_steps=2, lbfgs_steps=0)
    if comm.size == 1:
        assert train(lambda: (w**2).sum() + comm.rank, [w], cfg, comm=comm).steps == 2
    else:
        with pytest.raises(ValueError, match="different values on different ranks"):
            train(lambda: (w**2).sum() + comm.rank, [w], cfg, comm=comm)


def test_resume_errors(comm, shared_dir):
    w = torch.ones(2, dtype=DTYPE, requires_grad=True)
    path = shared_dir / "checkpoint.pt"
    with pytest.raises(FileNotFoundError, match="no checkpoint file.*checkpoint.pt"):
        train(lambda: (w**2).sum(), [w], TrainingConfig(), comm=comm, checkpoint=path, resume=True)

    if comm.rank == 0:
        path.write_text("not a checkpoint")
    comm.Barrier()
    with pytest.raises(ValueError, match="not a dolfinx_nn training checkpoint"):
        train(lambda: (w**2).sum(), [w], TrainingConfig(), comm=comm, checkpoint=path, resume=True)
    comm.Barrier()
    if comm.rank == 0:
        path.unlink()
    comm.Barrier()

    cfg = TrainingConfig(adam_steps=5, lbfgs_steps=0)
    first = train(lambda: (w**2).sum(), [w], cfg, comm=comm, checkpoint=path, resume="auto")
    assert first.steps == 5 and path.is_file()

    other = TrainingConfig(adam_steps=5, adam_lr=2e-3, lbfgs_steps=0)
    with pytest.raises(ValueError, match=r"TrainingConfig.adam_lr is 0.002.*0.001"):
        train(lambda: (w**2).sum(), [w], other, comm=comm, checkpoint=path, resume=True)
    with pytest.raises(ValueError, match=r"shapes \[\(2,\)\], not \[\(3,\)\]"):
        v = torch.ones(3, dtype=DTYPE, requires_grad=True)
        train(lambda: (v**2).sum(), [v], cfg, comm=comm, checkpoint=path, resume=True)

    # More L-BFGS steps extend a finished run.
    longer = TrainingConfig(adam_steps=5, lbfgs_steps=3)
    extended = train(lambda: (w**2).sum(), [w], longer, comm=comm, checkpoint=path, resume=True)
    assert extended.steps == 8 and extended.losses[:5] == first.losses
    assert extended.phases == ["adam"] * 5 + ["lbfgs"] * 3


def test_config_and_argument_errors(comm):
    with pytest.raises(ValueError, match="TrainingConfig.adam_steps must be an int >= 0, got -1"):
        TrainingConfig(adam_steps=-1)
    with pytest.raises(ValueError, match="TrainingConfig.adam_lr"):
        TrainingConfig(adam_lr=float("nan"))
    with pytest.raises(ValueError, match="TrainingConfig.patience"):
        TrainingConfig(patience=0)
    with pytest.raises(ValueError, match=r"unknown optimizer phase 'rmsprop'; choose one of: "
                                         r"adam, lbfgs, sgd"):
        TrainingConfig(phases=("adam", "rmsprop"))
    with pytest.raises(ValueError, match=r"sgd_steps is 5 but 'sgd' is not in"):
        TrainingConfig(sgd_steps=5)
    with pytest.raises(ValueError, match="TrainingConfig.phases must be a tuple of distinct"):
        TrainingConfig(phases=("adam", "adam"))
    with pytest.raises(ValueError, match="TrainingConfig.sgd_momentum"):
        TrainingConfig(sgd_momentum=-0.5)

    w = torch.ones(1, dtype=DTYPE, requires_grad=True)
    with pytest.raises(TypeError, match="list of tensors"):
        train(lambda: (w**2).sum(), w, comm=comm)
    with pytest.raises(TypeError, match="0-dim"):
        train(lambda: w**2 * torch.ones(2), [w], TrainingConfig(adam_steps=1), comm=comm)
    with pytest.raises(ValueError, match="resume needs a checkpoint"):
        train(lambda: (w**2).sum(), [w], comm=comm, resume=True)


def test_progress_bar_only_on_rank_zero(comm, capfd):
    w = torch.ones(1, dtype=DTYPE, requires_grad=True)
    train(
        lambda: (w**2).sum(),
        [w],
        TrainingConfig(adam_steps=3, lbfgs_steps=2),
        comm=comm,
        desc="quiet-check",
    )
    out, err = capfd.readouterr()
    if comm.rank == 0:
        assert "quiet-check" in err
    else:
        assert out == "" and err == ""


def test_resume_refuses_another_problem_and_compares_floats_up_to_round_off(comm, shared_dir):
    w = torch.ones(2, dtype=DTYPE, requires_grad=True)
    path = shared_dir / "problem.pt"
    problem = {"mesh": "square", "resolution": 16, "coefficient": "1 + x[0]"}
    cfg = TrainingConfig(adam_steps=3, lbfgs_steps=0, tolerance=2.2482188099948726e-05)
    train(lambda: (w**2).sum(), [w], cfg, comm=comm, checkpoint=path, problem=problem)

    changed = {**problem, "resolution": 8, "coefficient": "2"}
    with pytest.raises(ValueError, match=r"another problem \(resolution: 16 in the checkpoint, "
                                         r"8 now; coefficient: '1 \+ x\[0\]' in the checkpoint"):
        train(lambda: (w**2).sum(), [w], cfg, comm=comm, checkpoint=path, resume=True,
              problem=changed)
    # a tolerance computed from a sum in another order, and more steps: accepted
    more = TrainingConfig(adam_steps=5, lbfgs_steps=0, tolerance=2.2482188099948733e-05)
    resumed = train(lambda: (w**2).sum(), [w], more, comm=comm, checkpoint=path, resume=True,
                    problem=dict(problem))
    assert resumed.steps == 5
    with pytest.raises(ValueError, match="TrainingConfig.tolerance"):
        far = TrainingConfig(adam_steps=5, lbfgs_steps=0, tolerance=2.3e-05)
        train(lambda: (w**2).sum(), [w], far, comm=comm, checkpoint=path, resume=True,
              problem=problem)


@pytest.mark.timeout(60)
def test_a_failing_checkpoint_write_ends_every_rank_and_keeps_the_result(
    comm, shared_dir, monkeypatch
):
    """Rank 0's disk is full: every rank raises (no hang); no temporary file is left.

    At the final checkpoint the finished training is returned with the failure recorded.
    """
    import errno

    import dolfinx_nn.output
    import dolfinx_nn.training.checkpoint

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(dolfinx_nn.training.checkpoint, "atomic_write", full_disk)
    w = torch.ones(2, dtype=DTYPE, requires_grad=True)
    path = shared_dir / "full.pt"
    every = TrainingConfig(adam_steps=6, lbfgs_steps=0, checkpoint_every=2)
    with pytest.raises(dolfinx_nn.output.OutputError,
                       match="cannot write the checkpoint .*full.pt: No space left on device"):
        train(lambda: (w**2).sum(), [w], every, comm=comm, checkpoint=path)
    final_only = TrainingConfig(adam_steps=6, lbfgs_steps=0, checkpoint_every=0)
    history = train(lambda: (w**2).sum(), [w], final_only, comm=comm, checkpoint=path)
    assert history.steps == 6 and history.stopped_because == "completed"
    assert "No space left on device" in history.checkpoint_error
    monkeypatch.undo()
    # the real writer, on a folder that is a file: a real OSError, and no .tmp anywhere
    blocked = shared_dir / "blocked"
    if comm.rank == 0:
        blocked.write_text("a file where the checkpoint folder should be")
    comm.Barrier()
    with pytest.raises(dolfinx_nn.output.OutputError, match="cannot write the checkpoint"):
        train(lambda: (w**2).sum(), [w], every, comm=comm, checkpoint=blocked / "c.pt")
    assert not list(shared_dir.rglob("*.tmp"))


def test_sgd_phase_and_phases_in_order(comm, shared_dir):
    """The SGD phase takes the steps of ``torch.optim.SGD`` on the summed gradient, bitwise;
    phases run in the configured order and resume across it."""
    x, y, _ = regression_data(32)
    cfg = TrainingConfig(adam_steps=0, lbfgs_steps=0, sgd_steps=25, sgd_lr=0.05,
                         sgd_momentum=0.5, phases=("sgd",))
    model = torch.nn.Linear(3, 1).to(DTYPE)
    start = [p.detach().clone() for p in model.parameters()]
    history = train(lambda: mse(model, x, y, comm), model, cfg, comm=comm, desc=None)

    by_hand = torch.nn.Linear(3, 1).to(DTYPE)
    with torch.no_grad():
        for p, s in zip(by_hand.parameters(), start, strict=True):
            p.copy_(s)
    optimizer = torch.optim.SGD(by_hand.parameters(), lr=0.05, momentum=0.5)
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        loss = mse(by_hand, x, y, comm)
        loss.backward()
        sync_gradients(by_hand, comm)
        optimizer.step()
        losses.append(float(loss.detach()))
    assert history.phases == ["sgd"] * 25 and history.stopped_because == "completed"
    assert history.losses == losses
    for p, q in zip(model.parameters(), by_hand.parameters(), strict=True):
        assert torch.equal(p, q)
    assert history.losses[-1] < 0.05 * history.losses[0]

    # SGD, then L-BFGS, then Adam; a run stopped in the SGD phase resumes bitwise, also from
    # a checkpoint written before the configuration had an SGD phase or a phase order.
    cfg = TrainingConfig(sgd_steps=4, sgd_lr=0.05, lbfgs_steps=3, adam_steps=2, adam_lr=0.01,
                         phases=("sgd", "lbfgs", "adam"))
    assert [cfg.phase_of(s) for s in range(9)] == ["sgd"] * 4 + ["lbfgs"] * 3 + ["adam"] * 2
    def linear() -> torch.nn.Module:
        torch.manual_seed(5)
        return torch.nn.Linear(3, 1).to(DTYPE)

    model = linear()
    full = train(lambda: mse(model, x, y, comm), model, cfg, comm=comm, desc=None)
    assert full.phases == ["sgd"] * 4 + ["lbfgs"] * 3 + ["adam"] * 2

    path = shared_dir / "order.pt"
    stopped = linear()
    part = train(lambda: mse(stopped, x, y, comm), stopped, cfg, comm=comm, desc=None,
                 checkpoint=path, callback=lambda step, loss: step == 2)
    assert part.stopped_because == "callback" and part.losses == full.losses[:2]
    resumed = torch.nn.Linear(3, 1).to(DTYPE)
    history = train(lambda: mse(resumed, x, y, comm), resumed, cfg, comm=comm, desc=None,
                    checkpoint=path, resume=True)
    assert history.losses == full.losses and history.phases == full.phases
    for p, q in zip(resumed.parameters(), model.parameters(), strict=True):
        assert torch.equal(p, q)

    # a checkpoint written before the SGD phase and the phase order existed
    old = TrainingConfig(adam_steps=3, lbfgs_steps=0)
    w = torch.ones(2, dtype=DTYPE, requires_grad=True)
    train(lambda: (w**2).sum(), [w], old, comm=comm, checkpoint=path, desc=None)
    comm.Barrier()
    if comm.rank == 0:
        payload = torch.load(path, weights_only=True)
        for name in ("sgd_steps", "sgd_lr", "sgd_momentum", "phases"):
            del payload["config"][name]
        torch.save(payload, path)
    comm.Barrier()
    longer = TrainingConfig(adam_steps=3, lbfgs_steps=2)
    extended = train(lambda: (w**2).sum(), [w], longer, comm=comm, checkpoint=path,
                     resume=True, desc=None)
    assert extended.phases == ["adam"] * 3 + ["lbfgs"] * 2
    with pytest.raises(ValueError, match=r"TrainingConfig.phases is \('lbfgs', 'adam'\)"):
        reordered = TrainingConfig(adam_steps=3, lbfgs_steps=2, phases=("lbfgs", "adam"))
        train(lambda: (w**2).sum(), [w], reordered, comm=comm, checkpoint=path, resume=True)
