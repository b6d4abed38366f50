"""Commands a user can trust: no hang, no silent loss, the same result twice, and resume only
into the same problem.  Every test runs serially and under ``mpiexec -n 2`` (all ranks call
``main``), with a timeout: a rank left waiting would fail it instead of hanging the suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

from mpi4py import MPI

import pytest
import torch

import dolfinx_nn.training.checkpoint
from dolfinx_nn import cli_options
from dolfinx_nn.cli import COMMANDS, _parser, main
from dolfinx_nn.output import LOCK_NAME, claim_output_dir

#: A small inverse problem (about a second per run).
INVERSE = ["inverse", "--dim", "1", "--resolution", "8", "--noise", "0.01", "--prior",
           "network", "--width", "8", "--adam-steps", "5", "--lbfgs-steps", "5"]


@pytest.fixture
def shared_dir(comm):
    """A directory every rank sees under the same name."""
    path = comm.bcast(tempfile.mkdtemp(prefix="dolfinx_nn_cli_") if comm.rank == 0 else None)
    yield pathlib.Path(path)
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(path, ignore_errors=True)


def _numbers(results: dict) -> dict:
    """results.json without the wall-clock times (everything else must repeat to the bit)."""
    if isinstance(results, dict):
        return {k: _numbers(v) for k, v in results.items() if "time" not in k}
    if isinstance(results, list):
        return [_numbers(v) for v in results]
    return results


def _errors(captured: str) -> list[str]:
    return [line for line in captured.splitlines() if "error" in line]


@pytest.mark.timeout(60)
def test_out_that_is_a_file_ends_every_rank_with_one_line(comm, shared_dir, capsys):
    target = shared_dir / "results.txt"
    if comm.rank == 0:
        target.write_text("not a folder")
    comm.Barrier()
    start = time.perf_counter()
    assert main([*INVERSE, "--out", str(target)]) == 1
    assert time.perf_counter() - start < 30
    err = capsys.readouterr().err
    if comm.rank == 0:
        assert _errors(err) == [f"dolfinx-nn inverse: error: --out {target}: it is a file, not "
                                "a folder (--debug shows the traceback)"]
    else:
        assert err == ""  # printed once, not once per rank


@pytest.mark.timeout(60)
def test_read_only_out_ends_every_rank(comm, shared_dir, capsys):
    parent = shared_dir / "read-only"
    if comm.rank == 0:
        parent.mkdir()
        parent.chmod(0o555)
    comm.Barrier()
    writable = comm.bcast(os.access(parent, os.W_OK), root=0)
    try:
        if writable:
            pytest.skip("running as root: permissions do not stop writes (the subprocess test "
                        "uses a read-only file system instead)")
        assert main([*INVERSE, "--out", str(parent / "run")]) == 1
        if comm.rank == 0:
            assert "Permission denied" in _errors(capsys.readouterr().err)[0]
    finally:
        comm.Barrier()
        if comm.rank == 0:
            parent.chmod(0o755)


@pytest.mark.timeout(90)
def test_a_failing_checkpoint_write_keeps_the_result_and_ends_every_rank(
    comm, shared_dir, capsys, monkeypatch
):
    """Rank 0's disk is full when the checkpoint is written; no rank waits forever.

    During training every rank stops with the reason.  At the end of training the finished
    result is written first and the failure reported after it.  No temporary file is left.
    """
    real = dolfinx_nn.training.checkpoint.atomic_write

    def full_disk(path, data):
        if str(path).endswith(".ckpt"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(dolfinx_nn.training.checkpoint, "atomic_write", full_disk)
    during = shared_dir / "during"
    assert main([*INVERSE, "--checkpoint-every", "2", "--out", str(during)]) == 1
    err = capsys.readouterr().err
    if comm.rank == 0:
        (line,) = _errors(err)
        assert "cannot write the checkpoint" in line and "No space left on device" in line

    final = shared_dir / "final"
    assert main([*INVERSE, "--checkpoint-every", "1000", "--out", str(final)]) == 1
    err = capsys.readouterr().err
    if comm.rank == 0:
        (line,) = _errors(err)
        assert "No space left on device" in line and "results.json holds" in line
        network = json.loads((final / "results.json").read_text())["network"]
        assert network["iterations"] == 10 and network["coefficient_rel_l2_error"] < 1.0
        assert "No space left on device" in network["checkpoint_error"]
        assert not list(shared_dir.rglob("*.tmp")) and not list(shared_dir.rglob(LOCK_NAME))


@pytest.mark.timeout(120)
def test_two_runs_into_one_folder_keep_both_and_repeat_to_the_bit(comm, shared_dir, capsys):
    """The second run goes to DIR-2 and gives the same numbers; a folder that a live run
    holds is refused."""
    out = shared_dir / "run"
    assert main([*INVERSE, "--out", str(out)]) == 0
    assert main([*INVERSE, "--out", str(out)]) == 0
    out_text = capsys.readouterr().out
    if comm.rank == 0:
        assert f"{out} holds the results of an earlier run: writing to {out}-2" in out_text
        first = json.loads((out / "results.json").read_text())
        second = json.loads((shared_dir / "run-2" / "results.json").read_text())
        assert first["ranks"] == comm.size
        assert _numbers(first) == _numbers(second)  # seeded: the same to the last bit
        assert not (shared_dir / "run-3").exists()

    holder = claim_output_dir(out, comm, overwrite=True, command="another run")
    try:
        assert main([*INVERSE, "--out", str(out)]) == 1
        err = capsys.readouterr().err
        if comm.rank == 0:
            (line,) = _errors(err)
            assert f"{out} is being written by another run (another run, process" in line
    finally:
        holder.release(comm)
    if comm.rank == 0:
        assert json.loads((out / "results.json").read_text()) == first


@pytest.mark.timeout(120)
def test_resume_continues_the_same_problem_only(comm, shared_dir, capsys):
    out = shared_dir / "resume"
    assert main([*INVERSE, "--out", str(out)]) == 0
    before = (out / "results.json").read_text() if comm.rank == 0 else None
    changed = [*INVERSE, "--resolution", "6", "--coefficient", "1 + x[0]", "--resume",
               "--out", str(out)]
    assert main(changed) == 1
    err = capsys.readouterr().err
    if comm.rank == 0:
        (line,) = _errors(err)
        assert "the checkpoint belongs to another problem" in line
        assert "resolution: 8 in the checkpoint, 6 now" in line
        assert "coefficient: '1 + 0.5*sin(2*pi*x[0])' in the checkpoint, '1 + x[0]' now" in line
        assert (out / "results.json").read_text() == before
    # more steps on the same problem: continued (the run stopped on patience or completed)
    assert main([*INVERSE, "--lbfgs-steps", "8", "--resume", "--out", str(out)]) == 0
    if comm.rank == 0:
        network = json.loads((out / "results.json").read_text())["network"]
        assert network["iterations"] == 13
        assert network["loss_history"][:10] == json.loads(before)["network"]["loss_history"]


@pytest.mark.timeout(120)
def test_compare_checkpoint_of_another_exact_solution_is_refused(comm, shared_dir, capsys):
    small = ["compare", "--mesh", "square", "--resolution", "2", "--levels", "1", "--degrees",
             "1", "--points", "60", "--lbfgs-steps", "3", "--fit-features", "30",
             "--fit-boundary-points", "100", "--width", "4", "--depth", "1"]
    checkpoint = str(shared_dir / "net.ckpt")
    first = [*small, "--exact", "x[0]*x[1]", "--checkpoint", checkpoint]
    assert main([*first, "--out", str(shared_dir / "a")]) == 0
    other = [*small, "--exact", "sin(x[0])", "--checkpoint", checkpoint]
    assert main([*other, "--out", str(shared_dir / "b")]) == 1
    err = capsys.readouterr().err
    if comm.rank == 0:
        (line,) = _errors(err)
        assert "exact: 'x[0]*x[1]' in the checkpoint, 'sin(x[0])' now" in line


@pytest.mark.timeout(60)
def test_user_errors_are_one_line_naming_the_option(comm, shared_dir, capsys):
    with pytest.raises(SystemExit) as info:
        main(["compare", "--exact", "x[0] +", "--out", str(shared_dir / "c")])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main([*INVERSE, "--data", str(shared_dir / "missing.csv")])
    with pytest.raises(SystemExit):
        main(["discover", "--simulate", "heat", "--library", "u,u_q"])
    assert main([*INVERSE, "--dim", "2", "--mesh", "interval", "--out",
                 str(shared_dir / "d")]) == 1
    err = capsys.readouterr().err
    if comm.rank == 0:
        lines = err.splitlines()
        assert len(lines) == 4, err
        assert lines[0].startswith("dolfinx-nn compare: error: argument --exact: invalid")
        assert "argument --data: no such file" in lines[1]
        assert "argument --library:" in lines[2]
        assert "dim 2 (--dim) does not match the mesh 'interval', which is 1-dimensional" in (
            lines[3])
        assert not (shared_dir / "d").exists()  # a failed run leaves no empty folder
    else:
        assert err == ""


@pytest.mark.timeout(60)
def test_version_and_help_show_defaults(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("dolfinx-nn ") or MPI.COMM_WORLD.rank != 0
    with pytest.raises(SystemExit):
        main(["inverse", "--help"])
    out = capsys.readouterr().out
    if MPI.COMM_WORLD.rank == 0:
        assert re.search(r"--adam-steps ADAM_STEPS\s+Adam steps; 0 skips the phase\s+"
                         r"\(default: 200\)", out), out
        assert "Run time: the default run" in out


#: Options a command needs before it parses at all.
_REQUIRED = {"compare": ["--exact", "x[0]"], "discover": ["--simulate", "heat"],
             "diffmap": ["--experiment", "regression"]}


@pytest.mark.timeout(60)
def test_every_command_shares_threads_and_seed_in_one_wording():
    """``--threads`` and ``--seed`` in every command's --help, worded alike; ``--threads`` is
    applied to torch by the code every command runs through (``apply_options``)."""
    import importlib

    before = torch.get_num_threads()
    try:
        for command, (module_name, _) in COMMANDS.items():
            parser = _parser(f"dolfinx-nn {command}", importlib.import_module(module_name))
            text = " ".join(parser.format_help().split())
            assert f"--threads THREADS {cli_options.THREADS_HELP} (default: 1)" in text, command
            assert f"--seed SEED {cli_options.SEED_HELP} (default: 0)" in text, command
            args = parser.parse_args(["--threads", "3", *_REQUIRED.get(command, [])])
            cli_options.apply_options(args)
            assert torch.get_num_threads() == 3, command
            torch.set_num_threads(before)
    finally:
        torch.set_num_threads(before)


def test_training_options_parse_into_the_training_config():
    """The training options of ``inverse`` come from the phase registry, with the command's
    defaults; a phase given steps runs after the default ones unless --phases orders them."""
    from dolfinx_nn.inverse.cli import TRAINING, add_arguments, configs_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def training(*argv: str):
        return configs_from_args(parser.parse_args(list(argv)))[1].network_training

    assert training("--seed", "4") == dataclasses.replace(TRAINING, seed=4)
    assert (TRAINING.adam_steps, TRAINING.adam_lr, TRAINING.lbfgs_steps,
            TRAINING.checkpoint_every, TRAINING.patience) == (200, 1e-2, 300, 50, 50)
    assert training("--adam-lr", "0.05", "--sgd-steps", "7", "--sgd-momentum", "0.9",
                    "--lbfgs-history", "9") == dataclasses.replace(
        TRAINING, seed=0, adam_lr=0.05, sgd_steps=7, sgd_momentum=0.9, lbfgs_history=9,
        phases=("adam", "lbfgs", "sgd"))
    assert training("--phases", "sgd,lbfgs", "--sgd-steps", "5") == dataclasses.replace(
        TRAINING, seed=0, adam_steps=0, sgd_steps=5, phases=("sgd", "lbfgs"))
    with pytest.raises(cli_options.OptionError, match=r"--adam-steps 3 but 'adam' is not in "
                                                      r"--phases lbfgs"):
        training("--phases", "lbfgs", "--adam-steps", "3")
    with pytest.raises(cli_options.OptionError, match=r"^--sgd-lr must be a finite float > 0"):
        training("--sgd-lr", "0")


MPIEXEC = pathlib.Path(sys.executable).with_name("mpiexec")


@pytest.mark.skip_in_parallel  # launches mpiexec -n 2 itself
@pytest.mark.timeout(120)
def test_a_compare_stage_failing_on_one_rank_ends_the_run(tmp_path):
    """A stage of ``compare`` that fails on rank 1 alone while rank 0 waits in one of the
    stage's collective calls (as the fit of ``D`` did on a rank without cells): the stage
    records failures agreed over the ranks, so it used to wait for rank 0 forever; now rank 1
    gives up after AGREE_TIMEOUT_S and the command aborts the run with rank 1's error."""
    if not MPIEXEC.exists():
        pytest.skip("no mpiexec next to the Python interpreter")
    (tmp_path / "stage_fails.py").write_text(
        "from mpi4py import MPI\n"
        "from dolfinx_nn.ansatz.compare import _stage\n"
        "def add_arguments(parser):\n    pass\n"
        "def run(args):\n"
        "    comm, failures = MPI.COMM_WORLD, {}\n"
        "    with _stage('network', failures, comm):\n"
        "        if comm.rank == 1:\n            raise ValueError('only rank 1 failed')\n"
        "        comm.allreduce(1)\n"
        "    return 0\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(pathlib.Path(__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    command = (f"cd {tmp_path} && {MPIEXEC} -n 2 {sys.executable} -c 'import sys; "
               "from dolfinx_nn.cli import _run_module; "
               "sys.exit(_run_module(\"compare\", \"stage_fails\", []))'")
    start = time.perf_counter()
    proc = subprocess.Popen(["sh", "-c", command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
        pytest.fail("the run hung")
    seconds = time.perf_counter() - start
    assert proc.returncode != 0
    errors = set(_errors(stderr))  # (MPICH's launcher may repeat an aborting rank's output)
    assert len(errors) == 1, stderr
    assert "error on rank 1: only rank 1 failed (the other ranks did not stop with it" \
        in next(iter(errors)), stderr
    assert seconds < 60, seconds



def _read_only_command(folder: pathlib.Path, command: str) -> list[str] | None:
    """``command`` run where ``folder`` is read-only for the current user, or None.

    Root ignores permissions, so it gets a read-only file system mounted at ``folder`` in a
    private mount namespace (``unshare``), when the system allows one.
    """
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return ["sh", "-c", command]
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    probe = subprocess.run([unshare, "-m", "sh", "-c", f"mount -t tmpfs -o ro tmpfs {folder}"],
                           capture_output=True)
    if probe.returncode != 0:
        return None
    return [unshare, "-m", "sh", "-c", f"mount -t tmpfs -o ro tmpfs {folder} && {command}"]


@pytest.mark.skip_in_parallel  # launches mpiexec -n 2 itself
@pytest.mark.timeout(300)
def test_two_ranks_end_within_seconds_on_output_faults(tmp_path):
    """Real processes under ``mpiexec -n 2``: a read-only --out, an --out that is a file and
    a full disk at the checkpoint each end both ranks with one line, within seconds."""
    if not MPIEXEC.exists():
        pytest.skip("no mpiexec next to the Python interpreter")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(pathlib.Path(__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    run = f"{MPIEXEC} -n 2 {sys.executable} -m dolfinx_nn.cli " + " ".join(INVERSE)
    full_disk = (
        "import errno, sys, dolfinx_nn.training.checkpoint as t\n"
        "def full(path, data):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device', str(path))\n"
        "t.atomic_write = full\n"
        "from dolfinx_nn.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    (tmp_path / "full_disk.py").write_text(full_disk)
    (tmp_path / "a-file").write_text("")
    (tmp_path / "ro").mkdir()
    cases = {
        "file": (["sh", "-c", f"{run} --out {tmp_path / 'a-file'}"], "it is a file"),
        "full disk": (["sh", "-c", f"{MPIEXEC} -n 2 {sys.executable} {tmp_path / 'full_disk.py'} "
                       + " ".join(INVERSE[0:]) + f" --out {tmp_path / 'full'}"],
                      "No space left on device"),
    }
    # a failure on rank 1 alone while rank 0 waits in a collective call: rank 1 aborts the run
    (tmp_path / "one_rank_fails.py").write_text(
        "from mpi4py import MPI\n"
        "def add_arguments(parser):\n    pass\n"
        "def run(args):\n"
        "    if MPI.COMM_WORLD.rank == 1:\n        raise ValueError('only rank 1 failed')\n"
        "    MPI.COMM_WORLD.Barrier()\n"
    )
    cases["one rank"] = (
        ["sh", "-c", f"cd {tmp_path} && {MPIEXEC} -n 2 {sys.executable} -c 'import sys; "
         "from dolfinx_nn.cli import _run_module; "
         "sys.exit(_run_module(\"one\", \"one_rank_fails\", []))'"],
        "error on rank 1: only rank 1 failed (the other ranks did not stop with it; aborting")
    read_only = _read_only_command(tmp_path / "ro", f"{run} --out {tmp_path / 'ro'}")
    if read_only is not None:
        cases["read-only"] = (read_only, "Read-only file system" if os.geteuid() == 0
                              else "Permission denied")
    # The cases are independent runs (own folders): they run at the same time, so that the
    # one-rank case's wait for the other rank (AGREE_TIMEOUT_S, asleep) overlaps the others.
    # Each one's time is measured from the common start to when its end is seen: an upper
    # bound of its own run time.
    start = time.perf_counter()
    running = {}
    try:
        for name, (command, _) in cases.items():
            with (tmp_path / f"{name}.out").open("w") as out, \
                    (tmp_path / f"{name}.err").open("w") as err:
                running[name] = subprocess.Popen(command, stdout=out, stderr=err, env=env,
                                                  start_new_session=True)
        for name, proc in running.items():
            returncode = proc.wait(timeout=max(1.0, 120 - (time.perf_counter() - start)))
            seconds = time.perf_counter() - start
            stdout = (tmp_path / f"{name}.out").read_text()
            stderr = (tmp_path / f"{name}.err").read_text()
            reason = cases[name][1]
            errors = _errors(stderr)
            assert returncode != 0, (name, stdout, stderr)
            # (MPICH's launcher may repeat the output of a rank that calls MPI_Abort)
            distinct = set(errors) if name == "one rank" else errors
            assert len(distinct) == 1 and reason in errors[0], (name, stderr)
            print(f"{name}: rc {returncode} after {seconds:.1f} s: {errors[0]}")
            assert seconds < 120, (name, seconds)  # a hang would never end
    finally:
        for proc in running.values():  # a hang fails the test instead of the suite
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
    assert "read-only" in cases or os.geteuid() == 0
    assert not list(tmp_path.rglob("*.tmp"))
