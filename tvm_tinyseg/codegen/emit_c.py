"""Emit the AoT-style C runner: weights as const arrays, one static arena, ``tinyseg_run``.

The runner calls the plain-C kernels (see tir_to_c.py) in execution order with pointers into the
arena whose offsets the static planner chose. No TVM runtime, no malloc.
"""
import numpy as np

from tvm_tinyseg.codegen import c_api, program_memory
from tvm_tinyseg.passes.lifetime import LifetimeTable

C_TYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t",
           "int64": "int64_t", "float32": "float"}
ARENA = "arena"  # the runner's local pointer to the arena in use (static or the caller's)
ARENA_ALIGN = 16

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
    "#ifdef TINYSEG_NO_STATIC_ARENA",
    '#error "TINYSEG_DEBUG_CANARIES guards the static arena: build without TINYSEG_NO_STATIC_ARENA"',
    "#endif",
    "#define TINYSEG_CANARY 0xA5u",
    "",
    "/* Only the static arena has guard bytes; a caller's arena gets the buffer checks alone. */",
    "static void tinyseg_debug_arm(const uint8_t *arena) {",
    "  if (arena != tinyseg_arena) return;",
    "  memset(tinyseg_arena_guarded, TINYSEG_CANARY, TINYSEG_CANARY_BYTES);",
    "  memset(tinyseg_arena + TINYSEG_ARENA_BYTES, TINYSEG_CANARY, TINYSEG_CANARY_BYTES);",
    "}",
    "",
    "static int tinyseg_debug_canaries_intact(const uint8_t *arena) {",
    "  if (arena != tinyseg_arena) return 1;",
    "  for (uint32_t i = 0; i < TINYSEG_CANARY_BYTES; ++i) {",
    "    if (tinyseg_arena_guarded[i] != TINYSEG_CANARY) return 0;",
    "    if (tinyseg_arena[TINYSEG_ARENA_BYTES + i] != TINYSEG_CANARY) return 0;",
    "  }",
    "  return 1;",
    "}",
    "",
    "/* FNV-1a over the bytes of the buffers live at `step`, except those of buffer `written` (the",
    " * step's output, which may share bytes with an input whose rows it overwrites). */",
    "static uint32_t tinyseg_debug_live_sum(const uint8_t *arena, int step, int written) {",
    "  const int n = (int)(sizeof(tinyseg_debug_buffers) / sizeof(tinyseg_debug_buffers[0]));",
    "  const uint32_t out_begin = written >= 0 ? tinyseg_debug_buffers[written].offset : 0u;",
    "  const uint32_t out_end = written >= 0 ? out_begin + tinyseg_debug_buffers[written].nbytes : 0u;",
    "  uint32_t hash = 2166136261u;",
    "  for (int b = 0; b < n; ++b) {",
    "    const tinyseg_debug_buffer_t *buf = &tinyseg_debug_buffers[b];",
    "    if (b == written || step < buf->first || step > buf->last) continue;",
    "    for (uint32_t at = buf->offset; at < buf->offset + buf->nbytes; ++at) {",
    "      if (at < out_begin || at >= out_end) hash = (hash ^ arena[at]) * 16777619u;",
    "    }",
    "  }",
    "  return hash;",
    "}",
    "",
    "#define TINYSEG_DEBUG_BEFORE(step, written) \\",
    "  const uint32_t tinyseg_live_sum_##step = tinyseg_debug_live_sum(arena, step, written)",
    "#define TINYSEG_DEBUG_AFTER(step, written) do { \\",
    "    if (!tinyseg_debug_canaries_intact(arena)) return TINYSEG_ERR_ARENA_CANARY; \\",
    "    if (tinyseg_debug_live_sum(arena, step, written) != tinyseg_live_sum_##step) return TINYSEG_ERR_BUFFER_CLOBBERED; \\",
    "  } while (0)",
    "#else",
    "#define TINYSEG_DEBUG_BEFORE(step, written)",
    "#define TINYSEG_DEBUG_AFTER(step, written)",
    "#endif",
]


