"""Lifetime analysis over a Relax ``main`` in execution order.

The memory model shared by the planner, the C emitter and the reports: which kernel runs at each
step, which tensors it reads and writes, and for every tensor its producer, consumers and bytes.
Like TFLite Micro, the model's input and output are tensors of the arena too (live from the first
step, and until the last step) — unless ``main`` carries EXTERNAL_IO_ATTR: then they stay in the
caller's buffers (a camera frame in PSRAM), which the kernels read and write in place. Views
(``R.reshape`` after RewriteDataflowReshape, plain aliases) share the storage of the tensor they
view, so their uses extend that tensor's lifetime.

Expected form: a dataflow ``main`` after LegalizeOps/FuseTIR, i.e. bindings of
``R.call_tir(kernel, args, out_ty)``, ``R.reshape(x, shape)`` and aliases; a model with several
outputs returns a tuple of them.
"""
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from tvm_tinyseg.errors import UnsupportedModelError

FUNCTION_INPUT = -1  # producer index of a function parameter
STORAGE_OP_ATTR = "tinyseg.storage_op"  # PrimFunc attribute of the copies InsertSpillFetch adds
OUTPUT_IN_STORAGE_ATTR = "tinyseg.output_in_storage"  # a kernel writing its output to storage (spill_at_production.py)
EXTERNAL_IO_ATTR = "tinyseg.external_io"  # main's attribute: the model's inputs and outputs are not in the arena


def tensor_bytes(ty: relax.TensorType) -> int:
    shape = [int(s) for s in ty.shape.values]
    return int(np.prod(shape, dtype=np.int64)) * tvm.runtime.DataType(str(ty.dtype)).bits // 8


@dataclass
class Tensor:
    """An activation tensor: produced at step ``producer``, read at steps ``consumers``."""

    name: str
    shape: tuple
    dtype: str
    nbytes: int
    producer: int
    consumers: list = field(default_factory=list)
    is_input: bool = False
    is_output: bool = False
    end_of_run: int = 0  # the last step; the output must survive until then
    in_storage: bool = False  # a spilled copy: lives in the storage pool, not in RAM
    external: bool = False  # a model input or output in the caller's buffer (EXTERNAL_IO_ATTR), not in the arena

    @property
    def first(self) -> int:
        return max(self.producer, 0)

    @property
    def last(self) -> int:
        return max([self.producer] + self.consumers + ([self.end_of_run] if self.is_output else []))

    def live_at(self, step: int) -> bool:
        return self.first <= step <= self.last

    @property
    def cold_range(self):
        """(last use before the longest idle gap, first use after it), or None if never idle."""
        uses = sorted(set([self.first] + self.consumers))
        gaps = [(b - a, a, b) for a, b in zip(uses, uses[1:]) if b - a > 1]
        if not gaps:
            return None
        _, start, end = max(gaps)
        return start, end

    @property
    def idle_steps(self) -> int:
        """Steps strictly inside the cold range (0 if never idle)."""
        return self.cold_range[1] - self.cold_range[0] - 1 if self.cold_range else 0


@dataclass
class Step:
    """One kernel call: ``output = kernel(*args)``; args name tensors or constants. ``kind`` is
    "kernel", or "spill"/"fetch" for the storage copies InsertSpillFetch adds."""

    index: int
    kernel: str
    args: list  # tensor names (str) or constant indices (int) in argument order
    output: str
    kind: str = "kernel"


@dataclass
class LifetimeTable:
    steps: list
    tensors: dict  # name -> Tensor, in order of production
    constants: list  # numpy arrays, indexed by Step.args' ints
    inputs: list  # names of the function's input tensors
    output: str  # name of the (first) tensor the function returns
    outputs: list = None  # names of all returned tensors, in model order (default: [output])

    def __post_init__(self):
        if self.outputs is None:
            self.outputs = [self.output]

    def ram_tensors(self):
        """The tensors of the arena: neither stored copies nor the caller's input/output buffers."""
        return [t for t in self.tensors.values() if not (t.in_storage or t.external)]

    @property
    def io_outside_arena(self) -> bool:
        """The model's inputs and outputs are the caller's buffers (EXTERNAL_IO_ATTR)."""
        return any(self.tensors[name].external for name in self.inputs + self.outputs)

    def storage_tensors(self):
        return [t for t in self.tensors.values() if t.in_storage]

    def live_bytes(self, step: int) -> int:
        return sum(t.nbytes for t in self.ram_tensors() if t.live_at(step))

    def peak_live_bytes(self) -> int:
        """Sum of simultaneously live activations at the worst step: no plan can do better."""
        return max((self.live_bytes(s.index) for s in self.steps), default=0)

    def largest_tensor_bytes(self) -> int:
        return max((t.nbytes for t in self.ram_tensors()), default=0)

    def weight_bytes(self) -> int:
        return int(sum(c.nbytes for c in self.constants))

    def peak_step(self):
        """Index of the (first) step with the most live RAM bytes; None for an empty table."""
        return max((s.index for s in self.steps), key=self.live_bytes, default=None)

    def long_living(self, min_idle_steps: int = 2) -> list:
        """Tensors other than the input and output idle for at least ``min_idle_steps`` consecutive
        steps (spilled copies included), the longest idle first."""
        found = [t for t in self.tensors.values()
                 if not (t.is_input or t.is_output) and t.cold_range and t.idle_steps >= min_idle_steps]
        return sorted(found, key=lambda t: -t.idle_steps)

    def memory_at(self, plan) -> list:
        """Per step, the arena high-water mark of ``plan``'s buffers live at that step (max offset + bytes)."""
        return [max((plan.offsets[b.name] + b.nbytes for b in plan.buffers if b.first <= s.index <= b.last),
                    default=0) for s in self.steps]

    def to_text(self) -> str:
        """One row per tensor: shape, bytes, producer, consumers, live steps, cold range and role."""
        name_width = max([16] + [len(name) for name in self.tensors])
        rows = [f"{'tensor':<{name_width}} {'shape':<22} {'bytes':>9} {'producer':>8} {'consumers':<12} "
                f"{'first':>5} {'last':>5} {'cold range':<10}"]
        for t in self.tensors.values():
            role = (" (input)" if t.is_input else " (output)" if t.is_output else "") + \
                (" (in storage)" if t.in_storage else "")
            cold = f"{t.cold_range[0]}-{t.cold_range[1]}" if t.cold_range else "-"
            rows.append(f"{t.name:<{name_width}} {str(tuple(t.shape)):<22} {t.nbytes:>9} {t.producer:>8} "
                        f"{','.join(map(str, t.consumers)):<12} {t.first:>5} {t.last:>5} {cold:<10}{role}".rstrip())
        return "\n".join(rows)


