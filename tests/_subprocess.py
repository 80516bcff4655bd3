"""Run a test script in a fresh Python (Keras fixes its backend, XLA its devices, at import)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])  # so that `import tests.<module>` works


def run_ok(code: str, *, timeout: float = 600) -> None:
    """Run ``code`` with the repository root as ``sys.argv[1]``; it must exit 0 and print
    ``OK`` last."""
    out = subprocess.run(
        [sys.executable, "-c", code, ROOT], capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.strip().endswith("OK"), out.stdout[-2000:]
