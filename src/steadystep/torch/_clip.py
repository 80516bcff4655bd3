"""In-place gradient clipping for PyTorch: exact, honest about non-finite norms, fast.

``clip_grad_norm_`` gives the same numbers as ``torch.nn.utils.clip_grad_norm_``
(``coef = min(1, max_norm / (norm + 1e-6))``, the norm of the per-tensor norms)
and adds: an fp32 norm whatever the gradient dtype, an explicit non-finite
policy, skipping of the next optimizer step, contiguous-buffer detection, the
multiply-by-1 pass elided on CPU, distributed norms and a no-sync report.
torch's ``torch/nn/utils/clip_grad.py`` and ``torch/optim/adam.py`` (its
``found_inf`` handling) and ``torch/amp/grad_scaler.py`` were read to match their
behaviour; no code was copied.

References:
    Pascanu, Mikolov, Bengio (2013). On the difficulty of training recurrent
    neural networks. ICML. https://arxiv.org/abs/1211.5063
"""

from __future__ import annotations

import functools
import math
import operator
import weakref
from collections.abc import Iterable
from typing import Any, Literal, NamedTuple, overload

import torch
from torch import Tensor

from steadystep import _check as check

from . import _distributed as _dist
from ._contiguous import GradBuffer, flat_plan

__all__ = ["ClipResult", "clip_grad_norm_", "clip_grad_value_"]

Nonfinite = Literal["propagate", "raise", "skip"]
_NONFINITE = ("propagate", "raise", "skip")
_EPS = 1e-6  # torch's clip_grad_norm_ adds the same to the norm in the coefficient


class ClipResult(NamedTuple):
    """What one clipping call did, as device tensors (reading them is the only sync).

    Attributes:
        norm: total gradient norm before clipping (fp32, 0-dim).
        threshold: the largest norm allowed (``inf`` when nothing is enforced).
        coefficient: factor applied to the gradients (1 when not clipped).
        clipped: bool, ``coefficient < 1``.
        skipped: bool, the next optimizer step is skipped (non-finite norm or spike).
    """

    norm: Tensor
    threshold: Tensor
    coefficient: Tensor
    clipped: Tensor
    skipped: Tensor


# ------------------------------------------------------------------ arguments


def as_parameters(parameters: Any) -> list[Tensor]:
    """List of distinct tensors from a tensor, an iterable of tensors, param groups or a
    :class:`GradBuffer`."""
    if isinstance(parameters, Tensor):
        return [parameters]
    if isinstance(parameters, GradBuffer):  # all it was built from, frozen ones included
        return list(parameters._given)
    if isinstance(parameters, (str, bytes, dict)) or not isinstance(parameters, Iterable):
        raise TypeError(
            "Argument `parameters` must be a tensor or an iterable of tensors (e.g. "
            f"model.parameters()). Received: parameters={parameters!r}"
        )
    params: list[Any] = list(parameters)
    # type checks per distinct type, not per element: 20,000 tensors cost ~nothing
    if not all(issubclass(kind, Tensor) for kind in set(map(type, params))):
        flat: list[Any] = []
        for item in params:
            if isinstance(item, dict) and "params" in item:  # optimizer.param_groups
                flat.extend(as_parameters(item["params"]))
            elif isinstance(item, Tensor):
                flat.append(item)
            else:
                raise TypeError(
                    "Argument `parameters` must hold tensors. Received: an element of type "
                    f"{type(item).__name__}"
                )
        params = flat
    if len(set(map(id, params))) != len(params):  # a parameter passed twice counts once
        params = list({id(p): p for p in params}.values())
    return params


_GRAD = operator.attrgetter("grad")
_LAYOUT = operator.attrgetter("layout")


def dense_grad(param: Tensor) -> Tensor | None:
    """``param.grad`` as a dense tensor that norms read and scaling changes in place.

    A sparse COO gradient (``nn.Embedding(sparse=True)``) is coalesced first, duplicate
    indices summed, and put back as ``param.grad`` (the same gradient); its values tensor,
    which aliases it, stands for it. Other layouts are refused."""
    g = param.grad
    if g is None or g.layout == torch.strided:
        return g
    if g.layout != torch.sparse_coo:
        raise TypeError(
            "Argument `parameters` has a gradient with layout "
            f"{g.layout}: dense (strided) and sparse COO gradients can be clipped. "
            f"Received: a gradient of shape {tuple(g.shape)}"
        )
    if not g.is_coalesced():
        param.grad = g = g.coalesce()
    return g._values()


