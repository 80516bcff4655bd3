"""Errors shared by the layers that report to a person: the experiments and the command line.

The command line (``steadystep.cli``) sits on top and maps a :class:`UsageError` to its exit
code; the experiments raise it without importing the command layer.
"""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """A failure to report as one message and an exit code (2: bad input, 1: the system's)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code
