"""steadystep.torch.save_checkpoint / load_checkpoint: complete, atomic, pickle-free."""

from __future__ import annotations

import collections
import copy
import enum
import io
import os
import pickletools
import stat
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import steadystep as ss  # noqa: E402
from steadystep.torch import _checkpoint  # noqa: E402

SCHEDULE = ss.warmup(ss.cosine(0.1, 0.001, steps=50), steps=5)


def _job(seed: int = 0) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    return {
        "model": model,
        "optimizer": opt,
        "scheduler": ss.torch.Scheduler(opt, SCHEDULE),
        "zclip": ss.torch.ZClip(model.parameters(), warmup_steps=3),
        "autoclip": ss.torch.AutoClip(model.parameters(), history=16),
        "spikes": ss.torch.SpikeSkip(model.parameters(), window=8, min_history=3, optimizer=opt),
    }


def _train(job: dict[str, Any], steps: int, start: int = 0) -> list[tuple[float, ...]]:
    """A few updates; returns (lr, zclip coefficient, autoclip norm, loss) per update."""
    out = []
    for t in range(start, start + steps):
        g = torch.Generator().manual_seed(t)
        x = torch.randn(8, 4, generator=g) * (20.0 if t % 5 == 4 else 1.0)
        loss = job["model"](x).square().mean()
        job["optimizer"].zero_grad()
        loss.backward()
        lr = job["optimizer"].param_groups[0]["lr"]
        job["spikes"].clip()
        job["zclip"].clip()
        autoclip_norm = job["autoclip"].clip()
        job["optimizer"].step()
        job["scheduler"].step()
        coefficient = float(job["zclip"].last.coefficient)
        out.append((lr, coefficient, float(autoclip_norm), loss.item()))
    return out


def test_resume_from_a_checkpoint_is_bitwise_identical(tmp_path: Path) -> None:
    straight = _train(_job(), 30)
    first = _job()
    head = _train(first, 12)
    path = ss.torch.save_checkpoint(tmp_path / "ckpt.pt", **first, progress={"step": 12})
    resumed = _job(seed=1)  # different initial weights: everything must come from the file
    saved = ss.torch.load_checkpoint(path, **resumed)
    assert saved["progress"] == {"step": 12}
    assert head + _train(resumed, 18, start=12) == straight


def test_checkpoint_needs_no_pickle(tmp_path: Path) -> None:
    job = _job()
    _train(job, 6)
    path = ss.torch.save_checkpoint(tmp_path / "c.pt", **job, scaler=torch.amp.GradScaler("cpu"))
    data = torch.load(path, weights_only=True)  # plain torch, no steadystep needed
    assert data["states"]["scheduler"] == job["scheduler"].state_dict()
    assert isinstance(data["states"]["scheduler"]["schedules"][0], str)
    with zipfile.ZipFile(path) as archive:
        pickled = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        ops = list(pickletools.genops(io.BytesIO(archive.read(pickled))))
    globals_ = {str(arg) for op, arg, _ in ops if op.name == "GLOBAL"}  # "module name"
    assert not any(op.name == "STACK_GLOBAL" for op, _, _ in ops)  # torch.save uses protocol 2
    # the only classes the file names are torch's tensor rebuilding and OrderedDict
    assert {g.split()[0] for g in globals_} <= {"torch", "torch._utils", "collections"}, globals_


def test_values_that_would_need_pickle_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r'objects\["extra"\]\[\'fn\'\]'):
        ss.torch.save_checkpoint(tmp_path / "c.pt", extra={"fn": print})
    with pytest.raises(TypeError, match=r'objects\["schedule"\]'):
        ss.torch.save_checkpoint(tmp_path / "c.pt", schedule=SCHEDULE)  # save repr(s) instead
    with pytest.raises(TypeError, match="key"):
        ss.torch.save_checkpoint(tmp_path / "c.pt", extra={(1, 2): 3})
    assert not list(tmp_path.iterdir())
    ss.torch.save_checkpoint(tmp_path / "c.pt", spec=repr(SCHEDULE), rng=torch.get_rng_state())
    assert ss.parse(ss.torch.load_checkpoint(tmp_path / "c.pt")["spec"]) == SCHEDULE


