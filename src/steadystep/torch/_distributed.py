"""Distributed pieces of gradient-norm clipping (torch.distributed).

Every rank must end with the norm of the *whole* model, each gradient element counted
once, and every rank must take the same decisions from it. The rules:

* DDP: gradients are already averaged and identical on every rank; the local norm is
  the global one. Nothing is reduced (pass no ``process_group``).
* DTensor (FSDP2, HSDP, tensor parallel, FSDP2 + TP, any mesh): a gradient's placement
  on a mesh dimension says whether its ranks there hold different pieces of it or the
  same values. Every placement that is neither ``Replicate`` nor ``Partial`` (``Shard``,
  ``_StridedShard``, any future shard-like one) holds disjoint pieces: the local
  ``sum |g|^p`` (fp32) is summed (MAX for the inf-norm) over that mesh dimension.
  ``Partial`` (a reduction still pending) is refused. Per mesh, one all-reduce per mesh
  dimension that shards any gradient, whatever the number of gradients: a gradient
  replicated on a dimension that is reduced for others contributes only on the rank at
  coordinate 0 of it (its copies elsewhere contribute an exact 0).
* ``process_group``: the ranks whose parameters are disjoint parts of one model (pipeline
  stages, expert-parallel ranks, FSDP1's shard group); their (already mesh-reduced)
  contributions are summed over it, once. A list of ``(parameters, group)`` pairs says
  it per parameter (expert parallelism: ``[(dense, None), (experts, ep_group)]``; group
  ``None``: not reduced). ``duplicates=`` are clipped but not counted (a tied weight held
  by several ranks of the group: all but one of them pass it).
* FSDP1 (``FullyShardedDataParallel``): its parameters (``FlatParameter``, or the views of
  ``use_orig_params=True``) hold this rank's shard, which nothing on the tensor says how
  to reduce. Passing the FSDP model itself reduces them over ``model.process_group``
  (:func:`fsdp1_model`); its parameters passed without ``process_group`` are refused.
* Agreement: when the norm needed communication, one more all-reduce (MAX of the norm, a
  NaN anywhere wins) over the default group makes every rank hold the very same norm, so
  the coefficient, the non-finite flag, every skip and the adaptive clippers' statistics
  are the same on every rank, even when replicas that should be identical are not (a
  non-finite value in one HSDP replica). :func:`agree` is that collective.

torch's ``clip_grad_norm_`` (``torch/nn/utils/clip_grad.py``) and DTensor handling,
FSDP1's ``FullyShardedDataParallel.clip_grad_norm_``
(``torch/distributed/fsdp/fully_sharded_data_parallel.py``: sharded and non-sharded
parameters, one all-reduce over its process group) and Megatron-LM's ``clip_grads.py``
were read for the conventions; no code was copied.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "agree",
    "agree_group",
    "fsdp1_model",
    "global_power_sum",
    "group_pairs",
    "is_distributed",
    "reduced_mesh_dims",
    "refuse_fsdp1",
    "split_dtensors",
    "unit_norms",
]


def is_distributed() -> bool:
    """True when torch.distributed is initialised (only then can DTensors exist)."""
    dist = torch.distributed
    return bool(dist.is_available() and dist.is_initialized())


def _dtensor_type() -> Any:
    from torch.distributed.tensor import DTensor

    return DTensor


def split_dtensors(grads: list[Tensor]) -> tuple[list[Tensor], list[Any]]:
    """``(plain tensors, DTensors)``; free when torch.distributed is not initialised."""
    if not is_distributed():
        return grads, []
    dtensor = _dtensor_type()
    plain = [g for g in grads if not isinstance(g, dtensor)]
    if len(plain) == len(grads):
        return grads, []
    return plain, [g for g in grads if isinstance(g, dtensor)]


def local_tensor(g: Any) -> Tensor:
    """The local shard of a DTensor, sharing its storage (for in-place scaling)."""
    return g._local_tensor if hasattr(g, "_local_tensor") else g.to_local()  # type: ignore[no-any-return]


def reduced_mesh_dims(g: Any, name: str = "parameters") -> tuple[int, ...]:
    """Mesh dimensions over which DTensor ``g`` holds disjoint pieces (not ``Replicate``).

    ``Shard`` and ``_StridedShard`` (which ``is_shard()`` does not report) alike: every
    placement that is neither replicated nor a pending ``Partial`` sum shards the tensor.
    """
    dims = []
    for dim, placement in enumerate(g.placements):
        if placement.is_partial():
            raise ValueError(
                f"Argument `{name}` has a gradient with a Partial placement (a pending "
                "reduction); reduce it first (grad.redistribute(...)) before clipping. "
                f"Received: placements={g.placements}"
            )
        if not placement.is_replicate():
            dims.append(dim)
    return tuple(dims)


def sum_dtype(device: torch.device) -> torch.dtype:
    """The dtype of power sums that cross processes: float64 (no finite fp32 norm's square
    over- or underflows it, so a norm above ~1.8e19 or below ~1e-19 survives the sum;
    float32 on MPS, which has no float64)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _power_sum(tensors: list[Tensor], p: float) -> Tensor:
    wide = sum_dtype(tensors[0].device)
    norms = torch._foreach_norm(tensors, p, dtype=torch.float32 if math.isinf(p) else wide)
    stacked = torch.stack(norms)
    return stacked.max() if math.isinf(p) else stacked.pow(p).sum()


