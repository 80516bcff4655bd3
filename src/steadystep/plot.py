"""Pictures of schedules: matplotlib figures, terminal text plots, and atomic file writes.

matplotlib is imported only by the functions that draw with it (install it with
``pip install 'steadystep[plot]'``); :func:`text_plot` and :func:`atomic_path` need nothing.
Figures are built with :class:`matplotlib.figure.Figure`, not ``pyplot``, so plotting never
changes the user's backend or opens a window.

>>> import steadystep as ss
>>> print(text_plot({"lr": ss.linear(1.0, 0.0, steps=10)}, steps=11, width=11, height=3))
1 |***
  |   *****
0 |        ***
  +-----------
   0        10
  * lr
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .schedules import Schedule

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["atomic_path", "plot_schedules", "save_figure", "step_grid", "text_plot"]

_MARKS = "*o+x#@%&"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else delete it.

    Readers therefore see either the old file (or none) or the complete new one, never a partial
    write, even on Ctrl-C (``os.replace`` is atomic on POSIX and Windows). The directory must
    exist and be writable; otherwise an ``OSError`` is raised before anything is written.

    >>> import pathlib, tempfile
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('done', ['out.txt'])
    """
    target = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the result is an ordinary file
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _curves(
    schedules: Mapping[str, Schedule], steps: int
) -> tuple[np.ndarray[Any, Any], dict[str, np.ndarray[Any, Any]]]:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"Argument `steps` must be an int > 0. Received: steps={steps!r}")
    if not schedules:
        raise ValueError("Argument `schedules` must hold at least one schedule. Received: {}")
    t = step_grid(steps)
    return t, {label: np.asarray(s(t), dtype=np.float64) for label, s in schedules.items()}


def step_grid(steps: int, limit: int = 100_001) -> np.ndarray[Any, Any]:
    """Steps ``0 .. steps-1``, or ``limit`` of them evenly spread (ends kept) when there are more.

    >>> step_grid(5).tolist(), step_grid(10**12, limit=3).tolist()
    ([0, 1, 2, 3, 4], [0, 500000000000, 999999999999])
    """
    if steps <= limit:
        return np.arange(steps)
    return np.unique(np.round(np.linspace(0, steps - 1, limit)).astype(np.int64))


def _label(value: float) -> str:
    return f"{value:.3g}"


def text_plot(
    schedules: Mapping[str, Schedule], steps: int, *, width: int = 72, height: int = 16
) -> str:
    """A plain-text chart of ``schedules`` (label -> schedule) over steps ``0 .. steps-1``.

    Each of the ``width`` columns shows the value at an evenly spaced step (nearest row of
    ``height``); the y axis runs from the smallest to the largest value over all curves.
    Curves are marked ``* o + x ...``; where one curve's mark would hide another's, the later
    curve's row is kept.
    """
    t, values = _curves(schedules, steps)
    if width < 8 or height < 2:
        raise ValueError(f"Text plots need width >= 8 and height >= 2. Received: {width}x{height}")
    columns = np.searchsorted(t, np.linspace(0, steps - 1, num=min(width, len(t))).round())
    columns = np.unique(columns)
    low = min(float(np.nanmin(v)) for v in values.values())
    high = max(float(np.nanmax(v)) for v in values.values())
    span = high - low if high > low else 1.0
    grid = [[" "] * len(columns) for _ in range(height)]
    for mark, v in zip(_MARKS * len(values), values.values(), strict=False):
        rows = np.round((v[columns] - low) / span * (height - 1))
        for col, row in enumerate(rows):
            if math.isfinite(row):
                grid[height - 1 - int(row)][col] = mark
    top, bottom = _label(high), _label(low)
    pad = max(len(top), len(bottom))
    lines = []
    for i, row in enumerate(grid):
        label = top if i == 0 else bottom if i == height - 1 else ""
        lines.append(f"{label:>{pad}} |{''.join(row).rstrip()}")
    lines.append(" " * pad + " +" + "-" * len(columns))
    first, last = "0", str(steps - 1)
    lines.append(
        " " * (pad + 2) + first + " " * max(1, len(columns) - len(first) - len(last)) + last
    )
    for mark, label in zip(_MARKS * len(values), values, strict=False):
        lines.append(" " * (pad + 1) + f"{mark} {label}")
    return "\n".join(lines)


def plot_schedules(
    schedules: Mapping[str, Schedule],
    steps: int,
    *,
    log: bool = False,
    title: str | None = None,
    size: tuple[float, float] = (8.0, 4.5),
    ax: Any = None,
) -> Figure:
    """Draw each schedule (label -> schedule) over steps ``0 .. steps-1`` with matplotlib.

    Args:
        schedules: the curves, in legend order.
        steps: number of steps drawn.
        log: logarithmic value axis.
        title: figure title; none by default.
        size: figure size in inches (saved at 100 dpi: ``(8, 4.5)`` is 800x450 pixels).
        ax: an existing matplotlib ``Axes`` to draw into; a new figure otherwise.

    Returns:
        The matplotlib ``Figure``; :func:`save_figure` writes it.

    >>> import steadystep as ss
    >>> fig = plot_schedules({"bert": ss.presets.bert(1e-4, 1000, 100)}, steps=1000)
    >>> [line.get_label() for line in fig.axes[0].get_lines()]
    ['bert']
    """
    t, values = _curves(schedules, steps)
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=size, dpi=100, layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    for label, v in values.items():
        ax.plot(t, v, label=label, linewidth=1.6)
    ax.set_xlabel("step (updates before this one)")
    ax.set_ylabel("value")
    ax.set_xlim(0, max(steps - 1, 1))
    if log:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Save ``fig`` to ``path`` (format from its suffix: .png, .svg, .pdf) atomically.

    Raises ``ValueError`` for a suffix matplotlib cannot write and ``OSError`` when the
    directory is missing or not writable; in both cases nothing is left behind.
    """
    target = Path(path)
    fmt = target.suffix.lstrip(".").lower()
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(
            f"Argument `path` must end in one of {', '.join('.' + k for k in sorted(supported))}. "
            f"Received: path={str(path)!r}"
        )
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format=fmt, dpi=100)
    return target
