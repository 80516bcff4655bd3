"""Layer-wise learning-rate decay (LLRD) param groups for transformer fine-tuning (BERT, ViT)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch

from .. import _check as check

__all__ = ["layerwise_lr_decay_groups"]

# ``encoder.layer.3.``, ``blocks.3.``, ``h.3.``, ``layers.3.``, ``block.3.``, ``resblocks.3.``
_BLOCK = re.compile(r"(?:^|\.)(?:layer|layers|block|blocks|h|resblocks)\.(\d+)(?:\.|$)")
_EMBED_NAMES = {"cls_token", "mask_token", "dist_token", "reg_token", "wte", "wpe"}


def _default_layer_of(name: str) -> int | None:
    """Block index + 1; 0 for embeddings; None for the rest (head, final norm, pooler)."""
    m = _BLOCK.search(name)
    if m is not None:
        return int(m.group(1)) + 1
    if any("embed" in part or part in _EMBED_NAMES for part in name.split(".")):
        return 0
    return None


def layerwise_lr_decay_groups(
    model: torch.nn.Module,
    base_lr: float,
    decay: float,
    *,
    weight_decay: float = 0.0,
    num_layers: int | None = None,
    layer_of: Callable[[str], int | None] | None = None,
) -> list[dict[str, Any]]:
    """Param groups whose LR shrinks by ``decay`` per layer from the head down to the embeddings.

    With ``L`` transformer blocks, layer ``0`` is the embeddings, layers ``1..L`` the blocks and
    layer ``L + 1`` everything after them (head, final norm, pooler). A parameter of layer ``i``
    gets ``lr = base_lr * decay ** (L + 1 - i)``: the head trains at ``base_lr``, the embeddings
    at ``base_lr * decay ** (L + 1)``.

    Blocks are found from parameter names (``encoder.layer.3.``, ``blocks.3.``, ``h.3.``,
    ``layers.3.``); names with ``embed`` (or ``cls_token``, ``wte``, ...) are the embeddings.
    Pass ``layer_of(name) -> int | None`` for other layouts (``None``: after the blocks).

    Weight decay: ``weight_decay`` applies to matrices only; biases, norm weights (any parameter
    with ``ndim <= 1``) and the names listed by a timm-style ``model.no_weight_decay()`` get 0,
    the usual companion of LLRD (BERT's ``exclude_from_weight_decay``, timm, MAE). Frozen
    parameters are left out. Each group has a ``"name"``: ``"layer_{i}"`` or
    ``"layer_{i}_no_decay"``, usable with a per-group schedule mapping.

    Drive the groups with a multiplier schedule and ``relative=True`` so the ratios survive:

    >>> import torch, steadystep as ss
    >>> class Tiny(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embed = torch.nn.Embedding(10, 4)
    ...         self.blocks = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(2))
    ...         self.head = torch.nn.Linear(4, 2)
    >>> groups = ss.torch.layerwise_lr_decay_groups(Tiny(), 1e-3, decay=0.5, weight_decay=0.01)
    >>> [(g["name"], g["lr"], g["weight_decay"]) for g in groups]  # doctest: +NORMALIZE_WHITESPACE
    [('layer_0', 0.000125, 0.01), ('layer_1', 0.00025, 0.01), ('layer_1_no_decay', 0.00025, 0.0),
     ('layer_2', 0.0005, 0.01), ('layer_2_no_decay', 0.0005, 0.0), ('layer_3', 0.001, 0.01),
     ('layer_3_no_decay', 0.001, 0.0)]
    >>> opt = torch.optim.AdamW(groups)
    >>> sched = ss.torch.Scheduler(opt, ss.warmup(ss.linear(1.0, 0.0, steps=90), steps=10),
    ...                            relative=True)

    References: Howard & Ruder 2018 (ULMFiT, discriminative fine-tuning); Clark et al. 2020
    (ELECTRA, layer-wise LR decay); Bao et al. 2022 (BEiT) and He et al. 2022 (MAE,
    ``util/lr_decay.py``) for the ViT layer ids.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"Argument `model` must be a torch.nn.Module. Received: model of type "
            f"{type(model).__name__}"
        )
    base = check.positive("base_lr", base_lr)
    d = check.positive("decay", decay)
    if d > 1:
        raise check.fail("decay", "in (0, 1]", decay)
    wd = check.nonnegative("weight_decay", weight_decay)
    find = _default_layer_of if layer_of is None else layer_of
    listed = getattr(model, "no_weight_decay", None)  # timm's convention: a set of names
    no_wd = set(listed()) if callable(listed) else set()

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    ids = {n: find(n) for n, _ in named}
    for n, i in ids.items():
        if i is not None and (isinstance(i, bool) or not isinstance(i, int) or i < 0):
            raise ValueError(f"`layer_of({n!r})` must be an int >= 0 or None. Received: {i!r}")
    if num_layers is None:
        blocks = [i for i in ids.values() if i is not None]
        if not any(i >= 1 for i in blocks):
            raise ValueError(
                "No transformer blocks found in the parameter names (expected e.g. "
                "'encoder.layer.0.', 'blocks.0.', 'h.0.', 'layers.0.'). Pass `layer_of=` to map "
                "names to layer ids, or `num_layers=`."
            )
        top = max(blocks)
    else:
        top = check.integer("num_layers", num_layers, minimum=1)
    head = top + 1  # layers 0 (embeddings) .. top (last block), then the head

    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for n, p in named:
        i = ids[n]
        if i is not None and i > top:
            raise ValueError(f"Parameter {n!r} is in layer {i}, beyond num_layers={top}")
        layer = head if i is None else i
        decayed = p.ndim > 1 and n not in no_wd
        group = groups.get((layer, decayed))
        if group is None:
            group = groups[(layer, decayed)] = {
                "params": [],
                "lr": base * d ** (head - layer),
                "weight_decay": wd if decayed else 0.0,
                "name": f"layer_{layer}" if decayed else f"layer_{layer}_no_decay",
            }
        group["params"].append(p)
    return [groups[key] for key in sorted(groups, key=lambda k: (k[0], not k[1]))]
