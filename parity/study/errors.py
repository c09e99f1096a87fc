"""The study's error types and their one-line form, shared by every module of parity.study (so
that none of them needs another's for its errors).

Both errors are `UsageError`s: the command-line entry points (airbench_common.errors.cli_main)
print them as one line and exit with status 2.
"""
from __future__ import annotations

from airbench_common.errors import UsageError

ONE_LINE_CHARS = 300      # a run's error in a record or a message: its first 300 characters


class CompareError(UsageError):
    """A comparison that cannot run as asked: a bad option, or a folder holding another
    comparison."""


class ReportError(UsageError):
    """A folder the report cannot be built from (no runs file, no records of the comparison)."""


def one_line(exc: BaseException) -> str:
    """The exception's message on one line, cut to ONE_LINE_CHARS characters."""
    text = " ".join(str(exc).split())
    return text[:ONE_LINE_CHARS] + ("..." if len(text) > ONE_LINE_CHARS else "")