def test_a_write_that_dies_midway_leaves_the_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = ss.torch.save_checkpoint(tmp_path / "c.pt", progress={"step": 1})
    before = path.read_bytes()

    def dies_midway(obj: Any, f: Any) -> None:
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(_checkpoint.torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        ss.torch.save_checkpoint(path, progress={"step": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind
    monkeypatch.undo()
    assert ss.torch.load_checkpoint(path)["progress"] == {"step": 1}


def test_the_write_is_fsynced_then_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        calls.append("fsync dir" if is_dir else "fsync file")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        assert Path(src).parent == Path(dst).parent  # same directory: an atomic rename
        calls.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(_checkpoint.os, "fsync", fsync)
    monkeypatch.setattr(_checkpoint.os, "replace", replace)
    ss.torch.save_checkpoint(tmp_path / "c.pt", x=1)
    assert calls == ["fsync file", "rename", "fsync dir"]


def test_file_mode_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = ss.torch.save_checkpoint(tmp_path / "c.pt", x=1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    path = ss.torch.save_checkpoint(tmp_path / "c.pt", x=torch.arange(1000))
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable steadystep checkpoint"):
        ss.torch.load_checkpoint(truncated)
    other = tmp_path / "other.pt"
    torch.save({"model": {}}, other)
    with pytest.raises(ValueError, match="not a steadystep checkpoint"):
        ss.torch.load_checkpoint(other)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": _checkpoint._FORMAT, "states": {"x": ss.constant(1.0)}}, pickled)
    with pytest.raises(ValueError, match="not a readable"):  # weights_only refuses classes
        ss.torch.load_checkpoint(pickled)
    with pytest.raises(ValueError, match=r"no entry for \['model'\]; it holds \['x'\]"):
        ss.torch.load_checkpoint(path, model=torch.nn.Linear(1, 1))
    with pytest.raises(FileNotFoundError):
        ss.torch.load_checkpoint(tmp_path / "missing.pt")


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"Argument `path` must be a str or os\.PathLike"):
        ss.torch.save_checkpoint(3, x=1)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="Argument `path` must be in an existing"):
        ss.torch.save_checkpoint(tmp_path / "no" / "c.pt", x=1)


# -- values a weights-only load would refuse -----------------------------------------------------
class Level(enum.IntEnum):
    HIGH = 2


class Tag(str):
    def __str__(self) -> str:
        return "not the value"


Point = collections.namedtuple("Point", "x y")


def test_values_that_are_plain_underneath_are_saved_as_plain_values(tmp_path: Path) -> None:
    losses = [0.5, 0.25]
    values = {
        "mean": np.mean(losses),  # np.float64
        "f32": np.float32(0.1),
        "count": np.int64(7),
        "flag": np.bool_(True),
        "level": Level.HIGH,
        "tag": Tag("run-1"),
        "point": Point(1, 2.5),
        "counts": collections.Counter(a=2),
        "by_step": {np.int64(3): "three"},
    }
    path = ss.torch.save_checkpoint(tmp_path / "c.pt", stats=values)
    saved = torch.load(path, weights_only=True)["states"]["stats"]  # plain torch reads it
    assert saved == {
        "mean": 0.375,
        "f32": float(np.float32(0.1)),
        "count": 7,
        "flag": True,
        "level": 2,
        "tag": "run-1",
        "point": (1, 2.5),
        "counts": {"a": 2},
        "by_step": {3: "three"},
    }
    types = {k: type(v) for k, v in saved.items()}
    assert types == {
        "mean": float,
        "f32": float,
        "count": int,
        "flag": bool,
        "level": int,
        "tag": str,
        "point": tuple,
        "counts": dict,
        "by_step": dict,
    }
    assert ss.torch.load_checkpoint(path)["stats"] == saved


class Color(enum.Enum):
    RED = 1


def _cyclic() -> list[Any]:
    items: list[Any] = []
    items.append(items)
    return items


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.zeros(3), r"ndarray.*torch\.from_numpy"),
        (Color.RED, "Color"),
        ({1, 2}, "set"),
        (_cyclic(), "contains itself"),
        ({"a": [1, print]}, r"\['a'\]\[1\] is a builtin_function_or_method"),
    ],
)
def test_unsaveable_values_leave_the_good_checkpoint(
    tmp_path: Path, value: Any, message: str
) -> None:
    path = ss.torch.save_checkpoint(tmp_path / "c.pt", progress={"step": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError, match=message):
        ss.torch.save_checkpoint(path, progress={"step": 2}, extra=value)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_a_file_that_would_not_read_back_never_replaces_the_good_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = ss.torch.save_checkpoint(tmp_path / "c.pt", progress={"step": 1})
    before = path.read_bytes()
    # were the type walk ever to miss something, the read-back before the rename catches it
    monkeypatch.setattr(_checkpoint, "_plain", lambda value, where, path: value)
    with pytest.raises(ValueError, match="not a readable steadystep checkpoint"):
        ss.torch.save_checkpoint(path, progress={"step": 2}, fn=print)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["c.pt"]


# -- corruption anywhere ---------------------------------------------------------------------------
def _tensor_bytes_offset(path: Path) -> int:
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename)
    with open(path, "rb") as f:  # the record's data follows its local header
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
    return info.header_offset + 30 + name_len + extra_len


