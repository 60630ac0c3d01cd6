"""The same layers with Arm's CMSIS-NN kernels on QEMU's Cortex-M7: instructions per layer.

    python benchmarks/cmsis_nn.py --cmsis-nn DIR [--model models/tinyunet_80x120.tflite] [--json FILE]

DIR is a CMSIS-NN source tree (github.com/ARM-software/CMSIS-NN; not part of this repository). The
script reads the .tflite model's int8 operators, writes a firmware that runs each of them with
CMSIS-NN (arm_convolve_wrapper_s8, arm_depthwise_conv_wrapper_s8, arm_transpose_conv_s8,
arm_max_pool_s8; a channel concatenation is a copy per pixel, as in TFLite Micro) on the model's own
weights, with TFLite Micro's quantization parameters, builds it with arm-none-eabi-gcc -O2 for
Cortex-M7 together with the qemu_cortex_m project's startup code, and runs it under QEMU with the
project's instruction-count plugin, a mark between layers (tvm_tinyseg/profile.py). The output is
checked against TFLite Micro's. Beside it, this project's kernels for the same model (compiled
without TinySeg, ``--mcpu cortex-m7``, one kernel per operator) are profiled the same way.
"""
import argparse
import glob
import json
import math
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import tflite

from tvm_tinyseg import profile
from tvm_tinyseg.microtvm_projects import template_dir
from tvm_tinyseg.passes.int8.requantize import quantize_multiplier
from tvm_tinyseg.boards import qemu_cortex_m as qemu
from tvm_tinyseg.reference import tflm_output

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(REPO, "models", "tinyunet_80x120.tflite")
CPU_FLAGS = ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"]
CMSIS_SOURCES = ("ConvolutionFunctions", "NNSupportFunctions", "PoolingFunctions")
FLOAT_SOURCE = re.compile(r"_(f16|f32|flt)\.c$")  # float kernels need the float type headers; unused
SCRATCH_BYTES = 64 * 1024  # the largest im2col / transposed-conv buffer any layer may ask for
OPS = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
SEED = 0


class Tensor:
    def __init__(self, model, graph, index):
        t = graph.Tensors(index)
        self.index, self.shape = index, [int(d) for d in t.ShapeAsNumpy()]
        q = t.Quantization()
        self.scale = q.ScaleAsNumpy() if q is not None and q.ScaleLength() else None
        self.zero_point = int(q.ZeroPointAsNumpy()[0]) if q is not None and q.ZeroPointLength() else 0
        data = model.Buffers(t.Buffer()).DataAsNumpy()
        dtype = {tflite.TensorType.INT8: np.int8, tflite.TensorType.INT32: np.int32}.get(t.Type())
        stored = dtype is not None and not np.isscalar(data)  # a constant (weights, bias)
        self.data = np.frombuffer(data.tobytes(), dtype).reshape(self.shape) if stored else None


def _options(op, name):
    options = getattr(tflite, name)()
    table = op.BuiltinOptions()
    options.Init(table.Bytes, table.Pos)
    return options


def _activation_range(activation, tensor):
    """TFLite's CalculateActivationRangeQuantized for int8."""
    def q(value):
        scaled = np.float32(value) / np.float32(tensor.scale[0])
        return tensor.zero_point + int(math.copysign(math.floor(abs(scaled) + 0.5), scaled))

    low, high = {tflite.ActivationFunctionType.NONE: (None, None), tflite.ActivationFunctionType.RELU: (0.0, None),
                 tflite.ActivationFunctionType.RELU6: (0.0, 6.0),
                 tflite.ActivationFunctionType.RELU_N1_TO_1: (-1.0, 1.0)}[activation]
    return (-128 if low is None else max(-128, q(low))), (127 if high is None else min(127, q(high)))


def _padding(padding, size, stride, kernel, out):
    """(padding, offset) as TFLite's ComputePaddingHeightWidth."""
    if padding == tflite.Padding.VALID:
        return 0, 0
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total % 2


def _c_array(name, qualifier, ctype, values):
    flat = [str(int(v)) if int(v) != -2**31 else "(int32_t)-2147483648" for v in np.asarray(values).reshape(-1)]
    lines = ",\n  ".join(", ".join(flat[i:i + 24]) for i in range(0, len(flat), 24))
    return f"static {qualifier}{ctype} {name}[{len(flat)}] __attribute__((aligned(4))) = {{\n  {lines}\n}};"


