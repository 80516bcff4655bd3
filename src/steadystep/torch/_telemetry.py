"""`Telemetry`: the scheduler's values and clipping results as loggable scalars, synced rarely.

Clipping results are device tensors; reading one every step would stall a GPU pipeline. The
telemetry adds them up on their device each step and reads everything back in one transfer at
the logging interval.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .. import _check as check
from ._clip import ClipResult

__all__ = ["Telemetry"]


class Telemetry:
    """Loggable scalars from a :class:`~steadystep.torch.Scheduler` and clipping results.

    Call :meth:`step` once per training step with that step's :class:`ClipResult` (from
    ``clip_grad_norm_(..., return_result=True)`` or a clipper's ``.last``) or its norm; every
    ``every`` calls it returns a dict of Python floats (otherwise ``None``):

    - ``lr/<group>``: each scheduled group's current value (``<group>`` is the group's
      ``"name"``, else its index; ``lr`` becomes the scheduler's ``param``);
    - ``grad/norm``: mean of the finite pre-clip norms over the interval; ``grad/norm_max``;
    - ``grad/clipped``: fraction of the interval's steps that were clipped;
    - ``grad/skipped``: number of steps skipped (non-finite norm, or a spike).

    Between logging steps everything stays on the device (no host sync); the logging step
    reads all values in one transfer. Works with tensor learning rates (``tensor=True``).

    Examples:
        >>> import torch, steadystep as ss
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> opt = torch.optim.SGD([w], lr=0.1)
        >>> sched = ss.torch.Scheduler(opt, ss.linear(0.1, 0.0, steps=4))
        >>> tel = ss.torch.Telemetry(sched, every=2)
        >>> for i in range(2):
        ...     w.grad = torch.tensor([3.0, 4.0]) * (i + 1)
        ...     result = ss.torch.clip_grad_norm_([w], 6.0, return_result=True)
        ...     opt.step(); sched.step()
        ...     logged = tel.step(result)
        >>> logged["lr/0"], logged["grad/norm"], logged["grad/norm_max"], logged["grad/clipped"]
        (0.05, 7.5, 10.0, 0.5)
    """

    def __init__(self, scheduler: Any = None, *, every: int = 100) -> None:
        if scheduler is not None and not callable(getattr(scheduler, "get_last_lr", None)):
            raise TypeError(
                "Argument `scheduler` must be a scheduler with get_last_lr() (or None). "
                f"Received: scheduler={scheduler!r}"
            )
        self.scheduler = scheduler
        self.every = check.integer("every", every, minimum=1)
        self.calls = 0
        self._reset()

    def _reset(self) -> None:
        self._steps = 0
        self._sums: Tensor | None = (
            None  # [sum of finite norms, finite count, max, clipped, skipped]
        )

    def step(self, result: ClipResult | Tensor | None = None) -> dict[str, float] | None:
        """Record one training step; at the logging interval return the scalars."""
        if result is not None:
            self._add(result)
        self._steps += 1
        self.calls += 1
        return self.scalars() if self.calls % self.every == 0 else None

    def _add(self, result: ClipResult | Tensor) -> None:
        if isinstance(result, ClipResult):
            norm, clipped, skipped = result.norm, result.clipped, result.skipped
        elif isinstance(result, Tensor) and result.numel() == 1:
            norm, clipped, skipped = result.reshape(()), None, None
        else:
            raise TypeError(
                "Argument `result` must be a ClipResult or a norm (0-dim tensor). "
                f"Received: result={result!r}"
            )
        norm = norm.detach().float()
        finite = torch.isfinite(norm)
        zero = torch.zeros((), device=norm.device)
        row = torch.stack(
            [
                torch.where(finite, norm, zero),
                finite.float(),
                torch.where(finite, norm, zero),
                zero if clipped is None else clipped.float(),
                zero if skipped is None else skipped.float(),
            ]
        )
        if self._sums is None:
            self._sums = row
        else:  # in place, on the device
            head = self._sums[:2]
            head.add_(row[:2])
            self._sums[2:3] = torch.maximum(self._sums[2:3], row[2:3])
            self._sums[3:].add_(row[3:])

    def scalars(self) -> dict[str, float]:
        """The scalars now (one host transfer), and start a new interval."""
        out: dict[str, float] = {}
        values: list[Any] = []
        names: list[str] = []
        if self.scheduler is not None:
            groups = self.scheduler.optimizer.param_groups
            key = getattr(self.scheduler, "param", "lr")
            for i, (g, v) in enumerate(zip(groups, self.scheduler.get_last_lr(), strict=False)):
                names.append(f"{key}/{g.get('name', i)}")
                values.append(v)
        sums = self._sums
        tensors = [v.detach().float().reshape(1) for v in values if isinstance(v, Tensor)]
        if sums is not None:
            tensors.append(sums)
        read = _read(tensors)
        if sums is not None:
            sums_read, read = read[-5:], read[:-5]
        host = iter(read)
        for name, v in zip(names, values, strict=True):
            out[name] = next(host) if isinstance(v, Tensor) else float(v)
        if sums is not None:
            total, count, peak, clipped, skipped = sums_read
            out["grad/norm"] = total / count if count else math.nan
            out["grad/norm_max"] = peak if count else math.nan
            out["grad/clipped"] = clipped / self._steps
            out["grad/skipped"] = skipped
        self._reset()
        return out


def _read(tensors: list[Tensor]) -> list[float]:
    """All values of ``tensors`` (1-D), in order, with one transfer per device."""
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    chunks: dict[int, list[float]] = {}
    for indices in by_device.values():
        flat = torch.cat([tensors[i] for i in indices]).tolist()
        pos = 0
        for i in indices:
            chunks[i] = flat[pos : pos + tensors[i].numel()]
            pos += tensors[i].numel()
    return [v for i in range(len(tensors)) for v in chunks[i]]
