"""`Scheduler`: drive any optimizer hyperparameter of a torch optimizer from pure schedules.

The scheduler's only state is ``step``, the number of optimizer updates applied so far; the
value of every scheduled group is ``schedule(step)`` (times the group's initial value with
``relative=True``). It keeps the ``torch.optim.lr_scheduler.LRScheduler`` interface that
training tools call (``step()``, ``get_last_lr()``, ``state_dict()``, ``load_state_dict()``,
``last_epoch``, ``optimizer``, ``base_lrs``), but none of its internals: no recursive
``get_lr``, no ``initial_lr`` key written into the optimizer, no patched ``optimizer.step``.

Counting real updates. The scheduler registers an optimizer step post-hook that counts the
updates the optimizer really made; :meth:`Scheduler.step` advances the schedule by that count.
An update that ``GradScaler`` skips (``inf``/``NaN`` gradients: it does not call
``optimizer.step()``) is not counted, so the schedule does not advance and no warning is shown;
nor is a step that found no gradient at all (how ``clip_grad_norm_(nonfinite="skip")`` skips);
a ``step()`` call in the middle of gradient accumulation finds no new update and does nothing.
Fused optimizers (``fused=True``) are always called by ``GradScaler`` and skip inside their
kernel; their skipped updates are not counted either (``step()`` then reads the scaler's
``found_inf`` flag: one host sync).
The two-line patterns::

    scaler.step(optimizer); scaler.update()    # AMP: a skipped update is not counted
    scheduler.step()                           # ... so this is safe to call every iteration

    if (i + 1) % accumulation == 0:            # accumulation: one count per real update,
        optimizer.step(); optimizer.zero_grad()
    scheduler.step()                           # whether step() is called per micro-batch or not
"""

from __future__ import annotations

import math
import numbers
import re
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ..schedules import PlateauState, Schedule, SpecError, parse
from ._plateau import MetricFeed

__all__ = ["Scheduler"]

#: values are computed ``_BLOCK`` steps at a time, on blocks aligned to multiples of ``_BLOCK``,
#: so a resumed run evaluates exactly the same arrays (bit-identical values)
_BLOCK = 256
_STALE = -(1 << 62)  # a block start that contains no step: forces a refill
_FORMAT = "steadystep.torch.Scheduler/1"
_MAX_STEP = 2**53
_PARAM = re.compile(r"^([A-Za-z_]\w*)(?:\[(\d+)\])?$")


class _UpdateCounter:
    """Counts real optimizer updates; its hook holds the counter only weakly."""

    __slots__ = ("__weakref__", "pending", "updates")

    def __init__(self) -> None:
        self.updates = 0
        # ``found_inf`` flags of steps a fused optimizer may have skipped on the device
        self.pending: list[torch.Tensor] = []

    def settle(self) -> int:
        if self.pending:  # one host sync, only for fused/capturable optimizers under GradScaler
            self.updates += sum(not bool(f) for f in self.pending)
            self.pending.clear()
        return self.updates


