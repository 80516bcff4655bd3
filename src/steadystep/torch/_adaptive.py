"""Stateful adaptive clippers for PyTorch: AGC, AutoClip, ZClip and SpikeSkip.

Each is built from the parameters and the rule's hyperparameters; ``clip()``
clips the gradients in place and returns the norm before clipping (fp32, 0-dim),
``last`` holds the :class:`~steadystep.torch.ClipResult` of the latest call, and
``state_dict()`` / ``load_state_dict()`` resume exactly (plain Python values and
tensors, loadable with ``torch.load(weights_only=True)``). The rules' maths is
``steadystep.clip`` (shared with the JAX adapters); statistics stay on the
gradients' device, so no clipper syncs per step on GPU (except ``nonfinite="raise"``
and skipping with a non-fused optimizer, as documented on ``clip_grad_norm_``).
``AutoClip``, ``ZClip`` and ``SpikeSkip`` take ``fold=True`` with a fused ``optimizer``,
as ``clip_grad_norm_`` does: the next step applies the coefficient. Distributed, every
clipper takes ``process_group`` (a group, or ``(parameters, group)`` pairs) and ``agree``
as ``clip_grad_norm_`` does, DTensor gradients, and an FSDP1 model as ``params``; the
agreed norm makes their statistics and decisions the same on every rank.
``observe(norm)`` feeds a norm computed elsewhere (DeepSpeed's) to the statistics.

References:
    Brock et al. (2021) https://arxiv.org/abs/2102.06171 (AGC);
    Seetharaman et al. (2020) https://arxiv.org/abs/2007.14469 (AutoClip);
    Kumar et al. (2025) https://arxiv.org/abs/2504.02507 (ZClip);
    Team OLMo (2024) https://arxiv.org/abs/2501.00656 (skipping spikes).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from steadystep import _check as check
from steadystep.clip import _rules

from . import _distributed as _dist
from ._clip import (
    ClipResult,
    GradSet,
    as_parameters,
    check_fold,
    check_max_norm,
    check_nonfinite,
    clip_with_threshold,
    grad_set,
    restamp,
)
from ._contiguous import GradBuffer

__all__ = ["AGC", "AutoClip", "SpikeSkip", "ZClip"]

#: constructor arguments that are settings of this run, not state: kept when loading a state
_SHARED = ("norm_type", "nonfinite", "optimizer", "process_group", "agree", "fold")


class _Clipper:
    """Shared plumbing: parameters, norm, non-finite policy, report, state."""

    _hyper: tuple[str, ...] = ()

    def __init__(
        self,
        params: Tensor | Iterable[Tensor],
        *,
        norm_type: float | str = 2.0,
        nonfinite: str = "propagate",
        optimizer: torch.optim.Optimizer | None = None,
        process_group: Any = None,
        agree: Any = True,
        fold: bool = False,
    ) -> None:
        params, process_group = _dist.fsdp1_model(params, process_group)
        self.params = as_parameters(params)
        # a GradBuffer is kept as given: norms then read its flat buffers
        self._source: Any = params if isinstance(params, GradBuffer) else self.params
        self.norm_type = check.norm_type(norm_type)
        self.nonfinite = check_nonfinite(nonfinite)
        self.optimizer = optimizer
        self.process_group = process_group
        self.agree = _dist.check_agree(agree)
        self.fold = check_fold(fold, optimizer)
        self.last: ClipResult | None = None
        self._observed: Tensor | None = None
        self.device = self.params[0].device if self.params else torch.device("cpu")
        self._like = torch.zeros((), device=self.device)

    def _norm(self) -> tuple[GradSet, Tensor]:
        if self._observed is not None:  # observe(): a norm from elsewhere, no gradient
            gs = GradSet([])
            gs.empty = False
            return gs, self._observed
        gs = grad_set(self._source)
        return gs, gs.norm(self.norm_type, process_group=self.process_group, agree=self.agree)

    @torch.no_grad()
    def observe(self, norm: float | Tensor) -> ClipResult:
        """Record a global gradient norm computed elsewhere, as :meth:`clip` would; no
        gradient is read or changed, no optimizer step is armed.

        For DeepSpeed, which clips its own (partitioned) gradients: feed
        ``engine.get_global_grad_norm()`` after ``engine.step()`` and apply the returned
        ``threshold`` to the next step (``engine.optimizer.clip_grad``). Returns the
        :class:`ClipResult` the rule gives for ``norm`` (also in ``last``).

        Examples:
            >>> import torch
            >>> clipper = AutoClip([torch.nn.Parameter(torch.zeros(1))], percentile=50.0)
            >>> for norm in [1.0, 3.0, 2.0]:
            ...     res = clipper.observe(norm)
            >>> float(res.threshold)
            2.0
        """
        if isinstance(norm, Tensor):
            if norm.numel() != 1:
                raise ValueError(
                    "Argument `norm` must be a number or a one-element tensor. "
                    f"Received: norm of shape {tuple(norm.shape)}"
                )
            total = norm.detach().to(device=self.device, dtype=torch.float32).reshape(())
        else:
            value = float(check._real("norm", norm))  # inf / NaN allowed: a non-finite step
            total = torch.full((), value, dtype=torch.float32, device=self.device)
        saved = self.optimizer, self.fold
        self._observed, self.optimizer, self.fold = total, None, False
        try:
            self.clip()
        finally:
            self._observed, (self.optimizer, self.fold) = None, saved
        assert self.last is not None
        return self.last

    def _finish(self, result: ClipResult) -> Tensor:
        restamp(self.optimizer)  # after this clip's own scaling (AGC's unit-wise pass too)
        self.last = result
        return result.norm

    def _no_gradients(self, total: Tensor) -> Tensor:
        """Report a call that found no gradient at all, leaving the statistics as they are.

        That is no training step (e.g. an earlier clipper dropped every gradient to skip
        it); feeding its norm of 0 to the history would bias the threshold.
        """
        one = torch.ones((), dtype=torch.float32, device=total.device)
        no = torch.zeros((), dtype=torch.bool, device=total.device)
        return self._finish(ClipResult(total.float(), one * math.inf, one, no, no))

    def _clip_to(
        self, gs: GradSet, total: Tensor, threshold: float | Tensor, skip: Tensor | None = None
    ) -> Tensor:
        """Clip ``gs`` to ``threshold`` (see ``clip_grad_norm_``); return the pre-clip norm."""
        result = clip_with_threshold(
            gs,
            total,
            threshold,
            nonfinite=self.nonfinite,
            optimizer=self.optimizer,
            extra_skip=skip,
            fold=self.fold,
        )
        return self._finish(result)

    def _tensors(self) -> dict[str, Tensor]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Hyperparameters (JSON-safe) and statistics (CPU tensors)."""
        state: dict[str, Any] = {name: getattr(self, name) for name in self._hyper}
        state.update({k: v.detach().cpu().clone() for k, v in self._tensors().items()})
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; statistics move to the parameters' device.

        All or nothing: the hyperparameters go through the constructor's checks and every
        statistic must have the shape and kind this clipper keeps, else a ``ValueError`` or
        ``TypeError`` says which entry is wrong and the clipper is left unchanged.
        """
        name = type(self).__name__
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"Argument `state_dict` must be a dict from {name}.state_dict(). "
                f"Received: {type(state_dict).__name__}"
            )
        expected = {*self._hyper, *self._tensors()}
        if set(state_dict) != expected:
            raise ValueError(
                f"{name} state_dict must have the keys {sorted(expected)}. "
                f"Missing: {sorted(expected - set(state_dict), key=str)}; "
                f"unknown: {sorted(set(state_dict) - expected, key=str)}"
            )
        hyper = {k: state_dict[k] for k in self._hyper}
        for key, value in hyper.items():
            if isinstance(value, Tensor):
                raise TypeError(f"state_dict[{key!r}] must be a plain value. Received a tensor")
        accepted = inspect.signature(type(self).__init__).parameters
        shared = {k: getattr(self, k) for k in _SHARED if k in accepted}
        fresh = type(self)(self._source, **hyper, **shared)  # validates the hyperparameters
        loaded = {}
        for key, like in fresh._tensors().items():
            value = state_dict[key]
            if (
                not isinstance(value, Tensor)
                or value.shape != like.shape
                or value.is_floating_point() != like.is_floating_point()
            ):
                raise ValueError(
                    f"state_dict[{key!r}] must be a {like.dtype} tensor of shape "
                    f"{tuple(like.shape)}. Received: {value!r}"
                )
            bad = ~torch.isfinite(value) if value.is_floating_point() else value < 0
            if bool(bad.any()):
                kind = "finite" if value.is_floating_point() else ">= 0"
                raise ValueError(f"state_dict[{key!r}] must be {kind}. Received: {value!r}")
            loaded[key] = value.to(device=self.device, dtype=like.dtype)
        fresh._load_tensors(loaded)
        fresh.last = self.last
        self.__dict__.update(fresh.__dict__)

    def _load_tensors(self, tensors: dict[str, Tensor]) -> None:  # pragma: no cover
        pass

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._hyper)
        return f"{type(self).__name__}({len(self.params)} parameters, {args})"


class AGC(_Clipper):
    """Adaptive gradient clipping, unit-wise (Brock et al. 2021).

    For each output unit ``i`` of each parameter (PyTorch layout: dim 0 is the output):
    ``G_i <- G_i * clipping * max(||W_i||, eps) / ||G_i||`` when that shrinks it.
    Defaults as the paper and timm: ``clipping=0.01``, ``eps=1e-3``. The paper leaves
    the final classifier unclipped: pass only the parameters to clip.

    ``last.coefficient`` is the smallest unit factor applied; ``last.threshold`` is inf.

    Examples:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.ones(2, 2))
        >>> w.grad = torch.tensor([[1.0, 0.0], [0.0, 0.001]])
        >>> agc = AGC([w], clipping=0.01)
        >>> round(float(agc.clip()), 4)
        1.0
        >>> w.grad  # row 0 clipped to 0.01 * ||W_0||, row 1 already small
        tensor([[0.0141, 0.0000],
                [0.0000, 0.0010]])
    """

    _hyper = ("clipping", "eps")

    def __init__(
        self,
        params: Tensor | Iterable[Tensor],
        clipping: float = 0.01,
        eps: float = 1e-3,
        *,
        nonfinite: str = "propagate",
        optimizer: torch.optim.Optimizer | None = None,
        process_group: Any = None,
        agree: Any = True,
    ) -> None:
        super().__init__(
            params,
            nonfinite=nonfinite,
            optimizer=optimizer,
            process_group=process_group,
            agree=agree,
        )
        _rules._check_agc(clipping, eps)
        self.clipping = float(clipping)
        self.eps = float(eps)

    def observe(self, norm: float | Tensor) -> ClipResult:
        """Not for AGC: its factors are unit-wise, from the gradients themselves."""
        raise TypeError(
            "AGC.observe() is not supported: AGC clips each unit from its own gradient and "
            "weight norms, which a global norm does not give; call clip()"
        )

    @torch.no_grad()
    def clip(self) -> Tensor:
        """Clip unit-wise in place; return the global L2 norm before clipping.

        DTensor gradients are clipped shard by shard; a unit split over a mesh dimension
        (a row under ``Shard(1)``, a sharded vector) has its squared sums all-reduced over it
        first (see ``_distributed.unit_norms``). ``last.coefficient`` is then the smallest
        factor among this rank's units.
        """
        # before any work: a refusal leaves the gradients, the statistics and the optimizer as
        # they were
        for p in as_parameters(self._source):
            if p.grad is not None and p.grad.layout != torch.strided:
                raise TypeError(
                    "AGC clips dense gradients only (unit norms of sparse ones are not "
                    "implemented): leave sparse parameters (nn.Embedding(sparse=True)) out of "
                    f"its params. Received: a {p.grad.layout} gradient of shape "
                    f"{tuple(p.grad.shape)}"
                )
        gs, total = self._norm()
        result = clip_with_threshold(
            gs, total, math.inf, nonfinite=self.nonfinite, optimizer=self.optimizer
        )
        smallest = torch.ones((), dtype=torch.float32, device=total.device)
        factors: list[tuple[Tensor, Tensor]] = []
        sharded: list[tuple[Tensor, Tensor]] = []
        # a GradBuffer built from a module follows its parameters: take today's
        for p in as_parameters(self._source):
            g = p.grad
            if g is None:
                continue
            if gs.dtensors and isinstance(g, _dist._dtensor_type()):
                sharded.append((g, p.detach()))
                continue
            factors.append(
                (g, _rules.agc_scale(g, p.detach(), clipping=self.clipping, eps=self.eps))
            )
        for (g, _), (g_norm, w_norm) in zip(sharded, _dist.unit_norms(sharded), strict=True):
            factor = _rules.agc_factor(g_norm, w_norm, clipping=self.clipping, eps=self.eps)
            factors.append((_dist.local_tensor(g), factor))
        for g, factor in factors:
            g.mul_(factor.to(g.dtype))
            if factor.numel():
                smallest = torch.minimum(smallest, factor.min().to(smallest.device))
        return self._finish(result._replace(coefficient=smallest, clipped=smallest < 1.0))


class AutoClip(_Clipper):
    """AutoClip (Seetharaman et al. 2020): clip to a percentile of past gradient norms.

    Each call records the norm, then clips to the ``percentile``-th percentile of the
    last ``history`` finite norms (the current one included, as in the paper).
    The paper's recommended ``percentile=10``; the history is bounded (default 1000).

    Examples:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.zeros(1))
        >>> clipper = AutoClip([w], percentile=50.0, history=4)
        >>> for g in [1.0, 3.0, 2.0]:
        ...     w.grad = torch.tensor([g])
        ...     norm = clipper.clip()
        >>> float(clipper.last.threshold), round(w.grad.item(), 4)
        (2.0, 2.0)
    """

    _hyper = ("percentile", "history")

    def __init__(
        self,
        params: Tensor | Iterable[Tensor],
        percentile: float = 10.0,
        history: int = 1000,
        *,
        norm_type: float | str = 2.0,
        nonfinite: str = "propagate",
        optimizer: torch.optim.Optimizer | None = None,
        process_group: Any = None,
        agree: Any = True,
        fold: bool = False,
    ) -> None:
        super().__init__(
            params,
            norm_type=norm_type,
            nonfinite=nonfinite,
            optimizer=optimizer,
            process_group=process_group,
            agree=agree,
            fold=fold,
        )
        if (
            not check.is_python_number(percentile)
            or not 0 < check.at_least("percentile", percentile, 0.0) <= 100
        ):
            raise ValueError(
                f"Argument `percentile` must be in (0, 100]. Received: percentile={percentile!r}"
            )
        self.percentile = float(percentile)
        self.history = check.integer("history", history, minimum=1, maximum=_rules.HISTORY_MAX)
        self._state = _rules.autoclip_init(self.history, like=self._like)

    def _tensors(self) -> dict[str, Tensor]:
        return {"values": self._state.values, "count": self._state.count}

    def _load_tensors(self, tensors: dict[str, Tensor]) -> None:
        self._state = _rules.NormHistory(tensors["values"], tensors["count"])

    @torch.no_grad()
    def clip(self) -> Tensor:
        """Record the norm, clip to the history's percentile; return the pre-clip norm."""
        gs, total = self._norm()
        if gs.empty:
            return self._no_gradients(total)
        self._state, threshold = _rules.autoclip_step(
            self._state, total, percentile=self.percentile
        )
        return self._clip_to(gs, total, threshold)


