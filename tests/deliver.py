"""A real signal sent to this process, for the tests of code that must act on it."""
import os
import time


def deliver(signum: int) -> None:
    """Send `signum` to this process and wait for its handler, which runs in the main thread at
    the next bytecode and must raise (the test's own `try` around this call is the library code
    that catches it); AssertionError when no handler raised."""
    os.kill(os.getpid(), signum)
    time.sleep(5)
    raise AssertionError(f"no handler raised on signal {signum}")