def collect_grads(params: list[Tensor]) -> list[Tensor]:
    """Gradients of ``params`` (those that have one; sparse ones as :func:`dense_grad`),
    refusing gradients passed as params."""
    grads: list[Tensor | None] = list(map(_GRAD, params))
    present = [g for g in grads if g is not None]
    if set(map(_LAYOUT, present)) - {torch.strided}:  # rare: sparse ones, read again
        grads = [dense_grad(p) for p in params]
        present = [g for g in grads if g is not None]
    if len(present) != len(grads):
        for i, p in enumerate(params):
            if grads[i] is None and not p.requires_grad and not isinstance(p, torch.nn.Parameter):
                raise TypeError(
                    "Argument `parameters` must hold the parameters (whose .grad is clipped), "
                    f"not gradients. Received: element {i} is a tensor of shape "
                    f"{tuple(p.shape)} that does not require grad and has no .grad; pass "
                    "model.parameters() instead of [p.grad for p in ...]"
                )
    return present


def check_nonfinite(nonfinite: Any) -> str:
    if nonfinite not in _NONFINITE:
        raise ValueError(
            "Argument `nonfinite` must be one of 'propagate', 'raise', 'skip'. "
            f"Received: nonfinite={nonfinite!r}"
        )
    return str(nonfinite)


def check_fold(fold: Any, optimizer: Any) -> bool:
    if not isinstance(fold, bool):
        raise TypeError(f"Argument `fold` must be True or False. Received: fold={fold!r}")
    if fold and optimizer is None:
        raise ValueError("Argument `fold=True` needs the `optimizer` whose step does the scaling")
    return fold


def check_max_norm(max_norm: Any) -> float | Tensor:
    """A float ``> 0``, or a one-element real tensor (returned 0-dim, detached).

    A tensor whose reading costs no device sync (on the CPU) is checked like a float.
    A tensor on an accelerator is not read: :func:`clip_with_threshold` treats a value
    that is not a finite number ``> 0`` as a non-finite norm, on device.
    """
    if isinstance(max_norm, Tensor):
        if max_norm.numel() != 1:
            raise ValueError(
                "Argument `max_norm` must be a number or a one-element tensor. "
                f"Received: max_norm of shape {tuple(max_norm.shape)}"
            )
        if max_norm.dtype == torch.bool or max_norm.is_complex():
            raise TypeError(
                "Argument `max_norm` must be a real number or a real tensor. "
                f"Received: max_norm of dtype {max_norm.dtype}"
            )
        if max_norm.device.type == "meta":
            raise ValueError("Argument `max_norm` is a 'meta' tensor, which holds no value.")
        limit = max_norm.detach().reshape(())
        if limit.device.type == "cpu":
            check.positive("max_norm", limit.item())
        return limit
    return check.positive("max_norm", max_norm)


# ---------------------------------------------------------------------- norms


def _grouped(tensors: list[Tensor]) -> dict[tuple[torch.device, torch.dtype], list[Tensor]]:
    if not tensors:
        return {}
    try:
        from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

        raw = _group_tensors_by_device_and_dtype([tensors])  # type: ignore[list-item]
        return {key: lists[0] for key, (lists, _) in raw.items()}
    except ImportError:  # pragma: no cover - very old or very new torch
        out: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for t in tensors:
            out.setdefault((t.device, t.dtype), []).append(t)
        return out


