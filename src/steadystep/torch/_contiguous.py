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

import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["GradBuffer", "contiguous_grads", "flat_plan"]

_SENTINELS = 16

_CACHE_SIZE = 4
# entries: (ids of the grads, weak references to them, flat views, indices of the other
# grads, checks). Only weak references: a cached plan never keeps a gradient alive, so
# equal ids with every reference alive mean the very same tensors.
_cache: list[tuple[tuple[int, ...], list[Any], list[Tensor], list[int], list[Any]]] = []


def _detect(grads: list[Tensor]) -> tuple[list[Tensor], list[int], list[Any]]:
    by_storage: dict[tuple[int, torch.dtype, torch.device], list[int]] = {}
    others: list[int] = []
    for i, g in enumerate(grads):
        if (
            type(g) is torch.Tensor
            and g.layout == torch.strided
            and g.numel() > 0
            and g.is_contiguous()
            and g.device.type != "meta"
        ):
            key = (g.untyped_storage().data_ptr(), g.dtype, g.device)
            by_storage.setdefault(key, []).append(i)
        else:
            others.append(i)
    flats: list[Tensor] = []
    checks: list[Any] = []
    for members in by_storage.values():
        members.sort(key=lambda i: grads[i].storage_offset())
        run = [members[0]]
        for i in [*members[1:], None]:
            prev = grads[run[-1]]
            if i is not None and grads[i].storage_offset() == prev.storage_offset() + prev.numel():
                run.append(i)
                continue
            if len(run) > 1:
                first, last = grads[run[0]], grads[run[-1]]
                start = first.storage_offset()
                total = last.storage_offset() + last.numel() - start
                flats.append(first.as_strided((total,), (1,), start))
                checks.append((first, first.data_ptr(), last, last.data_ptr()))
            else:
                others.append(run[0])
            if i is not None:
                run = [i]
    return flats, sorted(others), checks


def _still_valid(refs: list[Any], checks: list[Any]) -> bool:
    return all(r() is not None for r in refs) and all(
        a.data_ptr() == pa and b.data_ptr() == pb for a, pa, b, pb in checks
    )