def _make_hook(counter: _UpdateCounter) -> Any:
    ref = weakref.ref(counter)

    def hook(optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        c = ref()
        if c is None:
            return
        # a step with no gradient at all changed nothing (torch skips parameters without one):
        # this is how clip_grad_norm_(nonfinite="skip") skips non-fused optimizers
        if not any(p.grad is not None for g in optimizer.param_groups for p in g["params"]):
            return
        # GradScaler does not call step() for a skipped update, except on optimizers that skip
        # inside their (fused) kernel: those get ``found_inf`` set during the call.
        found_inf = getattr(optimizer, "found_inf", None)
        if isinstance(found_inf, torch.Tensor):
            c.pending.append(found_inf)
        else:
            c.updates += 1

    return hook


def _innermost(optimizer: Any) -> Optimizer:
    # Accelerate's AcceleratedOptimizer (and similar wrappers) subclass Optimizer but keep the
    # real one in ``.optimizer``; hooks must go on the optimizer whose step() really runs.
    seen = 0
    while isinstance(getattr(optimizer, "optimizer", None), Optimizer) and seen < 8:
        optimizer = optimizer.optimizer
        seen += 1
    return optimizer  # type: ignore[no-any-return]


class Scheduler(LRScheduler):
    """Set an optimizer hyperparameter of every param group to ``schedule(step)``.

    Args:
        optimizer: a ``torch.optim.Optimizer`` (wrappers that keep it in ``.optimizer``, such
            as Accelerate's and DeepSpeed's ``engine.optimizer``, also work).
        schedule: one :class:`steadystep.Schedule` for every group; a list with one schedule
            per group; or a mapping from group name (``param_groups[i]["name"]``) to schedule.
            ``None`` in a list or mapping leaves that group's value alone. Spec text
            (``"warmup(cosine(...), steps=100)"``) and spec dicts (``{"type": ...}``) are
            accepted wherever a schedule is, so configs can carry them.
        param: the group key to schedule: ``"lr"`` (default), ``"momentum"``,
            ``"weight_decay"``, ... An element of a tuple-valued key is written with an index:
            ``"betas[0]"`` is Adam's beta1 (one-cycle's momentum cycling).
        relative: if True the value is ``schedule(step) * initial``, ``initial`` being each
            group's value at construction (stored in the state dict), so that ratios between
            groups (layer-wise LR decay) survive; the schedule is then a multiplier, e.g.
            ``ss.cosine(1.0, 0.0, steps)``. For ``param="lr"``, a group's ``initial_lr`` is
            its initial value where a torch scheduler set one (torch's schedulers, e.g. a
            warmup ``LambdaLR``, may already have changed ``lr``). A scheduled group whose
            initial value is 0 (or not finite) is refused: every value would be 0; give that
            group the schedule ``None`` to leave it alone.
        tensor: if True each group's value is a 0-dim tensor on its parameters' device
            (float32, as ``torch.tensor(0.01)``), updated in place from values computed on that
            device: no host sync, and no new tensor per step, so a ``torch.compile``\\ d
            ``optimizer.step`` (or a captured CUDA graph) does not recompile when the value
            changes. Torch accepts tensor ``lr`` (and Adam's betas); eager CUDA Adam needs
            ``capturable=True`` or ``fused=True`` for a tensor LR. A group that already holds
            a tensor (``lr=torch.tensor(0.01)``, torch's recipe for ``torch.compile``) keeps
            that very tensor whatever ``tensor`` says, as torch's own schedulers do: any
            1-element floating tensor, filled in place in its own dtype and device. Torch
            gives every group the *same* tensor when the optimizer is built with
            ``lr=torch.tensor(...)``; a group that shares it with an earlier group but gets
            other values gets its own copy (``clone()``), so each group has its own value.
        process_group: averages the metrics passed to ``step(metric)`` over this
            ``torch.distributed`` group (one all-reduce per evaluation), so that ranks that
            measured different local metrics take the same plateau decision. Leave it None
            when the metric is already the same on every rank (Lightning's
            ``self.log(..., sync_dist=True)``, the HF Trainer's gathered evaluation metrics).
        total_steps: the run's length in updates, which resolves lengths written as fractions
            of the run (``steadystep.fraction(0.06)``); required when a schedule has them.

    After construction each group's value is ``schedule(0)``; after ``k`` updates and a
    ``step()`` call it is ``schedule(k)``. Call ``step()`` after ``optimizer.step()`` (or
    ``scaler.step(optimizer)``); a call that follows no real update does nothing (see the module
    docstring for AMP and gradient accumulation). ``last_epoch`` is the step; assigning it
    jumps to that step.

    Example:

    >>> import torch, steadystep as ss
    >>> model = torch.nn.Linear(2, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> sched = ss.torch.Scheduler(opt, ss.warmup(ss.cosine(0.1, 0.0, steps=8), steps=2))
    >>> lrs = []
    >>> for _ in range(4):
    ...     lrs.append(opt.param_groups[0]["lr"])
    ...     model(torch.ones(2)).sum().backward()
    ...     opt.step(); opt.zero_grad(); sched.step()
    >>> [round(lr, 6) for lr in lrs]
    [0.0, 0.05, 0.1, 0.096194]
    >>> sched.state_dict()["step"]
    4

    Resuming: save ``scheduler.state_dict()`` with the checkpoint and ``load_state_dict()`` it
    into a scheduler built the same way; the values are bit-identical to an uninterrupted run.
    To change the schedule on purpose at resume (e.g. :func:`steadystep.presets.append_cooldown`
    of a WSD run), pass ``schedule_changed_ok=True``.

    References: the update-count convention follows optax (a schedule is a pure function of the
    step); the interface is ``torch.optim.lr_scheduler.LRScheduler``'s.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: str | Mapping[str, Any] | Schedule | Sequence[Schedule | str | None],
        *,
        param: str = "lr",
        relative: bool = False,
        tensor: bool = False,
        process_group: Any = None,
        total_steps: int | None = None,
    ) -> None:
        # DeepSpeed's optimizer wrappers (ZeRO, fp16, bf16) are not Optimizers; the torch
        # optimizer they step is their ``.optimizer``: its param groups are the ones stepped
        # and its step hook counts only the updates really made (not overflow skips)
        for _ in range(4):  # engine -> wrapper -> torch optimizer; never loop forever
            if isinstance(optimizer, Optimizer) or not hasattr(optimizer, "optimizer"):
                break
            optimizer = optimizer.optimizer
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                "Argument `optimizer` must be a torch.optim.Optimizer. "
                f"Received: optimizer={optimizer!r} of type {type(optimizer).__name__}"
            )
        if not isinstance(relative, bool):
            raise TypeError(f"Argument `relative` must be True or False. Received: {relative=}")
        if not isinstance(tensor, bool):
            raise TypeError(f"Argument `tensor` must be True or False. Received: {tensor=}")
        self.optimizer = optimizer
        groups = optimizer.param_groups
        self.param = param
        self._key, self._index = _parse_param(param, groups)
        self.schedules: list[Schedule | None] = _per_group(
            _from_config(schedule, total_steps), groups
        )
        self.relative = relative
        self.tensor = tensor
        self._metrics = MetricFeed(self.schedules, process_group)
        self._live = list(self.schedules)  # the schedules with their applied reductions
        #: each group's initial value (the multipliers' base with ``relative=True``)
        self.base_lrs: list[float | torch.Tensor] = [
            _as_float(self._initial(g), f"param_groups[{i}][{self.param!r}]")
            for i, g in enumerate(groups)
        ]
        self._bases: list[float] | None = None
        if relative:
            self._bases = _check_bases(self.base_lrs, self.schedules, "the initial values")
        self._tensors = self._install_tensors(groups)

        self._counter = _UpdateCounter()
        self._hook = _innermost(optimizer).register_step_post_hook(_make_hook(self._counter))
        self._seen = 0  # counter.updates already applied
        self._step = 0
        self._step_count = 0  # step() calls; Accelerate bumps it during accumulation
        self._warned = False
        self._block_start = _STALE
        self._blocks: list[Any] = []
        self._apply()

    # -- the interface training tools call ------------------------------------------------------
    def step(self, metric: Any = None, epoch: None = None) -> None:  # type: ignore[override]
        """Apply the optimizer updates made since the last call: ``value = schedule(step)``.

        A call that follows no real update (skipped by ``GradScaler``, or in the middle of
        gradient accumulation) changes nothing.

        ``step(metric)`` (torch ``ReduceLROnPlateau``'s convention, which Lightning and the
        Hugging Face Trainer call after an evaluation) also feeds ``metric`` (a number or a
        one-element tensor: one host sync) to the schedules' :func:`steadystep.plateau`; it
        counts as an evaluation, not an update. With ``process_group`` the metric is first
        averaged over that group, so every rank takes the same decision.
        """
        if epoch is not None:
            raise TypeError(
                "Scheduler.step() takes no step number: it counts the optimizer's updates. "
                f"Received: epoch={epoch!r}. To jump to a step, assign `scheduler.last_epoch`."
            )
        if metric is not None:
            self._metrics.check_fed(metric)
        self._step_count += 1
        counter = self._counter
        new = (counter.settle() if counter.pending else counter.updates) - self._seen
        if new:
            self._seen += new
            self._step += new
            if new > 1 and not self._warned and metric is None:
                self._warn_sparse(new)
            self._apply()
        if metric is not None:
            live = self._metrics.feed(metric, self._live, self._step, self._bases)
            if live != self._live:
                self._live = live
                self._block_start = _STALE
                self._apply()

    @property
    def plateau_state(self) -> PlateauState | None:
        """The plateau controller's state (None without a plateau); read-only."""
        return self._metrics.state

    @property
    def reductions(self) -> list[int | None]:
        """Reductions applied so far, per group (None for a group without a plateau)."""
        return list(self._metrics.reductions)

    def get_last_lr(self) -> list[Any]:
        """Each group's current value; tensors are 0-dim copies (no host sync), which
        ``float()``, f-strings, TensorBoard and Lightning's ``log`` take as numbers."""
        return [
            t.detach().reshape(()).clone() if isinstance(t, torch.Tensor) else t
            for t in self._last_lr
        ]

    def get_lr(self) -> list[Any]:
        """Same as :meth:`get_last_lr`: values are a function of the step, nothing to compute."""
        return self.get_last_lr()

    @property
    def last_epoch(self) -> int:
        """The number of optimizer updates applied (torch's name for it)."""
        return self._step

    @last_epoch.setter
    def last_epoch(self, step: int) -> None:
        self._step = _check_step(step, "last_epoch")
        self._seen = self._counter.settle()
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe primitives: the step, each group's spec text, and the relative bases.

        Loadable with ``torch.load(..., weights_only=True)`` and storable as JSON.
        """
        return {
            "format": _FORMAT,
            "step": self._step,
            "param": self.param,
            "relative": self.relative,
            "schedules": [None if s is None else repr(s) for s in self.schedules],
            "bases": None if self._bases is None else list(self._bases),
            **({} if self._metrics.rule is None else {"plateau": self._metrics.state_dict()}),
        }

    def load_state_dict(
        self, state_dict: Mapping[str, Any], *, schedule_changed_ok: bool = False
    ) -> None:
        """Restore the step (and relative bases) saved by :meth:`state_dict`, and apply it.

        The saved schedules must equal this scheduler's; the error says which group differs and
        how. ``schedule_changed_ok=True`` keeps this scheduler's schedules deliberately, e.g.
        when resuming an open-ended WSD run with a cooldown appended
        (:func:`steadystep.presets.append_cooldown`).
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                "Argument `state_dict` must be a dict from Scheduler.state_dict(). "
                f"Received: {type(state_dict).__name__}"
            )
        if state_dict.get("format") != _FORMAT:
            raise ValueError(
                f"Argument `state_dict` is not a steadystep Scheduler state (format "
                f"{_FORMAT!r} expected). Received keys: {sorted(state_dict)}"
            )
        step = _check_step(state_dict.get("step"), 'state_dict["step"]')
        param, relative = state_dict.get("param"), state_dict.get("relative")
        if not isinstance(param, str) or param != self.param:
            raise ValueError(
                f"The state dict schedules param={state_dict.get('param')!r} but this "
                f"scheduler schedules param={self.param!r}."
            )
        if not isinstance(relative, bool) or relative != self.relative:
            raise ValueError(
                f"The state dict has relative={state_dict.get('relative')!r} but this "
                f"scheduler has relative={self.relative!r}."
            )
        saved = state_dict.get("schedules")
        if not isinstance(saved, list) or len(saved) != len(self.schedules):
            n = len(saved) if isinstance(saved, list) else saved
            raise ValueError(
                f"The state dict has schedules for {n} param groups; this optimizer has "
                f"{len(self.schedules)}."
            )
        if not schedule_changed_ok:
            self._check_same_schedules(saved)
        metrics = self._metrics.parse(
            state_dict.get("plateau"), self.schedules, schedule_changed_ok
        )
        bases = state_dict.get("bases")
        if self.relative:
            if not (isinstance(bases, list) and len(bases) == len(self.schedules)):
                raise ValueError(f'state_dict["bases"] must be one number per group: {bases!r}')
            self._bases = _check_bases(bases, self.schedules, 'state_dict["bases"]')
            self._block_start = _STALE
        self._metrics.commit(metrics)
        self._live = self._metrics.live(self.schedules)
        self._block_start = _STALE
        self._step = step
        self._seen = self._counter.settle()
        self._apply()

    # -- internals ------------------------------------------------------------------------------
    def _check_same_schedules(self, saved: list[Any]) -> None:
        diffs = []
        texts: dict[int, str] = {}  # id(schedule) -> repr: groups sharing one print it once
        for i, (text, current) in enumerate(zip(saved, self.schedules, strict=True)):
            now = None if current is None else texts.setdefault(id(current), repr(current))
            # repr is canonical spec text (parse(repr(s)) == s), so equal text is the same
            # schedule, however long: parse's length limit (for untrusted text) never applies
            if text == now:
                continue
            try:
                old = None if text is None else parse(text)
            except (SpecError, TypeError) as exc:
                raise ValueError(
                    f"group {i}: saved schedule {_short(text)} is not valid: {_short(str(exc))}"
                ) from None
            if old != current:
                diffs.append(f"  group {i}: saved {_short(text)}; now {_short(now)}")
        if diffs:
            raise ValueError(
                "The state dict was saved with a different schedule:\n"
                + "\n".join(diffs)
                + "\nBuild the scheduler with the saved schedule, or pass "
                "schedule_changed_ok=True to continue from the saved step with the new one "
                "(e.g. a cooldown appended with steadystep.presets.append_cooldown)."
            )

    def _warn_sparse(self, new: int) -> None:
        self._warned = True
        warnings.warn(
            f"Scheduler.step() was called after {new} optimizer updates instead of 1, so the "
            f"value was held for {new} updates and now jumps to schedule({self._step}). The "
            "schedule counts optimizer updates: call scheduler.step() after every "
            "optimizer.step(). If the recipe is written in epochs, wrap it with "
            "steadystep.from_epochs(schedule, steps_per_epoch=N) and still step per update.",
            UserWarning,
            stacklevel=3,
        )

    def _get(self, group: Mapping[str, Any]) -> Any:
        value = group[self._key]
        return value if self._index is None else value[self._index]

    def _set(self, group: dict[str, Any], value: Any) -> None:
        if self._index is None:
            group[self._key] = value
        else:
            old = list(group[self._key])
            old[self._index] = value
            group[self._key] = tuple(old)

    def _initial(self, group: Mapping[str, Any]) -> Any:
        # torch's schedulers record the LR they started from in "initial_lr" (and may have
        # changed "lr" already: a warmup LambdaLR sets it to lr * lambda(0) at construction)
        if self._key == "lr" and self._index is None and "initial_lr" in group:
            return group["initial_lr"]
        return self._get(group)

    def _same_values(self, i: int, j: int) -> bool:
        a, b = self.schedules[i], self.schedules[j]
        if a is None or b is None:
            return a is b
        return a == b and (self._bases is None or self._bases[i] == self._bases[j])

    def _install_tensors(self, groups: list[dict[str, Any]]) -> list[torch.Tensor | None]:
        """The tensor each scheduled group's value is written into, or None for a float."""
        tensors: list[torch.Tensor | None] = []
        holder: dict[int, int] = {}  # id(tensor) -> the first group holding it
        for i, group in enumerate(groups):
            current = self._get(group)
            if isinstance(current, torch.Tensor):
                _check_tensor(current, f"param_groups[{i}][{self.param!r}]")
                j = holder.setdefault(id(current), i)
                if j != i and not self._same_values(i, j):
                    current = current.detach().clone()  # shared with a group of other values
                    self._set(group, current)
                    holder[id(current)] = i
            elif self.tensor and self.schedules[i] is not None:
                device = next((p.device for p in group["params"]), torch.device("cpu"))
                current = torch.tensor(float(current), dtype=torch.float32, device=device)
                self._set(group, current)
            else:
                current = None
            tensors.append(None if self.schedules[i] is None else current)
        return tensors

    def _fill_blocks(self, start: int) -> None:
        cache: dict[Any, Any] = {}
        blocks: list[Any] = []
        for i, s in enumerate(self._live):
            if s is None:
                blocks.append(None)
                continue
            t = self._tensors[i]
            steps: Any
            key: Any
            if t is None:
                steps = np.arange(start, start + _BLOCK, dtype=np.int64)
                key = id(s)
            else:
                steps = torch.arange(start, start + _BLOCK, dtype=torch.int64, device=t.device)
                key = (id(s), t.device)
            values = cache.get(key)  # groups sharing a schedule evaluate it once
            if values is None:
                values = cache[key] = s(steps)
            if self._bases is not None:
                values = values * self._bases[i]
            # Python floats, or 0-dim device views made once per block (indexing costs ~2 us)
            blocks.append(values.tolist() if t is None else values.unbind())
        self._blocks = blocks
        self._block_start = start

    def _apply(self) -> None:
        k = self._step
        i = k - self._block_start
        if not 0 <= i < _BLOCK:
            self._fill_blocks(k - k % _BLOCK)
            i = k % _BLOCK
        groups = self.optimizer.param_groups
        if len(groups) != len(self._blocks):
            raise RuntimeError(
                f"The optimizer now has {len(groups)} param groups; this Scheduler was built for "
                f"{len(self._blocks)}. Build a new Scheduler after add_param_group()."
            )
        last: list[Any] = []
        dst: dict[int, torch.Tensor] = {}  # by id: groups sharing one tensor write it once
        src: list[torch.Tensor] = []
        for g, group in enumerate(groups):
            block = self._blocks[g]
            t = self._tensors[g]
            if block is None:
                value = self._get(group)
            elif t is None:
                value = block[i]
                if self._index is None:
                    group[self._key] = value
                else:
                    self._set(group, value)
            else:
                if self._get(group) is not t:  # e.g. optimizer.load_state_dict replaced it
                    self._set(group, t)
                if id(t) not in dst:
                    dst[id(t)] = t
                    src.append(block[i])
                value = t
            last.append(value)
        if dst:  # one in-place copy for all groups, on device, no host sync
            with torch.no_grad():  # also into a tensor LR that requires grad
                torch._foreach_copy_(list(dst.values()), src)
        self._last_lr = last

    def __repr__(self) -> str:
        return (
            f"Scheduler(step={self._step}, param={self.param!r}, relative={self.relative}, "
            f"tensor={self.tensor}, schedules={self.schedules!r})"
        )

    # Pickling (deepcopy) drops optimizer hooks, so the copy registers its own on its optimizer.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_counter"], state["_hook"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._counter = _UpdateCounter()
        self._hook = _innermost(self.optimizer).register_step_post_hook(_make_hook(self._counter))
        self._seen = 0


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else f"{text[: limit - 40]}... ({len(text)} characters)"


