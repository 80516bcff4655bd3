"""Contiguous gradients: many gradients as views of one flat buffer.

Clipping 20,000 small tensors costs 20,000 kernel launches for the norms and as
many for the scaling; over one flat buffer it is one reduction and one multiply.
DDP's ``gradient_as_bucket_view`` and Megatron's contiguous grad buffer use the
same idea (both read, neither copied).

Two pieces:

* :func:`flat_plan` finds, for a list of gradients, the runs that already sit
  back to back in one storage (whoever put them there: :func:`contiguous_grads`,
  DDP buckets, FSDP, a user's own buffer) and returns one flat view per run.
  The answer is cached on the identity of the gradient objects and their addresses.
* :func:`contiguous_grads` makes it so: it allocates one buffer per
  (device, dtype), points every ``param.grad`` at a view of it, and keeps it so
  across ``optimizer.zero_grad(set_to_none=True)`` with a post-accumulate-grad hook
  that copies a freshly allocated gradient back into its view, and checks on every
  clipping call that it still holds every gradient (see :class:`GradBuffer`).
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from steadystep import _check as check

__all__ = ["GradBuffer", "contiguous_grads", "flat_plan"]

_SENTINELS = 16

# The C getters, called directly: reading ``Parameter.grad`` through its attribute costs
# about three times as much (the subclass's torch-function lookup), and the default
# check of a GradBuffer reads every gradient on every call.
_GRAD = torch._C.TensorBase.grad.__get__
_PTR = torch._C.TensorBase.data_ptr

_CACHE_SIZE = 4
# entries: (ids of the grads, weak references to them, indices of the grads in runs, their
# data pointers, flat views, indices of the other grads). Only weak references: a cached
# plan never keeps a gradient alive, so equal ids with every reference alive mean the very
# same tensor objects; equal data pointers mean the same memory (the flat views keep the
# storages they read alive, so no other tensor can have been given their addresses).
_cache: list[tuple[tuple[int, ...], list[Any], list[int], list[int], list[Tensor], list[int]]] = []


def _detect(grads: list[Tensor]) -> tuple[list[Tensor], list[int]]:
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
            else:
                others.append(run[0])
            if i is not None:
                run = [i]
    return flats, sorted(others)


def flat_plan(grads: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Split ``grads`` into flat views over back-to-back runs and the remaining tensors.

    The flat views cover exactly the gradients' elements (each run is contiguous,
    non-overlapping, one dtype and device), so norms and in-place scaling over them
    equal those over the gradients. Cheap when called again with the same
    gradient objects over the same memory (also when there is no run to find): the
    plan is reused only if every gradient is the very object it was made from and still
    points at the same address (``g.data = t`` or a cast moves it: the layout is
    detected again).
    """
    key = tuple(map(id, grads))
    for entry_key, refs, in_runs, ptrs, flats, others in _cache:
        if (
            entry_key == key
            and all(r() is not None for r in refs)
            and list(map(_PTR, map(grads.__getitem__, in_runs))) == ptrs
        ):
            return flats, [grads[i] for i in others]
    flats, others = _detect(grads)
    in_runs = sorted(set(range(len(grads))).difference(others))
    ptrs = list(map(_PTR, map(grads.__getitem__, in_runs)))
    _cache.insert(0, (key, [weakref.ref(g) for g in grads], in_runs, ptrs, flats, others))
    del _cache[_CACHE_SIZE:]
    return flats, [grads[i] for i in others]


def _fits(grad: Tensor, like: Tensor) -> bool:
    """Whether ``grad`` can live in a view shaped as ``like`` (a plain dense tensor, same kind)."""
    return (
        type(grad) is torch.Tensor
        and grad.layout == torch.strided
        and grad.dtype == like.dtype
        and grad.device == like.device
        and grad.shape == like.shape
    )


