#!/usr/bin/env python3
"""Compile time of the user-model suite at 128x128 (target: at most 10 s per model).

    python benchmarks/compile_time.py                      # generate 128x128 variants, time, write compile_time.md
    python benchmarks/compile_time.py unet_sepconv mediapipe_style_float   # only these architectures
    python benchmarks/compile_time.py --models-dir DIR     # time the .tflite/.onnx files already in DIR

Generating needs tensorflow/tf_keras/torch (models/generate_user_models.py --size 128, into a
temporary directory: the 128x128 files are not committed). Each model is compiled to C in a fresh
process-local call of ``compile_model``, without TinySeg and with the smallest RAM budget; the
seconds are wall-clock on this machine (the C compiler is not included). A model that does not
compile today is listed with its error instead.
"""
import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
TARGET_SECONDS = 10.0
CONFIGS = (("no TinySeg", dict(tinyseg=False)), ("TinySeg min", dict(ram_budget=-1)))


def generate(names, size: int, out_dir: str) -> None:
    script = os.path.join(REPO, "models", "generate_user_models.py")
    subprocess.run([sys.executable, script, *names, "--size", str(size), "--out", out_dir], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def time_model(path: str, work_dir: str) -> list:
    """Seconds per configuration, or the first line of the error."""
    from tvm_tinyseg.driver import compile_model

    cells = []
    for label, options in CONFIGS:
        out_dir = os.path.join(work_dir, os.path.basename(path) + "_" + label.replace(" ", "_"))
        start = time.perf_counter()
        try:
            compile_model(path, out_dir, **options)
        except Exception as err:  # noqa: BLE001 -- recorded, not hidden: the table shows it
            message = str(err).splitlines()[0].replace(path, os.path.basename(path))
            return [f"does not compile: {message[:200]}"]
        cells.append(time.perf_counter() - start)
    return cells


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def commit() -> str:
    proc = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def render(rows, size: int) -> str:
    lines = [f"# Compile time at {size}x{size}", "",
             f"`python benchmarks/compile_time.py` on {machine()}, commit {commit()}.",
             f"Wall-clock seconds of `compile_model` (model to C, without the C compiler); target <= "
             f"{TARGET_SECONDS:.0f} s per model. Models are `models/generate_user_models.py --size {size}`.", "",
             "| model | " + " | ".join(label + " (s)" for label, _ in CONFIGS) + " | within target |",
             "|---|" + "---:|" * len(CONFIGS) + "---|"]
    for name, cells in rows:
        if isinstance(cells[0], str):
            lines.append(f"| {name} | {cells[0]} |" + " |" * len(CONFIGS))
        else:
            ok = "yes" if max(cells) <= TARGET_SECONDS else "**no**"
            lines.append(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells) + f" | {ok} |")
    lines += ["", "Models missing here do not compile today (tests/test_user_models.py, NOT_YET)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="architectures to generate (default: all)")
    parser.add_argument("--models-dir", help="time these models instead of generating them")
    parser.add_argument("--size", type=int, default=128, help="input size to generate (default 128)")
    parser.add_argument("--out", default=os.path.join(BENCH_DIR, "compile_time.md"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        models_dir = args.models_dir
        if models_dir is None:
            models_dir = os.path.join(tmp, "models")
            generate(args.names, args.size, models_dir)
        rows = []
        for name in sorted(f for f in os.listdir(models_dir) if f.endswith((".tflite", ".onnx"))):
            rows.append((name, time_model(os.path.join(models_dir, name), tmp)))
            print(name, rows[-1][1], flush=True)
    with open(args.out, "w") as f:
        f.write(render(rows, args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
