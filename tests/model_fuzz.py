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
