"""Emit the AoT-style C runner: weights as const arrays, one static arena, ``tinyseg_run``.

The runner calls the plain-C kernels (see tir_to_c.py) in execution order with pointers into the
arena whose offsets the static planner chose. No TVM runtime, no malloc.
"""
import numpy as np

from tvm_tinyseg.codegen import program_memory
from tvm_tinyseg.passes.lifetime import LifetimeTable

C_TYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t",
           "int64": "int64_t", "float32": "float"}
ARENA = "tinyseg_arena"

# Row-window reads of spilled tensors from inside kernels: the first failure sticks, later reads
# of the run are skipped (a dead link would time out on each), and the runner checks the status
# after the kernel (a kernel cannot return one).
STREAM_READER = [
    "#if TINYSEG_STORAGE_BYTES > UINTPTR_MAX  /* pool offsets travel disguised as pointers */",
    '#error "the storage pool is larger than this target\'s address space"',
    "#endif",
    "static int tinyseg_stream_status = TINYSEG_OK;",
    "",
    "static int32_t tinyseg_stream_read(const void *stored, void *dst, int32_t nbytes) {",
    "  if (tinyseg_stream_status != TINYSEG_OK) return tinyseg_stream_status;",
    "  tinyseg_stream_status = tinyseg_storage_read((uint32_t)(uintptr_t)stored, dst, (uint32_t)nbytes);",
    "  return tinyseg_stream_status;",
    "}",
    "",
]
VALUES_PER_LINE = 24

# Debug builds (-DTINYSEG_DEBUG_CANARIES): guard bytes around the arena, and a checksum of every
# buffer live at a step other than the step's output, taken before the step and compared after it.
# A kernel (or storage backend) writing out of bounds makes tinyseg_run return
# TINYSEG_ERR_ARENA_CANARY or TINYSEG_ERR_BUFFER_CLOBBERED instead of a silently wrong result.
# Without the macro the preprocessor leaves the release code exactly as it was.
CANARY_BYTES = 16  # keeps the arena 16-byte aligned inside its guarded allocation
DEBUG_CHECKS = [
    "#ifdef TINYSEG_DEBUG_CANARIES",
    "#define TINYSEG_CANARY 0xA5u",
    "",
    "static void tinyseg_debug_arm(void) {",
    "  memset(tinyseg_arena_guarded, TINYSEG_CANARY, TINYSEG_CANARY_BYTES);",
    "  memset(tinyseg_arena + TINYSEG_ARENA_BYTES, TINYSEG_CANARY, TINYSEG_CANARY_BYTES);",
    "}",
    "",
    "static int tinyseg_debug_canaries_intact(void) {",
    "  for (uint32_t i = 0; i < TINYSEG_CANARY_BYTES; ++i) {",
    "    if (tinyseg_arena_guarded[i] != TINYSEG_CANARY) return 0;",
    "    if (tinyseg_arena[TINYSEG_ARENA_BYTES + i] != TINYSEG_CANARY) return 0;",
    "  }",
    "  return 1;",
    "}",
    "",
    "/* FNV-1a over the bytes of the buffers live at `step`, except those of buffer `written` (the",
    " * step's output, which may share bytes with an input whose rows it overwrites). */",
    "static uint32_t tinyseg_debug_live_sum(int step, int written) {",
    "  const int n = (int)(sizeof(tinyseg_debug_buffers) / sizeof(tinyseg_debug_buffers[0]));",
    "  const uint32_t out_begin = written >= 0 ? tinyseg_debug_buffers[written].offset : 0u;",
    "  const uint32_t out_end = written >= 0 ? out_begin + tinyseg_debug_buffers[written].nbytes : 0u;",
    "  uint32_t hash = 2166136261u;",
    "  for (int b = 0; b < n; ++b) {",
    "    const tinyseg_debug_buffer_t *buf = &tinyseg_debug_buffers[b];",
    "    if (b == written || step < buf->first || step > buf->last) continue;",
    "    for (uint32_t at = buf->offset; at < buf->offset + buf->nbytes; ++at) {",
    "      if (at < out_begin || at >= out_end) hash = (hash ^ tinyseg_arena[at]) * 16777619u;",
    "    }",
    "  }",
    "  return hash;",
    "}",
    "",
    "#define TINYSEG_DEBUG_BEFORE(step, written) \\",
    "  const uint32_t tinyseg_live_sum_##step = tinyseg_debug_live_sum(step, written)",
    "#define TINYSEG_DEBUG_AFTER(step, written) do { \\",
    "    if (!tinyseg_debug_canaries_intact()) return TINYSEG_ERR_ARENA_CANARY; \\",
    "    if (tinyseg_debug_live_sum(step, written) != tinyseg_live_sum_##step) return TINYSEG_ERR_BUFFER_CLOBBERED; \\",
    "  } while (0)",
    "#else",
    "#define TINYSEG_DEBUG_BEFORE(step, written)",
    "#define TINYSEG_DEBUG_AFTER(step, written)",
    "#endif",
]


