"""Atomic, checksummed checkpoints of everything steadystep owns, with the model and optimizer.

A checkpoint is one file written with :func:`torch.save` and read back with
``torch.load(weights_only=True)``: a dict of each object's ``state_dict()`` (the scheduler's
step and spec text, the clippers' statistics, and the model's, optimizer's or ``GradScaler``'s
state when given) and of plain values (``epoch=3``, ``torch.get_rng_state()``). Nothing in it
needs pickle to load: values are checked, and converted to plain types, before writing.

The write is atomic: the bytes go to a temporary file in the same directory, are flushed and
fsynced, read back as :func:`load_checkpoint` reads them, then renamed over the target
(``os.replace``) and the directory is fsynced. A process killed at any moment leaves either the
previous checkpoint or the new one, never a mix; at worst a stray ``.<name>.*.tmp`` file, which
:func:`load_checkpoint` never reads.

Integrity: the SHA-256 of the whole file is stored as its zip archive comment
(``steadystep-sha256:<hex>``), so a flipped, lost or spliced byte anywhere (tensor bytes, zip
headers, padding) is a ``ValueError`` on load. Files written before the checksum (no archive
comment) are read with every zip record's CRC-32 checked.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import hashlib
import os
import secrets
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

__all__ = ["load_checkpoint", "save_checkpoint"]

_FORMAT = "steadystep.checkpoint/1"
_PLAIN = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size)
#: exact types of the numbers and strings that a subclass (IntEnum, a str subclass) becomes
_BASES = (int, float, complex, str, bytes)
_EOCD = b"PK\x05\x06"  # the zip "end of central directory" record, 22 bytes without a comment
_TAG = b"steadystep-sha256:"
_COMMENT = len(_TAG) + 64
_CHUNK = 1 << 20


def save_checkpoint(path: str | os.PathLike[str], **objects: Any) -> Path:
    """Atomically write ``objects`` (their ``state_dict()``, or plain values) to ``path``.

    Args:
        path: the checkpoint file; its directory must exist. An existing file is replaced only
            once the new one is complete, on disk, and reads back.
        **objects: ``name=object``. An object with a ``state_dict()`` method (steadystep
            ``Scheduler``, ``AutoClip``/``ZClip``/``AGC``/``SpikeSkip``, a model, an optimizer,
            a ``GradScaler``) is saved as its state dict; anything else must be a plain value:
            tensors, numbers, strings, ``None``, and lists/tuples/dicts of them. Values that
            ``torch.load(weights_only=True)`` would refuse but that are plain underneath are
            saved as their plain form: NumPy scalars (``np.mean(losses)``) as Python numbers,
            ``IntEnum`` members and ``str``/``int``/``float`` subclasses as the base type,
            named tuples as tuples, other mappings as dicts.

    Returns:
        The path written.

    Raises:
        TypeError: a value that cannot be saved without pickle (a function, a schedule object,
            a NumPy array: save ``torch.from_numpy(a)``), named by its place, e.g.
            ``objects["extra"]['fn']``. Nothing is written.

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
        states[name] = _plain(state, f'objects["{name}"]', set())
    _atomic_save({"format": _FORMAT, "states": states}, target)
    return target


def load_checkpoint(
    path: str | os.PathLike[str], *, map_location: Any = "cpu", **objects: Any
) -> dict[str, Any]:
    """Read a :func:`save_checkpoint` file (``weights_only=True``) and restore ``objects``.

    Every ``name=object`` given gets ``object.load_state_dict(saved[name])``; each name must be
    in the file. Tensors are loaded to ``map_location`` first (``load_state_dict`` of models,
    optimizers and steadystep clippers then moves them to their parameters' device).

    All or nothing: the file's checksum is verified, then each model's saved keys, shapes and
    kinds of dtype are checked against it before anything is written; the optimizers, then the
    other objects (schedulers, clippers, scalers), then the models are loaded, and if any
    ``load_state_dict`` raises, the ones already loaded are restored to what they held, so a
    refused checkpoint leaves every object as it was. (The restore keeps a copy of each small
    state; an optimizer's state is not copied: torch replaces, never overwrites, its tensors.)

    Returns:
        Every saved entry by name (state dicts and plain values), e.g. ``["epoch"]``.

    Raises:
        FileNotFoundError: no file at ``path``.
        TypeError: an object without ``load_state_dict()``.
        ValueError: the file is not a complete steadystep checkpoint (truncated, corrupt,
            needing pickle, or of another structure), lacks one of the names asked for, or an
            entry does not fit its object. Nothing was changed.
    """
    source = _as_path(path)
    for name, obj in objects.items():
        if not callable(getattr(obj, "load_state_dict", None)):
            raise TypeError(
                f"Argument `{name}` must have a load_state_dict() method. Received: "
                f"{type(obj).__name__}"
            )
    states = _read(source, map_location)
    missing = sorted(set(objects) - set(states))
    if missing:
        raise ValueError(
            f"The checkpoint {str(source)!r} has no entry for {missing}; it holds {sorted(states)}."
        )
    for name, obj in objects.items():
        if isinstance(obj, torch.nn.Module):
            _check_module_state(obj, states[name], name, source)
    undo: list[tuple[Any, Any]] = []  # (object, its state before) of those loaded so far
    for name in sorted(objects, key=lambda n: _load_order(objects[n])):
        obj = objects[name]
        if not isinstance(obj, torch.nn.Module):  # models were checked: nothing to undo
            before = obj.state_dict()
            # torch optimizers replace their state tensors on load, never write into them
            undo.append(
                (obj, before if isinstance(obj, torch.optim.Optimizer) else copy.deepcopy(before))
            )
        try:
            obj.load_state_dict(states[name])
        except Exception as exc:
            for done, before in reversed(undo):
                done.load_state_dict(before)
            raise ValueError(
                f"The checkpoint {str(source)!r} entry {name!r} does not fit the "
                f"{type(obj).__name__} given ({type(exc).__name__}: {exc}); the objects it "
                "had loaded are restored."
            ) from None
    return states


