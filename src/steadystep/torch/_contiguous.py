"""Contiguous gradients: many gradients as views of one flat buffer.

Clipping 20,000 small tensors costs 20,000 kernel launches for the norms and as
many for the scaling; over one flat buffer it is one reduction and one multiply.
DDP's ``gradient_as_bucket_view`` and Megatron's contiguous grad buffer use the
same idea (both read, neither copied).

Two pieces:

* :func:`flat_plan` finds, for a list of gradients, the runs that already sit
  back to back in one storage (whoever put them there: :func:`contiguous_grads`,
  DDP buckets, FSDP, a user's own buffer) and returns one flat view per run.
  The answer is cached on the identity of the gradient objects.
* :func:`contiguous_grads` makes it so: it allocates one buffer per
  (device, dtype), points every ``param.grad`` at a view of it, and keeps it so
  across ``optimizer.zero_grad(set_to_none=True)`` with a post-accumulate-grad hook
  that copies a freshly allocated gradient back into its view.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["GradBuffer", "contiguous_grads", "flat_plan"]

_CACHE_SIZE = 4
# entries: (key = ids of the grads, grads kept alive so ids stay unique, plan, checks)
_cache: list[
    tuple[tuple[int, ...], list[Tensor], tuple[list[Tensor], list[Tensor]], list[Any]]
] = []


def _detect(grads: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Any]]:
    by_storage: dict[tuple[int, torch.dtype, torch.device], list[Tensor]] = {}
    others: list[Tensor] = []
    for g in grads:
        if (
            type(g) is torch.Tensor
            and g.layout == torch.strided
            and g.numel() > 0
            and g.is_contiguous()
            and g.device.type != "meta"
        ):
            key = (g.untyped_storage().data_ptr(), g.dtype, g.device)
            by_storage.setdefault(key, []).append(g)
        else:
            others.append(g)
    flats: list[Tensor] = []
    checks: list[Any] = []
    for members in by_storage.values():
        members.sort(key=lambda t: t.storage_offset())
        run = [members[0]]
        for g in [*members[1:], None]:
            prev = run[-1]
            if g is not None and g.storage_offset() == prev.storage_offset() + prev.numel():
                run.append(g)
                continue
            if len(run) > 1:
                start = run[0].storage_offset()
                total = run[-1].storage_offset() + run[-1].numel() - start
                flats.append(run[0].as_strided((total,), (1,), start))
                checks.append((run[0], run[0].data_ptr(), run[-1], run[-1].data_ptr()))
            else:
                others.append(run[0])
            if g is not None:
                run = [g]
    return flats, others, checks


def _still_valid(checks: list[Any]) -> bool:
    return all(a.data_ptr() == pa and b.data_ptr() == pb for a, pa, b, pb in checks)


def flat_plan(grads: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Split ``grads`` into flat views over back-to-back runs and the remaining tensors.

    The flat views cover exactly the gradients' elements (each run is contiguous,
    non-overlapping, one dtype and device), so norms and in-place scaling over them
    equal those over the gradients. Cheap when called again with the same
    gradient objects.
    """
    key = tuple(map(id, grads))
    for entry in _cache:
        if entry[0] == key and _still_valid(entry[3]):
            return entry[2]
    flats, others, checks = _detect(grads)
    plan = (flats, others)
    if flats:
        _cache.insert(0, (key, list(grads), plan, checks))
        del _cache[_CACHE_SIZE:]
    return plan


class GradBuffer:
    """Flat gradient buffers of a set of parameters (see :func:`contiguous_grads`).

    Attributes:
        buffers: one flat tensor per (device, dtype), in first-seen order.
    """

    def __init__(self, parameters: Iterable[Tensor]) -> None:
        params: list[Tensor] = []
        seen: set[int] = set()
        for p in parameters:
            if not isinstance(p, Tensor):
                raise TypeError(
                    "Argument `parameters` must hold tensors. "
                    f"Received: an element of type {type(p).__name__}"
                )
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for p in params:
            groups.setdefault((p.device, p.dtype), []).append(p)
        self.buffers: list[Tensor] = []
        self._views: dict[Tensor, Tensor] = {}
        self._pairs: list[tuple[Tensor, Tensor]] = []
        self._handles: list[Any] = []
        for (dev, dtype), members in groups.items():
            flat = torch.zeros(sum(p.numel() for p in members), dtype=dtype, device=dev)
            offset = 0
            for p in members:
                view = flat[offset : offset + p.numel()].view_as(p)
                offset += p.numel()
                if p.grad is not None:
                    view.copy_(p.grad)
                p.grad = view
                self._views[p] = view
                self._pairs.append((p, view))
                self._handles.append(p.register_post_accumulate_grad_hook(self._reattach))
            self.buffers.append(flat)

    def _reattach(self, param: Tensor) -> None:
        view = self._views[param]
        grad = param.grad
        if grad is not view and grad is not None:
            view.copy_(grad)
            param.grad = view

    def zero_grad(self) -> None:
        """Zero every buffer (one kernel each) and point every ``.grad`` at its view.

        Faster than ``optimizer.zero_grad()`` for many small tensors.
        """
        for flat in self.buffers:
            flat.zero_()
        for p, view in self._pairs:
            if p.grad is not view:
                p.grad = view

    def remove(self) -> None:
        """Remove the hooks; gradients stay views until they are set to None."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __repr__(self) -> str:
        sizes = ", ".join(f"{b.numel()}x{b.dtype}@{b.device}" for b in self.buffers)
        return f"GradBuffer({len(self._pairs)} parameters in [{sizes}])"


def contiguous_grads(parameters: Iterable[Tensor]) -> GradBuffer:
    """Make the gradients of ``parameters`` views of one flat buffer per (device, dtype).

    Existing gradients are copied in. Autograd then accumulates in place into the
    views; after ``optimizer.zero_grad()`` (``set_to_none=True``, torch's default) a
    hook copies each new gradient back into its view, so the layout survives (at the
    cost of one copy per tensor). ``buffer.zero_grad()`` is the fastest way to zero.
    :func:`steadystep.torch.clip_grad_norm_` detects the layout by itself.

    Returns:
        The :class:`GradBuffer` (keep it; ``remove()`` undoes the hooks).

    Examples:
        >>> import torch
        >>> ps = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2, 2))]
        >>> buf = contiguous_grads(ps)
        >>> (ps[0] * 2).sum().backward()
        >>> buf.buffers[0].tolist()
        [2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0]
    """
    return GradBuffer(parameters)