class ZClip(_Clipper):
    """ZClip (Kumar et al. 2025): z-score spike clipping against EMA norm statistics.

    See :func:`steadystep.clip.zclip_step` for the formulas. Defaults as the paper:
    ``alpha=0.97``, ``z_thresh=2.5``, 25 warm-up steps; ``max_norm`` optionally adds a
    fixed cap (also during warm-up).

    Examples:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.zeros(1))
        >>> z = ZClip([w], warmup_steps=3)
        >>> for g in [1.0, 1.1, 0.9, 10.0]:
        ...     w.grad = torch.tensor([g])
        ...     norm = z.clip()
        >>> bool(z.last.clipped), round(float(w.grad), 3)  # 1 + 2.5**2 * std / z
        (True, 1.005)
    """

    _hyper = (
        "alpha",
        "z_thresh",
        "warmup_steps",
        "mode",
        "clip_option",
        "clip_factor",
        "skip_update_on_spike",
        "max_norm",
    )

    def __init__(
        self,
        params: Tensor | Iterable[Tensor],
        alpha: float = 0.97,
        z_thresh: float = 2.5,
        warmup_steps: int = 25,
        *,
        mode: str = "zscore",
        clip_option: str = "adaptive_scaling",
        clip_factor: float = 1.0,
        skip_update_on_spike: bool = False,
        max_norm: float | None = None,
        norm_type: float | str = 2.0,
        nonfinite: str = "propagate",
        optimizer: torch.optim.Optimizer | None = None,
        process_group: Any = None,
        agree: Any = True,
        fold: bool = False,
    ) -> None:
        super().__init__(
            params,
            norm_type=norm_type,
            nonfinite=nonfinite,
            optimizer=optimizer,
            process_group=process_group,
            agree=agree,
            fold=fold,
        )
        self.alpha, self.z_thresh, self.warmup_steps = alpha, z_thresh, warmup_steps
        self.mode, self.clip_option, self.clip_factor = mode, clip_option, clip_factor
        self.skip_update_on_spike = bool(skip_update_on_spike)
        self.max_norm = None if max_norm is None else check.positive("max_norm", max_norm)
        self._state = _rules.zclip_init(like=self._like)
        _rules.zclip_step(self._state, self._like, **self._rule_args())  # validates arguments

    def _rule_args(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "z_thresh": self.z_thresh,
            "warmup_steps": self.warmup_steps,
            "mode": self.mode,
            "clip_option": self.clip_option,
            "clip_factor": self.clip_factor,
            "skip_update_on_spike": self.skip_update_on_spike,
        }

    def _tensors(self) -> dict[str, Tensor]:
        return {"mean": self._state.mean, "var": self._state.var, "count": self._state.count}

    def _load_tensors(self, tensors: dict[str, Tensor]) -> None:
        self._state = _rules.ZClipState(tensors["mean"], tensors["var"], tensors["count"])

    @torch.no_grad()
    def clip(self) -> Tensor:
        """Clip a spike to its ZClip threshold, update the statistics; return the pre-clip norm."""
        gs, total = self._norm()
        if gs.empty:
            return self._no_gradients(total)
        self._state, threshold = _rules.zclip_step(self._state, total, **self._rule_args())
        if self.max_norm is not None:
            threshold = torch.clamp(threshold, max=self.max_norm)
        return self._clip_to(gs, total, threshold)


