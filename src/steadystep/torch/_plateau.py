"""The metric side of :class:`steadystep.torch.Scheduler`: ``step(metric)`` and its state.

A scheduler whose schedules contain a :func:`steadystep.plateau` owns one controller (the
plateau options must agree across groups); each group keeps its own count of applied
reductions, since torch's ``min_lr`` and ``eps`` rules act per group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..schedules import Plateau, PlateauState, Schedule
from ..schedules._plateau import (
    RULE_FIELDS,
    apply_reduction,
    find_plateau,
    metric_value,
    with_reductions,
)

__all__ = ["MetricFeed"]


class MetricFeed:
    """The controller state of one scheduler: the shared rule and the per-group reductions."""

    def __init__(self, schedules: list[Schedule | None], process_group: Any = None) -> None:
        found = [None if s is None else find_plateau(s) for s in schedules]
        plateaus = [(i, p) for i, p in enumerate(found) if p is not None]
        self.process_group = process_group
        self.rule: Plateau | None = plateaus[0][1] if plateaus else None
        for i, p in plateaus:
            if self.rule is not None and p.rule() != self.rule.rule():
                mine = dict(zip(RULE_FIELDS, p.rule(), strict=True))
                first = dict(zip(RULE_FIELDS, self.rule.rule(), strict=True))
                raise ValueError(
                    "Every group's plateau must share one rule (one metric decides for all): "
                    f"group {plateaus[0][0]} has {first}, group {i} has {mine}. (factor, "
                    "min_lr and eps may differ per group.)"
                )
        self.state: PlateauState | None = None if self.rule is None else self.rule.initial_state()
        self.reductions: list[int | None] = [None if p is None else p.reductions for p in found]

    def feed(
        self, metric: Any, live: list[Schedule | None], step: int, scales: list[float] | None
    ) -> list[Schedule | None]:
        """Feed one metric; returns the groups' schedules with any reduction applied."""
        self.check_fed(metric)
        assert self.rule is not None and self.state is not None
        value = self._reduce(metric)
        self.state, reduce = self.rule.update(self.state, value)
        if not reduce:
            return live
        out = list(live)
        for g, s in enumerate(live):
            if s is not None and self.reductions[g] is not None:
                out[g] = apply_reduction(s, step, 1.0 if scales is None else scales[g])
                p = find_plateau(out[g])
                self.reductions[g] = None if p is None else p.reductions
        self.state = self.rule.settle(self.state, out != live)
        return out

    def _reduce(self, metric: Any) -> float:
        """The metric, averaged over ``process_group`` when one is given (one all-reduce)."""
        if self.process_group is None:
            return metric_value(metric)
        import torch.distributed as dist

        if isinstance(metric, torch.Tensor):
            t = metric.detach().reshape(()).to(torch.float64)
        else:
            device = "cpu"
            if dist.get_backend(self.process_group) == "nccl":
                device = f"cuda:{torch.cuda.current_device()}"
            t = torch.tensor(metric_value(metric), dtype=torch.float64, device=device)
        t = t.clone()
        dist.all_reduce(t, group=self.process_group)
        return float(t) / dist.get_world_size(self.process_group)

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any] | None:
        if self.rule is None or self.state is None:
            return None
        return {
            "rule": dict(zip(RULE_FIELDS, self.rule.rule(), strict=True)),
            "state": self.state.to_dict(),
            "reductions": list(self.reductions),
        }

    def check_fed(self, metric: Any) -> None:
        if self.rule is None:
            raise TypeError(
                "Scheduler.step() got a metric, but none of its schedules has a metric-driven "
                "part: wrap one in steadystep.plateau(...) to reduce on a plateau. (step() "
                "takes no step number either: it counts the optimizer's updates.) "
                f"Received: metric={metric!r}"
            )

    def parse(self, saved: Any, templates: list[Schedule | None], changed_ok: bool) -> Any:
        """Check :meth:`state_dict` output; :meth:`commit` the result (nothing changes here)."""
        if self.rule is None:
            if saved is not None:
                raise ValueError(
                    "The state dict holds a plateau (metric-driven) state, but this scheduler's "
                    "schedules have no plateau; build it with the saved schedules."
                )
            return None
        if not isinstance(saved, Mapping):
            raise ValueError(
                "This scheduler has a plateau, but the state dict holds no plateau state "
                f"(saved by a scheduler without one). Received: plateau={saved!r}"
            )
        rule = saved.get("rule")
        mine = dict(zip(RULE_FIELDS, self.rule.rule(), strict=True))
        if not isinstance(rule, Mapping) or (
            dict(rule) != mine and not (changed_ok and rule.get("mode") == mine["mode"])
        ):
            raise ValueError(
                f"The state dict's plateau state was saved by a different controller: saved "
                f"rule {rule!r}, this one {mine}. (schedule_changed_ok=True accepts a new rule "
                "with the same mode.)"
            )
        state = PlateauState.from_dict(saved.get("state"), 'state_dict["plateau"]["state"]')
        counts = saved.get("reductions")
        if not isinstance(counts, list) or len(counts) != len(templates):
            raise ValueError(
                f'state_dict["plateau"]["reductions"] must be one entry per group. '
                f"Received: {counts!r}"
            )
        reductions: list[int | None] = []
        for g, (k, s) in enumerate(zip(counts, templates, strict=True)):
            has = s is not None and find_plateau(s) is not None
            if (k is None) == has:
                raise ValueError(
                    f'state_dict["plateau"]["reductions"][{g}]={k!r} does not match group {g}, '
                    f"which {'has' if has else 'has no'} plateau."
                )
            if k is not None:
                if isinstance(k, float) and k.is_integer():
                    k = int(k)
                if isinstance(k, bool) or not isinstance(k, int) or k < 0:
                    raise ValueError(
                        f'state_dict["plateau"]["reductions"][{g}] must be an int >= 0. '
                        f"Received: {k!r}"
                    )
            reductions.append(k)
        return state, reductions

    def commit(self, parsed: Any) -> None:
        if parsed is not None:
            self.state, self.reductions = parsed

    def live(self, templates: list[Schedule | None]) -> list[Schedule | None]:
        return [
            s if s is None or k is None else with_reductions(s, k)
            for s, k in zip(templates, self.reductions, strict=True)
        ]
