"""steadystep.torch.save_checkpoint / load_checkpoint: complete, atomic, pickle-free."""

from __future__ import annotations

import io
import os
import pickletools
import stat
import zipfile
from pathlib import Path
from typing import Any

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