def workspace_buffer(step: int) -> str:
    return f"ws{step}"


def _c_literal(value, dtype) -> str:
    if dtype == np.float32:
        return repr(float(value)) + "f" if np.isfinite(value) else "0.0f"
    return str(int(value))


def _const_array(name: str, array: np.ndarray, qualifier: str = "") -> str:
    flat = array.reshape(-1)
    ctype = C_TYPES[str(array.dtype)]
    if ctype == "int32_t":  # INT32_MIN cannot be written as a plain literal
        items = [f"(int32_t){int(v)}" if v == np.iinfo(np.int32).min else str(int(v)) for v in flat]
    else:
        items = [_c_literal(v, array.dtype) for v in flat]
    lines = [", ".join(items[i:i + VALUES_PER_LINE]) for i in range(0, len(items), VALUES_PER_LINE)]
    body = ",\n  ".join(lines)
    return (f"static const {qualifier}{ctype} {name}[{max(flat.size, 1)}] __attribute__((aligned(16))) = {{\n  "
            f"{body}\n}};")


def _io_ctype(table: LifetimeTable, name: str) -> str:
    return C_TYPES[table.tensors[name].dtype]


def emit_model_header(table: LifetimeTable, arena_bytes: int, storage_bytes: int = 0) -> str:
    (inp,) = table.inputs
    inp_t, out_t = table.tensors[inp], table.tensors[table.output]
    return "\n".join([
        "/* Generated by tvm_tinyseg. */",
        "#ifndef TINYSEG_MODEL_H",
        "#define TINYSEG_MODEL_H",
        "#include <stdint.h>",
        "",
        f"#define TINYSEG_ARENA_BYTES {arena_bytes}u   /* static arena: input, activations, output (RAM) */",
        f"#define TINYSEG_WEIGHT_BYTES {table.weight_bytes()}u  /* const weights (flash) */",
        f"#define TINYSEG_STORAGE_BYTES {storage_bytes}u  /* storage pool for spilled tensors */",
        f"#define TINYSEG_INPUT_BYTES {inp_t.nbytes}u   /* {inp_t.dtype} {list(inp_t.shape)} */",
        f"#define TINYSEG_OUTPUT_BYTES {out_t.nbytes}u  /* {out_t.dtype} {list(out_t.shape)} */",
        f"typedef {_io_ctype(table, inp)} tinyseg_input_t;",
        f"typedef {_io_ctype(table, table.output)} tinyseg_output_t;",
        "",
        "/* The input and output live in the arena, as in TFLite Micro. Write the input into",
        " * tinyseg_input_buffer() and read the result from tinyseg_output_buffer() to need no RAM",
        " * beyond the arena; other pointers work too, at the cost of one copy each. */",
        "tinyseg_input_t *tinyseg_input_buffer(void);",
        "tinyseg_output_t *tinyseg_output_buffer(void);",
        "",
        "/* Runs one inference. Returns 0 on success. */",
        "int tinyseg_run(const tinyseg_input_t *input, tinyseg_output_t *output);",
        "",
        "#endif /* TINYSEG_MODEL_H */",
        "",
    ])


def _reads_storage(table, step) -> bool:
    return step.kind == "kernel" and any(isinstance(a, str) and table.tensors[a].in_storage for a in step.args)


