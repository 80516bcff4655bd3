"""The clipping rule a trainer adapter applies each step: a max norm, or an adaptive clipper."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .. import _check as check
from ..torch import AGC, AutoClip, ClipResult, SpikeSkip, ZClip, clip_grad_norm_

#: adaptive clippers by the names a config file can use
CLIPPERS: dict[str, Callable[..., Any]] = {
    "agc": AGC,
    "autoclip": AutoClip,
    "zclip": ZClip,
    "spike_skip": SpikeSkip,
}


class ClipRule:
    """Clip the gradients of ``params`` each step with ``clip``, and keep what it did.

    ``clip``: a max norm (``clip_grad_norm_``), an adaptive clipper's name (``"zclip"``,
    ``"autoclip"``, ``"agc"``, ``"spike_skip"``; its settings in ``options``) or a callable
    ``params -> clipper`` (a clipper class or a ``functools.partial`` of one).
    """

    def __init__(
        self,
        clip: float | str | Callable[..., Any],
        options: Mapping[str, Any] | None = None,
        *,
        norm_type: float | str = 2.0,
        nonfinite: str = "propagate",
        name: str = "clip",
    ) -> None:
        options = dict(options or {})
        self.clipper: Any = None
        self.max_norm: float | None = None
        self.factory: Callable[..., Any] | None = None
        self.norm_type = check.norm_type(norm_type)
        self.nonfinite = check.choice("nonfinite", nonfinite, ("propagate", "raise", "skip"))
        if isinstance(clip, str):
            check.choice(name, clip, CLIPPERS)
            cls = CLIPPERS[clip]
            options.setdefault("norm_type", self.norm_type)
            options.setdefault("nonfinite", self.nonfinite)
            self.factory = lambda params, optimizer: cls(params, optimizer=optimizer, **options)
        elif callable(clip):
            if options:
                raise ValueError(
                    f"Argument `{name}_options` applies to a clipper named by a string. "
                    f"Received: {name}={clip!r}, {name}_options={options!r}"
                )
            self.factory = lambda params, optimizer: clip(params)
        elif check.is_python_number(clip):
            self.max_norm = check.positive(name, clip)
            if options:
                raise ValueError(
                    f"Argument `{name}_options` applies to a clipper named by a string. "
                    f"Received: {name}={clip!r}, {name}_options={options!r}"
                )
        else:
            raise TypeError(
                f"Argument `{name}` must be a max norm (a number > 0), a clipper name "
                f"({', '.join(CLIPPERS)}) or a callable params -> clipper. "
                f"Received: {name}={clip!r} of type {type(clip).__name__}"
            )
        self.params: list[torch.Tensor] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending: Mapping[str, Any] | None = None

    def bind(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip the parameters of ``optimizer`` (built on first use of a new optimizer)."""
        if optimizer is self.optimizer:
            return
        self.optimizer = optimizer
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        if self.factory is not None:
            self.clipper = self.factory(self.params, optimizer)
            if not callable(getattr(self.clipper, "clip", None)):
                raise TypeError(
                    "The clipper factory must return a clipper with clip() (e.g. "
                    f"steadystep.torch.ZClip). Received: {self.clipper!r}"
                )
            if self._pending is not None:
                self.clipper.load_state_dict(self._pending)
                self._pending = None

    def __call__(self) -> ClipResult:
        if self.clipper is None:
            assert self.max_norm is not None
            result = clip_grad_norm_(
                self.params,
                self.max_norm,
                self.norm_type,
                nonfinite=self.nonfinite,  # type: ignore[arg-type]
                optimizer=self.optimizer,
                return_result=True,
            )
            assert isinstance(result, ClipResult)
            return result
        self.clipper.clip()
        last: ClipResult = self.clipper.last
        return last

    def state_dict(self) -> dict[str, Any]:
        """The adaptive clipper's statistics (empty for a max norm)."""
        if self.clipper is not None:
            return {"clipper": self.clipper.state_dict()}
        return {"clipper": self._pending} if self._pending is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = state.get("clipper")
        if saved is None:
            return
        if self.factory is None:
            raise ValueError(
                "The checkpoint holds an adaptive clipper's statistics, but this run clips to a "
                f"max norm ({self.max_norm!r}); configure the same clipper to resume."
            )
        if self.clipper is None:
            self._pending = saved  # loaded when the optimizer is known
        else:
            self.clipper.load_state_dict(saved)