def _dims(shape):
    n, h, w, c = shape
    return f"{{{n}, {h}, {w}, {c}}}"


def layers_source(path):
    """The firmware's C source and, per layer, its (name, MACs)."""
    with open(path, "rb") as f:
        model = tflite.Model.GetRootAsModel(f.read(), 0)
    graph = model.Subgraphs(0)
    tensors = {}

    def tensor(i):
        if i not in tensors:
            tensors[i] = Tensor(model, graph, i)
        return tensors[i]

    consts, calls, layers, activations = [], [], [], set()
    EMITTED.clear()
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = OPS[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        ins = [tensor(op.Inputs(j)) if op.Inputs(j) >= 0 else None for j in range(op.InputsLength())]
        out = tensor(op.Outputs(0))
        activations.add(out.index)
        call, macs = _layer(i, kind, op, ins, out, consts, activations)
        calls.append(call)
        layers.append((f"{i}: {kind.lower()}", macs))
    buffers = [f"static int8_t t{i}[{int(np.prod(tensors[i].shape))}] __attribute__((aligned(4)));"
               for i in sorted(activations)]
    marked = []
    for i, call in enumerate(calls):
        marked += ["  tinyseg_profile_mark();", f"  if ({call} != ARM_CMSIS_NN_SUCCESS) return {10 + i};"]
    source = "\n".join([
        "#include <string.h>", '#include "arm_nnfunctions.h"', '#include "semihost.h"', "",
        f"static int8_t scratch[{SCRATCH_BYTES}] __attribute__((aligned(4)));",
        *buffers, *consts, "",
        "void __attribute__((noinline)) tinyseg_profile_mark(void);",
        'void __attribute__((noinline)) tinyseg_profile_mark(void) { __asm__ volatile("" ::: "memory"); }',
        "static arm_cmsis_nn_status concat_channels(const int8_t *a, int32_t ca, const int8_t *b, int32_t cb, "
        "int8_t *out, int32_t pixels) {",
        "  for (int32_t p = 0; p < pixels; ++p) {",
        "    memcpy(out + p * (ca + cb), a + p * ca, (size_t)ca);",
        "    memcpy(out + p * (ca + cb) + ca, b + p * cb, (size_t)cb);",
        "  }",
        "  return ARM_CMSIS_NN_SUCCESS;",
        "}",
        "static const cmsis_nn_context *scratch_of(int32_t bytes) {",
        "  static cmsis_nn_context ctx;",
        f"  if (bytes > {SCRATCH_BYTES}) sh_exit(9); /* SCRATCH_BYTES too small */",
        "  ctx.buf = scratch;",
        "  ctx.size = bytes;",
        "  return &ctx;",
        "}",
        "static int run_layers(void) {", *marked, "  tinyseg_profile_mark();", "  return 0;", "}", "",
        "int main(void) {",
        "  int fd = sh_open(\"input.bin\", SH_MODE_RB);",
        f"  if (fd < 0 || sh_read(fd, t{graph.Inputs(0)}, sizeof(t{graph.Inputs(0)})) != 0u) return 66;",
        "  sh_close(fd);",
        "  int status = run_layers();",
        "  if (status != 0) return status;",
        "  fd = sh_open(\"output.bin\", SH_MODE_WB);",
        f"  if (fd < 0 || sh_write(fd, t{graph.Outputs(0)}, sizeof(t{graph.Outputs(0)})) != 0u) return 73;",
        "  return sh_close(fd);",
        "}", ""])
    return source, layers


def _quant(i, x, w, out, consts):
    """Per-channel multipliers and shifts as TFLite Micro computes them (double precision)."""
    scales = np.asarray(w.scale)
    scales = np.repeat(scales, out.shape[-1]) if scales.size == 1 else scales  # per tensor: every channel
    pairs = [quantize_multiplier(float(np.float64(x.scale[0]) * np.float64(s) / np.float64(out.scale[0])))
             for s in scales]
    consts.append(_c_array(f"m{i}", "", "int32_t", [m for m, _ in pairs]))
    consts.append(_c_array(f"s{i}", "", "int32_t", [s for _, s in pairs]))
    return f"(cmsis_nn_per_channel_quant_params){{m{i}, s{i}}}"


EMITTED = set()  # constant tensors already written (one model per run)


def _layer(i, kind, op, ins, out, consts, activations):
    def data(t):
        if t.data is not None:
            return f"c{t.index}"
        activations.add(t.index)
        return f"t{t.index}"

    def weights(*ts):
        for t in ts:
            if t is not None and t.data is not None and t.index not in EMITTED:
                EMITTED.add(t.index)
                ctype = "int8_t" if t.data.dtype == np.int8 else "int32_t"
                consts.append(_c_array(f"c{t.index}", "const ", ctype, t.data))

    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        x, w, b = ins[0], ins[1], ins[2] if len(ins) > 2 else None
        name = "Conv2DOptions" if kind == "CONV_2D" else "DepthwiseConv2DOptions"
        o = _options(op, name)
        weights(w, b)
        _, kh, kw, wc = w.shape
        dh, dw = o.DilationHFactor(), o.DilationWFactor()
        ph, _ = _padding(o.Padding(), x.shape[1], o.StrideH(), (kh - 1) * dh + 1, out.shape[1])
        pw, _ = _padding(o.Padding(), x.shape[2], o.StrideW(), (kw - 1) * dw + 1, out.shape[2])
        lo, hi = _activation_range(o.FusedActivationFunction(), out)
        quant = _quant(i, x, w, out, consts)
        bias = data(b) if b is not None else "NULL"
        tiles = f"{{{o.StrideW()}, {o.StrideH()}}}, {{{pw}, {ph}}}, {{{dw}, {dh}}}, {{{lo}, {hi}}}"
        dims = (f"&(cmsis_nn_dims){_dims(x.shape)}, {data(x)}, &(cmsis_nn_dims){_dims(w.shape)}, {data(w)}, "
                f"&(cmsis_nn_dims){{1, 1, 1, {out.shape[-1]}}}, {bias}, "
                f"&(cmsis_nn_dims){_dims(out.shape)}, {data(out)}")
        if kind == "CONV_2D":
            params = f"&(cmsis_nn_conv_params){{{-x.zero_point}, {out.zero_point}, {tiles}}}"
            size = (f"arm_convolve_wrapper_s8_get_buffer_size({params}, &(cmsis_nn_dims){_dims(x.shape)}, "
                    f"&(cmsis_nn_dims){_dims(w.shape)}, &(cmsis_nn_dims){_dims(out.shape)})")
            macs = int(np.prod(out.shape)) * kh * kw * wc
            return f"arm_convolve_wrapper_s8(scratch_of({size}), {params}, &{quant}, {dims})", macs
        multiplier = out.shape[-1] // x.shape[-1]
        params = f"&(cmsis_nn_dw_conv_params){{{-x.zero_point}, {out.zero_point}, {multiplier}, {tiles}}}"
        size = (f"arm_depthwise_conv_wrapper_s8_get_buffer_size({params}, &(cmsis_nn_dims){_dims(x.shape)}, "
                f"&(cmsis_nn_dims){_dims(w.shape)}, &(cmsis_nn_dims){_dims(out.shape)})")
        macs = int(np.prod(out.shape)) * kh * kw
        return f"arm_depthwise_conv_wrapper_s8(scratch_of({size}), {params}, &{quant}, {dims})", macs
    if kind == "TRANSPOSE_CONV":
        w, x, b = ins[1], ins[2], ins[3] if len(ins) > 3 else None
        o = _options(op, "TransposeConvOptions")
        weights(w, b)
        oc, kh, kw, ic = w.shape
        ph, oh = _padding(o.Padding(), out.shape[1], o.StrideH(), kh, x.shape[1])
        pw, ow = _padding(o.Padding(), out.shape[2], o.StrideW(), kw, x.shape[2])
        activation = o.FusedActivationFunction() if hasattr(o, "FusedActivationFunction") else 0
        lo, hi = _activation_range(activation, out)
        quant = _quant(i, x, w, out, consts)
        consts.append(f"static int32_t acc{i}[{int(np.prod(out.shape))}];")
        params = (f"&(cmsis_nn_transpose_conv_params){{{-x.zero_point}, {out.zero_point}, {{{o.StrideW()}, "
                  f"{o.StrideH()}}}, {{{pw}, {ph}}}, {{{ow}, {oh}}}, {{1, 1}}, {{{lo}, {hi}}}}}")
        size = (f"arm_transpose_conv_s8_get_buffer_size({params}, &(cmsis_nn_dims){_dims(x.shape)}, "
                f"&(cmsis_nn_dims){_dims(w.shape)}, &(cmsis_nn_dims){_dims(out.shape)})")
        bias = data(b) if b is not None else "NULL"
        call = (f"arm_transpose_conv_s8(scratch_of({size}), &(cmsis_nn_context){{acc{i}, "
                f"sizeof(acc{i})}}, {params}, &{quant}, &(cmsis_nn_dims){_dims(x.shape)}, {data(x)}, "
                f"&(cmsis_nn_dims){_dims(w.shape)}, {data(w)}, &(cmsis_nn_dims){{1, 1, 1, {oc}}}, {bias}, "
                f"&(cmsis_nn_dims){_dims(out.shape)}, {data(out)})")
        return call, x.shape[1] * x.shape[2] * kh * kw * ic * oc
    if kind == "MAX_POOL_2D":
        x = ins[0]
        o = _options(op, "Pool2DOptions")
        ph, _ = _padding(o.Padding(), x.shape[1], o.StrideH(), o.FilterHeight(), out.shape[1])
        pw, _ = _padding(o.Padding(), x.shape[2], o.StrideW(), o.FilterWidth(), out.shape[2])
        lo, hi = _activation_range(o.FusedActivationFunction(), out)
        params = f"&(cmsis_nn_pool_params){{{{{o.StrideW()}, {o.StrideH()}}}, {{{pw}, {ph}}}, {{{lo}, {hi}}}}}"
        return (f"arm_max_pool_s8(scratch_of(0), {params}, &(cmsis_nn_dims){_dims(x.shape)}, "
                f"{data(x)}, &(cmsis_nn_dims){{1, {o.FilterHeight()}, {o.FilterWidth()}, 1}}, "
                f"&(cmsis_nn_dims){_dims(out.shape)}, {data(out)})"), 0
    if kind == "CONCATENATION" and len(ins) == 2 and _options(op, "ConcatenationOptions").Axis() in (-1, 3):
        a, b = ins
        if any((t.scale[0], t.zero_point) != (out.scale[0], out.zero_point) for t in (a, b)):
            raise SystemExit(f"operator {i} (CONCATENATION): inputs quantized unlike the output are not supported")
        return (f"concat_channels({data(a)}, {a.shape[-1]}, {data(b)}, {b.shape[-1]}, {data(out)}, "
                f"{int(np.prod(out.shape[:-1]))})"), 0
    raise SystemExit(f"operator {i} ({kind}): not supported by this script")


def build(source, cmsis_nn, work):
    with open(os.path.join(work, "layers.c"), "w") as f:
        f.write(source)
    template = template_dir("qemu_cortex_m")
    sources = [os.path.join(work, "layers.c"), *(os.path.join(template, f) for f in ("startup.c", "semihost.c"))]
    for folder in CMSIS_SOURCES:
        sources += sorted(f for f in glob.glob(os.path.join(cmsis_nn, "Source", folder, "*.c"))
                          if not FLOAT_SOURCE.search(os.path.basename(f)))
    elf = os.path.join(work, "cmsis_nn.elf")
    cmd = ["arm-none-eabi-gcc", *CPU_FLAGS, "-O2", "-ffunction-sections", "-fdata-sections",
           "-I", os.path.join(cmsis_nn, "Include"), "-I", template, *sources, "-nostartfiles", "--specs=nano.specs",
           "-T", os.path.join(template, "mps2_an500.ld"), "-Wl,--gc-sections", "-Wl,--defsym=RAM_BUDGET=4M",
           "-Wl,--defsym=STACK_SIZE=8K", "-o", elf, "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if "error" in ln]
        raise SystemExit(f"the CMSIS-NN firmware does not build: {errors[0] if errors else proc.stderr[-500:]}")
    plugin = os.path.join(work, qemu.PLUGIN)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", plugin, os.path.join(template, "tinyseg_insncount.c")],
                   check=True)
    return elf, plugin


def run(elf, plugin, x, work):
    x.tofile(os.path.join(work, "input.bin"))
    proc = qemu.run_firmware(elf, work, args=(), plugin=plugin, mark=qemu.profile_mark_address(elf))
    if proc.returncode != 0:
        raise SystemExit(f"the CMSIS-NN firmware exited with status {proc.returncode}: {proc.stdout} {proc.stderr}")
    return qemu.instruction_counts(work)


def ours(model, x, work):
    """This project's kernels, without TinySeg, for the QEMU board's core; profiled."""
    from tvm_tinyseg.driver import compile_model

    out_dir = os.path.join(work, "tinyseg")
    result = compile_model(model, out_dir, tinyseg=False, mcpu="cortex-m7")
    stats = {}
    y = qemu.run(out_dir, x, qemu.build(out_dir, ram_budget=qemu.RAM_WINDOW, profile=True), stats, profile=True)
    return y, profile.profile_rows(result.memory_report["steps"], stats["marks"]), stats["instructions"]


def cmsis_nn_commit(cmsis_nn):
    proc = subprocess.run(["git", "-C", cmsis_nn, "rev-parse", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cmsis-nn", required=True, metavar="DIR", help="a CMSIS-NN source tree")
    parser.add_argument("--commit", help="the CMSIS-NN commit DIR holds (default: git rev-parse HEAD in DIR)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--json", metavar="FILE", help="write the per-layer figures as JSON")
    args = parser.parse_args(argv)
    source, layers = layers_source(args.model)
    with open(args.model, "rb") as f:
        graph = tflite.Model.GetRootAsModel(f.read(), 0).Subgraphs(0)
    shape = [int(d) for d in graph.Tensors(graph.Inputs(0)).ShapeAsNumpy()]
    x = np.random.default_rng(SEED).integers(-128, 128, size=shape, dtype=np.int8)
    reference = tflm_output(args.model, x)
    with tempfile.TemporaryDirectory(prefix="cmsis_nn_") as work:
        elf, plugin = build(source, args.cmsis_nn, work)
        counts = run(elf, plugin, x, work)
        y = np.fromfile(os.path.join(work, "output.bin"), np.int8).reshape(reference.shape)
        our_y, our_rows, our_total = ours(args.model, x, work)
    marks = counts["marks"]
    rows = [{"layer": name, "macs": macs, "cmsis_nn_instructions": marks[i + 1] - marks[i]}
            for i, (name, macs) in enumerate(layers)]
    side_by_side = len(our_rows) == len(rows)
    for row, our in zip(rows, our_rows if side_by_side else []):
        row["tinyseg_kernel"], row["tinyseg_instructions"] = our["name"], our["instructions"]
    record = {"model": os.path.basename(args.model), "cmsis_nn_commit": args.commit or cmsis_nn_commit(args.cmsis_nn),
              "cmsis_nn_output_equals_tflm": bool(np.array_equal(y, reference)),
              "tinyseg_output_equals_tflm": bool(np.array_equal(our_y, reference)),
              "cmsis_nn_instructions": counts["instructions"], "tinyseg_instructions": our_total,
              "macs": sum(m for _, m in layers), "layers": rows}
    print(f"{record['model']}: CMSIS-NN {record['cmsis_nn_commit']}, output equal to TFLite Micro's: "
          f"CMSIS-NN {record['cmsis_nn_output_equals_tflm']}, tinyseg {record['tinyseg_output_equals_tflm']}")
    print(f"{'layer':<22} {'MACs':>11} {'CMSIS-NN':>12} {'/MAC':>6} {'tinyseg':>12} {'/MAC':>6}")
    def line(name, macs, theirs, ours_n):
        def per(n):
            return f"{n / macs:.2f}" if macs else "-"
        text = f"{name:<22} {macs:>11,} {theirs:>12,} {per(theirs):>6}"
        return text + (f" {ours_n:>12,} {per(ours_n):>6}" if ours_n is not None else "")

    for r in rows:
        print(line(r["layer"], r["macs"], r["cmsis_nn_instructions"], r.get("tinyseg_instructions")))
    print(line("whole run", record["macs"], record["cmsis_nn_instructions"], our_total))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
    return 0 if record["cmsis_nn_output_equals_tflm"] else 1


if __name__ == "__main__":
    sys.exit(main())
