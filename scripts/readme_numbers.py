#!/usr/bin/env python3
"""Regenerate the measured numbers of README.md by running the commands that produce them.

Each block of README.md between ``<!-- numbers:NAME -->`` and ``<!-- /numbers:NAME -->`` is
rewritten from a fresh run of its commands (shown in the block itself):

- ``bridge-demo``: ``demos/demo_bridge.py`` (Taylor rates, error of q), 1 and 2 ranks;
- ``inverse``: ``make demo``'s command and the noise sweep on the square with a hole (2 ranks);
- ``compare``: the ansatz-vs-FEM table (2D and 3D) and which method wins.

Usage (from the repository root, with the environment active or via .venv/bin/python):

    python scripts/readme_numbers.py               # every block (about 10 min on 2 cores)
    python scripts/readme_numbers.py --only inverse
    python scripts/readme_numbers.py --check       # only check that the markers exist

Outputs of the runs go to ``results/readme/`` (overwritten).  The machine's load average
during the runs is written next to the timings, since wall times depend on it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
OUT = pathlib.Path("results/readme")
PYTHON = pathlib.Path(sys.executable)
MPIEXEC = PYTHON.with_name("mpiexec")


def _run(command: str, ranks: int = 1) -> tuple[str, float, float]:
    """Run a README command (``dolfinx-nn ...`` or ``python ...``) on ``ranks`` ranks.

    Returns its standard output, wall time in seconds and the mean 1-minute load average.
    """
    argv = shlex.split(command)
    if argv[0] == "dolfinx-nn":
        argv = [str(PYTHON), "-m", "dolfinx_nn.cli", *argv[1:]]
    elif argv[0] == "python":
        argv = [str(PYTHON), *argv[1:]]
    if ranks > 1:
        argv = [str(MPIEXEC), "-n", str(ranks), *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    print(f"$ {' '.join(argv)}", flush=True)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    load = 0.5 * (load + os.getloadavg()[0])
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {command}\n{done.stdout}\n{done.stderr}")
    return done.stdout, seconds, load


def _json(folder: pathlib.Path, name: str = "results.json") -> dict:
    return json.loads((ROOT / folder / name).read_text())


def _pct(value: float, digits: int = 2) -> str:
    return f"{100 * value:.{digits}f}"


# --------------------------------------------------------------------------------------------


def bridge_demo() -> str:
    lines = []
    for ranks in (1, 2):
        stdout, seconds, _ = _run("python demos/demo_bridge.py", ranks)
        rates = re.search(r"Taylor test rates: (.*)", stdout).group(1).split(", ")
        error = float(re.search(r"relative L2 error of q: (\S+)", stdout).group(1))
        launcher = "" if ranks == 1 else f"mpiexec -n {ranks} "
        lines.append((f"{launcher}python demos/demo_bridge.py",
                      f"# Taylor rates {' '.join(f'{float(r):.2f}' for r in rates)}, "
                      f"q error {_pct(error)} %, {seconds:.0f} s"))
    width = max(len(c) for c, _ in lines) + 2
    body = "\n".join(f"{c.ljust(width)}{note}" for c, note in lines)
    return f"```bash\n{body}\n```"


DEMO = "dolfinx-nn inverse --dim 2 --prior both --noise 0.01 --out {out}"
SWEEP = ("dolfinx-nn inverse --mesh square-with-hole --resolution 12 --prior both "
         "--alphas 3e-4,1e-4,3e-5,1e-5 --sweep-noise 0,0.01,0.05,0.1 --out {out}")


def inverse() -> str:
    _, demo_s, demo_load = _run(DEMO.format(out=OUT / "inverse") + " --overwrite")
    demo = _json(OUT / "inverse")
    net, tik = demo["network"], demo["tikhonov"]
    best = tik["best_coefficient_rel_l2_error"]
    _, sweep_s, sweep_load = _run(SWEEP.format(out=OUT / "inverse_sweep") + " --overwrite",
                                  ranks=2)
    rows = _json(OUT / "inverse_sweep", "sweep.json")["rows"]
    levels = " / ".join(f"{100 * r['noise']:g}" for r in rows)
    network = " / ".join(_pct(r["network"]) for r in rows)
    tikhonov = " / ".join(_pct(r["tikhonov"]) for r in rows)
    wins = [r["network"] < r["tikhonov"] for r in rows]
    net_levels = [f"{100 * r['noise']:g}" for r, w in zip(rows, wins, strict=True) if w]
    tik_levels = [f"{100 * r['noise']:g}" for r, w in zip(rows, wins, strict=True) if not w]
    if not tik_levels:
        verdict = "the network prior wins at every level"
    elif not net_levels:
        verdict = "Tikhonov wins at every level"
    else:
        verdict = (f"the network prior wins at {', '.join(net_levels)} % noise, Tikhonov at "
                   f"{', '.join(tik_levels)} %")
    return (
        f"- **Inverse problems** (`make demo`: `{DEMO.format(out='results/inverse')}`, "
        f"unit square, 1 % noise, data from a finer P2 solve; {demo_s:.0f} s on 1 rank, load "
        f"average {demo_load:.1f}): network prior {_pct(net['coefficient_rel_l2_error'])} % "
        f"relative L2 error of `q`, H1-Tikhonov with the discrepancy principle "
        f"{_pct(tik['coefficient_rel_l2_error'])} % (best alpha of the grid {_pct(best)} %). "
        f"Noise sweep on the square with a hole (`mpiexec -n 2 "
        f"{SWEEP.format(out='results/inverse_sweep')}`, {sweep_s:.0f} s, load average "
        f"{sweep_load:.1f}): network {network} % at {levels} % noise, Tikhonov {tikhonov} %: "
        f"{verdict} ([docs/inverse.md](docs/inverse.md))."
    )


COMPARE = {
    "2D": ("dolfinx-nn compare --mesh square-with-hole --resolution 6 --levels 4 --pde poisson "
           "--exact 'sin(pi*x[0])*sin(pi*x[1]) + x[0]*x[1]' --loss ritz --lbfgs-steps 300 "
           "--out {out} --overwrite",
           "unit square with a hole, `sin(pi x) sin(pi y) + x y`", "Ritz energy"),
    "3D": ("dolfinx-nn compare --mesh cube --resolution 4 --levels 3 --pde poisson "
           "--exact 'sin(pi*x[0])*sin(pi*x[1])*sin(pi*x[2]) + x[0]*x[1]*x[2]' --loss strong "
           "--points 4000 --lbfgs-steps 300 --fit-features 1000 --fit-boundary-points 6000 "
           "--out {out} --overwrite",
           "unit cube, `sin(pi x) sin(pi y) sin(pi z) + x y z`", "strong residual at 4000 points"),
}


def _seconds(t: float) -> str:
    return f"{t:.3f} s" if t < 0.1 else f"{t:.2g} s" if t < 10 else f"{t:.0f} s"


def compare() -> str:
    table = ["| problem | method | unknowns | rel. L2 error | H1 error | wall time |",
             "|---|---|---|---|---|---|"]
    commands, findings, loads = [], [], []
    for name, (command, label, loss) in COMPARE.items():
        _, _, load = _run(command.format(out=OUT / f"compare_{name}"))
        loads.append(load)
        res = _json(OUT / f"compare_{name}")
        net = res["network"]
        first = True
        for row in res["fem"]:
            cell = f"{label} " if first else ""
            table.append(f"| {cell}| FEM P{row['degree']} | {row['dofs']} dofs | "
                         f"{row['relative_l2_error']:.1e} | {row['h1_error']:.1e} | "
                         f"{_seconds(row['wall_time_s'])} |")
            first = False
        steps = net["steps"]
        table.append(f"| | network {res['config']['network']['depth']}x"
                     f"{res['config']['network']['width']}, {loss}, {steps} L-BFGS steps | "
                     f"{net['parameters']} parameters | {net['relative_l2_error']:.1e} | "
                     f"{net['h1_error']:.1e} | {_seconds(net['wall_time_s'])} |")
        commands.append(command.format(out="DIR").replace(" --overwrite", ""))
        better = [r for r in res["fem"] if r["relative_l2_error"] <= net["relative_l2_error"]]
        if better:
            cheapest = min(better, key=lambda r: r["dofs"])
            findings.append(
                f"{name}: FEM P{cheapest['degree']} with {cheapest['dofs']} dofs is at least as "
                f"accurate as the network ({cheapest['relative_l2_error']:.1e} vs "
                f"{net['relative_l2_error']:.1e}) in {_seconds(cheapest['wall_time_s'])}, the "
                f"network takes {_seconds(net['wall_time_s'])} "
                f"({net['wall_time_s'] / max(cheapest['wall_time_s'], 1e-9):.0f}x)")
        else:
            findings.append(f"{name}: no FEM run of the table reaches the network's error "
                            f"{net['relative_l2_error']:.1e}")
    intro = (
        "Poisson with a manufactured solution; errors measured by DOLFINx quadrature (the "
        "network's on the finest mesh whose quadrature points number at most what its training "
        "evaluated); one `dolfinx-nn compare` per problem, one rank; wall time = assembly + "
        "solve for FEM, fit of `G` and `D` + training for the network "
        f"(load average {max(loads):.1f} on a 2-core machine):"
    )
    body = "\n".join(table)
    cmds = "\n".join(commands)
    return (f"{intro}\n\n{body}\n\n```bash\n{cmds}\n```\n\nWhere each method wins: "
            + "; ".join(findings) + ".")


BLOCKS = {"bridge-demo": bridge_demo, "inverse": inverse, "compare": compare}


def replace_block(text: str, name: str, content: str) -> str:
    pattern = re.compile(rf"(<!-- numbers:{re.escape(name)} -->\n).*?(<!-- /numbers:"
                         rf"{re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        sys.exit(f"README.md has no block <!-- numbers:{name} -->")
    return pattern.sub(lambda m: f"{m.group(1)}{content}\n{m.group(2)}", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(BLOCKS), default=list(BLOCKS))
    parser.add_argument("--check", action="store_true", help="only check the markers")
    args = parser.parse_args()
    text = README.read_text()
    for name in args.only:
        if args.check:
            replace_block(text, name, "")
            continue
        text = replace_block(text, name, BLOCKS[name]())
        README.write_text(text)  # block by block: a later failure keeps the earlier ones
        print(f"README.md: block {name!r} regenerated", flush=True)


if __name__ == "__main__":
    main()
