"""`LossSpikeSkip`: skip the update whose loss (and/or gradient norm) is far above its history.

The rule is :func:`steadystep.clip.skip_step` (OLMo-core's skip-step optimizer, levanter's skip
step), evaluated on the device: no ``.item()``, no host sync to decide. The skip itself is
``clip_grad_norm_(nonfinite="skip")``'s: a fused optimizer (``fused=True``) skips inside its
kernel with no sync; other optimizers read the flag once on the host and drop the gradients,
so ``optimizer.step()`` changes neither parameters nor optimizer state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from steadystep import _check as check
from steadystep.clip import _rules, _skip

from . import _distributed as _dist
from ._clip import apply_skip, as_parameters, disarm_stale, grad_set, restamp

__all__ = ["LossSpikeSkip"]


class LossSpikeSkip:
    """Skip the next ``optimizer.step()`` when the loss or gradient norm spikes.

    Args:
        params: the parameters whose gradients are skipped (and measured for ``"norm"``).
        signal: ``"loss"``, ``"norm"``, ``"either"`` (default) or ``"both"``.
        window: how many recent finite values the z-score looks at.
        sigma: an outlier is ``x - mean > sigma * std`` over the window.
        min_history: values seen before testing (default ``max(20, window // 2)``).
        optimizer: the optimizer to skip (needed to skip a fused one without a sync).
        norm_type: the p of the gradient norm.
        process_group: every rank takes the same decision: the flags are combined with an
            all-reduce MAX over this group (a bad batch on one rank skips the update
            everywhere). Histories stay local (each rank records its own loss).
        scheduler: a :class:`steadystep.torch.Scheduler` of ``optimizer``; with
            ``advance_schedule=True`` it counts a skipped update as made (the schedule moves
            on, as torchtitan's "the step happened" view); by default it does not (the
            schedule waits, as for an update that ``GradScaler`` skips).

    Call :meth:`check` after ``backward()`` and before ``optimizer.step()``:

    >>> import torch
    >>> w = torch.nn.Parameter(torch.zeros(1))
    >>> opt = torch.optim.SGD([w], lr=0.1)
    >>> guard = LossSpikeSkip([w], signal="loss", window=8, min_history=3, optimizer=opt)
    >>> for loss in [1.0, 1.1, 0.9, 1.0, 50.0]:
    ...     w.grad = torch.ones(1)
    ...     skipped = guard.check(torch.tensor(loss))
    >>> bool(skipped), w.grad
    (True, None)
    """

    def __init__(
        self,
        params: Tensor | Iterable[Tensor],
        *,
        signal: str = "either",
        window: int = 128,
        sigma: float = 6.0,
        min_history: int | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        norm_type: float | str = 2.0,
        process_group: Any = None,
        scheduler: Any = None,
        advance_schedule: bool = False,
    ) -> None:
        self.params = as_parameters(params)
        self.window = check.integer("window", window, minimum=1, maximum=_rules.HISTORY_MAX)
        self.signal, self.sigma, self.min_history = _skip.check_rule(
            signal, sigma, min_history, self.window
        )
        self.norm_type = check.norm_type(norm_type)
        self.optimizer = optimizer
        self.process_group = process_group
        self.advance_schedule = check.flag("advance_schedule", advance_schedule)
        counter = getattr(scheduler, "_counter", None)
        if scheduler is not None and counter is None:
            raise TypeError(
                "Argument `scheduler` must be a steadystep.torch.Scheduler. "
                f"Received: scheduler={scheduler!r}"
            )
        if self.advance_schedule and scheduler is None:
            raise ValueError(
                "advance_schedule=True needs the `scheduler` whose schedule should count "
                "skipped updates. Received: scheduler=None"
            )
        self.scheduler = scheduler
        device = self.params[0].device if self.params else torch.device("cpu")
        self._state = _skip.skip_init(self.window, like=torch.zeros((), device=device))
        #: the latest decision (0-dim bool tensor on the device), the norm it saw (or None)
        self.last_skipped: Tensor | None = None
        self.last_norm: Tensor | None = None

    @torch.no_grad()
    def check(self, loss: Tensor | float | None = None) -> Tensor:
        """Decide on this update from ``loss`` (and the gradient norm); return the flag."""
        gs = grad_set(self.params)
        norm = None
        if self.signal != "loss":
            norm = gs.norm(self.norm_type).to(torch.float32)
        dev = self._state.loss.values.device
        if isinstance(loss, Tensor):
            loss_t = loss.detach().reshape(()).to(device=dev, dtype=torch.float32)
        elif loss is not None:
            if not check.is_python_number(loss):
                raise TypeError(
                    "Argument `loss` must be a number or a one-element tensor. "
                    f"Received: loss={loss!r} of type {type(loss).__name__}"
                )
            loss_t = torch.full((), float(loss), dtype=torch.float32, device=dev)
        else:
            loss_t = None
        self._state, skip = _skip.skip_step(
            self._state,
            loss_t,
            norm,
            signal=self.signal,
            sigma=self.sigma,
            min_history=self.min_history,
        )
        if self.process_group is not None:  # any rank's skip skips all
            skip = _dist.agree(skip, self.process_group)
        disarm_stale(self.optimizer)  # a skip armed on gradients that are gone is dropped
        dropped = apply_skip(skip, gs, self.optimizer)
        restamp(self.optimizer)
        if self.advance_schedule:
            if dropped:  # no gradient: the scheduler's hook will not count it; count it here
                self.scheduler._counter.updates += 1
            elif self.optimizer is not None and "found_inf" in getattr(
                getattr(self.optimizer, "_steadystep_pending", None), "values", {}
            ):  # a fused skip: its found_inf entry counts 0, this one counts 1 (settled later)
                self.scheduler._counter.pending.append(~skip)
        self.last_skipped, self.last_norm = skip, norm
        return skip

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Settings (JSON-safe) and the two histories (CPU tensors)."""
        return {
            "signal": self.signal,
            "window": self.window,
            "sigma": self.sigma,
            "min_history": self.min_history,
            "loss_values": self._state.loss.values.cpu().clone(),
            "loss_count": self._state.loss.count.cpu().clone(),
            "norm_values": self._state.norm.values.cpu().clone(),
            "norm_count": self._state.norm.count.cpu().clone(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the rule must be the same (else ``ValueError``)."""
        if not isinstance(state, Mapping):
            raise TypeError(f"Argument `state` must be a dict. Received: {type(state).__name__}")
        mine = {k: getattr(self, k) for k in ("signal", "window", "sigma", "min_history")}
        saved = {k: state.get(k) for k in mine}
        if saved != mine:
            raise ValueError(
                f"The state was saved by a different LossSpikeSkip: saved {saved}, this one {mine}"
            )
        dev = self._state.loss.values.device
        parts = []
        for name in ("loss", "norm"):
            values, count = state.get(f"{name}_values"), state.get(f"{name}_count")
            if not (
                isinstance(values, Tensor)
                and values.shape == (self.window,)
                and isinstance(count, Tensor)
                and count.ndim == 0
                and int(count) >= 0
            ):
                raise ValueError(
                    f'state["{name}_values"] must be a tensor of shape ({self.window},) and '
                    f'state["{name}_count"] a count >= 0. Received: {values!r}, {count!r}'
                )
            parts.append(
                _rules.NormHistory(
                    values.to(device=dev, dtype=torch.float32), count.to(dev, torch.int32)
                )
            )
        self._state = _skip.SkipState(*parts)
