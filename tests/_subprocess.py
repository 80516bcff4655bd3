"""Run test scripts in fresh Pythons: a backend/device script (Keras fixes its backend, XLA
its devices, at import), and the workers of a multi-process (gloo) test."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = str(Path(__file__).resolve().parents[1])  # so that `import tests.<module>` works
SRC = str(Path(ROOT) / "src")


def run_ok(code: str, *, timeout: float = 600) -> None:
    """Run ``code`` with the repository root as ``sys.argv[1]``; it must exit 0 and print
    ``OK`` last."""
    out = subprocess.run(
        [sys.executable, "-c", code, ROOT], capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.strip().endswith("OK"), out.stdout[-2000:]


def free_port() -> int:
    """A TCP port free on this machine now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_workers(argvs: list[list[str]], *, timeout: float = 120) -> list[dict[str, Any]]:
    """Start one Python per argument list (this checkout's ``src`` first on the path, one
    OpenMP thread each), wait for all, and return what each printed on its ``RESULT<json>``
    line. Each must print one and exit 0; any still running at the end is killed."""
    env = {
        **os.environ,
        "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for argv in argvs
    ]
    try:
        outputs = [proc.communicate(timeout=timeout) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    results = []
    for (stdout, stderr), proc in zip(outputs, procs, strict=True):
        lines = [x for x in stdout.splitlines() if x.startswith("RESULT")]
        assert lines and proc.returncode == 0, stderr[-4000:]
        results.append(json.loads(lines[0][len("RESULT") :]))
    return results
