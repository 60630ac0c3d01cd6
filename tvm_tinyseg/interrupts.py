"""Ctrl-C held back while a step that must not be cut in half runs (an output directory's swap,
restoring the terminal's stderr)."""
import contextlib
import signal
import threading


@contextlib.contextmanager
def deferred():
    """SIGINT received inside the block raises KeyboardInterrupt when the block is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *_: received.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
