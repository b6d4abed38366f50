"""Tables for the documentation: near-duplicates, outliers, dimension bias, peers' cases.

Run (replicated on every rank; rank 0 writes)::

    python -m dolfinx_nn.diffusion_maps.report --out results/diffmap_report

It writes ``DIR/tables.md`` and ``DIR/report.json``:

* **near-duplicates**: a flat 2-torus in R^4 (800 points) plus 400 copies moved by
  ``delta`` in random directions, ``delta`` = 1e-12 .. 1e-2, over ``--seeds`` seeds: the MLE
  dimension with and without merging (median, min, max);
* **bandwidth**: pydiffmap's noisy swiss roll (scikit-learn's generator, 1500 points, noise
  0.5) plain, with one far outlier, with 300 copies of its end point and with 300 copies moved
  by 1e-10: epsilon and the rank correlation of psi_1 with the roll parameter; with pydiffmap
  (optional, ``pip install pydiffmap``) on the same points for comparison;
* **dimension**: MLE and kernel-sum dimension of curves, 2-, 3- and 4-manifolds with and
  without boundary (2000 points each, ``--seeds`` seeds), next to the previous kernel-sum
  reading (twice the largest slope of the k-NN kernel sum with its diagonal);
* **roll-seeds**: swiss rolls of 1000, 1500 and 2000 points, clean and with noise 0.5
  (scikit-learn's generator, seeds ``0..--seeds-1``): the automatic epsilon and the rank
  correlation of psi_1 with the roll parameter, next to the steepest point of the
  64-neighbour kernel sum (the previous automatic epsilon) and, if installed, pydiffmap;
* **invariance**: the largest eigenvalue change of the clean 1000-point roll (seed 1) under
  an offset of 1e8 and scalings by 1e-300 and 1e300.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence

from mpi4py import MPI

import numpy as np
import scipy.stats

from dolfinx_nn.diffusion_maps.diffusion_map import DiffusionMap
from dolfinx_nn.diffusion_maps.dimension import kernel_sum_dimension, mle_dimension
from dolfinx_nn.diffusion_maps.kernel import kernel_sum_curve, knn_squared_distances
from dolfinx_nn.output import markdown_table, prepare_output_dir, print0, write_json, write_text

DELTAS = (1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2)


def _embed(Y: np.ndarray, rng: np.random.Generator, dim: int = 20) -> np.ndarray:
    frame, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return Y @ frame[: Y.shape[1]]


def _sphere(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    g = rng.standard_normal((n, d + 1))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def _torus(n: int, rng: np.random.Generator) -> np.ndarray:
    a, b = rng.uniform(0, 2 * np.pi, (2, n))
    return np.c_[np.cos(a), np.sin(a), np.cos(b), np.sin(b)]


def _curve(n, rng):
    s = rng.uniform(0, 1, n)
    return _embed(np.c_[np.cos(2 * np.pi * s), np.sin(4 * np.pi * s), s], rng)


def _roll(n, rng):
    u, h = rng.uniform(1.5 * np.pi, 4.5 * np.pi, n), rng.uniform(0, 10, n)
    return _embed(np.c_[u * np.cos(u), h, u * np.sin(u)], rng)


def _ball(n, rng):
    g = rng.standard_normal((n, 3))
    return _embed(g * (rng.uniform(0, 1, n) ** (1 / 3) / np.linalg.norm(g, axis=1))[:, None], rng)


#: name -> (sampler(n, rng), true dimension)
MANIFOLDS: dict[str, tuple[Callable, int]] = {
    "curve in R^20": (_curve, 1),
    "flat 2-torus in R^4": (_torus, 2),
    "swiss roll in R^20": (_roll, 2),
    "unit square": (lambda n, rng: rng.uniform(0, 1, (n, 2)), 2),
    "2-sphere": (lambda n, rng: _sphere(n, 2, rng), 2),
    "3-sphere": (lambda n, rng: _sphere(n, 3, rng), 3),
    "3-ball in R^20": (_ball, 3),
    "4-sphere": (lambda n, rng: _sphere(n, 4, rng), 4),
    "4-cube": (lambda n, rng: rng.uniform(0, 1, (n, 4)), 4),
}


def _stats(values: Sequence[float]) -> dict:
    v = np.asarray(values, dtype=float)
    return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())}


def _fmt(s: dict) -> str:
    return f"{s['median']:.2f} [{s['min']:.2f}, {s['max']:.2f}]"


def near_duplicates(seeds: int) -> list[dict]:
    """MLE dimension of the torus with copies, merged and not, per displacement."""
    rows: list[dict] = []
    clean = [mle_dimension(_torus(800, np.random.default_rng(s))) for s in range(seeds)]
    rows.append({"delta": 0.0, "merged": _stats(clean), "unmerged": _stats(clean)})
    for delta in DELTAS:
        merged, unmerged = [], []
        for s in range(seeds):
            rng = np.random.default_rng(s)
            X = _torus(800, rng)
            v = rng.standard_normal((400, 4))
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            Y = np.r_[X, X[rng.choice(800, 400, replace=False)] + delta * v]
            merged.append(mle_dimension(Y))
            unmerged.append(mle_dimension(Y, merge=False))
        rows.append({"delta": delta, "merged": _stats(merged), "unmerged": _stats(unmerged)})
        print0(f"delta {delta:g}: merged {_fmt(rows[-1]['merged'])}, "
               f"unmerged {_fmt(rows[-1]['unmerged'])}")
    return rows


def _pydiffmap_roll(X: np.ndarray, t: np.ndarray) -> dict | None:
    try:
        module = importlib.import_module("pydiffmap.diffusion_map")
    except ImportError:
        return None
    dmap = module.DiffusionMap.from_sklearn(n_evecs=2, epsilon="bgh", alpha=1.0, k=64)
    coords = dmap.fit_transform(X)
    return {"epsilon_in_our_convention": 4.0 * float(dmap.epsilon_fitted),
            "spearman": abs(float(scipy.stats.spearmanr(coords[: t.size, 0], t).statistic))}


def bandwidth(seeds: int) -> list[dict]:
    """epsilon and ordering on pydiffmap's noisy swiss roll with an outlier and copies."""
    from sklearn.datasets import make_swiss_roll

    rows = []
    for seed in range(seeds):
        X, t = make_swiss_roll(1500, noise=0.5, random_state=seed)
        end = X[np.argmax(t)]
        rng = np.random.default_rng(seed)
        variants = {
            "plain": X,
            "one outlier": np.r_[X, [[60.0, 10.0, 0.0]]],
            "300 copies of the end point": np.r_[X, np.repeat(end[None], 300, axis=0)],
            "300 copies moved by 1e-10": np.r_[X, end + 1e-10 * rng.standard_normal((300, 3))],
        }
        for name, Y in variants.items():
            dm = DiffusionMap(2).fit(Y)
            assert dm.bandwidth_ is not None  # set by fit
            row = {"seed": seed, "variant": name, "epsilon": dm.epsilon_,
                   "spearman": abs(float(scipy.stats.spearmanr(dm.eigenvectors_[:1500, 0],
                                                               t).statistic)),
                   "bandwidth": dm.bandwidth_.summary()}
            peer = _pydiffmap_roll(Y, t)
            if peer is not None:
                row["pydiffmap"] = peer
            rows.append(row)
            print0(f"roll seed {seed}, {name}: eps {row['epsilon']:.4g}, "
                   f"spearman {row['spearman']:.4f}")
    return rows