# -- argument checks ----------------------------------------------------------------------------
def _parse_param(param: Any, groups: list[dict[str, Any]]) -> tuple[str, int | None]:
    if not isinstance(param, str):
        raise TypeError(f"Argument `param` must be a string. Received: param={param!r}")
    m = _PARAM.match(param)
    if m is None:
        raise ValueError(
            'Argument `param` must be a param-group key such as "lr" or "momentum", or an '
            f'element of one such as "betas[0]". Received: param={param!r}'
        )
    key, index = m.group(1), None if m.group(2) is None else int(m.group(2))
    for i, group in enumerate(groups):
        if key not in group:
            keys = ", ".join(repr(k) for k in group if k != "params")
            raise ValueError(
                f"Argument `param` must be a key of every param group; param_groups[{i}] "
                f"has no {key!r}. Its keys: {keys}. Received: param={param!r}"
            )
        value = group[key]
        if index is None and isinstance(value, (tuple, list)):
            raise ValueError(
                f"Argument `param` names a tuple ({key}={tuple(value)!r}): pick an element, "
                f"e.g. param={key + '[0]'!r}. Received: param={param!r}"
            )
        if index is not None and not (isinstance(value, (tuple, list)) and index < len(value)):
            raise ValueError(
                f"Argument `param` indexes {key!r}, but param_groups[{i}][{key!r}] is "
                f"{value!r}. Received: param={param!r}"
            )
    return key, index


