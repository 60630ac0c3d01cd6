"""Progress logging: one line per long step with its elapsed time, on the ``tvm_tinyseg`` loggers.

``tinyseg -v`` shows these lines (level INFO); by default the CLI shows only its own short
progress notes (level PROGRESS) and warnings; ``-q`` only errors.
"""
import contextlib
import logging
import sys
import time

PROGRESS = 25  # between INFO (step timings, -v) and WARNING
logging.addLevelName(PROGRESS, "PROGRESS")


@contextlib.contextmanager
def timed(logger: logging.Logger, what: str):
    """Log ``what: N.NN s`` at INFO when the block ends (also when it raises)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        logger.info("%s: %.2f s", what, time.perf_counter() - start)


class Accumulated:
    """The total time and count of a step that runs many times (one arena placement per spill
    set tried): ``with acc: ...`` around each, then ``acc.log(logger, what)`` once."""

    def __init__(self):
        self.seconds, self.count = 0.0, 0

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._start
        self.count += 1

    def log(self, logger: logging.Logger, what: str) -> None:
        if self.count:
            logger.info("%s: %.2f s (%d run%s)", what, self.seconds, self.count, "" if self.count == 1 else "s")


class StderrHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record comes (tests swap it)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; the property always reads sys.stderr
        del value