def _load_order(obj: Any) -> int:
    # optimizers first (a scheduler then re-applies its value to their groups), models last
    if isinstance(obj, torch.optim.Optimizer):
        return 0
    return 2 if isinstance(obj, torch.nn.Module) else 1


def _as_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"Argument `path` must be a str or os.PathLike. Received: path={path!r} "
            f"of type {type(path).__name__}"
        )
    return Path(path)


# -- what may be saved ----------------------------------------------------------------------------
def _plain(value: Any, where: str, path: set[int]) -> Any:
    """``value`` with nothing ``torch.load(weights_only=True)`` would refuse, or a TypeError."""
    if isinstance(value, torch.Tensor):
        if type(value) not in (torch.Tensor, torch.nn.Parameter):
            raise TypeError(
                f"{where} is a tensor subclass ({type(value).__name__}); save a plain tensor"
            )
        return value
    if type(value) in _PLAIN:
        return value
    if isinstance(value, np.generic):  # np.float64(...), np.int64(...), np.bool_(...)
        return _plain(value.item(), where, path)
    for base in _BASES:
        if isinstance(value, base):  # IntEnum, str subclasses, ...: int.__int__(v) is a plain int
            return getattr(base, f"__{base.__name__}__")(value)
    if isinstance(value, (list, tuple, Mapping)):
        if id(value) in path:
            raise TypeError(f"{where} contains itself")
        path.add(id(value))
        try:
            if isinstance(value, Mapping):
                kind = type(value) if type(value) is collections.OrderedDict else dict
                return kind(
                    (_key(k, where), _plain(v, f"{where}[{k!r}]", path)) for k, v in value.items()
                )
            kind = list if isinstance(value, list) else tuple
            return kind(_plain(v, f"{where}[{i}]", path) for i, v in enumerate(value))
        finally:
            path.discard(id(value))
    hint = (
        "torch.from_numpy(a) or a.tolist()" if isinstance(value, np.ndarray) else "its state_dict()"
    )
    raise TypeError(
        f"{where} is a {type(value).__name__}, which torch.load(weights_only=True) cannot read "
        f"back. Save {hint} or plain values (tensors, numbers, strings, lists, dicts)."
    )


def _key(key: Any, where: str) -> str | int:
    if isinstance(key, np.integer):
        key = key.item()
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise TypeError(f"{where} has a key {key!r} of type {type(key).__name__}")
    return str.__str__(key) if isinstance(key, str) else int.__int__(key)