def _per_group(schedule: Any, groups: list[dict[str, Any]]) -> list[Schedule | None]:
    n = len(groups)
    if isinstance(schedule, Schedule):
        return [schedule] * n
    if isinstance(schedule, Mapping):
        names = [g.get("name") for g in groups]
        unnamed = [i for i, name in enumerate(names) if name is None]
        if unnamed:
            raise ValueError(
                "Argument `schedule` is a mapping by group name, but param_groups"
                f"[{unnamed[0]}] has no 'name' key. Name every group, e.g. "
                "{'params': ..., 'name': 'head'}, or pass a list."
            )
        missing = [name for name in names if name not in schedule]
        extra = [key for key in schedule if key not in names]
        if missing or extra:
            raise ValueError(
                f"Argument `schedule` must map every group name to a schedule (or None). Group "
                f"names: {names}; missing: {missing}; unknown: {extra}."
            )
        out = [schedule[name] for name in names]
        where = [f"[{name!r}]" for name in names]
    elif isinstance(schedule, Sequence) and not isinstance(schedule, str):
        if len(schedule) != n:
            raise ValueError(
                f"Argument `schedule` must have one entry per param group ({n}). "
                f"Received: {len(schedule)} schedules"
            )
        out = list(schedule)
        where = [f"[{i}]" for i in range(n)]
    else:
        raise TypeError(
            "Argument `schedule` must be a steadystep Schedule, a list of them (one per param "
            f"group) or a mapping by group name. Received: schedule={schedule!r}"
        )
    for s, w in zip(out, where, strict=True):
        if s is not None and not isinstance(s, Schedule):
            raise TypeError(f"Argument `schedule{w}` must be a Schedule or None. Received: {s!r}")
    return out


