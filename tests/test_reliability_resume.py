"""Kill-and-resume: a training job SIGKILLed at random steps (and mid-checkpoint) resumes exactly.

``tests/_resume_worker.py`` trains a small model with a steadystep ``Scheduler`` and ``ZClip``,
checkpointing with :func:`steadystep.torch.save_checkpoint`. One copy runs uninterrupted; another
is killed with SIGKILL several times (once while a checkpoint is half-written) and restarted on
the same directory each time. Every update's LR, clip coefficient, loss and skip flag must be
bitwise identical between the two, including the updates replayed after a kill.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and select() need POSIX")

import steadystep as ss  # noqa: E402

WORKER = Path(__file__).with_name("_resume_worker.py")
STEPS, EVERY = 160, 7
TIMEOUT = 120.0  # seconds for any one launch; a hang fails the test instead of blocking it


@pytest.fixture
def launch(spawn: Callable[..., subprocess.Popen[str]]) -> Callable[..., subprocess.Popen[str]]:
    """Start a worker on a directory (killed at teardown if still running)."""

    def start(directory: Path, *extra: str) -> subprocess.Popen[str]:
        command = [sys.executable, str(WORKER), str(directory), f"--steps={STEPS}"]
        command += [f"--every={EVERY}", *extra]
        return spawn(command, PYTHONWARNINGS="error", OMP_NUM_THREADS="1")

    return start


def _read_until(proc: subprocess.Popen[str], done: Callable[[str], bool]) -> str:
    """Read the worker's stdout lines until ``done(line)``; return that line ("" at exit)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if not ready:
            continue
        line = proc.stdout.readline()
        if not line:
            return ""
        if done(line.strip()):
            return line.strip()
    proc.kill()
    raise AssertionError(f"worker produced no expected line within {TIMEOUT} s")


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL, "the worker ended before it was killed"
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]


def _finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    return out


def _trajectory(directory: Path) -> dict[int, str]:
    """Step -> its record; a step written twice (replayed after a kill) must match exactly."""
    records: dict[int, str] = {}
    text = (directory / "trajectory.log").read_text(encoding="ascii")
    lines = text.split("\n")
    if lines[-1]:  # a line cut short by SIGKILL: not a record
        lines = lines[:-1]
    for line in filter(None, lines):
        step, record = line.split(" ", 1)
        previous = records.setdefault(int(step), record)
        assert previous == record, f"step {step} replayed differently: {previous} vs {record}"
    return records


def _step_at_least(k: int) -> Callable[[str], bool]:
    return lambda line: line.startswith("STEP ") and int(line.split()[1]) >= k


def test_sigkill_at_random_steps_and_mid_checkpoint_resumes_bitwise(
    tmp_path: Path, launch: Callable[..., subprocess.Popen[str]]
) -> None:
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference_dir.mkdir()
    killed_dir.mkdir()
    reference = launch(reference_dir)  # runs alongside the killed chain (2 cores)
    ckpt = killed_dir / "ckpt.pt"
    rng = random.Random(9)

    # 1-2: killed at random steps (the worker may run a few steps past the target: any is fine)
    for kill_at in sorted(rng.sample(range(3, 60), 2)):
        proc = launch(killed_dir)
        _read_until(proc, _step_at_least(kill_at))
        _kill(proc)

    # 3: killed while the next-but-one checkpoint is half-written
    resume_from = ss.torch.load_checkpoint(ckpt)["progress"]["step"] if ckpt.exists() else 0
    pause_at = resume_from + 2 * EVERY
    # (a random kill above can also land mid-write and leave its own temporary file)
    before = set(killed_dir.glob(".ckpt.pt.*.tmp"))
    proc = launch(killed_dir, f"--pause-at={pause_at}")
    assert _read_until(proc, lambda line: line == "PAUSED") == "PAUSED"
    _kill(proc)
    leftovers = sorted(set(killed_dir.glob(".ckpt.pt.*.tmp")) - before)
    assert len(leftovers) == 1  # the half-written file is beside the checkpoint, not over it
    with pytest.raises(Exception):  # noqa: B017  (torch's error for a truncated zip varies)
        torch.load(leftovers[0], weights_only=True)
    saved = ss.torch.load_checkpoint(ckpt)
    assert saved["progress"]["step"] == saved["scheduler"]["step"] == pause_at - EVERY

    # 4: resumes from the last complete checkpoint, killed again at a random later step
    proc = launch(killed_dir)
    assert _read_until(proc, lambda line: line.startswith("RESUMED")) == (
        f"RESUMED {pause_at - EVERY}"
    )
    _read_until(proc, _step_at_least(rng.randrange(pause_at + 5, STEPS - 40)))
    _kill(proc)

    # 5: runs to the end
    assert _finish(launch(killed_dir)).startswith("RESUMED ")
    _finish(reference)

    expected, got = _trajectory(reference_dir), _trajectory(killed_dir)
    assert sorted(expected) == list(range(STEPS))
    assert got == expected  # LR, clip coefficient, loss and skip flag, bit for bit
    # the job did clip and skip, so the clipper's statistics really were resumed
    assert any(float.fromhex(r.split()[1]) < 1.0 for r in expected.values())
    assert sum(int(r.split()[3]) for r in expected.values()) >= 1
    final_killed = ss.torch.load_checkpoint(ckpt)
    final_reference = ss.torch.load_checkpoint(reference_dir / "ckpt.pt")
    assert final_killed["progress"] == final_reference["progress"]
    assert final_killed["scheduler"] == final_reference["scheduler"]
    for name in ("model", "clipper"):
        for key, value in final_reference[name].items():
            other = final_killed[name][key]
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, other), (name, key)
            else:
                assert value == other, (name, key)