def _foreach_ok(device: torch.device, foreach: bool | None) -> bool:
    from torch.utils._foreach_utils import _device_has_foreach_support

    supported = bool(_device_has_foreach_support(device))
    if foreach and not supported:
        raise RuntimeError(
            f"foreach=True was passed, but the foreach API does not support {device.type} tensors"
        )
    return supported if foreach is None else bool(foreach)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype | None:
    """Accumulation dtype override: fp32 for half types, None (unchanged) otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else None


class _LocalNorms(NamedTuple):
    norms: Tensor  # per-tensor norms, stacked
    dtype: torch.dtype  # the total's dtype
    host: bool  # every gradient on CPU (reading a value costs no device sync)


class GradSet:
    """Gradients of one clipping call, arranged for norm and scaling.

    Built by :func:`grad_set`; with ``buffer`` (the :class:`GradBuffer` of ``params``)
    its flat buffers stand for all the gradients, which are then not read.
    """

    def __init__(
        self,
        params: list[Tensor],
        duplicates: Iterable[Tensor] = (),
        *,
        contiguous: bool = True,
        buffer: GradBuffer | None = None,
    ) -> None:
        self.params = params
        self.buffer = buffer
        self.dtensors: list[Tensor] = []
        empty = isinstance(duplicates, (tuple, list)) and not duplicates
        self.duplicates: list[Tensor] = [] if empty else as_parameters(duplicates)
        self.duplicate_grads: list[Tensor] = []
        if buffer is not None:
            self.counted = list(buffer.buffers)
            self.empty = not buffer.has_grads
            self.device = self.counted[0].device if self.counted else None
            self._refuse_meta()
            return
        grads = collect_grads(params)
        plain, self.dtensors = _dist.split_dtensors(grads)
        dup_ids = {id(p) for p in self.duplicates}
        if dup_ids:
            dup_grads = [dense_grad(p) for p in params if id(p) in dup_ids]
            self.duplicate_grads = [g for g in dup_grads if g is not None]
            dup_grad_ids = {id(g) for g in self.duplicate_grads}
            plain = [g for g in plain if id(g) not in dup_grad_ids]
        if contiguous and len(plain) > 1:
            flats, others = flat_plan(plain)
            self.counted = flats + others
        else:
            self.counted = plain
        self.empty = not grads
        self.device = grads[0].device if grads else (params[0].device if params else None)
        self._refuse_meta()

    def _refuse_meta(self) -> None:
        if self.device is not None and self.device.type == "meta":
            raise ValueError(
                "Argument `parameters` has gradients on the 'meta' device, which hold no "
                "values to clip."
            )
        devices = {g.device for g in self.counted}
        if any(d.type == "meta" for d in devices):
            raise ValueError(
                "Argument `parameters` mixes 'meta' tensors (no values) with real ones. "
                f"Received devices: {sorted(str(d) for d in devices)}"
            )

    def drop(self) -> None:
        """Set every gradient to None (the skip path of a non-fused optimizer)."""
        if self.buffer is not None:
            self.buffer.drop_grads()
            return
        for p in self.params:
            p.grad = None

    def scaled_tensors(self) -> list[Tensor]:
        local = [_dist.local_tensor(g) for g in self.dtensors]
        if self.duplicate_grads:
            dup = self.duplicate_grads
            flats, others = flat_plan(dup) if len(dup) > 1 else ([], dup)
            return self.counted + flats + others + local
        return self.counted + local

    def norm(
        self,
        norm_type: float,
        *,
        foreach: bool | None = None,
        process_group: Any = None,
        agree: Any = True,
    ) -> Tensor:
        """Total norm in the accumulation dtype (fp32, or fp64 for fp64 grads).

        ``process_group`` and ``agree`` as in :func:`clip_grad_norm_` (see
        ``_distributed``'s rules). Exact where fp32 arithmetic would over- or underflow: see
        :func:`_tensor_norms` and :func:`_combined_norm`; the power sums that cross
        processes are float64 (``_distributed.sum_dtype``), exact unless ``norm ** p``
        leaves float64's range (only for a large ``norm_type``).
        """
        p = norm_type
        device = self.device if self.device is not None else torch.device("cpu")
        if process_group is None and _dist.is_distributed():
            _dist.refuse_fsdp1(self.params)
        stacked, dtype, host = self._local_norms(p, foreach, device)
        if not self.dtensors and process_group is None and isinstance(agree, bool):
            if not stacked.numel():
                return torch.zeros((), dtype=torch.float32, device=device)
            return _combined_norm(stacked, p, host=host).to(dtype)
        pairs = _dist.group_pairs(process_group)
        if pairs is None:
            parts = [(process_group, self._power(stacked, p), self.dtensors)]
        else:
            parts = [
                (group, sub._power(sub._local_norms(p, foreach, device).norms, p), sub.dtensors)
                for sub, group in self._split(pairs)
            ]
        total = _dist.global_power_sum(parts, p, device)
        group = _dist.agree_group(
            agree,
            [g.device_mesh for _, _, dtensors in parts for g in dtensors],
            communicated=any(group is not None or dts for group, _, dts in parts),
        )
        if group is not False:
            total = _dist.agree(total, group)
        if math.isinf(p) or p == 1.0:
            return total.to(dtype)
        return total.pow(1.0 / p).to(dtype)

    def _local_norms(self, p: float, foreach: bool | None, device: torch.device) -> _LocalNorms:
        """Per-tensor norms of the counted plain gradients, stacked on ``device``, with the
        result's dtype (fp32, or fp64 for fp64 gradients) and whether all of them are on CPU."""
        parts: list[Tensor] = []
        sources: list[Tensor] = []
        dtype = torch.float32
        on_cpu = True
        for (dev, kind), tensors in _grouped(self.counted).items():
            parts.extend(_tensor_norms(tensors, p, dev, kind, foreach))
            sources.extend(tensors)
            dtype = torch.promote_types(dtype, _acc_dtype(kind) or kind.to_real())
            on_cpu = on_cpu and dev.type == "cpu"
        if not parts:
            return _LocalNorms(torch.zeros(0, dtype=torch.float32, device=device), dtype, on_cpu)
        wide = parts[0].dtype
        for part in parts[1:]:
            wide = torch.promote_types(wide, part.dtype)
        stacked = torch.stack([t.to(device=device, dtype=wide) for t in parts])
        if on_cpu and not math.isinf(p):
            stacked = _rescued_on_host(stacked, sources, p)
        return _LocalNorms(stacked, dtype, on_cpu)

    @staticmethod
    def _power(stacked: Tensor, p: float) -> Tensor | None:
        if not stacked.numel():
            return None
        if math.isinf(p):
            return stacked.max()
        return stacked.to(_dist.sum_dtype(stacked.device)).pow(p).sum()

    def _split(self, pairs: list[tuple[Any, Any]]) -> list[tuple[GradSet, Any]]:
        """One :class:`GradSet` per ``(parameters, group)`` pair; each parameter in exactly one."""
        owner: dict[int, int] = {}
        subsets = []
        for i, (params, group) in enumerate(pairs):
            sub = as_parameters(params)
            for p in sub:
                if owner.setdefault(id(p), i) != i:
                    raise ValueError(
                        "Argument `process_group` lists a parameter in two pairs "
                        f"({owner[id(p)]} and {i}); each parameter is counted once, in one pair"
                    )
            subsets.append((GradSet(sub, self.duplicates, contiguous=False), group))
        known = {id(p) for p in self.params}
        missing = sum(id(p) not in owner for p in self.params if p.grad is not None)
        extra = sum(key not in known for key in owner)
        if missing or extra:
            raise ValueError(
                "Argument `process_group` as (parameters, group) pairs must cover every "
                "parameter being clipped exactly once (group None: not reduced). Received: "
                f"{missing} parameters with a gradient in no pair, {extra} pair entries that "
                "are not among `parameters`"
            )
        return subsets


# ------------------------------------------------------- overflow-safe norms
#
# The p-norm of a tensor is computed as (sum |g|^p)^(1/p), in fp32 for fp32 and half
# gradients (torch's arithmetic, kept for its exact numbers). That sum overflows for a
# finite gradient whose norm is above ~1.8e19 (p = 2; any bf16 or fp32 gradient can
# reach it) and underflows to 0 for tiny ones; with p = 1e3 almost every norm is inf or
# 0. Such a norm is recomputed scaled by the largest magnitude m, as BLAS nrm2 does:
# ||g||_p = m * ||g / m||_p, where every |g / m| <= 1 and one of them is 1.


@functools.lru_cache(maxsize=64)
def _safe_floor(dtype: torch.dtype, p: float) -> float:
    """The smallest p-norm whose power sum (in ``dtype``) certainly did not underflow."""
    info = torch.finfo(dtype)
    return float((info.tiny / info.eps) ** (1.0 / p))


def _in_range(norms: Tensor, p: float) -> Tensor:
    """Where the plain (unscaled) norms are exact: finite and above the underflow zone."""
    return (norms >= _safe_floor(norms.dtype, p)) & (norms < math.inf)


_CHUNK = 1 << 24  # elements divided by m at a time: bounds the temporary to 64 MiB


def _scaled_norm(t: Tensor, p: float, plain: Tensor) -> Tensor:
    """``m * ||t / m||_p`` with ``m = max|t|``, in ``plain``'s dtype; ``plain`` where ``m`` is
    0 (a zero tensor), inf or NaN (non-finite values: the plain norm is inf or NaN too)."""
    if t.numel() == 0:
        return plain
    flat = t.reshape(-1)
    m = torch.linalg.vector_norm(flat, math.inf, dtype=plain.dtype)
    usable = (m > 0) & torch.isfinite(m)
    scale = torch.where(usable, m, torch.ones_like(m))
    pieces = [
        torch.linalg.vector_norm(chunk.to(plain.dtype) / scale, p) for chunk in flat.split(_CHUNK)
    ]
    inner = pieces[0] if len(pieces) == 1 else torch.linalg.vector_norm(torch.stack(pieces), p)
    return torch.where(usable, m * inner, plain)


def _scales_on_device(dev: torch.device, dtype: torch.dtype, p: float) -> bool:
    """Whether norms of these gradients get the sync-free fp64 accumulation (CUDA, p = 1 or
    2, fp32/bf16): one pass, and no finite fp32/bf16 value over- or underflows fp64 sums of
    ``|g|`` or ``g**2``. fp16 needs nothing: its squares cannot overflow fp32 sums."""
    return dev.type == "cuda" and p in (1.0, 2.0) and dtype in (torch.float32, torch.bfloat16)


def _tensor_norms(
    tensors: list[Tensor], p: float, dev: torch.device, dtype: torch.dtype, foreach: bool | None
) -> list[Tensor]:
    """The p-norm of each tensor (same device and dtype), exact where fp32 sums overflow.

    CPU: torch's plain norms; :func:`_rescued_on_host` then redoes the few out of range.
    CUDA, p = 1 or 2, fp32/bf16: accumulated in fp64 (see :func:`_scales_on_device`).
    Any other accelerator case (fp64 gradients, other p, other devices): plain and scaled
    norms are both computed and chosen on device (no sync; two more passes over the data).
    """
    acc = torch.float64 if _scales_on_device(dev, dtype, p) else _acc_dtype(dtype)
    if _foreach_ok(dev, foreach):
        parts = list(torch._foreach_norm(tensors, p, dtype=acc))
    else:
        parts = [torch.linalg.vector_norm(t, p, dtype=acc) for t in tensors]
    if dev.type == "cpu" or math.isinf(p) or acc == torch.float64 or dtype == torch.float16:
        return parts
    plain = torch.stack(parts)
    scaled = torch.stack([_scaled_norm(t, p, n) for t, n in zip(tensors, parts, strict=True)])
    return list(torch.where(_in_range(plain, p), plain, scaled).unbind())


def _rescued_on_host(stacked: Tensor, tensors: list[Tensor], p: float) -> Tensor:
    """CPU: redo scaled the norms out of range (reading them costs no device sync)."""
    ok = _in_range(stacked, p)
    if bool(ok.all()):
        return stacked
    stacked = stacked.clone()
    for i in (~ok).nonzero().flatten().tolist():
        stacked[i] = _scaled_norm(tensors[i], p, stacked[i])
    return stacked


def _combined_norm(norms: Tensor, p: float, *, host: bool) -> Tensor:
    """``||norms||_p`` (the total of per-tensor norms) without over- or underflow."""
    plain = torch.linalg.vector_norm(norms, p)  # torch's arithmetic
    if math.isinf(p) or (host and _safe_floor(plain.dtype, p) <= float(plain) < math.inf):
        return plain
    return torch.where(_in_range(plain, p), plain, _scaled_norm(norms, p, plain))


def grad_set(parameters: Any, duplicates: Iterable[Tensor] = ()) -> GradSet:
    """:class:`GradSet` of ``parameters``: a :class:`GradBuffer` is read as its flat buffers."""
    # flat_grads() checks the buffer against the gradients (and refuses a replaced
    # parameter); None: a gradient that cannot live in it, read them one by one
    buffer = parameters if isinstance(parameters, GradBuffer) else None
    if buffer is not None and buffer.flat_grads() is not None and not duplicates:
        return GradSet(buffer.parameters, buffer=buffer)
    return GradSet(as_parameters(parameters), duplicates)


# ---------------------------------------------------------------- skip policy


def _fused(optimizer: torch.optim.Optimizer) -> bool:
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False)) and all(
        group.get("fused") for group in optimizer.param_groups
    )


