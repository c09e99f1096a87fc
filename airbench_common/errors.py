"""The one error type of bad input, shared by both implementations and parity.

Library code raises a subclass of `UsageError` (itself a ValueError, so callers that catch
ValueError keep working) with a one-line message that names the bad value, says why it is wrong
and what is accepted. Command-line entry points wrap their `main` in `cli_main`, which turns such an
error into that one line on stderr and exit status 2, with no traceback unless `--verbose` is
given (or AIRBENCH_TRACEBACK=1). `DatasetError`, bad data, lives here too, so that jpeg.py raises
the class data.py raises (and re-exports) without importing data.py."""
from __future__ import annotations

import functools
import os
import sys

from . import interrupts


class UsageError(ValueError):
    """Bad input (an option, a file, a recipe value): the message is one line for the user."""


class DatasetError(UsageError, RuntimeError):
    """A missing, truncated or corrupt dataset; the message says what to do."""


def cli_main(main):
    """Decorate a CLI `main(argv=None) -> int`: UsageError (and its subclasses) and Ctrl-C become
    one line on stderr and exit status 2 (130 for Ctrl-C), never a traceback."""
    @functools.wraps(main)
    def wrapped(argv=None):
        args = sys.argv[1:] if argv is None else list(argv)
        verbose = "--verbose" in args or os.environ.get("AIRBENCH_TRACEBACK") == "1"
        try:
            with interrupts.remembered_sigint():   # a swallowed Ctrl-C is still acted on
                return main(argv)
        except UsageError as exc:
            if verbose:
                raise
            msg = " ".join(str(exc).split())  # one line, whatever the message held
            print(f"error: {msg}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:
            if verbose:
                raise
            msg = " ".join(str(exc).split()) or (
                "interrupted (Ctrl-C): finished runs are already in the output file")
            print(msg, file=sys.stderr)
            return 130
    return wrapped
