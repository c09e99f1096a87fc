"""How long JAX has spent compiling in this process: the sum of jax.monitoring's compile events
(tracing, lowering to MLIR, the backend's compile), for the timing definition's check that no
timed part compiles (airbench_common.timing)."""
from __future__ import annotations

from jax import monitoring

_PREFIX = "/jax/core/compile/"
_seconds = 0.0


def _on_duration(event: str, duration_secs: float, **_kwargs) -> None:
    global _seconds
    if event.startswith(_PREFIX):
        _seconds += float(duration_secs)


monitoring.register_event_duration_secs_listener(_on_duration)


def compile_clock() -> float:
    """Seconds of compilation so far in this process (a Stopwatch's compile_clock)."""
    return _seconds