def _as_float(value: Any, where: str) -> float:
    if isinstance(value, torch.Tensor):
        _check_tensor(value, where)
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where} must be a number. Received: {value!r}")
    return float(value)


def _check_tensor(value: torch.Tensor, where: str) -> None:
    if value.numel() != 1 or not value.is_floating_point():
        raise TypeError(
            f"{where} must be a number or a 1-element floating tensor. Received: a "
            f"{value.dtype} tensor of shape {tuple(value.shape)}"
        )


def _check_bases(bases: Sequence[Any], schedules: list[Schedule | None], name: str) -> list[float]:
    """The multipliers' bases of ``relative=True``: finite, and not 0 where a group is scheduled."""
    out = [_as_float(b, f"{name}[{i}]") for i, b in enumerate(bases)]
    for i, (b, s) in enumerate(zip(out, schedules, strict=True)):
        if s is not None and not (math.isfinite(b) and b != 0):
            raise ValueError(
                "relative=True multiplies each scheduled group's initial value by the schedule, "
                f"but {name}[{i}] is {b}: every value would be {'0' if b == 0 else b}. Give that "
                "group the schedule None to leave it alone, or use relative=False."
            )
    return out


def _check_step(step: Any, name: str) -> int:
    if isinstance(step, float) and math.isfinite(step) and step == int(step):
        step = int(step)  # a JSON round trip may turn 12 into 12.0
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise ValueError(
            f"`{name}` must be a whole number of updates >= 0. Received: {name}={step!r}"
        )
    if step < 0:
        raise ValueError(f"`{name}` must be >= 0. Received: {name}={step!r}")
    if step > _MAX_STEP:  # past 2**53 a float64 step no longer counts single updates
        raise ValueError(f"`{name}` must be <= 2**53. Received: {name}={step!r}")
    return int(step)


# -- schedules from configs ---------------------------------------------------------------------
def _from_config(schedule: Any, total_steps: int | None) -> Any:
    """Spec text and spec dicts become schedules (per group too); fractions resolve."""
    from ..schedules import Unresolved

    def one(value: Any, where: str) -> Any:
        if isinstance(value, str) or (isinstance(value, Mapping) and "type" in value):
            try:
                value = parse(value)
            except SpecError:
                raise  # shows the spec and where it is wrong
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"Argument `schedule{where}`: {exc}") from None
        if isinstance(value, Unresolved):
            if total_steps is None:
                raise ValueError(
                    f"Argument `total_steps` is needed: `schedule{where}` gives lengths as "
                    f"fractions of the run ({value!r}). Pass total_steps=N, the run's number of "
                    "optimizer updates."
                )
            return value.resolve(total_steps)
        return value

    if isinstance(schedule, Mapping) and "type" not in schedule:
        return {k: one(v, f"[{k!r}]") for k, v in schedule.items()}
    if isinstance(schedule, Sequence) and not isinstance(schedule, str):
        return [one(v, f"[{i}]") for i, v in enumerate(schedule)]
    return one(schedule, "")
