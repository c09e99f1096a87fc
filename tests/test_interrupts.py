"""airbench_common.interrupts: a signal whose exception library code caught (wrapped it in its
own, or dropped it and went on) is still acted on at the program's next checkpoint."""
import signal
import threading

import pytest
from deliver import deliver

from airbench_common import interrupts


class Stop(BaseException):
    pass


def _swallow(signum):
    """Send `signum` to this process inside code that catches everything and goes on."""
    try:
        deliver(signum)
    except BaseException as exc:   # noqa: BLE001 - the point: a library that drops it
        if isinstance(exc, AssertionError):
            raise


def test_a_swallowed_signal_is_raised_again_at_the_checkpoint():
    before = signal.getsignal(signal.SIGUSR1)
    with interrupts.remembered((signal.SIGUSR1,), lambda s: Stop(s)) as h:
        interrupts.checkpoint()           # nothing arrived yet: a no-op
        _swallow(signal.SIGUSR1)
        assert h.pending()
        with pytest.raises(Stop):
            interrupts.checkpoint()
    assert signal.getsignal(signal.SIGUSR1) is before   # the old handler is back
    interrupts.checkpoint()               # outside the block nothing is remembered


def test_ctrl_c_is_remembered_only_where_python_s_default_handler_was(ctrl_c):
    with interrupts.remembered_sigint() as h:
        assert signal.getsignal(signal.SIGINT) is h
        _swallow(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            interrupts.checkpoint()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # an ignored SIGINT (a shell's background job) stays ignored: the user did not ask for Ctrl-C
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts.remembered_sigint():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


def test_outside_the_main_thread_nothing_is_installed(ctrl_c):
    errors = []

    def body():
        try:
            with interrupts.remembered_sigint():
                assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        except BaseException as exc:   # noqa: BLE001 - reported to the main thread
            errors.append(exc)
    t = threading.Thread(target=body)
    t.start()
    t.join(timeout=10)
    assert errors == []


# ---------------------------------------------------------------- Ctrl-C seen through wrappers
def _raised(make):
    try:
        make()
    except BaseException as exc:  # noqa: BLE001 - the test wants whatever was raised
        return exc


def test_interrupted_follows_causes_and_contexts():
    def from_ctrl_c():                          # `raise ... from` outside any handler: a cause
        raise ValueError("wrapped") from KeyboardInterrupt()

    def during_ctrl_c():                        # raised while handling Ctrl-C: a context
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ValueError("while handling")

    def deep():
        try:
            during_ctrl_c()
        except ValueError as exc:
            raise RuntimeError("outer") from exc
    caused = _raised(from_ctrl_c)
    assert caused.__context__ is None and interrupts.interrupted(caused)
    assert interrupts.interrupted(_raised(during_ctrl_c)) and interrupts.interrupted(_raised(deep))
    assert interrupts.interrupted(KeyboardInterrupt())
    assert not interrupts.interrupted(_raised(lambda: 1 / 0))


def test_interrupted_ends_on_a_cycle_of_exceptions():
    """Exceptions can point at each other (a context loop); the walk must still end."""
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    result = []
    t = threading.Thread(target=lambda: result.append(interrupts.interrupted(a)), daemon=True)
    t.start()
    t.join(timeout=10)
    assert result == [False]
