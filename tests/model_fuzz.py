"""Mutated model files for the loader fuzz tests, and a worker that feeds them to the loaders.

Mutations are the classic file-fuzzing ones: byte flips, overwrites with random bytes, truncations
and splices of one zoo file into another. Run as a script, the worker loads ``count`` mutations
drawn with ``seed`` and prints one line per case, so a parent process sees which case was running
when the worker crashed (a segfault in a parser kills the worker, not the test run)::

    python model_fuzz.py SEED COUNT WORK_DIR

Lines: ``case I BASE KIND`` before loading, then ``ok I`` (loaded), ``error I CLASS`` (a one-line
TinySegError), or ``bad I CLASS: MESSAGE`` (anything else, or a multi-line message; the file is
kept as ``WORK_DIR/badI.EXT``).
"""
import os
import random
import sys

KINDS = ("flip", "overwrite", "truncate", "splice")


def mutate(data: bytes, kind: str, rng: random.Random, donor: bytes) -> bytes:
    """One mutation of ``data``; ``donor`` is another model file for splices."""
    data = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "overwrite":
        at = rng.randrange(len(data))
        length = rng.choice((1, 2, 4, 8, 64))
        data[at:at + length] = bytes(rng.randrange(256) for _ in range(length))[:len(data) - at]
    elif kind == "truncate":
        data = data[:rng.randrange(len(data))]
    elif kind == "splice":
        at, cut = rng.randrange(len(data)), rng.randrange(len(donor))
        data = data[:at] + donor[cut:cut + rng.randint(1, 4096)] + data[at + rng.randint(0, 4096):]
    else:
        raise ValueError(f"unknown mutation {kind!r}")
    return bytes(data)


# Quantization parameters a random model draws now and then; the rest are ordinary.
ODD_SCALES = (0.0, -0.1, 1e-9, 1e9, float("nan"), float("inf"))
ODD_ZERO_POINTS = (-200, -129, 128, 300)


def random_conv_pool_model(rng: random.Random) -> bytes:
    """A CONV_2D → pooling int8 model with random sizes, strides, paddings, activations and
    quantization: mostly consistent, sometimes with declared shapes, windows or parameters that
    are not (zero strides, windows larger than their input, empty tensors, odd scales)."""
    from tflite_builder import TFLiteBuilder
    import numpy as np

    def quant():
        if rng.random() < 0.15:
            return rng.choice(ODD_SCALES + (0.05,)), rng.choice(ODD_ZERO_POINTS + (0,))
        return rng.choice((0.02, 0.05, 0.1)), rng.randint(-128, 127)

    def out_size(size, window, stride, padding):
        stride = max(stride, 1)
        return (size + stride - 1) // stride if padding == "SAME" else max((size - window) // stride + 1, 0)

    b = TFLiteBuilder()
    h, w, c = rng.randint(1, 12), rng.randint(1, 12), rng.randint(1, 4)
    oc, k, stride = rng.randint(1, 5), rng.randint(1, 5), rng.choice((0, 1, 1, 2, 2, 3))
    padding = rng.choice(("SAME", "VALID"))
    x = b.tensor("x", [1, h, w, c], np.int8, quant=quant())
    w_quant = ([0.01] * oc, [0] * oc, 0) if rng.random() < 0.85 else \
        ([rng.choice(ODD_SCALES)] * oc, [rng.choice(ODD_ZERO_POINTS)] * oc, 0)
    weights = b.tensor("w", [oc, k, k, c], np.int8, data=np.arange(oc * k * k * c) % 11 - 5, quant=w_quant)
    bias = b.tensor("bias", [oc], np.int32, data=np.arange(oc), quant=([0.0005] * oc, [0] * oc, 0))
    oh, ow = out_size(h, k, stride, padding), out_size(w, k, stride, padding)
    if rng.random() < 0.3:
        oh, ow = rng.randint(0, 12), rng.randint(0, 12)
    y_quant = quant()
    y = b.tensor("y", [1, oh, ow, oc], np.int8, quant=y_quant)
    b.op("CONV_2D", [x, weights, bias], [y], options=("Conv2DOptions", {
        "padding": padding, "stride_h": stride, "stride_w": stride,
        "fused_activation_function": rng.choice(("NONE", "RELU", "RELU6"))}))
    window, pool_stride = rng.randint(1, 4), rng.choice((0, 1, 2, 2, 3))
    ph, pw = out_size(oh, window, pool_stride, "VALID"), out_size(ow, window, pool_stride, "VALID")
    if rng.random() < 0.3:
        ph, pw = rng.randint(0, 6), rng.randint(0, 6)
    pooled = b.tensor("pooled", [1, ph, pw, oc], np.int8, quant=y_quant if rng.random() < 0.8 else quant())
    b.op(rng.choice(("MAX_POOL_2D", "AVERAGE_POOL_2D")), [y], [pooled], options=("Pool2DOptions", {
        "padding": "VALID", "stride_h": pool_stride, "stride_w": pool_stride,
        "filter_height": window, "filter_width": window}))
    return b.serialize(inputs=[x], outputs=[pooled])


def zoo_files(models_dir: str) -> list:
    return sorted(os.path.join(models_dir, f) for f in os.listdir(models_dir) if f.endswith((".tflite", ".onnx")))


def classify(error: BaseException) -> str:
    """``None`` when ``error`` is an acceptable loader failure, else what is wrong with it."""
    from tvm_tinyseg.errors import TinySegError

    message = str(error)
    if not isinstance(error, TinySegError):
        return f"{type(error).__name__}: {message[:300]!r}"
    if "\n" in message or not message.strip():
        return f"{type(error).__name__} with a message that is not one line: {message[:300]!r}"
    return None


def main(seed: int, count: int, work_dir: str) -> None:
    from tvm_tinyseg.frontend import load_model
    from tvm_tinyseg.models import MODELS_DIR

    files = zoo_files(MODELS_DIR)
    blobs = {path: open(path, "rb").read() for path in files}
    rng = random.Random(seed)
    for i in range(count):
        base, kind = rng.choice(files), rng.choice(KINDS)
        mutated = mutate(blobs[base], kind, rng, blobs[rng.choice(files)])
        path = os.path.join(work_dir, f"case{os.path.splitext(base)[1]}")
        with open(path, "wb") as f:
            f.write(mutated)
        print(f"case {i} {os.path.basename(base)} {kind}", flush=True)
        try:
            load_model(path)
            print(f"ok {i}", flush=True)
        except Exception as err:  # noqa: BLE001 (judging every failure is the point)
            problem = classify(err)
            if problem:
                os.replace(path, os.path.join(work_dir, f"bad{i}{os.path.splitext(base)[1]}"))
            print(f"bad {i} {problem}" if problem else f"error {i} {type(err).__name__}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