# Profile builds (-DTINYSEG_PROFILE): a call to an empty, out-of-line function before every step and
# after the last, whose entry the QEMU plugin watches (tvm_tinyseg/profile.py). The asm statement
# keeps the compiler from dropping the calls.
PROFILE_HOOK = [
    "#ifdef TINYSEG_PROFILE",
    "static void __attribute__((noinline)) tinyseg_profile_mark(void) { __asm__ volatile(\"\" ::: \"memory\"); }",
    "#define TINYSEG_PROFILE_MARK() tinyseg_profile_mark()",
    "#else",
    "#define TINYSEG_PROFILE_MARK()",
    "#endif",
]


def workspace_buffer(step: int) -> str:
    return f"ws{step}"


def _c_literal(value, dtype) -> str:
    if dtype == np.float32:
        return repr(float(value)) + "f"
    return str(int(value))


def _const_array(name: str, array: np.ndarray, qualifier: str = "") -> str:
    flat = array.reshape(-1)
    ctype = C_TYPES[str(array.dtype)]
    if array.dtype.kind == "f" and not np.all(np.isfinite(flat)):  # the frontends refuse such models
        raise ValueError(f"constant {name} holds a non-finite value; C has no literal for it")
    if ctype == "int32_t":  # INT32_MIN cannot be written as a plain literal
        items = [f"(int32_t){int(v)}" if v == np.iinfo(np.int32).min else str(int(v)) for v in flat]
    else:
        items = [_c_literal(v, array.dtype) for v in flat]
    lines = [", ".join(items[i:i + VALUES_PER_LINE]) for i in range(0, len(items), VALUES_PER_LINE)]
    body = ",\n  ".join(lines)
    return (f"static const {qualifier}{ctype} {name}[{max(flat.size, 1)}] __attribute__((aligned(16))) = {{\n  "
            f"{body}\n}};")


def io_tensors(table: LifetimeTable, inputs=(), outputs=()) -> dict:
    """The runner's inputs and outputs in model order: name, shape, dtype, bytes and, from the
    frontend's ``TensorInfo``s when given, the model's tensor name, scale and zero point."""
    spec = {}
    for role, names, infos in (("inputs", table.inputs, list(inputs)), ("outputs", table.outputs, list(outputs))):
        spec[role] = []
        for i, name in enumerate(names):
            tensor = table.tensors[name]
            info = infos[i] if i < len(infos) else None
            spec[role].append({"name": info.name if info is not None else name, "shape": list(tensor.shape),
                               "dtype": tensor.dtype, "bytes": tensor.nbytes,
                               "scale": getattr(info, "scale", None), "zero_point": getattr(info, "zero_point", None)})
    return spec


def _status_defines() -> list:
    return [f"#define TINYSEG_{name} {value}  /* {meaning} */" for name, value, meaning in c_api.STATUS_CODES]


def _tensor_block(role: str, index: int, tensor: dict, offset) -> list:
    """Shape, dtype, bytes, arena offset (None: the caller's buffer) and quantization macros of one
    input or output."""
    macro, ctype = f"TINYSEG_{role.upper()}{index}", C_TYPES[tensor["dtype"]]
    dims = ", ".join(str(d) for d in tensor["shape"])
    lines = [f"/* {role} {index}: '{tensor['name']}', {tensor['dtype']} [{dims}] */",
             f"typedef {ctype} tinyseg_{role}{index}_t;",
             f"#define {macro}_RANK {len(tensor['shape'])}",
             f"#define {macro}_SHAPE {{{dims}}}",
             f"#define {macro}_BYTES {tensor['bytes']}u",
             f"#define {macro}_OFFSET {offset}u  /* its place in the arena */" if offset is not None else
             "/* not in the arena: read and written in place in the buffer passed to tinyseg_run */"]
    if tensor["scale"] is not None:
        lines += [f"#define {macro}_SCALE {float(np.float32(tensor['scale'])):.9g}f  /* real = SCALE * (q - ZERO_POINT) */",
                  f"#define {macro}_ZERO_POINT ({tensor['zero_point']})"]
    return lines


