"""The ``tinyseg`` command (also ``python -m tvm_tinyseg``): the command line of cli.py, with Ctrl-C
while its modules load (TVM's take seconds) reported like Ctrl-C later: one line, status 130."""
import sys


def main() -> int:
    try:
        from tvm_tinyseg import cli
    except KeyboardInterrupt:
        print("tinyseg: interrupted", file=sys.stderr)
        return 130
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