class _Armed:
    """What the next step of one fused optimizer receives from clipping, and on which
    gradients it was measured (``stamp``, see :func:`_grad_stamp`; taken at the end of
    the clip call)."""

    def __init__(self) -> None:
        self.values: dict[str, Tensor] = {}
        self.handles: list[Any] = []
        self.stamp: tuple[int, list[tuple[Tensor, Any, int]]] = (0, [])  # no stamp: changed

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


_SAMPLE = 16  # gradients that stand for all: as many as GradBuffer's sentinels


def _grad_stamp(optimizer: torch.optim.Optimizer) -> tuple[int, list[tuple[Tensor, Any, int]]]:
    """The parameter count and, for up to 16 gradients spread over the parameters, the
    parameter, a weak reference to its ``.grad`` and that tensor's in-place version.

    ``zero_grad()`` (either kind), a backward, or replacing the gradients change every
    one of them, so a sample notices them without reading 20,000 ``.grad`` per step.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    stride = max(1, len(params) // _SAMPLE)
    sample: list[tuple[Tensor, Any, int]] = []
    for offset in range(stride):  # the spread first; then further along if those had none
        for p in params[offset::stride]:
            g = p.grad
            if g is not None:
                sample.append((p, weakref.ref(g), g._version))
        if len(sample) >= _SAMPLE:
            break
    return len(params), sample[:_SAMPLE]


def _grads_changed(armed: _Armed, optimizer: Any, *, in_place: bool) -> bool:
    """Whether the gradients are no longer the tensors the arming clip measured (set to
    None or replaced: ``zero_grad()``, a new backward after it) or, with ``in_place``, were
    modified in place since (``zero_grad(set_to_none=False)``, a backward accumulating)."""
    count, sample = armed.stamp
    if not sample or count != sum(len(group["params"]) for group in optimizer.param_groups):
        return True
    for p, ref, version in sample:
        g = p.grad
        if g is None or ref() is not g or (in_place and g._version != version):
            return True
    return False


def disarm_stale(optimizer: torch.optim.Optimizer | None) -> None:
    """At the start of a clip: drop a skip or fold armed on gradients that have changed
    since (its step never ran: the batch was dropped, or zeroed, or a new backward ran)."""
    armed: _Armed | None = getattr(optimizer, "_steadystep_pending", None)
    if armed is not None and _grads_changed(armed, optimizer, in_place=True):
        armed.remove()
        del optimizer._steadystep_pending  # type: ignore[union-attr]


def restamp(optimizer: torch.optim.Optimizer | None) -> None:
    """At the end of a clip (after its own in-place scaling): the armed state belongs to the
    gradients as they are now."""
    armed: _Armed | None = getattr(optimizer, "_steadystep_pending", None)
    if armed is not None:
        armed.stamp = _grad_stamp(optimizer)  # type: ignore[arg-type]


def _arm_step(
    optimizer: torch.optim.Optimizer, *, skip: Tensor | None = None, scale: Tensor | None = None
) -> None:
    """Hand ``skip`` and/or a gradient ``scale`` to the next step of a fused optimizer.

    Fused torch optimizers (Adam, AdamW, SGD, Adagrad with ``fused=True``) read two
    optional attributes, as set by ``GradScaler``: ``found_inf`` (non-zero: leave
    parameters and state unchanged, step counts restored) and ``grad_scale`` (the
    kernel divides every gradient by it and writes the result back), both on
    device, without a host sync. A one-shot pre-hook sets them, combined with what a
    GradScaler put there (``found_inf``: either; ``grad_scale``: the product), and a
    post-hook removes what it set. The pre-hook applies nothing when a gradient is no
    longer the tensor the clip measured (see :func:`_grads_changed`); a later clip drops
    what is armed when a gradient changed in any way (:func:`disarm_stale`).
    """
    armed: _Armed | None = getattr(optimizer, "_steadystep_pending", None)
    first = armed is None
    if armed is None:
        armed = _Armed()
        optimizer._steadystep_pending = armed  # type: ignore[attr-defined]
    pending = armed.values
    if skip is not None:
        flag = skip.to(torch.float32)
        # several clippers before one step: skip if any says so
        pending["found_inf"] = (
            torch.maximum(pending["found_inf"], flag) if "found_inf" in pending else flag
        )
    if scale is not None:
        if "grad_scale" in pending:
            raise RuntimeError(
                "A clipping coefficient is already folded into this optimizer's next step; "
                "fold at most one clip per step (a second clip would measure the gradients "
                "before the first one's scaling)."
            )
        pending["grad_scale"] = 1.0 / scale.to(torch.float32)
    if not first:
        return

    def pre_hook(opt: Any, args: Any, kwargs: Any) -> None:
        ours: _Armed = opt.__dict__.pop("_steadystep_pending")
        owned: dict[str, tuple[Tensor, bool]] = {}
        opt._steadystep_owned = owned
        if _grads_changed(ours, opt, in_place=False):
            return  # armed on gradients that are gone: this step is not the one it was for
        for name, value in ours.values.items():
            existing = getattr(opt, name, None)
            if existing is None:  # GradScaler sets grad_scale=None after unscale_()
                owned[name] = (value, hasattr(opt, name))
                setattr(opt, name, value)
            elif name == "found_inf":  # GradScaler's own: it deletes it after the step
                opt.found_inf = torch.maximum(existing, value.to(existing.device))
            else:
                opt.grad_scale = existing * value.to(existing.device)

    def post_hook(opt: Any, args: Any, kwargs: Any) -> None:
        for name, (value, was_there) in opt.__dict__.pop("_steadystep_owned", {}).items():
            if getattr(opt, name, None) is value:
                if was_there:  # put the None back for whoever set it (and deletes it)
                    setattr(opt, name, None)
                else:
                    delattr(opt, name)
        armed.remove()

    armed.handles.append(optimizer.register_step_pre_hook(pre_hook))
    armed.handles.append(optimizer.register_step_post_hook(post_hook))


def apply_skip(skip: Tensor, gs: GradSet, optimizer: torch.optim.Optimizer | None) -> bool:
    """Arrange for the next optimizer step to change nothing when ``skip`` is true.

    Fused optimizer: its ``found_inf`` path (no host sync). Otherwise the flag is read
    on the host (free on CPU, one sync on an accelerator) and, when set, every
    gradient of ``gs`` and of ``optimizer`` is set to None: torch optimizers skip
    parameters without a gradient entirely (no update, no weight decay, no state or
    step-count change). Returns True when the gradients were dropped.
    """
    if optimizer is not None and _fused(optimizer):
        _arm_step(optimizer, skip=skip)
        return False
    if not bool(skip):
        return False
    gs.drop()
    if optimizer is not None:
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
    return True


# ------------------------------------------------------------------- clipping


def _scale_(tensors: list[Tensor], coef: Tensor) -> None:
    for (dev, _), group in _grouped(tensors).items():
        factor = coef.to(dev, non_blocking=True)
        if _foreach_ok(dev, None):
            torch._foreach_mul_(group, factor)
        else:
            for t in group:
                t.mul_(factor)


def _all_cpu(gs: GradSet) -> bool:
    return (
        gs.device is not None
        and gs.device.type == "cpu"
        and all(t.device.type == "cpu" for t in gs.counted)
    )


def clip_with_threshold(
    gs: GradSet,
    total: Tensor,
    threshold: float | Tensor,
    *,
    nonfinite: str,
    optimizer: torch.optim.Optimizer | None,
    extra_skip: Tensor | None = None,
    fold: bool = False,
    check_threshold: bool = False,
) -> ClipResult:
    """Scale ``gs`` by ``min(1, threshold / (total + 1e-6))`` under a non-finite policy.

    Coefficients: an ``inf`` threshold enforces nothing (coefficient 1, even for an inf or
    NaN norm); a finite threshold over an inf norm gives 0 and over a NaN norm NaN, as in
    torch. ``check_threshold``: ``threshold`` is a user's tensor whose value was not read
    (on an accelerator); one that is not ``> 0`` counts as a non-finite norm (``"raise"``:
    ``ValueError``; ``"skip"``: skipped; ``"propagate"``: coefficient NaN), never applied.

    With ``fold`` and a fused ``optimizer`` stepping every parameter of ``gs``, the
    scaling is left to that optimizer's next step (its ``grad_scale`` input).
    """
    disarm_stale(optimizer)
    norm32 = total.to(torch.float32)
    finite = torch.isfinite(total)
    if nonfinite == "raise" and not bool(finite):
        raise RuntimeError(
            f"The total gradient norm is non-finite ({float(total)}), so it cannot be "
            "clipped (nonfinite='raise'). Use nonfinite='skip' to skip this update or "
            "'propagate' to scale by it anyway."
        )
    # torch.full is a fill kernel on the device: no host-to-device copy, no sync
    thr = (
        threshold.to(device=total.device, dtype=total.dtype)
        if isinstance(threshold, Tensor)
        else torch.full((), threshold, dtype=total.dtype, device=total.device)
    )
    coef = torch.clamp(thr / (total + _EPS), max=1.0)
    # A threshold of inf enforces nothing: coefficient 1 whatever the norm (inf / inf
    # would be NaN and turn every finite gradient into NaN).
    if isinstance(threshold, Tensor) or math.isinf(threshold):
        coef = torch.where(thr == math.inf, torch.ones_like(coef), coef)
    if check_threshold:  # a user's max_norm tensor on an accelerator, not read on the host
        bad = ~(thr > 0)  # NaN compares False
        if nonfinite == "raise" and bool(bad):
            raise ValueError(
                f"Argument `max_norm` must be > 0. Received: max_norm={float(thr)} (a tensor)"
            )
        coef = torch.where(bad, torch.full_like(coef, math.nan), coef)
        finite = finite & ~bad
    skipped = torch.zeros((), dtype=torch.bool, device=total.device)
    if nonfinite == "skip":
        skipped = ~finite
    if extra_skip is not None:
        skipped = skipped | extra_skip.to(skipped.device)
    dropped = False
    if nonfinite == "skip" or extra_skip is not None:
        dropped = apply_skip(skipped, gs, optimizer)
    result = ClipResult(norm32, thr.to(torch.float32), coef.to(torch.float32), coef < 1.0, skipped)
    if gs.empty or dropped or (not isinstance(threshold, Tensor) and math.isinf(threshold)):
        return result  # nothing to scale (an inf float threshold: coefficient exactly 1)
    # On CPU, reading the coefficient costs no device sync, and multiplying by exactly
    # 1 changes nothing: skip that full pass over the gradients.
    if _all_cpu(gs) and bool(coef == 1.0):
        return result
    if fold and optimizer is not None and _fused(optimizer) and _steps_all(optimizer, gs.params):
        _arm_step(optimizer, scale=coef)
        return result
    _scale_(gs.scaled_tensors(), coef)
    return result


def _steps_all(optimizer: torch.optim.Optimizer, params: list[Tensor]) -> bool:
    """Whether ``optimizer`` updates every tensor of ``params`` (cached per param-group layout)."""
    layout = tuple(len(group["params"]) for group in optimizer.param_groups)
    cached = getattr(optimizer, "_steadystep_param_ids", None)
    if cached is None or cached[0] != layout:
        ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
        cached = (layout, ids, None)
        optimizer._steadystep_param_ids = cached  # type: ignore[attr-defined]
    if cached[-1] is params:  # the same list as last time (a GradBuffer's parameters)
        return True
    if all(id(p) in cached[1] for p in params):
        optimizer._steadystep_param_ids = (*cached[:2], params)  # type: ignore[attr-defined]
        return True
    return False


@overload
def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor] | torch.nn.Module,
    max_norm: float | Tensor,
    norm_type: float | str = ...,
    *,
    nonfinite: Nonfinite = ...,
    optimizer: torch.optim.Optimizer | None = ...,
    foreach: bool | None = ...,
    process_group: Any = ...,
    duplicates: Iterable[Tensor] = ...,
    agree: Any = ...,
    fold: bool = ...,
    return_result: Literal[False] = ...,
) -> Tensor: ...
@overload
def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor] | torch.nn.Module,
    max_norm: float | Tensor,
    norm_type: float | str = ...,
    *,
    nonfinite: Nonfinite = ...,
    optimizer: torch.optim.Optimizer | None = ...,
    foreach: bool | None = ...,
    process_group: Any = ...,
    duplicates: Iterable[Tensor] = ...,
    agree: Any = ...,
    fold: bool = ...,
    return_result: Literal[True],
) -> ClipResult: ...
@torch.no_grad()
def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor] | torch.nn.Module,
    max_norm: float | Tensor,
    norm_type: float | str = 2.0,
    *,
    nonfinite: Nonfinite = "propagate",
    optimizer: torch.optim.Optimizer | None = None,
    foreach: bool | None = None,
    process_group: Any = None,
    duplicates: Iterable[Tensor] = (),
    agree: Any = True,
    fold: bool = False,
    return_result: bool = False,
) -> Tensor | ClipResult:
    """Clip the gradients of ``parameters`` in place to a total norm of at most ``max_norm``.

    ``g <- g * min(1, max_norm / (norm + 1e-6))`` with ``norm`` the ``norm_type``-norm of
    all gradients together, exactly as ``torch.nn.utils.clip_grad_norm_``.

    Args:
        parameters: parameters (or optimizer param groups) whose ``.grad`` is clipped;
            parameters without a gradient are ignored (none at all: the norm is 0). An
            FSDP1 model (``FullyShardedDataParallel``) itself: its shards are reduced over
            ``model.process_group`` (its parameters alone, without ``process_group``, are
            refused: nothing on them names their group).
        max_norm: the bound, ``> 0`` (a 0-dim tensor is accepted, e.g. an adaptive one).
        norm_type: p of the p-norm (``> 0``), or ``inf`` / ``'inf'``.
        nonfinite: what a non-finite (``inf``/``NaN``) norm does:
            ``"propagate"`` (torch's behaviour: gradients scaled by 0 or NaN),
            ``"raise"`` (``RuntimeError`` before touching anything; reads the norm on the
            host), ``"skip"`` (the next ``optimizer.step()`` changes neither parameters nor
            optimizer state; see ``optimizer``).
        optimizer: for ``"skip"``. A fused optimizer (``fused=True``) is skipped on
            device through its ``found_inf`` input, with no host sync; otherwise the
            decision is read on the host (a sync on GPU) and gradients are set to None.
        foreach: force (True) or forbid (False) the multi-tensor kernels, as in torch.
        process_group: group over which the parameters are disjoint parts of the model
            (pipeline stages, FSDP1's ``model.process_group``); the sum of ``|g|^p`` is
            all-reduced over it once. Or a list of ``(parameters, group)`` pairs covering
            every parameter once (expert parallelism: ``[(dense, None), (experts,
            ep_group)]``; ``None``: not reduced), one all-reduce per distinct group. Leave
            None for DDP (gradients are already averaged). DTensor (FSDP2, HSDP, TP)
            gradients are reduced over their mesh automatically, from their placements.
        duplicates: parameters whose gradient is also counted on another rank of
            ``process_group`` (e.g. tied embeddings on the last stage): clipped, not counted.
        agree: make every rank use the same norm, hence the same coefficient, non-finite
            flag and skip (one more all-reduce of the norm, MAX, NaN wins). ``True``:
            over the default group whenever the norm needed communication (DTensor
            gradients or ``process_group``) and every mesh spans the world; a process
            group: over it, always; ``False``: never.
        fold: leave the scaling to the next ``optimizer.step()`` when ``optimizer`` is
            fused and updates every one of these parameters: its kernel multiplies the
            gradients by the coefficient as it reads them (through the ``grad_scale``
            input ``GradScaler`` uses) and writes them back clipped, saving a full pass
            over the gradients. Until that step the gradients are not yet scaled. With
            any other optimizer the gradients are scaled now, as without ``fold``.
        return_result: return a :class:`ClipResult` instead of the norm.

    Returns:
        The total norm before clipping, as a 0-dim fp32 tensor on the gradients' device
        (whatever their dtype: half-precision squares accumulate in fp32).

    Examples:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> w.grad = torch.tensor([3.0, 4.0])
        >>> clip_grad_norm_([w], max_norm=1.0)
        tensor(5.)
        >>> w.grad
        tensor([0.6000, 0.8000])
    """
    limit = check_max_norm(max_norm)
    p = check.norm_type(norm_type)
    policy = check_nonfinite(nonfinite)
    folded = check_fold(fold, optimizer)
    parameters, process_group = _dist.fsdp1_model(parameters, process_group)
    gs = grad_set(parameters, duplicates)
    total = gs.norm(p, foreach=foreach, process_group=process_group, agree=_dist.check_agree(agree))
    result = clip_with_threshold(
        gs,
        total,
        limit,
        nonfinite=policy,
        optimizer=optimizer,
        fold=folded,
        check_threshold=isinstance(limit, Tensor) and limit.device.type != "cpu",
    )
    restamp(optimizer)
    return result if return_result else result.norm


@torch.no_grad()
def clip_grad_value_(
    parameters: Tensor | Iterable[Tensor], clip_value: float, *, foreach: bool | None = None
) -> None:
    """Clamp every gradient element into ``[-clip_value, clip_value]`` in place.

    Same result as ``torch.nn.utils.clip_grad_value_``; contiguous gradients are
    clamped in one pass over their buffer.

    Examples:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.zeros(3))
        >>> w.grad = torch.tensor([-5.0, 0.5, 5.0])
        >>> clip_grad_value_([w], 1.0)
        >>> w.grad
        tensor([-1.0000,  0.5000,  1.0000])
    """
    value = check.positive("clip_value", clip_value)
    gs = grad_set(parameters)
    for (dev, _), group in _grouped(gs.scaled_tensors()).items():
        if _foreach_ok(dev, foreach):
            torch._foreach_clamp_min_(group, -value)
            torch._foreach_clamp_max_(group, value)
        else:
            for t in group:
                t.clamp_(-value, value)