def test_a_flipped_bit_anywhere_is_detected(tmp_path: Path) -> None:
    path = ss.torch.save_checkpoint(tmp_path / "c.pt", x=torch.arange(1000.0))
    data = path.read_bytes()
    assert zipfile.ZipFile(path).comment.startswith(b"steadystep-sha256:")
    padding = data.index(b"ZZZZ")  # torch's alignment padding: nothing else reads these bytes
    for where in (_tensor_bytes_offset(path) + 5, padding, len(data) - 1, 0):
        bad = tmp_path / "bad.pt"
        bad.write_bytes(data[:where] + bytes([data[where] ^ 0x10]) + data[where + 1 :])
        with pytest.raises(ValueError, match="not a readable steadystep checkpoint"):
            ss.torch.load_checkpoint(bad)


def test_files_without_the_checksum_are_read_with_their_crcs_checked(tmp_path: Path) -> None:
    old = tmp_path / "old.pt"  # as steadystep wrote them before the checksum
    torch.save({"format": _checkpoint._FORMAT, "states": {"x": torch.arange(1000.0)}}, old)
    assert torch.equal(ss.torch.load_checkpoint(old)["x"], torch.arange(1000.0))
    data = bytearray(old.read_bytes())
    data[_tensor_bytes_offset(old) + 5] ^= 0x10
    old.write_bytes(bytes(data))
    assert torch.load(old, weights_only=True)["states"]["x"][1] != 1.0  # torch reads it anyway
    with pytest.raises(ValueError, match="CRC-32"):
        ss.torch.load_checkpoint(old)


@pytest.mark.parametrize(
    "payload",
    [
        [1, 2],
        {"format": _checkpoint._FORMAT},
        {"format": _checkpoint._FORMAT, "states": [1]},
        {"format": _checkpoint._FORMAT, "states": {1: 2}},
        {"format": 3, "states": {}},
        torch.zeros(2),
    ],
    ids=["list", "no states", "states a list", "int names", "format 3", "a tensor"],
)
def test_well_formed_files_of_another_structure_are_value_errors(
    tmp_path: Path, payload: Any
) -> None:
    path = tmp_path / "c.pt"
    torch.save(payload, path)
    with pytest.raises(ValueError, match="not a steadystep checkpoint"):
        ss.torch.load_checkpoint(path)


# -- all or nothing ------------------------------------------------------------------------------
def fingerprint(value: Any) -> Any:
    """Everything in ``value`` (objects by their state dict, tensors by dtype, shape and bytes)."""
    if callable(getattr(value, "state_dict", None)):
        value = value.state_dict()
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous().reshape(-1)
        return (str(t.dtype), tuple(value.shape), t.view(torch.uint8).numpy().tobytes())
    if isinstance(value, dict):
        return {k: fingerprint(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [fingerprint(v) for v in value]
    return value if not isinstance(value, float) or value == value else "nan"


def _job_fingerprint(job: dict[str, Any]) -> Any:
    params = [p for g in job["optimizer"].param_groups for p in g["params"]]
    return fingerprint({**job, "params": params})


def _broken(states: dict[str, Any], name: str) -> dict[str, Any]:
    states = dict(states)
    if name == "model":
        states["model"] = {**states["model"], "bias": torch.zeros(7)}
    elif name == "model keys":
        states["model"] = {"weight": states["model"]["weight"], 3: torch.zeros(3)}
    elif name == "scheduler":
        states["scheduler"] = {**states["scheduler"], "schedules": ["constant(value=1.0)"]}
    elif name == "zclip":
        states["zclip"] = {**states["zclip"], "format": "nope"}
    elif name == "spikes":
        states["spikes"] = [1, 2]
    else:
        states["optimizer"] = {"state": {}, "param_groups": [{"params": [0]}]}
    return states


@pytest.mark.parametrize(
    "name", ["model", "model keys", "scheduler", "zclip", "spikes", "optimizer"]
)
def test_a_refused_load_leaves_every_object_as_it_was(tmp_path: Path, name: str) -> None:
    source = _job()
    _train(source, 12)
    states = {k: v.state_dict() for k, v in source.items()}
    path = tmp_path / "c.pt"
    _checkpoint._atomic_save(
        {
            "format": _checkpoint._FORMAT,
            "states": _checkpoint._plain(_broken(states, name), "", set()),
        },
        path,
    )
    target = _job(seed=1)
    _train(target, 3)
    before = _job_fingerprint(target)
    twin = copy.deepcopy(target)
    with pytest.raises(ValueError, match=f"entry '{name.split()[0]}' does not fit"):
        ss.torch.load_checkpoint(path, **target)
    assert _job_fingerprint(target) == before == _job_fingerprint(twin)
    assert [g["lr"] for g in target["optimizer"].param_groups] == [
        g["lr"] for g in twin["optimizer"].param_groups
    ]
    # and the job goes on exactly as its untouched twin does
    assert _train(target, 4, start=3) == _train(twin, 4, start=3)
