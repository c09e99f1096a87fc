"""The one timing definition of every arm (JAX, PyTorch, upstream's own code).

A run's time is upstream's `time_seconds`, as its scripts measure it: the whitening
initialisation, the training epochs and the final test-time-augmented evaluation, each between
device synchronisations, summed. Everything else is reported apart, never added to it:

* `setup_seconds`: what precedes upstream's timed work and is not part of it in our code paths
  (uploading the arrays to the device, normalising and padding them, building the net and the
  optimizer state);
* `compile_seconds`: compilation before the run (JAX's ahead-of-time compiles of the epoch and
  evaluation functions; a warm-up run for torch.compile);
* `timed_compile_seconds`: compilation that happened *inside* the timed parts. It is 0 when the
  warm-up compiled every function at the shapes of the timed runs; anything else means the
  run's `time_seconds` holds compilation and is not comparable (parity.compare's report says so).

Per-epoch validation (untimed upstream too) is outside `time_seconds`. A record also keeps
`train_seconds` (whitening + epochs) and `eval_seconds` (the final evaluation):
`time_seconds = train_seconds + eval_seconds`.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable

PARTS = ("whiten", "epochs", "eval")     # the timed parts, in upstream's order
RECORD_FIELDS = ("time_seconds", "train_seconds", "eval_seconds", "setup_seconds",
                 "compile_seconds", "timed_compile_seconds")


class Stopwatch:
    """Sums wall time per timed part, synchronising the device before and after each (`sync`),
    and the compilation seen inside the timed parts (`compile_clock()`: seconds of compilation
    so far in this process, from the framework's own compile counters; None: not measurable)."""

    def __init__(self, sync: Callable[[], None] = lambda: None,
                 compile_clock: Callable[[], float | None] = lambda: None):
        self.sync = sync
        self.compile_clock = compile_clock
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self.timed_compile = 0.0
        self._measurable = True

    @contextmanager
    def part(self, name: str):
        if name not in self.seconds:
            raise ValueError(f"unknown timed part {name!r}; one of {PARTS}")
        self.sync()
        c0 = self.compile_clock()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.seconds[name] += time.perf_counter() - t0
            c1 = self.compile_clock()
            if c0 is None or c1 is None:
                self._measurable = False
            else:
                self.timed_compile += c1 - c0

    def fields(self, *, setup_seconds: float | None, compile_seconds: float | None,
               evaluated: bool = True) -> dict:
        """The record's timing fields. `evaluated` False (a diverged run stopped before the
        final evaluation): time_seconds and eval_seconds are None, since the run is not timed
        to its end."""
        train = self.seconds["whiten"] + self.seconds["epochs"]
        ev = self.seconds["eval"] if evaluated else None
        return dict(time_seconds=train + ev if evaluated else None, train_seconds=train,
                    eval_seconds=ev, setup_seconds=setup_seconds,
                    compile_seconds=compile_seconds,
                    timed_compile_seconds=self.timed_compile if self._measurable else None)