def emit_model_source(table: LifetimeTable, offsets: dict, arena_bytes: int, kernels, storage_offsets=None,
                      mapped_storage: bool = True) -> str:
    """The whole runner translation unit: kernels, weights, arena and ``tinyseg_run``.

    ``storage_offsets`` places the spilled copies (``Tensor.in_storage``) in the storage pool. A
    kernel reading one gets, with ``mapped_storage``, a pointer into the mapped pool; otherwise the
    pool offset disguised as a pointer, which only ``tinyseg_stream_read`` interprets (the kernel
    reads row windows through it, see passes/stream_stored_rows.py)."""
    (inp,) = table.inputs
    storage_offsets = storage_offsets or {}
    reads_storage = any(_reads_storage(table, s) for s in table.steps)
    weight_params, weights_in_flash = program_memory.weight_params(table)

    def pointer(arg) -> str:
        if isinstance(arg, int):
            return f"tinyseg_w{arg}" if arg in weights_in_flash else f"(void *)tinyseg_w{arg}"
        if table.tensors[arg].in_storage:
            if mapped_storage:
                return f"(void *)(tinyseg_storage + {storage_offsets[arg]})"
            return f"(void *)(uintptr_t){storage_offsets[arg]}u"
        return f"(void *)({ARENA} + {offsets[arg]})"

    inp_off, out_off = offsets[inp], offsets[table.output]
    calls = [f"  if ((const void *)input != (const void *)({ARENA} + {inp_off})) {{",
             f"    memcpy({ARENA} + {inp_off}, input, TINYSEG_INPUT_BYTES);",
             "  }"]
    if reads_storage and not mapped_storage:
        calls.append("  tinyseg_stream_status = TINYSEG_OK;")
    if reads_storage and mapped_storage:
        calls += ["  uint8_t *tinyseg_storage = tinyseg_storage_map();",
                  "  if (tinyseg_storage == NULL) return TINYSEG_ERR_STORAGE_MAP;"]
    guarded = [t for t in table.ram_tensors() if t.name in offsets]
    guard_index = {t.name: i for i, t in enumerate(guarded)}
    calls.append("#ifdef TINYSEG_DEBUG_CANARIES\n  tinyseg_debug_arm();\n#endif")
    for step in table.steps:
        written = guard_index.get(step.output, -1)
        calls.append(f"  TINYSEG_DEBUG_BEFORE({step.index}, {written});")
        calls.append(_step_call(table, step, pointer, offsets, storage_offsets, kernels))
        if reads_storage and not mapped_storage and _reads_storage(table, step):
            calls.append("  TINYSEG_TRY(tinyseg_stream_status);")
        calls.append(f"  TINYSEG_DEBUG_AFTER({step.index}, {written});")
    calls += [f"  if ((void *)output != (void *)({ARENA} + {out_off})) {{",
              f"    memcpy(output, {ARENA} + {out_off}, TINYSEG_OUTPUT_BYTES);",
              "  }"]

    parts = [
        "/* Generated by tvm_tinyseg: kernels, weights, static arena and the AoT-style runner. */",
        "#include <math.h>",
        "#include <stdint.h>",
        "#include <string.h>",
        '#include "tinyseg_arith.h"',
        '#include "tinyseg_model.h"',
        '#include "tinyseg_storage.h"',
        "",
        "#define TINYSEG_TRY(call) do { int status_ = (call); if (status_ != TINYSEG_OK) return status_; } while (0)",
        "",
        *program_memory.DEFINITION,
        *(STREAM_READER if reads_storage and not mapped_storage else []),
        program_memory.qualify_weight_params(kernels.source, weight_params),
        "",
    ]
    parts += [_const_array(f"tinyseg_w{i}", c, f"{program_memory.MACRO} " if i in weights_in_flash else "")
              for i, c in enumerate(table.constants)]
    parts += [
        "",
        *_arena_definition(arena_bytes, guarded, offsets),
        "",
        "tinyseg_input_t *tinyseg_input_buffer(void) {",
        f"  return (tinyseg_input_t *)(void *)({ARENA} + {inp_off});",
        "}",
        "",
        "tinyseg_output_t *tinyseg_output_buffer(void) {",
        f"  return (tinyseg_output_t *)(void *)({ARENA} + {out_off});",
        "}",
        "",
        "int tinyseg_run(const tinyseg_input_t *input, tinyseg_output_t *output) {",
        *calls,
        "  return TINYSEG_OK;",
        "}",
        "",
    ]
    return "\n".join(parts)


def _arena_definition(arena_bytes: int, guarded: list, offsets: dict) -> list:
    """The static arena; in debug builds inside guard bytes, with the live-buffer table."""
    size = max(arena_bytes, 16)
    rows = [f"  {{{offsets[t.name]}u, {t.nbytes}u, {t.first}, {t.last}}},  /* {t.name} */" for t in guarded]
    return [
        "#ifdef TINYSEG_DEBUG_CANARIES",
        f"#define TINYSEG_CANARY_BYTES {CANARY_BYTES}u",
        f"static uint8_t {ARENA}_guarded[TINYSEG_CANARY_BYTES + {size}u + TINYSEG_CANARY_BYTES] "
        "__attribute__((aligned(16)));",
        f"#define {ARENA} ({ARENA}_guarded + TINYSEG_CANARY_BYTES)",
        "typedef struct { uint32_t offset, nbytes; int first, last; } tinyseg_debug_buffer_t;",
        "static const tinyseg_debug_buffer_t tinyseg_debug_buffers[] = {",
        *rows,
        "};",
        "#else",
        f"static uint8_t {ARENA}[{size}] __attribute__((aligned(16)));",
        "#endif",
        "",
        *DEBUG_CHECKS,
    ]


def _step_call(table, step, pointer, offsets, storage_offsets, kernels) -> str:
    if step.kind in ("spill", "fetch"):
        (source,) = step.args
        nbytes = table.tensors[step.output].nbytes
        if step.kind == "spill":
            return (f"  TINYSEG_TRY(tinyseg_storage_write({storage_offsets[step.output]}u, "
                    f"{ARENA} + {offsets[source]}, {nbytes}u));  /* spill {source} */")
        return (f"  TINYSEG_TRY(tinyseg_storage_read({storage_offsets[source]}u, "
                f"{ARENA} + {offsets[step.output]}, {nbytes}u));  /* fetch {source} */")
    args = [pointer(a) for a in step.args] + [pointer(step.output)]
    if kernels.workspace_bytes.get(step.kernel, 0):
        args.append(f"({ARENA} + {offsets[workspace_buffer(step.index)]})")
    return f"  {step.kernel}({', '.join(args)});"
