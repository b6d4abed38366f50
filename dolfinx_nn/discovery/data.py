"""Space-time data sets: scattered points, snapshot times and (possibly missing) values.

A data set holds ``x`` (N x d observation points), ``t`` (M snapshot times) and ``u`` (M x N
values, ``NaN`` where a value is missing).  It is replicated on every MPI rank: files are small
compared with the meshes that produced them, and every rank needs them to train its share.

Files:

- ``.npz`` with arrays ``x`` (N x d), ``t`` (M,) and ``u`` (M x N);
- ``.csv`` with a header naming the columns ``station, x[, y[, z]], t, value`` (one row per
  observation; stations without a value at some time are missing values);
- ``.mat`` (MATLAB, read with :func:`scipy.io.loadmat`) with a grid ``x`` (N values), times
  ``t`` or ``tt`` (M values) and one field ``u``, ``usol`` or ``uu`` of shape (N, M) or (M, N),
  as in the data sets of PDE-FIND (Rudy et al., *Sci. Adv.* 2017).

Complex values (e.g. the nonlinear Schroedinger equation) are refused with an error: this
package discovers equations of one real field; split such data into real and imaginary parts
only with a model for the coupled system.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
from collections.abc import Callable

import numpy as np

__all__ = ["SpaceTimeData", "load_data", "save_npz", "with_noise"]

_SPACE_COLUMNS = ("x", "y", "z")


@dataclasses.dataclass(frozen=True)
class SpaceTimeData:
    """Scattered observations ``u[k, i] = u(x[i], t[k])``.

    Attributes:
        x: observation points, shape (N, d), d in 1..3.
        t: snapshot times, shape (M,), strictly increasing.
        u: values, shape (M, N); ``NaN`` marks a missing value.
    """

    x: np.ndarray
    t: np.ndarray
    u: np.ndarray

    def __post_init__(self) -> None:
        for name in ("x", "t", "u"):
            if np.iscomplexobj(getattr(self, name)):
                raise ValueError(
                    f"{name} holds complex values; discovery works on one real field (complex "
                    "data such as the nonlinear Schroedinger equation is a system of two real "
                    "fields, which is not supported)"
                )
        x = np.asarray(self.x, dtype=np.float64)
        x = x.reshape(-1, 1) if x.ndim == 1 else x
        t = np.asarray(self.t, dtype=np.float64).reshape(-1)
        u = np.asarray(self.u, dtype=np.float64)
        if x.ndim != 2 or not 1 <= x.shape[1] <= 3:
            raise ValueError(f"x must have shape (N, d) with d in 1..3, got {x.shape}")
        if u.shape != (t.size, x.shape[0]):
            raise ValueError(
                f"u must have shape (len(t), len(x)) = ({t.size}, {x.shape[0]}), got {u.shape}"
            )
        if t.size < 2 or np.any(np.diff(t) <= 0):
            raise ValueError("t must hold at least two strictly increasing snapshot times")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(t))):
            raise ValueError("x and t must be finite (only u may hold NaN for missing values)")
        if np.any(np.isinf(u)):
            raise ValueError("u holds infinite values; mark missing values with NaN")
        if np.all(np.isnan(u)):
            raise ValueError("u holds no observed value")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "t", t)
        object.__setattr__(self, "u", u)

    @property
    def dim(self) -> int:
        """Spatial dimension d."""
        return self.x.shape[1]

    @property
    def num_observed(self) -> int:
        """Number of observed (non-missing) values."""
        return int(np.count_nonzero(~np.isnan(self.u)))

    def samples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Observed values as flat arrays ``(x, t, u)`` of shapes (K, d), (K,), (K,)."""
        k, i = np.nonzero(~np.isnan(self.u))
        return self.x[i], self.t[k], self.u[k, i]

    def split(self, train_fraction: float) -> tuple[SpaceTimeData, SpaceTimeData]:
        """Split in time: the first snapshots for training, the later ones held out.

        Args:
            train_fraction: fraction of the time span used for training, in (0, 1).

        Returns:
            ``(train, held_out)``; ``held_out`` starts after the last training snapshot.
        """
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction}")
        t_split = self.t[0] + train_fraction * (self.t[-1] - self.t[0])
        n = int(np.searchsorted(self.t, t_split, side="right"))
        if n < 2 or n >= self.t.size:
            raise ValueError(
                f"train_fraction={train_fraction} leaves {n} of {self.t.size} snapshots for "
                "training; need at least 2 for training and 1 held out"
            )
        return (
            SpaceTimeData(self.x, self.t[:n], self.u[:n]),
            SpaceTimeData(self.x, self.t[n:], self.u[n:]),
        )

    def window(self, first: int, last: int) -> SpaceTimeData:
        """The snapshots ``first .. last - 1`` (at least two)."""
        if not 0 <= first < last - 1 < self.t.size:
            raise ValueError(
                f"snapshot window [{first}, {last}) of {self.t.size} snapshots holds fewer than 2"
            )
        if first == 0 and last == self.t.size:
            return self
        return SpaceTimeData(self.x, self.t[first:last], self.u[first:last])

    def transformed(
        self, x_scale: float = 1.0, t_scale: float = 1.0, u_scale: float = 1.0
    ) -> SpaceTimeData:
        """The same data in other units: ``x -> x_scale x``, ``t -> t_scale t``, ``u -> u_scale u``.
        """
        return SpaceTimeData(self.x * x_scale, self.t * t_scale, self.u * u_scale)