def _all_reduce(value: Tensor, inf: bool, group: Any) -> Tensor:
    """SUM (``inf``: MAX) all-reduce of ``value`` over ``group``, NaN-safe; one collective.

    A backend's MAX may drop a NaN (``max(nan, 1)`` depends on the order), so for MAX the
    NaNs travel as one extra flag element and come back as NaN everywhere.
    """
    dist = torch.distributed
    if not inf:
        dist.all_reduce(value, op=dist.ReduceOp.SUM, group=group)
        return value
    flat = value.reshape(-1)
    nan = torch.isnan(flat)
    packed = torch.cat([torch.where(nan, math.inf, flat), nan.any().to(flat.dtype).reshape(1)])
    dist.all_reduce(packed, op=dist.ReduceOp.MAX, group=group)
    out = torch.where(packed[-1] > 0, math.nan, packed[:-1])
    return out.reshape(value.shape)


def global_power_sum(
    parts: Sequence[tuple[Any, Tensor | None, list[Any]]], p: float, device: torch.device
) -> Tensor:
    """Global ``sum |g|^p`` (``max |g|`` for inf), fp32 or wider, on ``device``.

    ``parts``: ``(group, local, dtensors)`` triples: ``local`` the power sum of this rank's
    plain gradients of that part (or None), ``dtensors`` its DTensor gradients, ``group``
    the process group its mesh-reduced sum is then all-reduced over (None: not reduced).
    Collectives: per mesh, one per mesh dimension that shards any of its gradients (a
    vector with one slot per part); then one per distinct group.
    """
    inf = math.isinf(p)
    zero = torch.zeros((), dtype=torch.float32, device=device)
    values = [zero if local is None else local.to(device) for _, local, _ in parts]

    def combine(a: Tensor, b: Tensor) -> Tensor:
        dtype = torch.promote_types(a.dtype, b.dtype)
        a, b = a.to(dtype), b.to(dtype)
        return torch.maximum(a, b) if inf else a + b

    # mesh -> (part index, dims) -> local shards
    meshes: dict[Any, dict[tuple[int, tuple[int, ...]], list[Tensor]]] = {}
    for k, (_, _, dtensors) in enumerate(parts):
        for g in dtensors:
            key = (k, reduced_mesh_dims(g))
            meshes.setdefault(g.device_mesh, {}).setdefault(key, []).append(local_tensor(g))
    for mesh, entries in meshes.items():
        union = sorted({d for _, dims in entries for d in dims if mesh.size(d) > 1})
        coord = mesh.get_coordinate() if union else None
        slots = sorted({k for k, _ in entries})
        vec = torch.zeros(
            len(slots), dtype=torch.float32 if inf else sum_dtype(device), device=device
        )
        for (k, dims), tensors in entries.items():
            # replicated over a reduced dimension: only its coordinate-0 copy counts
            if coord is not None and any(coord[d] != 0 for d in union if d not in dims):
                continue
            tensors = [t for t in tensors if t.numel() > 0]
            if tensors:
                i = slots.index(k)
                vec[i] = combine(vec[i], _power_sum(tensors, p).to(device))
        for d in union:
            vec = _all_reduce(vec, inf, mesh.get_group(d))
        for i, k in enumerate(slots):
            values[k] = combine(values[k], vec[i])
    # one all-reduce per distinct group, over the sum of the parts it reduces
    total: Tensor | None = None
    by_group: dict[int, tuple[Any, Tensor]] = {}
    for (group, _, _), value in zip(parts, values, strict=True):
        if group is None:
            total = value if total is None else combine(total, value)
        else:
            old = by_group.get(id(group))
            by_group[id(group)] = (group, value if old is None else combine(old[1], value))
    for group, value in by_group.values():
        reduced = _all_reduce(value.clone(), inf, group)
        total = reduced if total is None else combine(total, reduced)
    return zero if total is None else total


