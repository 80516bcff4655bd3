"""Read-only gradient norms: the norm ``clip_grad_norm_`` would see, and a breakdown for logging.

Nothing is clipped and nothing is read on the host: every value is a 0-dim fp32 (fp64 for fp64
gradients) tensor on the gradients' device, so logging them costs a sync only when the logger
reads them (see :class:`steadystep.torch.Telemetry` to read them at the logging interval only).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from .. import _check as check
from . import _distributed as _dist
from ._clip import _acc_dtype, _foreach_ok, _grouped, dense_grad, grad_set

__all__ = ["grad_norm", "grad_norms"]


def grad_norm(
    parameters: Tensor | Iterable[Tensor],
    norm_type: float | str = 2.0,
    *,
    process_group: Any = None,
    duplicates: Iterable[Tensor] = (),
    foreach: bool | None = None,
) -> Tensor:
    """The total gradient norm of ``parameters``, exactly as ``clip_grad_norm_`` computes it.

    Same fp32 accumulation, the same ``process_group``/``duplicates``/DTensor rules (see
    :func:`steadystep.torch.clip_grad_norm_`), but no clipping and no host sync. Parameters
    without a gradient are ignored; none at all gives 0.

    Examples:
        >>> import torch, steadystep as ss
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> w.grad = torch.tensor([3.0, 4.0])
        >>> ss.torch.grad_norm([w])
        tensor(5.)
        >>> w.grad  # unchanged
        tensor([3., 4.])
    """
    p = check.norm_type(norm_type)
    return grad_set(parameters, duplicates).norm(p, foreach=foreach, process_group=process_group)


def grad_norms(
    module: torch.nn.Module,
    norm_type: float | str = 2.0,
    *,
    by: str = "parameter",
    prefix: str = "grad/norm/",
) -> dict[str, Tensor]:
    """Per-parameter (or per-module) gradient norms of ``module``, plus the total, for logging.

    Keys are ``prefix + name`` (a parameter name, or with ``by="module"`` the name of the module
    that owns the parameters directly, ``"(root)"`` for the top module's own), and
    ``prefix.rstrip("/")`` for the total, which is :func:`grad_norm` of all the parameters
    (equal to what ``clip_grad_norm_`` returns). One multi-tensor kernel per device and dtype
    computes the parts, in fp32; no host sync. The parts are of the local gradients (a DTensor
    contributes its local shard); the total follows the distributed rules of :func:`grad_norm`.
    Parameters without a gradient are left out. The anchor is Lightning's
    ``lightning.pytorch.utilities.grad_norm``, which returns the same parts (its total is
    computed on the host).

    Examples:
        >>> import torch, steadystep as ss
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False))
        >>> net[0].weight.grad = torch.tensor([[3.0, 4.0]])
        >>> ss.torch.grad_norms(net)
        {'grad/norm/0.weight': tensor(5.), 'grad/norm': tensor(5.)}
        >>> ss.torch.grad_norms(net, by="module", prefix="norm/")
        {'norm/0': tensor(5.), 'norm': tensor(5.)}
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(
            "Argument `module` must be a torch.nn.Module. "
            f"Received: module={module!r} of type {type(module).__name__}"
        )
    p = check.norm_type(norm_type)
    check.choice("by", by, ("parameter", "module"))
    if not isinstance(prefix, str):
        raise TypeError(f"Argument `prefix` must be a string. Received: prefix={prefix!r}")
    named = [(name, param) for name, param in module.named_parameters() if param.grad is not None]
    dense = [dense_grad(param) for _, param in named]  # a sparse gradient: its values
    _, dtensors = _dist.split_dtensors(dense)
    local = {id(g): _dist.local_tensor(g) for g in dtensors}
    grads = [local.get(id(g), g) for g in dense]
    norms: dict[int, Tensor] = {}
    for (dev, dtype), tensors in _grouped(grads).items():
        acc = _acc_dtype(dtype)
        if _foreach_ok(dev, None):
            parts = torch._foreach_norm(tensors, p, dtype=acc)
        else:
            parts = [torch.linalg.vector_norm(t, p, dtype=acc) for t in tensors]
        norms.update(zip(map(id, tensors), parts, strict=True))
    out: dict[str, Tensor] = {}
    if by == "parameter":
        for (name, _), g in zip(named, grads, strict=True):
            out[prefix + name] = norms[id(g)]
    else:
        owners: dict[str, list[Tensor]] = {}
        for (name, _), g in zip(named, grads, strict=True):
            owner = name.rpartition(".")[0] or "(root)"
            owners.setdefault(owner, []).append(norms[id(g)])
        for owner, parts in owners.items():
            # ||(n_1, ..., n_k)||_p is the p-norm of the module's gradients taken together
            out[prefix + owner] = (
                parts[0] if len(parts) == 1 else torch.linalg.vector_norm(torch.stack(parts), p)
            )
    out[prefix.rstrip("/") or "total"] = grad_norm([param for _, param in named], p)
    return out