# -- writing ------------------------------------------------------------------------------------
class _Hashing:
    """A write-only stream that hashes what goes through it (torch.save writes sequentially)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.hash = hashlib.sha256()

    def write(self, data: Any) -> int:
        self.hash.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()

    def fileno(self) -> int:
        return self.f.fileno()


def _atomic_save(payload: Any, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)  # mode honours the umask
    try:
        with os.fdopen(fd, "w+b") as f:
            stream = _Hashing(f)
            torch.save(payload, stream)
            f.flush()
            # the archive comment holds the hash of everything before it (comment length 0)
            f.seek(-len(_EOCD) - 18, os.SEEK_END)
            if f.read(len(_EOCD)) != _EOCD or f.read()[-2:] != b"\0\0":
                raise RuntimeError("torch.save did not write a zip archive without a comment")
            f.seek(-2, os.SEEK_END)
            f.write(struct.pack("<H", _COMMENT) + _TAG + stream.hash.hexdigest().encode())
            f.flush()
            os.fsync(f.fileno())
        # it must read back (its hash was taken from the very bytes written: not hashed again)
        _read(tmp, "cpu", saving=True)
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


# -- reading ------------------------------------------------------------------------------------
def _read(source: Path, map_location: Any, *, saving: bool = False) -> dict[str, Any]:
    """The checkpoint's ``states``, its integrity checked; any malformed file is a ValueError.

    ``saving``: the read-back of a file just written, memory-mapped (tensor bytes not read).
    """
    with open(source, "rb") as f:
        try:
            if not saving:
                _verify(f)
                f.seek(0)
            # mmap needs the path; loading reads the very file object it checked
            data = torch.load(
                source if saving else f,
                map_location=map_location,
                weights_only=True,
                mmap=saving,
            )
        except Exception as exc:
            raise ValueError(
                f"{str(source)!r} is not a readable steadystep checkpoint "
                f"(truncated, corrupt, or needing pickle): {type(exc).__name__}: {exc}"
            ) from None
    if not (isinstance(data, Mapping) and data.get("format") == _FORMAT):
        raise ValueError(f"{str(source)!r} is not a steadystep checkpoint ({_FORMAT!r}).")
    states = data.get("states")
    if not (isinstance(states, dict) and all(isinstance(k, str) for k in states)):
        raise ValueError(
            f"{str(source)!r} is not a steadystep checkpoint: its 'states' must be a dict by "
            f"name. Received: {type(states).__name__}"
        )
    return states


class _Corrupt(Exception):
    pass


def _verify(f: BinaryIO) -> None:
    size = f.seek(0, os.SEEK_END)
    tail_size = min(size, 22 + _COMMENT)
    f.seek(size - tail_size)
    tail = f.read(tail_size)
    signed = (
        len(tail) == 22 + _COMMENT
        and tail.startswith(_EOCD)
        and tail[20:22] == struct.pack("<H", _COMMENT)
        and tail[22:].startswith(_TAG)
    )
    if signed:
        digest = hashlib.sha256()
        f.seek(0)
        left = size - _COMMENT - 2
        while left:
            chunk = f.read(min(_CHUNK, left))
            if not chunk:
                raise _Corrupt("the file ended early")
            digest.update(chunk)
            left -= len(chunk)
        digest.update(b"\0\0")
        if digest.hexdigest().encode() != tail[22 + len(_TAG) :]:
            raise _Corrupt("its SHA-256 does not match the one stored in it")
    elif tail[-22:-18] == _EOCD and tail[-2:] == b"\0\0":  # written before the checksum
        f.seek(0)
        with zipfile.ZipFile(f) as archive:
            bad = archive.testzip()  # reads every record, checking its CRC-32
        if bad is not None:
            raise _Corrupt(f"record {bad!r} fails its CRC-32 check")
    else:
        raise _Corrupt("it does not end with a zip directory and a steadystep checksum")


def _check_module_state(module: torch.nn.Module, saved: Any, name: str, source: Path) -> None:
    """Refuse, before anything is written, a state that ``module.load_state_dict`` would not
    take whole (torch copies the matching tensors before it reports a mismatched one)."""

    def refuse(why: str) -> ValueError:
        return ValueError(
            f"The checkpoint {str(source)!r} entry {name!r} does not fit the "
            f"{type(module).__name__} given; nothing was loaded: {why}"
        )

    if not isinstance(saved, Mapping):
        raise refuse(f"it is a {type(saved).__name__}, not a state dict")
    own = module.state_dict()
    missing = sorted(set(own) - set(saved), key=str)
    unexpected = sorted(set(saved) - set(own), key=str)
    if missing or unexpected:
        raise refuse(f"missing keys {missing[:10]}, unexpected keys {unexpected[:10]}")
    for key, value in own.items():
        got = saved[key]
        if not isinstance(value, torch.Tensor):
            continue
        if not isinstance(got, torch.Tensor):
            raise refuse(f"{key!r} is a {type(got).__name__}, not a tensor")
        if got.shape != value.shape:
            raise refuse(
                f"{key!r} has shape {tuple(got.shape)}; the model's is {tuple(value.shape)}"
            )
        kinds = [
            (t.is_floating_point(), t.is_complex(), t.dtype == torch.bool) for t in (got, value)
        ]
        if kinds[0] != kinds[1] or got.is_meta:
            raise refuse(
                f"{key!r} is a {got.dtype} {got.device.type} tensor; the model's is {value.dtype}"
            )