def agree(value: Tensor, group: Any = None) -> Tensor:
    """``value`` made the same on every rank of ``group``: its largest value (one all-reduce).

    A NaN on any rank gives NaN everywhere; a bool gives True where any rank has True (one
    skip flag for all: the loss-aware skip uses it). No-op outside torch.distributed or on
    one rank. ``group``: a process group, None for the default (world) group.

    Examples:
        >>> import torch
        >>> agree(torch.tensor(True))  # one process: unchanged
        tensor(True)
    """
    if not is_distributed() or torch.distributed.get_world_size(group) == 1:
        return value
    if value.dtype == torch.bool:
        flag = value.to(torch.float32)
        return _all_reduce(flag, True, group) > 0
    return _all_reduce(value.clone(), True, group)


def agree_group(setting: Any, meshes: Sequence[Any], communicated: bool) -> Any:
    """The group over which a clip's norm is agreed, or ``False`` for none.

    ``setting``: ``False`` (never), a process group (always, over it), or ``True``
    (automatic): the default world group when the norm needed communication and every
    DTensor mesh spans the world (a model on part of the world passes its group).
    """
    if setting is False or not is_distributed():
        return False
    if setting is not True:
        return setting
    world = torch.distributed.get_world_size()
    if not communicated or world == 1 or any(mesh.size() != world for mesh in meshes):
        return False
    return None


def check_agree(setting: Any) -> Any:
    """``agree`` argument: True, False or a process group."""
    if isinstance(setting, bool):
        return setting
    if setting is None or isinstance(setting, (int, float, str, Sequence)):
        raise TypeError(
            "Argument `agree` must be True, False or a torch.distributed process group. "
            f"Received: agree={setting!r}"
        )
    return setting


def group_pairs(process_group: Any) -> list[tuple[Any, Any]] | None:
    """``process_group`` given as ``(parameters, group)`` pairs, validated; None otherwise."""
    if not isinstance(process_group, (list, tuple)):
        return None
    pairs = []
    for i, item in enumerate(process_group):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise TypeError(
                "Argument `process_group` as a list must hold (parameters, group) pairs, "
                f"group None for parameters that are not reduced. Received: element {i} "
                f"is {type(item).__name__}"
            )
        pairs.append((item[0], item[1]))
    return pairs


def _is_fsdp1(p: Tensor) -> bool:
    return bool(getattr(p, "_fsdp_flattened", False))


def refuse_fsdp1(params: list[Tensor]) -> None:
    """Refuse FSDP1-managed parameters (sharded flat parameters) given without a group.

    Their gradients hold this rank's shard and nothing on them names the group it is
    sharded over, so their local norm would silently be reported as the global one.
    """
    if (
        "torch.distributed.fsdp._flat_param" not in sys.modules  # FSDP1 never loaded: free
        or torch.distributed.get_world_size() == 1
        or not any(map(_is_fsdp1, params))
    ):
        return
    raise ValueError(
        "Argument `parameters` holds parameters managed by FSDP1 "
        "(torch.distributed.fsdp.FullyShardedDataParallel), whose gradients are this rank's "
        "shard: pass the FSDP model itself (clip_grad_norm_(model, ...), AutoClip(model, "
        "...)), or process_group=model.process_group (the group FSDP shards over); with "
        "parameters outside FSDP too, pass process_group=[(fsdp_params, model.process_group), "
        "(other_params, None)]; under ShardingStrategy.NO_SHARD (whole gradients), "
        "process_group=[(params, None)]. Received: process_group=None"
    )


