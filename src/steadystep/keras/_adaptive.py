"""The adaptive clipping rules for a Keras 3 optimizer: their settings and the state they keep.

Each rule is a frozen, validated record of its hyperparameters, handed to
:func:`steadystep.keras.clipping` as ``rule=``. The optimizer keeps the rule's state in its own
variables (created in ``build``), so the rule works under JAX's stateless ``model.fit`` and is
saved by ``model.save`` with the rest of the optimizer. The maths is ``steadystep.clip``'s, the
same functions ``steadystep.torch`` and ``steadystep.jax`` call, so a Keras model and a plain
PyTorch twin clipped by the same rule take the same steps.

References: Brock et al. (2021) https://arxiv.org/abs/2102.06171 (AGC); Seetharaman et al.
(2020) https://arxiv.org/abs/2007.14469 (AutoClip); Kumar et al. (2025)
https://arxiv.org/abs/2504.02507 (ZClip); Team OLMo (2024) https://arxiv.org/abs/2501.00656
(skipping spikes).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from .. import _check as check
from ..clip import _rules as rules

__all__ = ["AGC", "AutoClip", "SpikeSkip", "ZClip"]

Array = Any
#: name -> (shape, dtype) of each state variable a rule keeps
StateSpec = dict[str, tuple[tuple[int, ...], str]]


class _Rule:
    """Shared parts: the state layout, one step of the rule, and the config."""

    skips: ClassVar[bool] = False  # a spike makes the whole step change nothing

    def state_spec(self) -> StateSpec:
        raise NotImplementedError

    def step(
        self, state: dict[str, Array], norm: Array
    ) -> tuple[dict[str, Array], Array | None, Array | None]:
        """The new state, the threshold for ``norm`` (``None``: no clip; an array, inf where
        nothing is enforced) and whether it is a spike (``None``: the rule never skips)."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {"class_name": type(self).__name__, "config": dataclasses.asdict(self)}  # type: ignore[call-overload]


def _set(rule: Any, name: str, value: Any) -> None:
    object.__setattr__(rule, name, value)


@dataclasses.dataclass(frozen=True)
class AGC(_Rule):
    """Adaptive gradient clipping, unit-wise: ``||G_i|| <= clipping * max(||W_i||, eps)``.

    ``output_axis`` is the weights' output-unit axis: ``-1`` for Keras kernels (``Dense`` is
    ``[in, out]``, ``Conv2D`` ``[h, w, in, out]``); vectors (biases, scales) are one unit.
    Defaults as the paper and timm. Stateless. See :func:`steadystep.clip.agc_scale`.

    Examples:
        >>> AGC(0.02)
        AGC(clipping=0.02, eps=0.001, output_axis=-1)
    """

    clipping: float = 0.01
    eps: float = 1e-3
    output_axis: int = -1

    def __post_init__(self) -> None:
        rules._check_agc(self.clipping, self.eps)
        _set(self, "clipping", float(self.clipping))
        _set(self, "eps", float(self.eps))
        if isinstance(self.output_axis, bool) or not isinstance(self.output_axis, int):
            raise TypeError(
                f"Argument `output_axis` must be an int. Received: output_axis={self.output_axis!r}"
            )

    def state_spec(self) -> StateSpec:
        return {}


@dataclasses.dataclass(frozen=True)
class AutoClip(_Rule):
    """AutoClip: clip to the ``percentile``-th percentile of the last ``history`` norms.

    The current norm is part of the history it is compared with (as the paper); non-finite
    norms never enter it. See :func:`steadystep.clip.autoclip_step`.

    Examples:
        >>> AutoClip(percentile=25, history=500)
        AutoClip(percentile=25.0, history=500)
    """

    percentile: float = 10.0
    history: int = 1000

    def __post_init__(self) -> None:
        _set(self, "history", rules.history_init(self.history).values.shape[0])
        rules.autoclip_step(rules.autoclip_init(1), np.float32(1.0), percentile=self.percentile)
        _set(self, "percentile", float(self.percentile))

    def state_spec(self) -> StateSpec:
        return {"history": ((self.history,), "float32"), "count": ((), "int32")}

    def step(
        self, state: dict[str, Array], norm: Array
    ) -> tuple[dict[str, Array], Array | None, Array | None]:
        h, threshold = rules.autoclip_step(
            rules.NormHistory(state["history"], state["count"]), norm, percentile=self.percentile
        )
        return {"history": h.values, "count": h.count}, threshold, None