def flat_plan(grads: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Split ``grads`` into flat views over back-to-back runs and the remaining tensors.

    The flat views cover exactly the gradients' elements (each run is contiguous,
    non-overlapping, one dtype and device), so norms and in-place scaling over them
    equal those over the gradients. Cheap when called again with the same
    gradient objects (also when there is no run to find).
    """
    key = tuple(map(id, grads))
    for entry_key, refs, flats, others, checks in _cache:
        if entry_key == key and _still_valid(refs, checks):
            return flats, [grads[i] for i in others]
    flats, others, checks = _detect(grads)
    _cache.insert(0, (key, [weakref.ref(g) for g in grads], flats, others, checks))
    del _cache[_CACHE_SIZE:]
    return flats, [grads[i] for i in others]


class GradBuffer:
    """Flat gradient buffers of a set of parameters (see :func:`contiguous_grads`).

    Pass the buffer itself where parameters are expected
    (``clip_grad_norm_(buf, ...)``, ``ZClip(buf)``) and clipping works on the flat
    buffers instead of every ``.grad``: one norm and one multiply per buffer,
    nothing per parameter. That is exact while every gradient is its view, or None
    with a zeroed view, and the buffer keeps it so: autograd accumulates into the
    views; a gradient that autograd allocates anew (after
    ``optimizer.zero_grad(set_to_none=True)``) is copied into its view by a hook,
    which also marks the buffer for one full check at the next clipping call
    (zeroing the views of gradients that are None); and a few sentinel gradients
    notice a ``zero_grad(set_to_none=True)`` that no backward followed. Zeroing with
    ``buf.zero_grad()`` keeps every clipping call on the fast path.

    What it cannot notice is a hand-made change to a few ``.grad`` after the last
    backward (``p.grad = None`` or ``p.grad = t``): call :meth:`check` after one.

    Attributes:
        buffers: one flat tensor per (device, dtype), in first-seen order.
        parameters: the parameters, each once, in buffer order.
        has_grads: whether any parameter had a gradient at the last check.
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
            if type(p) not in (Tensor, torch.nn.Parameter) or p.layout != torch.strided:
                raise TypeError(
                    "Argument `parameters` must hold plain dense tensors to share one flat "
                    f"buffer. Received: a {type(p).__name__} with layout {p.layout}"
                )
            owner = getattr(p, "_steadystep_grad_buffer", lambda: None)()
            if owner is not None and owner._handles:
                raise ValueError(
                    "Argument `parameters` holds a parameter of shape "
                    f"{tuple(p.shape)} whose gradient already lives in another GradBuffer; "
                    "call remove() on that one first"
                )
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for p in params:
            groups.setdefault((p.device, p.dtype), []).append(p)
        self.buffers: list[Tensor] = []
        self._pairs: list[tuple[Tensor, Tensor]] = []
        self._sentinels: list[tuple[Tensor, Tensor]] = []
        self.has_grads = False
        self._handles: list[Any] = []
        for (dev, dtype), members in groups.items():
            flat = torch.zeros(sum(p.numel() for p in members), dtype=dtype, device=dev)
            offset = 0
            for p in members:
                view = flat[offset : offset + p.numel()].view_as(p)
                offset += p.numel()
                self._pairs.append((p, view))
                self._handles.append(p.register_post_accumulate_grad_hook(self._hook(view)))
                p._steadystep_grad_buffer = weakref.ref(self)  # type: ignore[attr-defined]
            self.buffers.append(flat)
        self.parameters = [p for p, _ in self._pairs]
        self._checked = False
        self.check()  # copies existing gradients in; one without a gradient keeps None

    def _hook(self, view: Tensor) -> Any:
        def reattach(param: Tensor) -> None:
            grad = param.grad
            if grad is not view:  # allocated anew: someone set .grad to None (or by hand)
                self._checked = False
                if grad is not None:
                    view.copy_(grad)
                    param.grad = view

        return reattach

    def check(self) -> None:
        """Make the buffers equal the gradients again after ``.grad`` was changed by hand.

        A gradient that is another tensor is copied into its view (and ``.grad``
        points at the view again); the view of a parameter whose gradient is None
        is zeroed (``.grad`` stays None, so optimizers still skip that parameter).
        """
        stale: list[Tensor] = []
        attached: list[tuple[Tensor, Tensor]] = []
        for p, view in self._pairs:
            grad = p.grad
            if grad is None:
                stale.append(view)
                continue
            if grad is not view:
                view.copy_(grad)
                p.grad = view
            attached.append((p, view))
        if stale:
            torch._foreach_zero_(stale)
        # a few gradients, spread over the buffers, to notice a zero_grad(set_to_none=True)
        # that no backward followed (the hook sees the ones that a backward follows)
        stride = max(1, len(attached) // _SENTINELS)
        self._sentinels = attached[::stride][:_SENTINELS]
        self.has_grads = bool(attached)
        self._checked = True

    def _stale(self) -> bool:
        return not self._checked or any(p.grad is not view for p, view in self._sentinels)

    def flat_grads(self) -> list[Tensor] | None:
        """The flat buffers, exactly the gradients (None once :meth:`remove` was called).

        Reads a handful of ``.grad`` attributes, all of them only when a gradient was
        allocated anew (or set to None) since the last check.
        """
        if not self._handles:
            return None
        if self._stale():
            self.check()
        return self.buffers

    def zero_grad(self) -> None:
        """Zero every gradient in place, one kernel per buffer; None gradients stay None.

        What ``optimizer.zero_grad(set_to_none=False)`` does, without a kernel per
        tensor, and it keeps the next clipping call on the fast path (autograd then
        accumulates into the views, allocating nothing).
        """
        if self._stale():
            self.check()
        for flat in self.buffers:
            flat.zero_()

    def drop_grads(self) -> None:
        """Set every gradient to None (the optimizer then skips every parameter)."""
        for p in self.parameters:
            p.grad = None
        for flat in self.buffers:
            flat.zero_()
        self._sentinels = []
        self.has_grads = False
        self._checked = True

    def remove(self) -> None:
        """Remove the hooks; gradients stay views until they are set to None."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for p in self.parameters:
            p.__dict__.pop("_steadystep_grad_buffer", None)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{b.numel()}x{b.dtype}@{b.device}" for b in self.buffers)
        return f"GradBuffer({len(self._pairs)} parameters in [{sizes}])"


def contiguous_grads(parameters: Iterable[Tensor]) -> GradBuffer:
    """Make the gradients of ``parameters`` views of one flat buffer per (device, dtype).

    Existing gradients are copied in (a parameter without one keeps None). Autograd
    then accumulates in place into the views; after ``optimizer.zero_grad()``
    (``set_to_none=True``, torch's default) a hook copies each new gradient into its
    view, so the layout survives (at the cost of one copy per tensor).
    ``buf.zero_grad()`` is the fastest way to zero. Pass ``buf`` itself to
    :func:`steadystep.torch.clip_grad_norm_` or a clipper to clip the flat buffers
    without reading any ``.grad``; passing the parameters also works (the layout is
    detected, but every ``.grad`` is read).

    Returns:
        The :class:`GradBuffer` (keep it; ``remove()`` undoes the hooks).

    Examples:
        >>> import torch
        >>> ps = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2, 2))]
        >>> buf = contiguous_grads(ps)
        >>> (ps[0] * 2).sum().backward()
        >>> buf.buffers[0].tolist()
        [2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0]
        >>> from steadystep.torch import clip_grad_norm_
        >>> round(float(clip_grad_norm_(buf, max_norm=1.0)), 4)  # reads only buf.buffers
        3.4641
        >>> ps[0].grad, ps[1].grad is None
        (tensor([0.5774, 0.5774, 0.5774]), True)
    """
    return GradBuffer(parameters)