def unit_norms(pairs: Sequence[tuple[Any, Any]]) -> list[tuple[Tensor, Tensor]]:
    """AGC's unit norms ``(||G_i||, ||W_i||)`` of DTensor ``(grad, weight)`` pairs, fp32.

    Shaped to broadcast against each local shard. A unit (a row of a matrix, a whole
    vector) split over a mesh dimension has its squared sums all-reduced over it: one
    all-reduce per such mesh dimension and mesh for all the pairs; rows whole on every rank
    (``Shard(0)`` of a matrix, FSDP2's layout) need none.
    """
    out: list[tuple[Tensor, Tensor]] = []
    pending: dict[tuple[Any, tuple[int, ...]], list[int]] = {}
    for i, (g, w) in enumerate(pairs):
        if not hasattr(w, "placements") or (w.device_mesh, w.placements) != (
            g.device_mesh,
            g.placements,
        ):
            raise ValueError(
                "Argument `params` has a DTensor gradient laid out unlike its parameter; AGC "
                "compares them unit by unit and needs the same mesh and placements. Received: "
                f"grad {g.placements}, parameter {getattr(w, 'placements', 'a plain tensor')}"
            )
        axes = tuple(range(g.ndim)) if g.ndim <= 1 else tuple(range(1, g.ndim))
        dims = []
        for d in reduced_mesh_dims(g, "params"):
            split = getattr(g.placements[d], "dim", None)
            if split is None:
                raise ValueError(
                    f"Argument `params` has a gradient placement AGC cannot split into units "
                    f"(no tensor dim). Received: placements={g.placements}"
                )
            if split % max(g.ndim, 1) in axes:
                dims.append(d)
        local_g, local_w = local_tensor(g), local_tensor(w)
        g_sq, w_sq = (
            (t.float() * t.float()).sum(dim=axes, keepdim=True) for t in (local_g, local_w)
        )
        out.append((g_sq, w_sq))
        if dims:
            pending.setdefault((g.device_mesh, tuple(dims)), []).append(i)
    for (mesh, dims), members in pending.items():
        flat = torch.cat([t.reshape(-1) for i in members for t in out[i]])
        for d in dims:
            torch.distributed.all_reduce(flat, group=mesh.get_group(d))
        offset = 0
        for i in members:
            parts = []
            for t in out[i]:
                parts.append(flat[offset : offset + t.numel()].reshape(t.shape))
                offset += t.numel()
            out[i] = (parts[0], parts[1])
    return [(gs.sqrt(), ws.sqrt()) for gs, ws in out]


def fsdp1_model(parameters: Any, process_group: Any) -> tuple[Any, Any]:
    """An FSDP1 model passed as ``parameters``: its parameters and how to reduce them.

    ``FullyShardedDataParallel`` knows its group (``model.process_group``) and strategy:
    its flat parameters (or ``use_orig_params`` views) are summed over that group, the
    parameters it does not manage (ignored modules) and ``NO_SHARD`` ones are not.
    Anything else is returned unchanged; an explicit ``process_group`` is kept.
    """
    if not isinstance(parameters, torch.nn.Module) or not is_distributed():
        return parameters, process_group
    from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy

    if not isinstance(parameters, FullyShardedDataParallel):
        return parameters, process_group
    params = list(parameters.parameters())
    if process_group is not None:
        return params, process_group
    if parameters.sharding_strategy == ShardingStrategy.NO_SHARD:
        return params, [(params, None)]
    sharded = [p for p in params if _is_fsdp1(p)]
    others = [p for p in params if not _is_fsdp1(p)]
    return params, [(sharded, parameters.process_group), (others, None)]