@dataclasses.dataclass(frozen=True)
class ZClip(_Rule):
    """ZClip: pull a norm that is a z-score outlier of its EMA statistics back.

    The first ``warmup_steps`` finite norms only gather statistics. Arguments as
    :func:`steadystep.clip.zclip_step` (and ``steadystep.torch.ZClip``).

    Examples:
        >>> ZClip(warmup_steps=10).warmup_steps
        10
    """

    alpha: float = 0.97
    z_thresh: float = 2.5
    warmup_steps: int = 25
    mode: str = "zscore"
    clip_option: str = "adaptive_scaling"
    clip_factor: float = 1.0
    skip_update_on_spike: bool = False

    def __post_init__(self) -> None:
        _set(
            self,
            "skip_update_on_spike",
            check.flag("skip_update_on_spike", self.skip_update_on_spike),
        )
        rules.zclip_step(rules.zclip_init(), np.float32(1.0), **self._options())
        for name in ("alpha", "z_thresh", "clip_factor"):
            _set(self, name, float(getattr(self, name)))

    def _options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def state_spec(self) -> StateSpec:
        return {"mean": ((), "float32"), "var": ((), "float32"), "count": ((), "int32")}

    def step(
        self, state: dict[str, Array], norm: Array
    ) -> tuple[dict[str, Array], Array | None, Array | None]:
        s, threshold = rules.zclip_step(
            rules.ZClipState(state["mean"], state["var"], state["count"]), norm, **self._options()
        )
        return {"mean": s.mean, "var": s.var, "count": s.count}, threshold, None


@dataclasses.dataclass(frozen=True)
class SpikeSkip(_Rule):
    """Skip the step whose gradient norm is an outlier of the last ``window`` norms (as OLMo).

    A spike is ``|norm - mean| > sigma * std`` once ``min_history`` norms were seen (default
    ``min(max(20, window // 2), window)``), or a non-finite norm; the spike's norm still enters
    the history when finite. See :func:`steadystep.clip.spike_step`.

    Examples:
        >>> SpikeSkip(window=64).min_history
        32
    """

    window: int = 128
    sigma: float = 6.0
    min_history: int | None = None
    skips: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _set(
            self,
            "window",
            check.integer("window", self.window, minimum=2, maximum=rules.HISTORY_MAX),
        )
        _set(self, "sigma", check.positive("sigma", self.sigma))
        _set(self, "min_history", rules.spike_min_history(self.window, self.min_history))

    def state_spec(self) -> StateSpec:
        return {"history": ((self.window,), "float32"), "count": ((), "int32")}

    def step(
        self, state: dict[str, Array], norm: Array
    ) -> tuple[dict[str, Array], Array | None, Array | None]:
        h, spike = rules.spike_step(
            rules.NormHistory(state["history"], state["count"]),
            norm,
            sigma=self.sigma,
            min_history=self.min_history,
        )
        return {"history": h.values, "count": h.count}, None, spike


RULES: dict[str, type[_Rule]] = {r.__name__: r for r in (AGC, AutoClip, ZClip, SpikeSkip)}


def check_rule(rule: Any) -> _Rule | None:
    """``rule`` is None or one of the four rules."""
    if rule is None or isinstance(rule, _Rule):
        return rule
    raise TypeError(
        "Argument `rule` must be steadystep.keras.AGC, AutoClip, ZClip or SpikeSkip (or None). "
        f"Received: rule={rule!r}"
    )


def rule_from_config(config: Any) -> _Rule | None:
    """The rule :meth:`_Rule.get_config` described."""
    if config is None:
        return None
    if not isinstance(config, dict) or config.get("class_name") not in RULES:
        raise ValueError(
            f"Argument `rule` must be the config of one of {sorted(RULES)}. "
            f"Received: rule={config!r}"
        )
    cls, settings = RULES[config["class_name"]], config.get("config", {})
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if not isinstance(settings, dict) or not set(settings) <= names:
        raise ValueError(
            f"Argument `rule` has settings {cls.__name__} does not take (it takes "
            f"{sorted(names)}). Received: rule={config!r}"
        )
    return cls(**settings)
