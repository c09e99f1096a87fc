"""Signals that are acted on even when library code catches their exception.

Python's SIGINT handler raises KeyboardInterrupt in the main thread at the next bytecode,
wherever that is. Library code running there may catch it: JAX re-raises it as a ValueError from
its pytree metadata comparison, and a cache that treats a failed lookup as a miss drops it and
goes on. The program then forgets the Ctrl-C (or SIGTERM) and runs to the end. The handlers here
raise the same exception and also remember the signal; the programs call `checkpoint()` at their
safe points (before a run's record is stored, between stages), which raises it again when it was
swallowed, so the stop happens there at the latest.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterable, Iterator


class Remembered:
    """A signal handler: remembers the signal, then raises make(signum)."""

    def __init__(self, make: Callable[[int], BaseException]):
        self.make = make
        self.signum: int | None = None

    def __call__(self, signum, frame):
        self.signum = signum
        raise self.make(signum)

    def pending(self) -> bool:
        return self.signum is not None


_active: list[Remembered] = []


@contextlib.contextmanager
def remembered(signums: Iterable[int],
               make: Callable[[int], BaseException]) -> Iterator[Remembered]:
    """Within the block, each of `signums` raises make(signum) and is remembered; the previous
    handlers come back at the end. SIGINT is taken over only from Python's default handler: an
    ignored SIGINT (a shell's background job) or a program's own handler is left alone. Outside
    the main thread (where handlers cannot be set) nothing is installed."""
    handler = Remembered(make)
    old = {}
    if threading.current_thread() is threading.main_thread():
        for s in signums:
            if s == signal.SIGINT and signal.getsignal(s) is not signal.default_int_handler:
                continue
            old[s] = signal.signal(s, handler)
    _active.append(handler)
    try:
        yield handler
    finally:
        _active.remove(handler)
        for s, h in old.items():
            signal.signal(s, h)


def remembered_sigint():
    """Ctrl-C as KeyboardInterrupt, remembered (see the module docstring)."""
    return remembered((signal.SIGINT,), lambda _: KeyboardInterrupt())


def checkpoint() -> None:
    """Raise again the exception of a signal that arrived inside a `remembered` block and was
    swallowed by the code it landed in (no-op when none did)."""
    for handler in _active:
        if handler.pending():
            raise handler.make(handler.signum)


def interrupted(exc: BaseException | None) -> bool:
    """Is `exc` a KeyboardInterrupt, or an exception raised while handling one (a library's
    wrapping of it)?"""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False