def _previous_kernel_sum(X: np.ndarray) -> float:
    """The former reading: twice the largest slope of the k-NN kernel sum, diagonal included."""
    A = knn_squared_distances(X, min(64, X.shape[0]))
    _, slopes = kernel_sum_curve(A.data, float(A.data.size))
    return float(2.0 * slopes.max())


def dimensions(seeds: int, n: int = 2000) -> list[dict]:
    """MLE, kernel-sum and the former kernel-sum reading on known manifolds."""
    rows: list[dict] = []
    for name, (sampler, truth) in MANIFOLDS.items():
        mle, ks, old = [], [], []
        for s in range(seeds):
            X = sampler(n, np.random.default_rng(s))
            mle.append(mle_dimension(X))
            ks.append(kernel_sum_dimension(X))
            old.append(_previous_kernel_sum(X))
        rows.append({"manifold": name, "dimension": truth, "mle": _stats(mle),
                     "kernel_sum": _stats(ks), "previous_kernel_sum": _stats(old)})
        print0(f"{name}: mle {_fmt(rows[-1]['mle'])}, kernel-sum {_fmt(rows[-1]['kernel_sum'])}, "
               f"previous {_fmt(rows[-1]['previous_kernel_sum'])}")
    return rows


def tables(dups: list[dict], roll: list[dict], dims: list[dict], seeds: int,
           rolls: list[dict] | None = None) -> str:
    """Markdown tables of the parts."""
    text = ""
    if rolls:
        text += (f"### Swiss rolls, automatic epsilon (median [min, max] over {seeds} seeds)"
                 "\n\n" + _roll_table(rolls))
    if dups:
        text += (f"### Near-duplicates: MLE dimension, torus + 400 copies (median [min, max] over "
                 f"{seeds} seeds)\n\n")
        text += markdown_table(
            ["displacement", "merged (default)", "not merged"],
            [["no copies" if r["delta"] == 0 else f"{r['delta']:g}", _fmt(r["merged"]),
              _fmt(r["unmerged"])] for r in dups]) + "\n\n"
    if roll:
        text += "### Automatic bandwidth on the noisy swiss roll (1500 points, noise 0.5)\n\n"
        cells = []
        for r in roll:
            peer = r.get("pydiffmap")
            dup = r["bandwidth"]["duplicates"]
            cells.append([r["seed"], r["variant"], f"{r['epsilon']:.4g}", f"{r['spearman']:.4f}",
                          r["bandwidth"]["bridge_edges"],
                          dup["input_points"] - dup["distinct_points"],
                          f"{peer['epsilon_in_our_convention']:.3g}" if peer else "-",
                          f"{peer['spearman']:.4f}" if peer else "-"])
        text += markdown_table(
            ["seed", "variant", "epsilon", "Spearman(psi_1, roll parameter)", "bridge edges",
             "merged rows", "pydiffmap epsilon (ours)", "pydiffmap Spearman"], cells) + "\n\n"
    if dims:
        text += (f"### Intrinsic dimension, 2000 points (median [min, max] over {seeds} seeds)"
                 "\n\n")
        text += markdown_table(
            ["manifold", "d", "MLE", "kernel-sum", "previous kernel-sum"],
            [[r["manifold"], r["dimension"], _fmt(r["mle"]), _fmt(r["kernel_sum"]),
              _fmt(r["previous_kernel_sum"])] for r in dims]) + "\n"
    return text


