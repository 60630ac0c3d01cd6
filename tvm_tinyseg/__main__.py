"""The ``tinyseg`` command (also ``python -m tvm_tinyseg``): the command line of cli.py, with Ctrl-C
while its modules load (TVM's take seconds) reported like Ctrl-C later: one line, status 130."""
import atexit
import os
import sys

EXIT_INTERRUPTED = 130  # cli.EXIT_INTERRUPTED, which may not have loaded


def main() -> int:
    try:
        from tvm_tinyseg import cli
        status = cli.main()
    except KeyboardInterrupt:
        print("tinyseg: interrupted", file=sys.stderr)
        status = EXIT_INTERRUPTED
    if status == EXIT_INTERRUPTED:
        _exit_interrupted()
    return status


def _exit_interrupted():
    """Exit with status 130 even though a KeyboardInterrupt was raised in a nested ``exec`` of a string
    (scipy's array_api_compat does ``exec("from numpy import *")`` when first imported, mid-compile):
    CPython then keeps a flag that makes the interpreter kill itself with SIGINT at exit, after the
    interrupt was handled. Run what would run at exit, then leave without that check."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
