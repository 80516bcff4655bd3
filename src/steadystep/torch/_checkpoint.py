"""Atomic checkpoints of everything steadystep owns, optionally with the model and optimizer.

A checkpoint is one file written with :func:`torch.save` and read back with
``torch.load(weights_only=True)``: a dict of each object's ``state_dict()`` (the scheduler's
step and spec text, the clippers' statistics, and the model's, optimizer's or ``GradScaler``'s
state when given) and of plain values (``epoch=3``, ``torch.get_rng_state()``). Nothing in it
needs pickle to load: values are checked before writing.

The write is atomic: the bytes go to a temporary file in the same directory, are flushed and
fsynced, then renamed over the target (``os.replace``) and the directory is fsynced. A process
killed at any moment leaves either the previous checkpoint or the new one, never a mix; at
worst a stray ``.<name>.*.tmp`` file, which :func:`load_checkpoint` never reads.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_checkpoint", "save_checkpoint"]

_FORMAT = "steadystep.checkpoint/1"
_PLAIN = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size)


def save_checkpoint(path: str | os.PathLike[str], **objects: Any) -> Path:
    """Atomically write ``objects`` (their ``state_dict()``, or plain values) to ``path``.

    Args:
        path: the checkpoint file; its directory must exist. An existing file is replaced only
            once the new one is complete and on disk.
        **objects: ``name=object``. An object with a ``state_dict()`` method (steadystep
            ``Scheduler``, ``AutoClip``/``ZClip``/``AGC``/``SpikeSkip``, a model, an optimizer,
            a ``GradScaler``) is saved as its state dict; anything else must be a plain value:
            tensors, numbers, strings, ``None``, and lists/tuples/dicts of them.

    Returns:
        The path written.

    Raises:
        TypeError: a value that ``torch.load(weights_only=True)`` could not read back (it would
            need pickle), named by its place, e.g. ``objects["extra"]["fn"]``.

    Example:
        >>> import tempfile, torch, steadystep as ss
        >>> model = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> sched = ss.torch.Scheduler(opt, ss.warmup(ss.cosine(0.1, 0.0, steps=8), steps=2))
        >>> sched.last_epoch = 5
        >>> path = Path(tempfile.mkdtemp()) / "ckpt.pt"
        >>> _ = save_checkpoint(path, model=model, optimizer=opt, scheduler=sched, epoch=1)
        >>> sched2 = ss.torch.Scheduler(opt, ss.warmup(ss.cosine(0.1, 0.0, steps=8), steps=2))
        >>> rest = load_checkpoint(path, scheduler=sched2)
        >>> sched2.last_epoch, rest["epoch"]
        (5, 1)
    """
    target = _as_path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"Argument `path` must be in an existing directory. Received: path={str(path)!r}"
        )
    states: dict[str, Any] = {}
    for name, obj in objects.items():
        state = obj.state_dict() if callable(getattr(obj, "state_dict", None)) else obj
        _check_plain(state, f'objects["{name}"]')
        states[name] = state
    _atomic_save({"format": _FORMAT, "states": states}, target)
    return target


def load_checkpoint(
    path: str | os.PathLike[str], *, map_location: Any = "cpu", **objects: Any
) -> dict[str, Any]:
    """Read a :func:`save_checkpoint` file (``weights_only=True``) and restore ``objects``.

    Every ``name=object`` given gets ``object.load_state_dict(saved[name])``; each name must be
    in the file. Tensors are loaded to ``map_location`` first (``load_state_dict`` of models,
    optimizers and steadystep clippers then moves them to their parameters' device).

    Returns:
        Every saved entry by name (state dicts and plain values), e.g. ``["epoch"]``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a complete steadystep checkpoint (truncated, corrupt, or
            needing pickle), or lacks one of the names asked for.
    """
    source = _as_path(path)
    try:
        data = torch.load(source, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError) as exc:
        raise ValueError(
            f"{str(source)!r} is not a readable steadystep checkpoint "
            f"(truncated, corrupt, or needing pickle): {exc}"
        ) from None
    if not isinstance(data, Mapping) or data.get("format") != _FORMAT:
        raise ValueError(f"{str(source)!r} is not a steadystep checkpoint ({_FORMAT!r}).")
    states: dict[str, Any] = dict(data["states"])
    missing = sorted(set(objects) - set(states))
    if missing:
        raise ValueError(
            f"The checkpoint {str(source)!r} has no entry for {missing}; it holds {sorted(states)}."
        )
    for name, obj in objects.items():
        obj.load_state_dict(states[name])
    return states


def _as_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"Argument `path` must be a str or os.PathLike. Received: path={path!r} "
            f"of type {type(path).__name__}"
        )
    return Path(path)


def _check_plain(value: Any, where: str) -> None:
    """Refuse what ``torch.load(weights_only=True)`` cannot rebuild (it would need pickle)."""
    if isinstance(value, torch.Tensor):
        if type(value) not in (torch.Tensor, torch.nn.Parameter):
            raise TypeError(
                f"{where} is a tensor subclass ({type(value).__name__}); save a plain tensor"
            )
        return
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if type(value) in (dict, collections.OrderedDict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where} has a key {key!r} of type {type(key).__name__}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}, which torch.load(weights_only=True) cannot read "
        "back. Save its state_dict() or plain values (tensors, numbers, strings, lists, dicts)."
    )


def _atomic_save(payload: Any, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode honours the umask
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    # makes the rename itself durable; directories cannot be opened this way on Windows
    if os.name != "posix":  # pragma: no cover
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
