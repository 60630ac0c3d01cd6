"""Baseline table: peak RAM of TFLite Micro, TVM's own memory planner and tinyseg on the model zoo.

    python benchmarks/baselines.py                 # int8 models/*.tflite + 2 user models -> benchmarks/results.{json,md}
    python benchmarks/baselines.py --models models/attendseg.tflite --out-dir out/
    python benchmarks/baselines.py --check         # recompute; exit 1 if results.json/.md differ

The measurements live in ``tvm_tinyseg.bench`` (shared with ``tinyseg bench``); this script fixes
the model set, the default budgets and the output files, and draws ``ram_vs_moved.png`` beside them.
"""
import argparse
import sys
from pathlib import Path

from tvm_tinyseg import bench

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PLOT = "ram_vs_moved.png"


# Two networks as users export them (Keras 3, batch-1 Input; models/user/README.md) beside the zoo.
USER_MODELS = ("unet_bilinear_keras3_b1.tflite", "deeplabv3plus_mbv2_keras3_b1.tflite")


def default_models() -> list:
    return bench.default_models(REPO / "models") + [REPO / "models" / "user" / name for name in USER_MODELS]


def outputs(records) -> dict:
    return {"results.json": bench.render_json(records), "results.md": bench.render_markdown(records)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", type=Path, default=None,
                        help="model files (default: every int8 models/*.tflite except *_float.tflite, and USER_MODELS)")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR)
    parser.add_argument("--check", action="store_true",
                        help="recompute and exit 1 if the files in --out-dir differ")
    args = parser.parse_args(argv)

    def progress(message):
        print(f"measuring {message}", file=sys.stderr, flush=True)

    records = [bench.measure(path, progress=progress) for path in args.models or default_models()]
    files = outputs(records)
    if args.check:
        stale = [name for name, text in files.items()
                 if not (args.out_dir / name).exists() or (args.out_dir / name).read_text() != text]
        for name in stale:
            print(f"{args.out_dir / name} is out of date", file=sys.stderr)
        if stale:
            print(files["results.json"], file=sys.stderr)
        return 1 if stale else 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out_dir / name).write_text(text)
    bench.plot_ram_vs_moved(records, args.out_dir / PLOT)
    print(files["results.md"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