def _spearman(dm: DiffusionMap, t: np.ndarray) -> float:
    return abs(float(scipy.stats.spearmanr(dm.eigenvectors_[: t.size, 0], t).statistic))


def roll_seeds(seeds: int, sizes: Sequence[int] = (1000, 1500, 2000)) -> list[dict]:
    """Automatic epsilon and ordering of swiss rolls over sizes, noise and seeds."""
    from sklearn.datasets import make_swiss_roll

    rows = []
    for n in sizes:
        for noise in (0.0, 0.5):
            for seed in range(seeds):
                X, t = make_swiss_roll(n, noise=noise, random_state=seed)
                dm = DiffusionMap(2).fit(X)
                assert dm.bandwidth_ is not None  # set by fit
                summary = dm.bandwidth_.summary()
                steepest = DiffusionMap(2, epsilon=summary["steepest_epsilon"]).fit(X)
                row = {"n": n, "noise": noise, "seed": seed, "epsilon": dm.epsilon_,
                       "spearman": _spearman(dm, t), "bandwidth": summary,
                       "steepest_spearman": _spearman(steepest, t)}
                peer = _pydiffmap_roll(X, t)
                if peer is not None:
                    row["pydiffmap"] = peer
                rows.append(row)
                print0(f"roll {n} noise {noise} seed {seed}: eps {dm.epsilon_:.3g} "
                       f"(steepest {summary['steepest_epsilon']:.3g}), spearman "
                       f"{row['spearman']:.4f} (steepest {row['steepest_spearman']:.4f})")
    return rows


def invariance() -> dict:
    """Eigenvalue changes of the clean 1000-point roll under an offset and extreme scalings."""
    from sklearn.datasets import make_swiss_roll

    X, t = make_swiss_roll(1000, random_state=1)
    base = DiffusionMap(4).fit(X)
    out = {"offset_1e8": float(np.abs(DiffusionMap(4).fit(X + 1e8).eigenvalues_
                                      - base.eigenvalues_).max())}
    for s in (1e-300, 1e300):
        dm = DiffusionMap(4).fit(s * X)
        out[f"scale_{s:g}"] = float(np.abs(dm.eigenvalues_ / base.eigenvalues_ - 1.0).max())
        out[f"scale_{s:g}_same_spearman"] = _spearman(dm, t) == _spearman(base, t)
    print0(f"invariance: {out}")
    return out


def _roll_table(rows: list[dict]) -> str:
    cells = []
    for n in sorted({r["n"] for r in rows}):
        for noise in (0.0, 0.5):
            group = [r for r in rows if r["n"] == n and r["noise"] == noise]
            if not group:
                continue
            eps = [r["epsilon"] for r in group]
            old = [r["bandwidth"]["steepest_epsilon"] for r in group]
            rho = [r["spearman"] for r in group]
            rho_old = [r["steepest_spearman"] for r in group]
            peer = [r["pydiffmap"]["spearman"] for r in group if "pydiffmap" in r]
            cells.append([n, noise, _fmt(_stats(old)), _fmt(_stats(eps)),
                          f"{min(rho_old):.3f} ({sum(v < 0.99 for v in rho_old)})",
                          f"{min(rho):.3f} ({sum(v < 0.99 for v in rho)})",
                          f"{min(peer):.3f}" if peer else "-"])
    return markdown_table(
        ["points", "noise", "steepest eps (previous)", "epsilon (now)",
         "min Spearman previous (< 0.99)", "min Spearman now (< 0.99)", "min pydiffmap"],
        cells) + "\n\n"


PARTS = ("near-duplicates", "bandwidth", "dimension", "roll-seeds", "invariance")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    args = parser.parse_args(argv)
    comm = MPI.COMM_WORLD
    out = prepare_output_dir(args.out, comm)
    dups = near_duplicates(args.seeds) if "near-duplicates" in args.parts else []
    roll = bandwidth(min(args.seeds, 3)) if "bandwidth" in args.parts else []
    dims = dimensions(args.seeds) if "dimension" in args.parts else []
    rolls = roll_seeds(args.seeds) if "roll-seeds" in args.parts else []
    inv = invariance() if "invariance" in args.parts else {}
    write_json(out / "report.json", {"seeds": args.seeds, "near_duplicates": dups,
                                     "bandwidth": roll, "dimension": dims,
                                     "roll_seeds": rolls, "invariance": inv}, comm)
    text = tables(dups, roll, dims, args.seeds, rolls)
    write_text(out / "tables.md", text, comm)
    print0(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