def _note_replaced(module: torch.nn.Module, name: str, param: Any) -> None:
    """Global parameter-registration hook: tell a GradBuffer that one of its parameters was
    replaced on its module (``module.weight = nn.Parameter(...)``,
    ``load_state_dict(..., assign=True)``); that buffer then refuses to clip."""
    old = module._parameters.get(name)
    if old is None or old is param:
        return
    owner = getattr(old, "_steadystep_grad_buffer", lambda: None)()
    if owner is not None and owner._module is None:  # built from a module: it follows
        owner._replaced = f"{type(module).__name__}.{name} (shape {tuple(old.shape)})"


torch.nn.modules.module.register_module_parameter_registration_hook(_note_replaced)


class GradBuffer:
    """Flat gradient buffers of a set of parameters (see :func:`contiguous_grads`).

    Pass the buffer itself where parameters are expected
    (``clip_grad_norm_(buf, ...)``, ``ZClip(buf)``) and clipping works on the flat
    buffers instead of every ``.grad``: one norm and one multiply per buffer. That is
    exact while every gradient is its view, or None with a zeroed view, and the buffer
    keeps it so: autograd accumulates into the views; a gradient that autograd
    allocates anew (after ``optimizer.zero_grad(set_to_none=True)``) is copied into its
    view by a hook.

    Each clipping call checks, before using the buffers, that every gradient is still
    its view, that no view was pointed elsewhere (``p.grad.data = t``, a cast of the
    model) and that no parameter outside the buffers (frozen when it was built) has a
    gradient. What it finds is repaired before the norm: a gradient set by hand is
    copied into its view (``.grad`` points at the view again), the view of a ``None``
    gradient is zeroed, and an unfrozen parameter or a cast model gets new buffers. A
    gradient that cannot live in a buffer (another dtype than its parameter, a sparse or
    subclass tensor) makes the call read the gradients one by one.

    Built from the model itself (``contiguous_grads(model)``), the buffer also follows
    the model's parameters: one replaced by any route (``module.weight =
    nn.Parameter(...)``, ``load_state_dict(..., assign=True)``, ``model.to("meta")``,
    ``to_empty()``, a new submodule) is taken in, the old one let go. Built from
    ``model.parameters()`` it holds those parameter objects, as an optimizer does: one
    replaced through the module's ``register_parameter`` (the first two routes) makes it
    refuse with a ``ValueError``; ``to("meta")`` and ``to_empty()`` make new parameters
    without telling anyone, so build the buffer (like the optimizer) after them.

    The check reads every ``.grad`` once (a few tenths of a microsecond a parameter);
    ``verify=False`` skips it for a model that is never changed between clips (then only
    the hook and 16 sentinel gradients watch, and :meth:`check` must be called after any
    change by hand).

    Attributes:
        buffers: one flat tensor per (device, dtype), in first-seen order.
        parameters: the parameters in the buffers, each once, in buffer order.
        has_grads: whether any parameter had a gradient at the last check.
        verify: whether every clipping call checks every gradient (the default).
    """

    def __init__(
        self, parameters: torch.nn.Module | Iterable[Tensor], *, verify: bool = True
    ) -> None:
        self.verify = check.flag("verify", verify)
        self._module = parameters if isinstance(parameters, torch.nn.Module) else None
        self._handles: dict[int, Any] = {}
        self._views: dict[int, Tensor] = {}  # id(param) -> its view, read by the hooks
        self._replaced: str | None = None
        self._removed = False
        self._given: list[Tensor] = []
        self._adopt(parameters.parameters() if self._module is not None else parameters)

    def _adopt(self, parameters: Iterable[Tensor]) -> None:
        """Take ``parameters`` as the buffer's (validated), let go of the others, lay out."""
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
            if owner is not None and owner is not self and not owner._removed:
                raise ValueError(
                    "Argument `parameters` holds a parameter of shape "
                    f"{tuple(p.shape)} whose gradient already lives in another GradBuffer; "
                    "call remove() on that one first"
                )
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        kept = {id(p) for p in params}
        for p in self._given:
            if id(p) not in kept:  # replaced on the module: let go of the old one
                if id(p) in self._handles:
                    self._handles.pop(id(p)).remove()
                p.__dict__.pop("_steadystep_grad_buffer", None)
        self._given = params
        for p in params:
            p._steadystep_grad_buffer = weakref.ref(self)  # type: ignore[attr-defined]
        if self._module is not None:
            self._modules = list(self._module.modules())
            self._tree = self._module_tree()
        self._build()

    def _module_tree(self) -> list[Any]:
        """Every submodule and parameter slot of the modules seen at the last layout, by
        identity: a parameter replaced by any route (``module.weight = ...``,
        ``load_state_dict(assign=True)``, ``to("meta")``, ``to_empty()``, a new
        submodule) changes it."""
        return [
            *[v for m in self._modules for v in m._modules.values()],
            *[v for m in self._modules for v in m._parameters.values()],
        ]

    def _tree_holds(self) -> bool:
        if self._module is None:
            return True
        tree = self._module_tree()
        return len(tree) == len(self._tree) and all(map(operator.is_, tree, self._tree))

    def _build(self) -> None:
        """Lay out new buffers for the parameters that can have a gradient now.

        A parameter is in them when it requires grad or has a gradient; the others are
        watched for a gradient (unfreezing). Existing gradients are copied in.
        """
        members = [p for p in self._given if p.requires_grad or p.grad is not None]
        self._outside = [p for p in self._given if not (p.requires_grad or p.grad is not None)]
        groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for p in members:
            groups.setdefault((p.device, p.dtype), []).append(p)
        self.buffers: list[Tensor] = []
        self._pairs: list[tuple[Tensor, Tensor]] = []
        self._views.clear()
        for (dev, dtype), group in groups.items():
            flat = torch.zeros(sum(p.numel() for p in group), dtype=dtype, device=dev)
            offset = 0
            for p in group:
                view = flat[offset : offset + p.numel()].view_as(p)
                offset += p.numel()
                self._pairs.append((p, view))
                self._views[id(p)] = view
                if not self._removed and id(p) not in self._handles and p.requires_grad:
                    self._handles[id(p)] = p.register_post_accumulate_grad_hook(self._hook)
            self.buffers.append(flat)
        self.parameters = [p for p, _ in self._pairs]
        self._view_list = [view for _, view in self._pairs]
        self._ptrs = list(map(_PTR, self._view_list))
        self._resync()

    def _hook(self, param: Tensor) -> None:
        grad = param.grad
        view = self._views.get(id(param))
        if grad is not view:  # allocated anew: someone set .grad to None (or by hand)
            self._checked = False
            if grad is not None and view is not None and _fits(grad, view):
                view.copy_(grad)
                param.grad = view

    def _resync(self) -> bool:
        """Copy hand-set gradients into their views, zero the views of None ones.

        A gradient that cannot live in its view is left as it is and makes clipping read
        the gradients one by one (``_fits`` False). Returns False when new buffers would
        hold it (its parameter was cast: it fits the parameter, not the old view).
        """
        stale: list[Tensor] = []
        expected: list[Tensor | None] = []
        self._fits = True
        for p, view in self._pairs:
            grad = p.grad
            if grad is None:
                stale.append(view)
            elif grad is not view:
                if _fits(grad, view):
                    view.copy_(grad)
                    p.grad = grad = view
                elif _fits(grad, p):
                    return False
                else:
                    self._fits = False
            expected.append(grad)
        if stale:
            torch._foreach_zero_(stale)
        self._expected = expected
        attached = [(p, v) for (p, v), e in zip(self._pairs, expected, strict=True) if e is v]
        # a few gradients, spread over the buffers, to notice a zero_grad(set_to_none=True)
        # that no backward followed (with verify=False; the hook sees those a backward follows)
        stride = max(1, len(attached) // _SENTINELS)
        self._sentinels = attached[::stride][:_SENTINELS]
        self.has_grads = any(e is not None for e in expected)
        self._checked = True
        return True

    def _layout_holds(self) -> bool:
        """Whether every view still points into the buffers and no outside parameter
        (frozen at the last layout) has a gradient."""
        return list(map(_PTR, self._view_list)) == self._ptrs and all(
            g is None for g in map(_GRAD, self._outside)
        )

    def _consistent(self) -> bool:
        if not self._checked:
            return False
        if not self.verify:
            return all(p.grad is view for p, view in self._sentinels)
        if not self._tree_holds():
            return False
        grads = map(_GRAD, self.parameters)
        return all(map(operator.is_, grads, self._expected)) and self._layout_holds()

    def check(self) -> None:
        """Make the buffers equal the gradients again after ``.grad`` was changed by hand.

        A gradient that is another tensor is copied into its view (and ``.grad``
        points at the view again); the view of a parameter whose gradient is None
        is zeroed (``.grad`` stays None, so optimizers still skip that parameter); new
        buffers are laid out when a parameter outside them got a gradient or a view was
        pointed elsewhere (a cast). With ``verify=True`` every clipping call does this
        when needed.
        """
        if self._module is not None and not self._tree_holds():
            self._adopt(self._module.parameters())  # built from the model: follow it
            return
        if self._replaced is not None:
            raise ValueError(
                f"The GradBuffer's parameter {self._replaced} was replaced on its module by "
                "a new Parameter (module.weight = nn.Parameter(...), load_state_dict(..., "
                "assign=True)); the buffer, like an optimizer, still holds the old one. "
                "Build a new buffer: buf.remove(); buf = contiguous_grads(model.parameters())"
            )
        if not self._layout_holds() or not self._resync():
            self._build()  # the layout changed: lay it out anew (existing grads copied in)

    def flat_grads(self) -> list[Tensor] | None:
        """The flat buffers, exactly the gradients; None when the gradients must be read
        one by one (after :meth:`remove`, or a gradient that cannot live in a buffer).

        With ``verify=True`` (the default) reads every ``.grad`` once; otherwise a
        handful, and all of them only when a gradient was allocated anew (or set to
        None) since the last check.
        """
        if self._removed:
            return None
        if self._replaced is not None or not self._consistent():
            self.check()
        return self.buffers if self._fits else None

    def zero_grad(self) -> None:
        """Zero every gradient in place, one kernel per buffer; None gradients stay None.

        What ``optimizer.zero_grad(set_to_none=False)`` does, without a kernel per
        tensor, and it keeps the next clipping call on the fast path (autograd then
        accumulates into the views, allocating nothing).
        """
        if self._removed or self.flat_grads() is None:
            for p in self._given:
                if p.grad is not None:
                    p.grad.zero_()
            return
        for flat in self.buffers:
            flat.zero_()

    def drop_grads(self) -> None:
        """Set every gradient to None (the optimizer then skips every parameter)."""
        for p in self._given:
            p.grad = None
        for flat in self.buffers:
            flat.zero_()
        self._expected = [None] * len(self._pairs)
        self._sentinels = []
        self.has_grads = False
        self._checked = True

    def remove(self) -> None:
        """Remove the hooks; gradients stay views until they are set to None."""
        for handle in self._handles.values():
            handle.remove()
        self._handles.clear()
        self._removed = True
        for p in self._given:
            p.__dict__.pop("_steadystep_grad_buffer", None)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{b.numel()}x{b.dtype}@{b.device}" for b in self.buffers)
        return f"GradBuffer({len(self._pairs)} parameters in [{sizes}])"


def contiguous_grads(
    parameters: torch.nn.Module | Iterable[Tensor], *, verify: bool = True
) -> GradBuffer:
    """Make the gradients of ``parameters`` views of one flat buffer per (device, dtype).

    ``parameters`` is the model (the buffer then follows its parameters, see
    :class:`GradBuffer`) or an iterable of parameters. Frozen parameters are watched and
    join the buffers once they have a gradient. ``verify=False`` drops the check of every
    gradient on every clipping call (see :class:`GradBuffer`).

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
    return GradBuffer(parameters, verify=verify)
