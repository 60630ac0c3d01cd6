"""tinyseg_mbqm (codegen/runtime/tinyseg_arith.h), TFLite Micro's MultiplyByQuantizedMultiplier:

* its shift-and-round form of SaturatingRoundingDoublingHighMul equals gemmlowp's truncating
  64-bit division on edge cases and millions of random operands, and the whole function equals
  the project's Python model of TFLM's arithmetic (passes/int8/lut.py), under UBSan;
* requantization shifts above 31 (an output scale of 1e-30 gives 88) give TFLite Micro's outputs
  on a real convolution, with no undefined behaviour.
"""
import os
import subprocess

import numpy as np
import pytest

from conftest import SEEDS, seeded_input, tflm_reference
from int8_net import ODD, Net
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.passes.int8.lut import _multiply_by_quantized_multiplier
from tvm_tinyseg.boards import host

RUNTIME = os.path.join(os.path.dirname(host.__file__), "..", "codegen", "runtime")
RANDOM_OPERANDS = 4_000_000

# gemmlowp's SaturatingRoundingDoublingHighMul as TFLite writes it (64-bit truncating division);
# xorshift operands, edge values crossed exhaustively; prints the triples for the Python check.
CHECK_PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include "tinyseg_arith.h"

static int32_t srdhm_division(int32_t a, int32_t b) {
  if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
  int64_t ab = (int64_t)a * (int64_t)b;
  int64_t nudge = ab >= 0 ? (1ll << 30) : (1 - (1ll << 30));
  return (int32_t)((ab + nudge) / (1ll << 31));
}

static int32_t srdhm_of_mbqm(int32_t a, int32_t b) { return tinyseg_mbqm(a, b, 0); }

static uint32_t state = 2463534242u;
static uint32_t next(void) { state ^= state << 13; state ^= state >> 17; state ^= state << 5; return state; }

int main(int argc, char **argv) {
  static const int32_t edges[] = {INT32_MIN, INT32_MIN + 1, -(1 << 30) - 1, -(1 << 30), -(1 << 30) + 1,
                                  -65536, -3, -2, -1, 0, 1, 2, 3, 65536, (1 << 30) - 1, 1 << 30,
                                  (1 << 30) + 1, INT32_MAX - 1, INT32_MAX};
  const int n_edges = (int)(sizeof edges / sizeof edges[0]);
  long n = atol(argv[1]), printed = atol(argv[2]);
  for (int i = 0; i < n_edges; ++i)
    for (int j = 0; j < n_edges; ++j)
      if (srdhm_of_mbqm(edges[i], edges[j]) != srdhm_division(edges[i], edges[j])) {
        printf("edge mismatch %d %d\n", (int)edges[i], (int)edges[j]);
        return 1;
      }
  for (long k = 0; k < n; ++k) {
    int32_t a = (int32_t)next(), b = (int32_t)next();
    if (k & 1) a >>= next() & 31; /* small accumulators too */
    if (srdhm_of_mbqm(a, b) != srdhm_division(a, b)) {
      printf("random mismatch %d %d\n", (int)a, (int)b);
      return 1;
    }
    if (k < printed) {
      int32_t shift = (int32_t)(next() % 63) - 31;
      printf("%d %d %d %d\n", (int)a, (int)b, (int)shift, (int)tinyseg_mbqm(a, b, shift));
    }
  }
  (void)argc;
  return 0;
}
"""


def test_shift_and_round_equals_gemmlowp_division(tmp_path):
    source = tmp_path / "check.c"
    source.write_text(CHECK_PROGRAM)
    exe = str(tmp_path / "check")
    subprocess.run(["cc", "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-fsanitize=undefined",
                    "-fno-sanitize-recover=all", "-I", RUNTIME, str(source), "-o", exe], check=True)
    run = subprocess.run([exe, str(RANDOM_OPERANDS), "3000"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-500:] + run.stderr[-2000:]
    triples = [tuple(map(int, line.split())) for line in run.stdout.splitlines()]
    assert len(triples) == 3000
    for x, multiplier, shift, got in triples:
        assert got == _multiply_by_quantized_multiplier(x, multiplier, shift), (x, multiplier, shift)


def _conv_with_output_scale(scale, tmp_path):
    net = Net(ODD)
    return net.save(tmp_path / "model.tflite", net.conv(net.x, 4, out_q=(scale, 5)))


@pytest.mark.parametrize("scale_exponent", [-31.7, -40, -90])  # requantization shifts 30..33, 38..41, 88..91
def test_requantization_shift_above_31_matches_tflite_micro(scale_exponent, tmp_path):
    path = _conv_with_output_scale(0.047 * 0.01 * 2.0 ** scale_exponent, tmp_path)
    out_dir = str(tmp_path / "c")
    compile_model(path, out_dir)
    exe = host.build(out_dir, sanitize=True)  # UBSan: no shift by 32 or more
    for seed in SEEDS:
        x = seeded_input(ODD, np.int8, seed)
        np.testing.assert_array_equal(host.run(out_dir, x, exe), tflm_reference(path, x))
