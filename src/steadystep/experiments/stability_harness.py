"""Framework-free harness of the stability benchmark: grids, divergence, summaries, output.

Everything here is plain Python and NumPy (matplotlib only when plotting), so the
bookkeeping can be tested without training anything:

* :func:`run_tasks` runs a list of grid cells (one seed each) in worker processes;
* :func:`is_diverged`, :func:`count_spikes` classify one training run;
* :func:`summarize` turns runs into per-cell medians with spread, counting every
  diverged run (it is never dropped: its loss is capped at the loss at initialisation,
  as in Wortsman et al. 2023);
* :func:`lr_sensitivity` and :func:`largest_stable_lr` score one recipe over its LR grid;
* :func:`write_json`, :func:`write_csv`, :func:`save_figure` write atomically.

References:
    Wortsman et al. (2023). Small-scale proxies for large-scale Transformer training
    instabilities. https://arxiv.org/abs/2309.14322 (LR sensitivity, section 2.3).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

Row = dict[str, Any]

__all__ = [
    "atomic_write",
    "count_spikes",
    "is_diverged",
    "is_failed",
    "largest_stable_lr",
    "lr_sensitivity",
    "plain",
    "run_tasks",
    "save_figure",
    "summarize",
    "write_csv",
    "write_json",
]

# A spike is a training loss this much above the running EMA of the previous losses.
SPIKE_RATIO = 1.2
SPIKE_EMA = 0.9
SPIKE_WARMUP = 10


def is_diverged(final_loss: float, init_loss: float) -> bool:
    """A run diverged when its final loss is not finite or no better than at initialisation.

    ``init_loss`` is the same run's validation loss before the first update, so a model that
    blew up and came back to predicting (about) uniformly counts as diverged too.

    >>> is_diverged(1.4, 4.6), is_diverged(float("nan"), 4.6), is_diverged(4.7, 4.6)
    (False, True, True)
    """
    return not math.isfinite(final_loss) or final_loss >= init_loss


def count_spikes(
    losses: Sequence[float] | np.ndarray, *, ratio: float = SPIKE_RATIO, beta: float = SPIKE_EMA
) -> int:
    """Number of steps whose training loss exceeds ``ratio`` times the EMA of the earlier ones.

    The EMA (``m <- beta * m + (1 - beta) * loss``) starts at the first loss and is only
    compared after ``SPIKE_WARMUP`` steps; a spike is not fed into the EMA, so one explosion
    that lasts ``k`` steps counts ``k`` spikes. A non-finite loss counts as one spike and ends
    the count (training stops there).

    >>> count_spikes([3.0] * 20 + [4.0] + [3.0] * 5)
    1
    >>> count_spikes([3.0] * 20 + [float("nan")])
    1
    """
    if not 0 < beta < 1:
        raise ValueError(f"Argument `beta` must be in (0, 1). Received: beta={beta!r}")
    if not ratio > 1:
        raise ValueError(f"Argument `ratio` must be > 1. Received: ratio={ratio!r}")
    spikes = 0
    ema: float | None = None
    for i, loss in enumerate(losses):
        loss = float(loss)
        if not math.isfinite(loss):
            return spikes + 1
        if ema is None:
            ema = loss
            continue
        if i >= SPIKE_WARMUP and loss > ratio * ema:
            spikes += 1
            continue
        ema = beta * ema + (1 - beta) * loss
    return spikes


def is_failed(row: Mapping[str, Any]) -> bool:
    """Diverged, or ended no better than ``row["unigram_loss"]`` when the row has one.

    The unigram loss is that of a model that learned only the character frequencies; a run
    that ends there trained but learned nothing else (a collapse rather than a blow-up).

    >>> is_failed({"final_loss": 3.3, "init_loss": 4.6, "unigram_loss": 3.2})
    True
    """
    final, init = float(row["final_loss"]), float(row["init_loss"])
    return is_diverged(final, init) or final >= float(row.get("unigram_loss", math.inf))


def _capped(row: Mapping[str, Any]) -> float:
    """``min(final, init)``, with a non-finite final loss replaced by ``init`` (Wortsman et al.)."""
    final, init = float(row["final_loss"]), float(row["init_loss"])
    return min(final, init) if math.isfinite(final) else init


def summarize(runs: Iterable[Row], keys: Sequence[str]) -> list[Row]:
    """One row per cell (the distinct values of ``keys``, sorted): medians over seeds with spread.

    ``loss_median``/``loss_q25``/``loss_q75`` are over the *capped* final losses
    ``min(final, init)`` (a diverged seed contributes its initial loss, so it pulls the
    median up instead of vanishing); ``n_diverged`` counts the diverged seeds, ``n_failed``
    those that diverged or ended no better than the unigram loss (:func:`is_failed`), and
    ``spikes_median``, ``clip_frac_median`` and ``update_ratio_max_median`` summarise the
    other per-run numbers (when the runs have them).

    >>> runs = [
    ...     {"lr": 0.1, "seed": s, "final_loss": f, "init_loss": 4.0, "spikes": 0}
    ...     for s, f in enumerate([1.0, 2.0, float("nan")])
    ... ]
    >>> row = summarize(runs, ["lr"])[0]
    >>> row["loss_median"], row["n_diverged"], row["n_seeds"]
    (2.0, 1, 3)
    """
    cells: dict[tuple[Any, ...], list[Row]] = {}
    for run in runs:
        cells.setdefault(tuple(run[k] for k in keys), []).append(run)
    out = []
    for key, group in sorted(cells.items(), key=lambda item: item[0]):
        capped = np.array([_capped(r) for r in group])
        row: Row = dict(zip(keys, key, strict=True))
        row.update(
            n_seeds=len(group),
            n_diverged=sum(is_diverged(r["final_loss"], r["init_loss"]) for r in group),
            n_failed=sum(is_failed(r) for r in group),
            loss_median=float(np.median(capped)),
            loss_q25=float(np.percentile(capped, 25)),
            loss_q75=float(np.percentile(capped, 75)),
            init_loss=float(np.median([r["init_loss"] for r in group])),
        )
        for name in ("spikes", "clip_frac", "update_ratio_max"):
            values = [r[name] for r in group if r.get(name) is not None]
            if values:
                row[f"{name}_median"] = float(np.median(values))
        out.append(row)
    return out


def lr_sensitivity(losses: Sequence[float], init_loss: float) -> float:
    """Wortsman et al. (2023) LR sensitivity ``E_lr[min(loss(lr), loss_init) - loss*]``.

    ``losses`` are one recipe's (median) final losses over a log-spaced LR grid, so the
    expectation is the plain mean; ``loss* = min(losses)`` is the recipe's own best and a
    non-finite loss counts as ``loss_init``. 0 means every LR in the grid is as good as the
    best one; larger is more sensitive.

    >>> lr_sensitivity([3.0, 2.0, 2.5, float("nan")], init_loss=4.0)
    0.875
    """
    capped = np.array([min(x, init_loss) if math.isfinite(x) else init_loss for x in losses])
    if capped.size == 0:
        raise ValueError("Argument `losses` must not be empty. Received: losses=[]")
    return float(np.mean(capped - capped.min()))


def largest_stable_lr(cells: Iterable[Row]) -> float | None:
    """Largest ``lr`` among ``cells`` (summary rows of one recipe) where no seed failed
    (``n_failed``: diverged or ended at the unigram loss; ``n_diverged`` if absent).

    >>> largest_stable_lr([{"lr": 0.1, "n_failed": 0}, {"lr": 1.0, "n_failed": 2}])
    0.1
    """
    stable = [float(c["lr"]) for c in cells if c.get("n_failed", c.get("n_diverged")) == 0]
    return max(stable) if stable else None


# ------------------------------------------------------------------- running


def run_tasks(
    tasks: Sequence[Row],
    worker: Callable[[Row], Row],
    *,
    workers: int = 1,
    then: Callable[[list[Row]], Sequence[Row]] | None = None,
    then_after: Callable[[Row], bool] | None = None,
    progress: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Run ``worker(task)`` for every task, in ``workers`` spawned processes (inline if 1).

    ``then``/``then_after`` add dependent work: once every task with ``then_after(task)``
    has finished, ``then(results_so_far)`` returns more tasks, which run next, before the
    rest of the queue (experiment 3 starts as soon as its setting is known). Tasks otherwise
    run in the given order.
    A worker must not raise for a diverged run: it returns a row that says so.
    """
    if workers < 1:
        raise ValueError(f"Argument `workers` must be >= 1. Received: workers={workers!r}")
    waiting = sum(1 for t in tasks if then_after and then_after(t)) if then else 0
    results: list[Row] = []

    def finished(task: Row, row: Row) -> list[Row]:
        nonlocal waiting
        results.append(row)
        if progress:
            progress(row)
        if then and then_after and then_after(task):
            waiting -= 1
            if waiting == 0:
                return list(then(results))
        return []

    queue = list(tasks)
    if then and waiting == 0:
        queue += then([])
    if workers == 1:
        while queue:
            task = queue.pop(0)
            queue[:0] = finished(task, worker(task))
        return results

    # at most `workers` tasks in flight, so that dependent tasks can jump the queue
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        pending: dict[Future[Row], Row] = {}
        while queue or pending:
            while queue and len(pending) < workers:
                task = queue.pop(0)
                pending[pool.submit(worker, task)] = task
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                task = pending.pop(future)
                queue[:0] = finished(task, future.result())
    return results


# ------------------------------------------------------------------- output


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def plain(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become null (strict JSON has no NaN), NumPy scalars floats."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as strict JSON (NaN/inf as ``null``), atomically."""
    text = json.dumps(plain(data), indent=1, allow_nan=False)
    atomic_write(path, (text + "\n").encode())


def write_csv(path: Path, rows: Sequence[Row]) -> None:
    """Write ``rows`` as CSV (columns: the union of the keys, in first-seen order), atomically.

    List-valued fields (training curves) are left out; they live in the JSON file.
    """
    columns: dict[str, None] = {}
    for row in rows:
        columns.update({k: None for k, v in row.items() if not isinstance(v, (list, tuple))})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in columns})
    atomic_write(path, buf.getvalue().encode())


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def save_figure(fig: Any, path: Path) -> None:
    """Save a matplotlib figure as PNG, atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write(path, buf.getvalue())
