"""Figures without pyplot: the user's matplotlib backend is never switched.

Every plot of the package is a :class:`matplotlib.figure.Figure` built through the
object-oriented API (:func:`subplots`), never through :mod:`matplotlib.pyplot`.  Such a figure
is not registered with pyplot, needs no display and no ``matplotlib.use("Agg")``: saving it to a
PNG file draws it with the Agg renderer whatever backend the user (or a notebook) selected, and
it is freed with its last reference (no ``plt.close``).  Importing a plots module therefore
changes nothing in the user's session.

Two ways to write a figure:

- :func:`save_figure` writes one figure, atomically (a temporary file, then a rename), from the
  calling process; for code that already runs on one rank.
- :func:`write_figure` is collective: rank 0 builds the figure (the ``draw`` callable, which
  may use data gathered on rank 0) and writes it; a failure on rank 0 (a bug in the drawing,
  a read-only folder) is raised as the same :class:`~dolfinx_nn.output.OutputError` on every
  rank instead of leaving the others waiting.
"""

from __future__ import annotations

import io
import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from mpi4py import MPI

from dolfinx_nn.output import atomic_write, on_root

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["save_figure", "subplots", "write_figure"]


def subplots(
    nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None,
    squeeze: bool = True, layout: Literal["constrained", "compressed", "tight"] | None = None,
    **subplot_kw: Any,
) -> tuple[Figure, Any]:
    """A new figure and its axes, as :func:`matplotlib.pyplot.subplots` but without pyplot.

    Args:
        nrows, ncols: grid of axes.
        figsize: (width, height) in inches (None: matplotlib's default).
        squeeze: as in pyplot: one axes for a 1x1 grid, a 1D array for one row or column.
        layout: ``"constrained"``, ``"compressed"``, ``"tight"`` or None.
        subplot_kw: passed to each :meth:`~matplotlib.figure.Figure.add_subplot`.

    Returns:
        ``(figure, axes)``: an :class:`~matplotlib.axes.Axes` or a numpy array of them.
    """
    from matplotlib.figure import Figure  # here: importing this module stays cheap

    fig = Figure(figsize=figsize, layout=layout)
    axes = fig.subplots(nrows, ncols, squeeze=squeeze, subplot_kw=subplot_kw or None)
    return fig, axes


def save_figure(fig: Figure, path: str | pathlib.Path, **savefig_kw: Any) -> pathlib.Path:
    """Write ``fig`` to ``path`` (one process), atomically; the format follows the suffix.

    Args:
        fig: the figure.
        path: the file (``.png``, ``.pdf``, ``.svg``, ...).
        savefig_kw: passed to :meth:`~matplotlib.figure.Figure.savefig` (``dpi``,
            ``bbox_inches``, ...).

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        OSError: the file cannot be written (an earlier file of that name is kept).
        ValueError: matplotlib does not know the suffix as a format.
    """
    path = pathlib.Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".").lower() or "png", **savefig_kw)
    atomic_write(path, buffer.getvalue())
    return path


def write_figure(
    path: str | pathlib.Path, draw: Callable[[], Figure], comm: MPI.Comm = MPI.COMM_WORLD,
    **savefig_kw: Any,
) -> pathlib.Path:
    """Build a figure with ``draw()`` on rank 0 and write it to ``path`` (collective).

    Args:
        path: the file.
        draw: returns the figure; called on rank 0 only.
        comm: the ranks that take part (all of them must call).
        savefig_kw: as in :func:`save_figure`.

    Returns:
        ``path`` as a :class:`pathlib.Path`, on every rank.

    Raises:
        OutputError: on every rank, ``"cannot write PATH: reason"``, if drawing or writing
            fails on rank 0.
    """
    path = pathlib.Path(path)
    on_root(lambda: save_figure(draw(), path, **savefig_kw), f"cannot write {path}", comm)
    return path
