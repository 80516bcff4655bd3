"""Distributed pieces of gradient-norm clipping (torch.distributed).

Rules, each chosen so that every rank ends with the norm of the *whole* model,
computed once:

* DDP: gradients are already averaged and identical on every rank; the local
  norm is the global one. Nothing is reduced (pass no ``process_group``).
* FSDP2 / DTensor: a ``Shard`` gradient holds a slice on each rank of its mesh
  dimension; the local ``sum |g|^p`` (fp32) is all-reduced (SUM, or MAX for the
  inf-norm) once per mesh dimension that shards it. ``Replicate`` dimensions are
  not reduced, so replicated gradients count once.
* Pipeline / other model parallelism: ``process_group`` names the ranks whose
  parameters are disjoint parts of one model; their (already DTensor-reduced)
  contributions are summed over it. A parameter held by several of those ranks
  (tied embeddings on the first and last stage, tensor-parallel duplicates) is
  passed as ``duplicates=`` on all but one of them: clipped, not counted.

torch's ``clip_grad_norm_`` (``torch/nn/utils/clip_grad.py``) and its DTensor
handling, and Megatron-LM's ``clip_grads.py`` were read for the conventions.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["dtensor_power_sum", "is_distributed", "reduce_power_sum", "split_dtensors"]


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


def _power_sum(tensors: list[Tensor], p: float) -> Tensor:
    norms = torch._foreach_norm(tensors, p, dtype=torch.float32)
    stacked = torch.stack(norms)
    return stacked.max() if math.isinf(p) else stacked.pow(p).sum()


def dtensor_power_sum(dtensors: list[Any], p: float, device: torch.device) -> Tensor:
    """Global ``sum |g|^p`` (``max |g|`` for inf) over DTensor gradients, fp32, on ``device``.

    Gradients are grouped by mesh and sharded mesh dimensions; each group is reduced
    with one all-reduce per sharded dimension.
    """
    groups: dict[tuple[Any, tuple[int, ...]], list[Tensor]] = {}
    for g in dtensors:
        dims = []
        for dim, placement in enumerate(g.placements):
            if placement.is_shard():
                dims.append(dim)
            elif placement.is_partial():
                raise ValueError(
                    "Argument `parameters` has a gradient with a Partial placement (a pending "
                    "reduction); reduce it first (grad.redistribute(...)) before clipping. "
                    f"Received: placements={g.placements}"
                )
        groups.setdefault((g.device_mesh, tuple(dims)), []).append(local_tensor(g))
    inf = math.isinf(p)
    op = torch.distributed.ReduceOp.MAX if inf else torch.distributed.ReduceOp.SUM
    totals = []
    for (mesh, dims), tensors in groups.items():
        tensors = [t for t in tensors if t.numel() > 0]
        if tensors:
            part = _power_sum(tensors, p).to(device)
        else:
            part = torch.zeros((), dtype=torch.float32, device=device)
        for dim in dims:
            torch.distributed.all_reduce(part, op=op, group=mesh.get_group(dim))
        totals.append(part)
    stacked = torch.stack(totals)
    return stacked.max() if inf else stacked.sum()


def reduce_power_sum(value: Tensor, p: float, group: Any) -> Tensor:
    """All-reduce a local ``sum |g|^p`` (or max) over ``group``, in place, once."""
    op = torch.distributed.ReduceOp.MAX if math.isinf(p) else torch.distributed.ReduceOp.SUM
    torch.distributed.all_reduce(value, op=op, group=group)
    return value