def run_parameters(io: dict) -> str:
    """``tinyseg_run``'s tensor parameters: every input, then every output, in model order."""
    inputs = [f"const tinyseg_input{i}_t *input{i}" for i in range(len(io["inputs"]))]
    outputs = [f"tinyseg_output{i}_t *output{i}" for i in range(len(io["outputs"]))]
    return ", ".join(inputs + outputs)


def emit_model_header(table: LifetimeTable, arena_bytes: int, storage_bytes: int, io: dict, offsets: dict,
                      version: str, storage_integrity: bool = False) -> str:
    """The model's C API: sizes, I/O shapes and quantization, status codes and the run calls.
    ``storage_integrity`` turns on the storage backend's CRC per block (tinyseg_backend.h)."""
    blocks = []
    for role, names in (("input", table.inputs), ("output", table.outputs)):
        for i, (name, tensor) in enumerate(zip(names, io[role + "s"])):
            offset = None if table.tensors[name].external else offsets[name]
            blocks += _tensor_block(role, i, tensor, offset) + [""]
    sizes = {role: ", ".join(f"{t['bytes']}u" for t in io[role]) for role in ("inputs", "outputs")}
    params = run_parameters(io)
    external = table.io_outside_arena
    arena_holds = "activations" if external else "inputs, activations, outputs"
    return "\n".join([
        f"/* Generated by tvm_tinyseg {version}: the C API of one compiled model. */",
        "#ifndef TINYSEG_MODEL_H",
        "#define TINYSEG_MODEL_H",
        "#include <stdint.h>",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        f'#define TINYSEG_GENERATOR_VERSION "tvm_tinyseg {version}"',
        "",
        "/* Status codes of tinyseg_run() and of the storage calls. */",
        *_status_defines(),
        "",
        f"#define TINYSEG_ARENA_BYTES {arena_bytes}u   /* arena: {arena_holds} (RAM) */",
        *(["#define TINYSEG_IO_IN_ARENA 0  /* inputs and outputs stay in the caller's buffers */"] if external else []),
        f"#define TINYSEG_ARENA_ALIGN {ARENA_ALIGN}u     /* alignment an arena passed to tinyseg_run_with_arena needs */",
        f"#define TINYSEG_WEIGHT_BYTES {table.weight_bytes()}u  /* const weights (flash) */",
        f"#define TINYSEG_STORAGE_BYTES {storage_bytes}u  /* storage pool for spilled tensors */",
        *(["#ifndef TINYSEG_STORAGE_INTEGRITY  /* a CRC per 16-byte block of storage, in RAM (--no-integrity: off) */",
           "#define TINYSEG_STORAGE_INTEGRITY 1",
           "#endif"] if storage_integrity else []),
        f"#define TINYSEG_NUM_INPUTS {len(table.inputs)}",
        f"#define TINYSEG_NUM_OUTPUTS {len(table.outputs)}",
        f"#define TINYSEG_INPUT_SIZES {{{sizes['inputs']}}}    /* bytes of each input, in model order */",
        f"#define TINYSEG_OUTPUT_SIZES {{{sizes['outputs']}}}  /* bytes of each output, in model order */",
        "",
        *blocks,
        "/* The first input and output, under the names of a single-input, single-output model. */",
        "typedef tinyseg_input0_t tinyseg_input_t;",
        "typedef tinyseg_output0_t tinyseg_output_t;",
        "#define TINYSEG_INPUT_BYTES TINYSEG_INPUT0_BYTES",
        "#define TINYSEG_OUTPUT_BYTES TINYSEG_OUTPUT0_BYTES",
        "#define tinyseg_input_buffer tinyseg_input0_buffer",
        "#define tinyseg_output_buffer tinyseg_output0_buffer",
        "",
        "/* Runs one inference on the caller's arena: at least TINYSEG_ARENA_BYTES, aligned to",
        *([" * TINYSEG_ARENA_ALIGN (else TINYSEG_ERR_ARENA_SIZE / TINYSEG_ERR_ARENA_ALIGNMENT). The inputs are read",
           " * and the outputs written in place, outside the arena (they must not overlap each other). */"]
          if external else
          [" * TINYSEG_ARENA_ALIGN (else TINYSEG_ERR_ARENA_SIZE / TINYSEG_ERR_ARENA_ALIGNMENT). Input i and output",
           " * i live at TINYSEG_INPUTi_OFFSET / TINYSEG_OUTPUTi_OFFSET in it: tensors placed there are not copied. */"]),
        f"int tinyseg_run_with_arena(void *arena, uint32_t arena_bytes, {params});",
        "",
        "/* Unless TINYSEG_NO_STATIC_ARENA is defined, the model also has a static arena (section",
        " * TINYSEG_ARENA_SECTION, default \".bss.tinyseg_arena\") and these calls use it. */",
        "#ifndef TINYSEG_NO_STATIC_ARENA",
        "/* Runs one inference; inputs, then outputs, in model order. Returns TINYSEG_OK (0) on success.",
        *([" * tinyseg_inputi_buffer() and tinyseg_outputi_buffer() are static buffers outside the arena (section",
           " * TINYSEG_IO_SECTION, default \".bss.tinyseg_io\", e.g. external PSRAM); other pointers work alike. */"]
          if external else
          [" * Write the inputs into tinyseg_inputi_buffer() and read the outputs from tinyseg_outputi_buffer()",
           " * to need no RAM beyond the arena; other pointers work too, at the cost of one copy each. */"]),
        f"int tinyseg_run({params});",
        "/* The same with the tensors as arrays of pointers (model order), for generic callers. */",
        "int tinyseg_invoke(const void *const inputs[], void *const outputs[]);",
        *[f"tinyseg_input{i}_t *tinyseg_input{i}_buffer(void);" for i in range(len(table.inputs))],
        *[f"tinyseg_output{i}_t *tinyseg_output{i}_buffer(void);" for i in range(len(table.outputs))],
        "#endif",
        "",
        "#ifdef __cplusplus",
        "}",
        "#endif",
        "#endif /* TINYSEG_MODEL_H */",
        "",
    ])


