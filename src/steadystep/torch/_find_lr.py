"""The learning-rate range test (Leslie Smith), restoring the model and optimizer exactly.

Train for up to ``num_steps`` updates while the learning rate grows exponentially from
``start_lr`` to ``end_lr``; record the loss; stop when it diverges; put everything back.

References:
    L. N. Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017,
    https://arxiv.org/abs/1506.01186 (section 3.3, "LR range test");
    PyTorch Lightning's ``Tuner.lr_find`` (``lightning/pytorch/tuner/lr_finder.py``) and
    ``torch-lr-finder`` (``torch_lr_finder/lr_finder.py``), whose smoothing, divergence rule and
    steepest-descent suggestion this follows.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

from ..schedules import exponential

__all__ = ["LRFinderResult", "find_lr"]


@dataclasses.dataclass(frozen=True)
class LRFinderResult:
    """The curve of a range test.

    Attributes:
        lrs: learning rate of each update, increasing.
        losses: the raw loss of each update.
        smoothed: bias-corrected exponential moving average of ``losses``.
        suggestion: the suggested (maximum) learning rate, or None when the curve is too short
            (fewer than ``skip_start + skip_end + 2`` points) to have a steepest descent.
        stopped_early: True when the loss diverged before ``num_steps`` updates.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float | None
    stopped_early: bool

    @property
    def min_loss_lr(self) -> float:
        """The learning rate at the lowest smoothed loss (fast.ai's rule: use a tenth of it)."""
        return self.lrs[int(np.nanargmin(self.smoothed))]

    def summary(self) -> str:
        """A few lines for a terminal."""
        end = "diverged, stopped" if self.stopped_early else "reached the end LR"
        best = f"{self.suggestion:.3g}" if self.suggestion is not None else "none (curve too short)"
        return (
            f"LR range test: {len(self.lrs)} updates from {self.lrs[0]:.3g} to "
            f"{self.lrs[-1]:.3g} ({end})\n"
            f"lowest smoothed loss {min(self.smoothed):.4g} at lr {self.min_loss_lr:.3g}\n"
            f"suggested max lr (steepest descent of the smoothed loss): {best}"
        )

    def plot(self, ax: Any = None) -> Any:
        """Draw smoothed loss against the learning rate (log axis); returns the Figure."""
        if ax is None:
            from matplotlib.figure import Figure

            fig = Figure(figsize=(7, 4.5), dpi=100, layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        ax.plot(self.lrs, self.losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="loss")
        ax.plot(self.lrs, self.smoothed, color="tab:blue", linewidth=1.6, label="smoothed")
        if self.suggestion is not None:
            ax.axvline(self.suggestion, color="tab:red", linestyle="--", linewidth=1)
            ax.annotate(
                f"suggested {self.suggestion:.3g}",
                (self.suggestion, 0.95),
                xycoords=("data", "axes fraction"),
                color="tab:red",
                fontsize="small",
            )
        ax.set_xscale("log")
        finite = [v for v in self.smoothed if math.isfinite(v)]
        if finite:  # the divergence tail would flatten the interesting part
            low, first = min(finite), finite[0]
            ax.set_ylim(low - 0.05 * abs(low), max(first, low) + 0.5 * (abs(first - low) + 1e-12))
        ax.set(xlabel="learning rate", ylabel="loss", title="LR range test")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
        return fig


def _check(name: str, value: Any, *, low: float = 0.0, integer: bool = False) -> None:
    kind = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "an int" if integer else "a number"
        raise TypeError(f"Argument `{name}` must be {what}. Received: {name}={value!r}")
    if not (value > low and math.isfinite(value)):
        raise ValueError(f"Argument `{name}` must be > {low:g}. Received: {name}={value!r}")


def _batches(data: Iterable[Any]) -> Iterator[Any]:
    """Batches forever: a re-iterable ``data`` (a DataLoader) restarts when exhausted."""
    while True:
        empty = True
        for batch in data:
            empty = False
            yield batch
        if empty or iter(data) is data:  # an exhausted iterator cannot restart
            if empty:
                raise ValueError("Argument `data` yielded no batches")
            return


def suggest(
    lrs: list[float], smoothed: list[float], skip_start: int, skip_end: int
) -> float | None:
    """The LR of the steepest descent of ``smoothed`` against ``log(lr)``, ends skipped."""
    y = np.asarray(smoothed[skip_start : len(smoothed) - skip_end], dtype=np.float64)
    x = np.log(np.asarray(lrs[skip_start : len(lrs) - skip_end], dtype=np.float64))
    if y.size < 2 or not np.isfinite(y).all():
        finite = np.isfinite(y)
        y, x = y[finite], x[finite]
        if y.size < 2:
            return None
    slope = np.gradient(y, x)
    return float(np.exp(x[int(np.argmin(slope))]))


def find_lr(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    data: Iterable[Any],
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    smooth: float = 0.05,
    diverge_factor: float = 4.0,
    skip_start: int = 10,
    skip_end: int = 5,
    restore: bool = True,
) -> LRFinderResult:
    """Run the LR range test and restore ``model`` and ``optimizer`` to their exact state.

    Update ``i`` (``0 <= i < num_steps``) sets every param group's ``lr`` to
    ``start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))`` (the schedule
    ``ss.exponential(start_lr, rate=end_lr / start_lr, every=num_steps - 1)``), computes
    ``loss = loss_fn(model, batch)``, back-propagates and steps the optimizer. The smoothed loss
    is the bias-corrected moving average ``avg = (1 - smooth) * avg + smooth * loss``,
    ``smoothed_i = avg / (1 - (1 - smooth) ** (i + 1))``. The test stops after the first update
    whose loss is non-finite or whose smoothed loss exceeds ``diverge_factor`` times the lowest
    smoothed loss so far.

    Suggestion: the learning rate where the smoothed loss falls fastest against ``log(lr)``
    (``argmin`` of ``np.gradient``), ignoring the first ``skip_start`` and last ``skip_end``
    points, as Lightning and torch-lr-finder do. :attr:`LRFinderResult.min_loss_lr` gives the
    other common rule (a tenth of the LR at the lowest loss).

    Afterwards (also on an exception or Ctrl-C) the parameters, buffers, optimizer state and
    param groups, every module's train/eval mode, gradients and torch's random number
    generators (CPU and CUDA) are restored bit for bit, unless ``restore=False``. The batches
    consumed from ``data`` are not given back.

    Args:
        model: the model; ``loss_fn`` calls it.
        optimizer: an optimizer over the model's parameters; its ``lr`` is overwritten
            during the test (a tensor ``lr`` is filled in place).
        loss_fn: ``loss_fn(model, batch) -> scalar loss tensor``.
        data: batches (a DataLoader is restarted when exhausted; an iterator must last).
        start_lr, end_lr: the sweep's range, ``0 < start_lr < end_lr``.
        num_steps: most updates, >= 2.
        smooth: weight of the newest loss in the moving average, in ``(0, 1]``.
        diverge_factor: stop when smoothed loss > ``diverge_factor`` x its minimum; > 1.
        skip_start, skip_end: points ignored by the suggestion at each end.
        restore: put model and optimizer back (default True).

    Returns:
        An :class:`LRFinderResult` (``.lrs``, ``.losses``, ``.smoothed``, ``.suggestion``,
        ``.plot()``).

    Example:

    >>> import torch, steadystep as ss
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(4, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> x = torch.randn(64, 4); y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    >>> before = {k: v.clone() for k, v in model.state_dict().items()}
    >>> def mse(m, batch):
    ...     return ((m(batch[0]).squeeze(1) - batch[1]) ** 2).mean()
    >>> result = ss.torch.find_lr(model, opt, mse, [(x, y)], start_lr=1e-4, end_lr=10.0,
    ...                           num_steps=50)
    >>> result.stopped_early, 1e-3 < result.suggestion < 1.0
    (True, True)
    >>> all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    True
    >>> opt.param_groups[0]["lr"]
    0.1
    """
    _check("start_lr", start_lr)
    _check("end_lr", end_lr)
    if end_lr <= start_lr:
        raise ValueError(
            "Argument `end_lr` must be > `start_lr`. "
            f"Received: start_lr={start_lr!r}, end_lr={end_lr!r}"
        )
    _check("num_steps", num_steps, low=1, integer=True)
    _check("smooth", smooth)
    if smooth > 1:
        raise ValueError(f"Argument `smooth` must be in (0, 1]. Received: smooth={smooth!r}")
    _check("diverge_factor", diverge_factor, low=1)
    for name, value in (("skip_start", skip_start), ("skip_end", skip_end)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"Argument `{name}` must be an int >= 0. Received: {name}={value!r}")
    if not callable(loss_fn):
        raise TypeError(f"Argument `loss_fn` must be callable. Received: loss_fn={loss_fn!r}")

    schedule = exponential(start_lr, rate=end_lr / start_lr, every=num_steps - 1)
    saved = _snapshot(model, optimizer) if restore else None
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    stopped = False
    try:
        model.train()
        avg, best = 0.0, math.inf
        beta = 1.0 - smooth
        for i, batch in zip(range(num_steps), _batches(data), strict=False):
            lr = schedule(i)
            for group in optimizer.param_groups:
                if isinstance(group["lr"], torch.Tensor):
                    group["lr"].fill_(lr)
                else:
                    group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            avg = beta * avg + smooth * value
            current = avg / (1.0 - beta ** (i + 1))
            lrs.append(lr)
            losses.append(value)
            smoothed.append(current)
            if not math.isfinite(current) or current > diverge_factor * best:
                stopped = True
                break
            best = min(best, current)
    finally:
        if saved is not None:
            _restore(model, optimizer, saved)
    if not lrs:
        raise ValueError("Argument `data` yielded no batches")
    return LRFinderResult(
        lrs, losses, smoothed, suggest(lrs, smoothed, skip_start, skip_end), stopped
    )


def _snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return {
        "model": copy.deepcopy(model.state_dict()),
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "modes": [m.training for m in model.modules()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        # (object, value): a tensor lr is filled in place during the test
        "group_lrs": [
            (g["lr"], g["lr"].clone() if isinstance(g["lr"], torch.Tensor) else None)
            for g in optimizer.param_groups
        ],
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
    }


def _restore(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any]
) -> None:
    with torch.no_grad():
        model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    # load_state_dict copies tensor lrs into new objects; put the user's own objects back
    for group, (lr, value) in zip(optimizer.param_groups, saved["group_lrs"], strict=True):
        if isinstance(lr, torch.Tensor):
            with torch.no_grad():
                lr.copy_(value)
            group["lr"] = lr
    for module, mode in zip(model.modules(), saved["modes"], strict=True):
        module.training = mode
    for p, grad in zip(model.parameters(), saved["grads"], strict=True):
        p.grad = grad
    torch.set_rng_state(saved["rng"])
    if saved["cuda_rng"] is not None:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
