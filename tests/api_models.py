"""Small int8 models for the C API tests (no TensorFlow): a two-input, two-output net and a
single-input net with a long skip connection, which a tight RAM budget spills."""
import numpy as np

from int8_net import Net
from tvm_tinyseg.reference import tflm_output

SHAPE = (1, 8, 10, 3)


def two_io_model(path) -> str:
    """Inputs x (image) and side (same shape); outputs a stride-2 conv of x and conv(x) + side."""
    n = Net(shape=SHAPE)
    side = n.activation("side", SHAPE, 0.031, 4)
    features = n.conv(n.x, 4)
    coarse = n.conv(features, 3, stride=2)
    fused = n.binary("ADD", n.conv(features, 3), side, (0.09, -2))
    n.b.save(str(path), inputs=[n.x, side], outputs=[coarse, fused])
    return str(path)


def skip_model(path) -> str:
    """x → conv → three convs → ADD with the first conv (a skip tensor idle for three steps)."""
    n = Net(shape=SHAPE, seed=7)
    skip = n.conv(n.x, 8)
    y = skip
    for _ in range(3):
        y = n.conv(y, 8)
    return n.save(path, n.binary("ADD", y, skip, (0.12, 3)))


def inputs_of(spec: dict, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, size=t["shape"], dtype=np.int8) for t in spec["inputs"]]


def tflm_outputs(path, xs: list, n_outputs: int) -> list:
    """TFLite Micro's ``n_outputs`` outputs (model order) for inputs ``xs`` (model order)."""
    if len(xs) == 1 and n_outputs == 1:
        return [tflm_output(path, xs[0])]
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_file(str(path), arena_size=1 << 20)
    for i, x in enumerate(xs):
        interpreter.set_input(x, i)
    interpreter.invoke()
    return [np.asarray(interpreter.get_output(i)) for i in range(n_outputs)]