def _reads_storage(table, step) -> bool:
    return step.kind == "kernel" and any(isinstance(a, str) and table.tensors[a].in_storage for a in step.args)


def _uses_mapped_pool(table, step) -> bool:
    """A kernel reading a stored tensor in place, or writing its output there (spill_at_production.py)."""
    return _reads_storage(table, step) or (step.kind == "kernel" and table.tensors[step.output].in_storage)


def emit_model_source(table: LifetimeTable, offsets: dict, arena_bytes: int, kernels, io: dict,
                      storage_offsets=None, mapped_storage: bool = True) -> str:
    """The whole runner translation unit: kernels, weights, arena and the run calls.

    ``storage_offsets`` places the spilled copies (``Tensor.in_storage``) in the storage pool. A
    kernel reading one gets, with ``mapped_storage``, a pointer into the mapped pool; otherwise the
    pool offset disguised as a pointer, which only ``tinyseg_stream_read`` interprets (the kernel
    reads row windows through it, see passes/stream_stored_rows.py)."""
    storage_offsets = storage_offsets or {}
    reads_storage = any(_reads_storage(table, s) for s in table.steps)
    weight_params, weights_in_flash = program_memory.weight_params(table)

    caller_buffers = {**{name: f"(void *)inputs[{i}]" for i, name in enumerate(table.inputs)},
                      **{name: f"outputs[{i}]" for i, name in enumerate(table.outputs)}}

    def pointer(arg) -> str:
        if isinstance(arg, int):
            return f"tinyseg_w{arg}" if arg in weights_in_flash else f"(void *)tinyseg_w{arg}"
        if table.tensors[arg].external:
            return caller_buffers[arg]
        if table.tensors[arg].in_storage:
            if mapped_storage:
                return f"(void *)(tinyseg_storage + {storage_offsets[arg]})"
            return f"(void *)(uintptr_t){storage_offsets[arg]}u"
        return f"(void *)({ARENA} + {offsets[arg]})"

    calls = []
    for i, name in enumerate(table.inputs):
        if table.tensors[name].external:
            continue
        calls += [f"  if (inputs[{i}] != (const void *)({ARENA} + {offsets[name]})) {{",
                  f"    memcpy({ARENA} + {offsets[name]}, inputs[{i}], TINYSEG_INPUT{i}_BYTES);",
                  "  }"]
    if reads_storage and not mapped_storage:
        calls.append("  tinyseg_stream_status = TINYSEG_OK;")
    if mapped_storage and any(_uses_mapped_pool(table, s) for s in table.steps):
        calls += ["  uint8_t *tinyseg_storage = tinyseg_storage_map();",
                  "  if (tinyseg_storage == NULL) return TINYSEG_ERR_STORAGE_MAP;"]
    guarded = [t for t in table.ram_tensors() if t.name in offsets]
    guard_index = {t.name: i for i, t in enumerate(guarded)}
    calls.append(f"#ifdef TINYSEG_DEBUG_CANARIES\n  tinyseg_debug_arm({ARENA});\n#endif")
    for step in table.steps:
        written = guard_index.get(step.output, -1)
        calls.append(f"  TINYSEG_DEBUG_BEFORE({step.index}, {written});")
        calls.append("  TINYSEG_PROFILE_MARK();")
        calls.append(_step_call(table, step, pointer, offsets, storage_offsets, kernels))
        if reads_storage and not mapped_storage and _reads_storage(table, step):
            calls.append("  TINYSEG_TRY(tinyseg_stream_status);")
        if reads_storage and mapped_storage and _reads_storage(table, step):  # counted like the backend's reads
            read = sum(table.tensors[a].nbytes for a in step.args if isinstance(a, str) and table.tensors[a].in_storage)
            calls.append(f"  tinyseg_storage_bytes_read += {read}u;  /* read in place through the mapping */")
        if mapped_storage and step.kind == "kernel" and table.tensors[step.output].in_storage:
            calls.append(f"  tinyseg_storage_bytes_written += {table.tensors[step.output].nbytes}u;  "
                         "/* written in place by its producer */")
        calls.append(f"  TINYSEG_DEBUG_AFTER({step.index}, {written});")
    calls.append("  TINYSEG_PROFILE_MARK();")
    for i, name in enumerate(table.outputs):
        if table.tensors[name].external:
            continue
        calls += [f"  if (outputs[{i}] != (void *)({ARENA} + {offsets[name]})) {{",
                  f"    memcpy(outputs[{i}], {ARENA} + {offsets[name]}, TINYSEG_OUTPUT{i}_BYTES);",
                  "  }"]

    params = run_parameters(io)
    tensor_args = ([f"input{i}" for i in range(len(table.inputs))], [f"output{i}" for i in range(len(table.outputs))])
    pack = [f"  const void *const inputs[TINYSEG_NUM_INPUTS] = {{{', '.join(tensor_args[0])}}};",
            f"  void *const outputs[TINYSEG_NUM_OUTPUTS] = {{{', '.join(tensor_args[1])}}};"]
    buffers = []
    for role, names in (("input", table.inputs), ("output", table.outputs)):
        for i, name in enumerate(names):
            if table.tensors[name].external:
                buffers += [f"static tinyseg_{role}{i}_t tinyseg_{role}{i}_static[TINYSEG_{role.upper()}{i}_BYTES / "
                            f"sizeof(tinyseg_{role}{i}_t)] __attribute__((aligned({ARENA_ALIGN}), "
                            "section(TINYSEG_IO_SECTION)));",
                            f"tinyseg_{role}{i}_t *tinyseg_{role}{i}_buffer(void) {{",
                            f"  return tinyseg_{role}{i}_static;", "}", ""]
                continue
            buffers += [f"tinyseg_{role}{i}_t *tinyseg_{role}{i}_buffer(void) {{",
                        f"  return (tinyseg_{role}{i}_t *)(void *)(tinyseg_arena + TINYSEG_{role.upper()}{i}_OFFSET);",
                        "}", ""]
    if table.io_outside_arena:
        buffers = IO_SECTION + buffers
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
        f"static int tinyseg_run_in(uint8_t *{ARENA}, const void *const inputs[], void *const outputs[]) {{",
        *calls,
        "  return TINYSEG_OK;",
        "}",
        "",
        f"int tinyseg_run_with_arena(void *arena, uint32_t arena_bytes, {params}) {{",
        "  if (arena == NULL || arena_bytes < TINYSEG_ARENA_BYTES) return TINYSEG_ERR_ARENA_SIZE;",
        "  if ((uintptr_t)arena % TINYSEG_ARENA_ALIGN != 0u) return TINYSEG_ERR_ARENA_ALIGNMENT;",
        *pack,
        "  return tinyseg_run_in((uint8_t *)arena, inputs, outputs);",
        "}",
        "",
        "#ifndef TINYSEG_NO_STATIC_ARENA",
        *buffers,
        f"int tinyseg_run({params}) {{",
        *pack,
        "  return tinyseg_run_in(tinyseg_arena, inputs, outputs);",
        "}",
        "",
        "int tinyseg_invoke(const void *const inputs[], void *const outputs[]) {",
        "  return tinyseg_run_in(tinyseg_arena, inputs, outputs);",
        "}",
        "#endif",
        "",
    ]
    return "\n".join(parts)


