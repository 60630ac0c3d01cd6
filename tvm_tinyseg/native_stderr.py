"""Keep TVM's own log lines off the user's terminal.

TVM's C++ code logs to file descriptor 2 directly, e.g. "[15:43:32] .../block_builder.cc:67:
Warning: BlockBuilder destroyed with remaining blocks!" when a frontend gives up on a model: a
second line after the one-line error the command line promises. While :func:`tvm_logs_hidden` is
active, descriptor 2 goes to a temporary file and Python's ``sys.stderr`` to the real stderr;
at the end, the lines in TVM's log format are dropped and anything else is passed on.
"""
import contextlib
import gc
import os
import re
import sys
import tempfile

from tvm_tinyseg import interrupts

TVM_LOG_LINE = re.compile(rb"^\[\d\d:\d\d:\d\d\] \S+:\d+: ")


@contextlib.contextmanager
def tvm_logs_hidden():
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no usable descriptor 2: nothing to protect
        yield
        return
    python_stderr = sys.stderr
    capture = tempfile.TemporaryFile()
    os.dup2(capture.fileno(), 2)
    sys.stderr = open(os.dup(saved), "w", buffering=1, encoding=getattr(python_stderr, "encoding", None) or "utf-8",
                      errors="backslashreplace")
    try:
        yield
    finally:
        with interrupts.deferred():
            gc.collect()  # objects whose destructors log (a BlockBuilder in a failed frontend's frames)
            sys.stderr.close()
            sys.stderr = python_stderr
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True) if not TVM_LOG_LINE.match(line)]
            capture.close()
            sys.stderr.flush()
            rest = memoryview(b"".join(kept))
            while rest:
                rest = rest[os.write(2, rest):]
