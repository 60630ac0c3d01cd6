"""Close the Relax BlockBuilders a failed frontend left open.

TVM's frontends build the module inside ``with bb.function(...): with bb.dataflow():``; when a
conversion raises, those scopes exit without ending the builder's current block, and the builder's
C++ destructor later prints "Warning: BlockBuilder destroyed with remaining blocks!" to stderr —
a second line after the one-line error. The builders are still reachable from the failed
frontend's frames (the error's traceback), so their blocks are ended here, before they go.
"""
import tvm
from tvm import relax

MAX_OPEN_BLOCKS = 16  # a frontend nests a handful (function, dataflow, control flow)


def _builders(frame):
    for value in frame.f_locals.values():
        for candidate in (value, getattr(value, "bb", None)):  # a local, or a converter's builder
            if isinstance(candidate, relax.BlockBuilder):
                yield candidate


def _end_open_blocks(builder) -> None:
    for _ in range(MAX_OPEN_BLOCKS):
        try:
            builder._end_block()
        except tvm.error.InternalError:  # "no block is being built": none left
            return


def close_builders(error: BaseException) -> None:
    """End the open blocks of every BlockBuilder in the frames of ``error`` and the errors it chains."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        tb = error.__traceback__
        while tb is not None:
            for builder in _builders(tb.tb_frame):
                _end_open_blocks(builder)
            tb = tb.tb_next
        error = error.__cause__ or error.__context__