def with_noise(data: SpaceTimeData, level: float, rng: np.random.Generator) -> SpaceTimeData:
    """Add Gaussian noise of standard deviation ``level * std(u)`` to every observed value.

    Args:
        data: clean data.
        level: relative noise level, e.g. 0.01 for 1 %.
        rng: random generator (use the same seed on every rank).
    """
    if not (np.isfinite(level) and level >= 0.0):
        raise ValueError(f"noise level must be a finite number >= 0, got {level}")
    sigma = level * float(np.nanstd(data.u))
    noisy = data.u + sigma * rng.standard_normal(data.u.shape)
    return SpaceTimeData(data.x, data.t, noisy)


def _load_npz(path: pathlib.Path) -> SpaceTimeData:
    with np.load(path) as archive:
        missing = [k for k in ("x", "t", "u") if k not in archive]
        if missing:
            raise ValueError(
                f"{path} lacks the arrays {missing}; an .npz data file holds x (N x d), "
                "t (M,) and u (M x N)"
            )
        return SpaceTimeData(archive["x"], archive["t"], archive["u"])


def _load_csv(path: pathlib.Path) -> SpaceTimeData:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        space = [c for c in _SPACE_COLUMNS if c in columns]
        required = {"station", "t", "value"}
        if not required <= set(columns) or not space:
            raise ValueError(
                f"{path} has columns {columns}; a CSV data file needs the columns "
                "station, x[, y[, z]], t, value"
            )
        rows = [{k.strip(): v for k, v in row.items()} for row in reader]
    if not rows:
        raise ValueError(f"{path} holds no observations")
    stations: dict[str, int] = {}
    coords: list[list[float]] = []
    for row in rows:
        name = row["station"]
        if name not in stations:
            stations[name] = len(stations)
            coords.append([float(row[c]) for c in space])
    times = np.unique([float(row["t"]) for row in rows])
    u = np.full((times.size, len(stations)), np.nan)
    for row in rows:
        value = row["value"].strip()
        if value == "" or value.lower() in ("nan", "na"):
            continue
        k = int(np.searchsorted(times, float(row["t"])))
        u[k, stations[row["station"]]] = float(value)
    return SpaceTimeData(np.array(coords), times, u)


_MAT_FIELDS = ("u", "usol", "uu")

#: Largest imaginary part of a .mat field, relative to its largest real part, that is taken
#: for round-off (and dropped) rather than for a complex field.
ROUND_OFF_IMAGINARY = 1e-5
_MAT_TIMES = ("t", "tt")


def _load_mat(path: pathlib.Path) -> SpaceTimeData:
    import scipy.io

    try:
        content = scipy.io.loadmat(str(path))
    except (ValueError, NotImplementedError) as exc:  # e.g. MATLAB v7.3 (HDF5) files
        raise ValueError(f"{path} is not a MATLAB file scipy.io.loadmat reads: {exc}") from exc
    arrays = {k: np.asarray(v) for k, v in content.items() if not k.startswith("__")}
    fields = [k for k in _MAT_FIELDS if k in arrays]
    times = [k for k in _MAT_TIMES if k in arrays]
    if "x" not in arrays or not times or len(fields) != 1:
        raise ValueError(
            f"{path} holds {sorted(arrays)}; a .mat data file needs a grid x, times t (or tt) "
            f"and exactly one field named one of {', '.join(_MAT_FIELDS)}"
        )
    x = arrays["x"].reshape(-1)
    t = arrays[times[0]].reshape(-1)
    u = arrays[fields[0]]
    if np.iscomplexobj(u):
        # spectral solvers leave round-off in the imaginary part of a real field (PDE-FIND's
        # burgers.mat: 9e-9, kdv.mat: 1e-6); anything larger is a complex field and refused
        imaginary, real = float(np.abs(u.imag).max()), float(np.abs(u.real).max())
        if imaginary > ROUND_OFF_IMAGINARY * real:
            raise ValueError(
                f"{path}: field {fields[0]} is complex (largest imaginary part {imaginary:.3g}, "
                f"real part {real:.3g}); discovery works on one real field, and a complex "
                "field (e.g. the nonlinear Schroedinger equation) is a system of two real "
                "fields, which is not supported"
            )
        u = u.real
    if u.shape == (x.size, t.size):
        u = u.T
    elif u.shape != (t.size, x.size):
        raise ValueError(
            f"{path}: field {fields[0]} has shape {u.shape}, expected ({x.size}, {t.size}) or "
            f"({t.size}, {x.size}) for x of {x.size} and t of {t.size} values"
        )
    return SpaceTimeData(x[:, None], t, u)


_LOADERS: dict[str, Callable[[pathlib.Path], SpaceTimeData]] = {
    ".npz": _load_npz,
    ".csv": _load_csv,
    ".mat": _load_mat,
}


def load_data(path: str | pathlib.Path) -> SpaceTimeData:
    """Read a data set from ``.npz``, ``.csv`` or ``.mat`` (see the module docstring)."""
    path = pathlib.Path(path)
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None:
        raise ValueError(
            f"unknown data format {path.suffix!r} of {path}; choose one of: {', '.join(_LOADERS)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    return loader(path)


def save_npz(path: str | pathlib.Path, data: SpaceTimeData) -> None:
    """Write ``data`` as ``.npz`` (call it on one rank)."""
    np.savez(path, x=data.x, t=data.t, u=data.u)