# Where the static input/output buffers of a model compiled with tinyseg.io_in_arena false go.
IO_SECTION = ["#ifndef TINYSEG_IO_SECTION", '#define TINYSEG_IO_SECTION ".bss.tinyseg_io"', "#endif"]


def _arena_definition(arena_bytes: int, guarded: list, offsets: dict) -> list:
    """The static arena (unless TINYSEG_NO_STATIC_ARENA); in debug builds inside guard bytes,
    with the live-buffer table."""
    size = max(arena_bytes, 16)
    rows = [f"  {{{offsets[t.name]}u, {t.nbytes}u, {t.first}, {t.last}}},  /* {t.name} */" for t in guarded]
    attributes = f"__attribute__((aligned({ARENA_ALIGN}), section(TINYSEG_ARENA_SECTION)))"
    return [
        "#ifndef TINYSEG_NO_STATIC_ARENA",
        "#ifndef TINYSEG_ARENA_SECTION",
        '#define TINYSEG_ARENA_SECTION ".bss.tinyseg_arena"',
        "#endif",
        "#ifdef TINYSEG_DEBUG_CANARIES",
        f"#define TINYSEG_CANARY_BYTES {CANARY_BYTES}u",
        f"static uint8_t tinyseg_arena_guarded[TINYSEG_CANARY_BYTES + {size}u + TINYSEG_CANARY_BYTES] {attributes};",
        "#define tinyseg_arena (tinyseg_arena_guarded + TINYSEG_CANARY_BYTES)",
        "#else",
        f"static uint8_t tinyseg_arena[{size}] {attributes};",
        "#endif",
        "#endif",
        "",
        "#ifdef TINYSEG_DEBUG_CANARIES",
        "typedef struct { uint32_t offset, nbytes; int first, last; } tinyseg_debug_buffer_t;",
        "static const tinyseg_debug_buffer_t tinyseg_debug_buffers[] = {",
        *rows,
        "};",
        "#endif",
        "",
        *DEBUG_CHECKS,
        "",
        *PROFILE_HOOK,
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