class SpikeSkip(_Clipper):
    """Skip the update whose gradient norm is an outlier of its recent history (as OLMo).

    A spike is ``|norm - mean| > sigma * std`` over the previous ``window`` finite
    norms (tested once ``min_history`` were seen, default ``min(max(20, window // 2),
    window)``; an explicit one must be in ``[2, window]``),
    or a non-finite norm. A spike makes the next ``optimizer.step()`` change nothing
    (see ``clip_grad_norm_(nonfinite="skip")``: pass a fused optimizer to skip on GPU
    without a sync). ``max_norm`` optionally clips the other steps as
    ``clip_grad_norm_`` does.

    Examples:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.zeros(1))
        >>> opt = torch.optim.SGD([w], lr=1.0)
        >>> guard = SpikeSkip([w], window=8, min_history=3, optimizer=opt)
        >>> for g in [1.0, 1.1, 0.9, 1.0, 100.0]:
        ...     w.grad = torch.tensor([g])
        ...     norm = guard.clip()
        >>> bool(guard.last.skipped), w.grad
        (True, None)
    """

    _hyper = ("window", "sigma", "min_history", "max_norm")

    def __init__(
        self,
        params: Tensor | Iterable[Tensor],
        window: int = 128,
        sigma: float = 6.0,
        *,
        min_history: int | None = None,
        max_norm: float | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        norm_type: float | str = 2.0,
        process_group: Any = None,
        agree: Any = True,
        fold: bool = False,
    ) -> None:
        super().__init__(
            params,
            norm_type=norm_type,
            nonfinite="skip",
            optimizer=optimizer,
            process_group=process_group,
            agree=agree,
            fold=fold,
        )
        self.window = check.integer("window", window, minimum=2, maximum=_rules.HISTORY_MAX)
        self.sigma = check.positive("sigma", sigma)
        self.min_history = _rules.spike_min_history(self.window, min_history)
        self.max_norm = None if max_norm is None else float(check_max_norm(max_norm))
        self._state = _rules.spike_init(self.window, like=self._like)
        _rules.spike_step(self._state, self._like, sigma=self.sigma, min_history=self.min_history)

    def _tensors(self) -> dict[str, Tensor]:
        return {"values": self._state.values, "count": self._state.count}

    def _load_tensors(self, tensors: dict[str, Tensor]) -> None:
        self._state = _rules.NormHistory(tensors["values"], tensors["count"])

    @torch.no_grad()
    def clip(self) -> Tensor:
        """Flag a spike (skip the next step) and clip to ``max_norm``; return the norm."""
        gs, total = self._norm()
        if gs.empty:
            return self._no_gradients(total)
        self._state, spike = _rules.spike_step(
            self._state, total, sigma=self.sigma, min_history=self.min_history
        )
        threshold = math.inf if self.max_norm is None else self.max_norm
        return self._clip_to(gs, total, threshold, spike)
