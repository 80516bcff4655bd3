"""Fuzzing ``load_checkpoint``: a real checkpoint with bytes flipped, cut off or spliced anywhere.

Every damaged file must be refused with a ``ValueError`` (never another exception, never a
silently different state), and the objects given to ``load_checkpoint`` must be left exactly
as they were. CI runs ``FUZZ_EXAMPLES`` inputs per target (default 150, so 450 files);
``benchmarks/fuzz_all.py`` runs 10,000 each.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import steadystep as ss  # noqa: E402
from tests.test_fuzz_spec import FUZZ, count_input  # noqa: E402
from tests.test_reliability_checkpoint import _job, _job_fingerprint, _train  # noqa: E402


@functools.cache
def _pristine() -> bytes:
    job = _job()
    _train(job, 6)
    with tempfile.TemporaryDirectory() as tmp:
        path = ss.torch.save_checkpoint(Path(tmp) / "c.pt", **job, progress={"step": 6})
        return path.read_bytes()


@functools.cache
def _target() -> tuple[dict[str, Any], Any]:
    job = _job(seed=1)
    _train(job, 2)
    return job, _job_fingerprint(job)


def check_refused(data: bytes) -> None:
    assume(data != _pristine())
    job, before = _target()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.pt"
        path.write_bytes(data)
        with pytest.raises(ValueError):
            ss.torch.load_checkpoint(path, **job)
    assert _job_fingerprint(job) == before


positions = st.integers(0, 10**9)  # taken modulo the file's length


@settings(FUZZ, deadline=20_000)  # the first input builds the checkpoint (~5 s under load)
@given(st.lists(st.tuples(positions, st.integers(1, 255)), min_size=1, max_size=4))
def test_flipped_bytes(flips: list[tuple[int, int]]) -> None:
    count_input("load_checkpoint(flipped bytes)")
    data = bytearray(_pristine())
    for where, mask in flips:
        data[where % len(data)] ^= mask
    check_refused(bytes(data))


@settings(FUZZ, deadline=20_000)  # the first input builds the checkpoint (~5 s under load)
@given(positions)
def test_truncated_files(length: int) -> None:
    count_input("load_checkpoint(truncated)")
    data = _pristine()
    check_refused(data[: length % len(data)])


@settings(FUZZ, deadline=20_000)  # the first input builds the checkpoint (~5 s under load)
@given(positions, st.integers(0, 300), positions, st.integers(0, 300), st.binary(max_size=16))
def test_spliced_files(at: int, cut: int, source: int, size: int, noise: bytes) -> None:
    """Delete ``cut`` bytes at ``at`` and put in their place a piece of the file itself (a
    duplicated or moved record, header or tensor) and some noise."""
    count_input("load_checkpoint(spliced)")
    data = _pristine()
    at, source = at % len(data), source % len(data)
    piece = data[source : source + size] + noise
    check_refused(data[:at] + piece + data[at + cut :])


def test_the_pristine_checkpoint_loads() -> None:  # the fuzz targets start from a good file
    _, before = _target()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.pt"
        path.write_bytes(_pristine())
        twin = _job(seed=1)
        ss.torch.load_checkpoint(path, **twin)
    assert _job_fingerprint(twin) != before
    assert _train(twin, 3, start=6) == _train(_job_from_pristine(), 3, start=6)


def _job_from_pristine() -> dict[str, Any]:
    job = _job()
    _train(job, 6)
    return job