def _const_array(const) -> np.ndarray:
    return const.value.numpy()


def _storage_op(mod, kernel):
    if mod is None:
        return None
    attrs = mod[kernel].attrs
    return str(attrs[STORAGE_OP_ATTR]) if attrs is not None and STORAGE_OP_ATTR in attrs else None


def _writes_storage(mod, kernel) -> bool:
    attrs = mod[kernel].attrs if mod is not None else None
    return attrs is not None and OUTPUT_IN_STORAGE_ATTR in attrs


def analyze_lifetimes(func: relax.Function, mod: tvm.IRModule = None) -> LifetimeTable:
    """Linearise ``func`` (see module docstring) into steps and tensor lifetimes. With ``mod``,
    the spill/fetch copies of InsertSpillFetch are recognised (their outputs' storage kind)."""
    tensors, steps, constants, const_index = {}, [], [], {}
    storage_of = {}  # relax Var -> name of the tensor whose storage it is (views resolve here)
    used_names = set()

    def new_name(var) -> str:
        base, name, k = var.name, var.name, 1
        while name in used_names:
            name, k = f"{base}_{k}", k + 1
        used_names.add(name)
        return name

    external = bool(func.attrs is not None and EXTERNAL_IO_ATTR in func.attrs and func.attrs[EXTERNAL_IO_ATTR])
    inputs = []
    for param in func.params:
        name = new_name(param)
        tensors[name] = Tensor(name, tuple(int(s) for s in param.ty.shape.values), str(param.ty.dtype),
                               tensor_bytes(param.ty), FUNCTION_INPUT, is_input=True, external=external)
        storage_of[param] = name
        inputs.append(name)

    constant_of = {}  # relax Var bound to a constant -> the constant
    tuple_of = {}  # relax Var bound to a tuple of tensors (the returned outputs) -> its fields

    def operand(arg, step):
        arg = constant_of.get(arg, arg) if isinstance(arg, relax.Var) else arg
        if isinstance(arg, tvm.ir.GenericConst):
            key = arg.__hash__()
            if key not in const_index:
                const_index[key] = len(constants)
                constants.append(_const_array(arg))
            return const_index[key]
        if isinstance(arg, relax.Var) and arg in storage_of:
            name = storage_of[arg]
            tensors[name].consumers.append(step)
            return name
        # the kernel passes produce only these: anything else is a bug of ours (an internal error)
        raise RuntimeError(f"kernel argument {arg} is neither a tensor nor a constant")

    blocks = func.body.blocks
    for block in blocks:
        for binding in block.bindings:
            var, value = binding.var, binding.value
            if isinstance(value, tvm.ir.GenericConst):
                constant_of[var] = value
            elif isinstance(value, relax.Var) and value in tuple_of:
                tuple_of[var] = tuple_of[value]
            elif isinstance(value, relax.Var):
                storage_of[var] = storage_of[value]
            elif isinstance(value, relax.Tuple):
                tuple_of[var] = list(value.fields)
            elif isinstance(value, relax.Call) and value.op == tvm.ir.Op.get("relax.reshape"):
                storage_of[var] = storage_of[value.args[0]]
            elif isinstance(value, relax.Call) and value.op == tvm.ir.Op.get("relax.call_tir"):
                index = len(steps)
                args = [operand(a, index) for a in value.args[1].fields]
                name = new_name(var)
                kind = _storage_op(mod, value.args[0]) or "kernel"
                stored = kind == "spill" or _writes_storage(mod, value.args[0])
                tensors[name] = Tensor(name, tuple(int(s) for s in var.ty.shape.values), str(var.ty.dtype),
                                       tensor_bytes(var.ty), index, in_storage=stored)
                storage_of[var] = name
                steps.append(Step(index, value.args[0].name_hint, args, name, kind))
            else:
                op = getattr(value, "op", value)
                raise RuntimeError(f"cannot plan memory for binding '{var.name}' = {getattr(op, 'name', op)}")
    result = func.body.body
    fields = tuple_of.get(result, list(result.fields) if isinstance(result, relax.Tuple) else [result])
    if not all(isinstance(f, relax.Var) and f in storage_of for f in fields):
        raise UnsupportedModelError("the model must return tensors computed from its inputs")
    outputs = [storage_of[f] for f in fields]
    for name in outputs:
        if tensors[name].is_input or outputs.count(name) > 1:
            raise UnsupportedModelError(f"output '{name}' is a model input or another output; "
                                        "every output must be a tensor of its own")
        tensors[name].is_output = True
        tensors[name].external = external
        tensors[name].end_of_run = max(len(steps) - 1, 0)
    return LifetimeTable(steps, tensors, constants, inputs, outputs[0], outputs)
