"""FuseDataMovementIntoConsumer: a concat (or any index-only kernel) is computed inside its
consumer, so its result never exists in RAM.

    c = R.call_tir(concatenate, (skip, up))          fused = R.call_tir(fused_concatenate_qconv2d,
    y = R.call_tir(qconv2d, (c, w, b, m, s))   →                        (skip, up, w, b, m, s))

The producer must be a pure data-movement kernel (TVM op pattern "injective": concat, resize,
pad, ...; not elementwise arithmetic, which the consumer would recompute at every tap) whose only
user is the consumer. The pair is grouped into a Primitive function and merged by FuseTIR; the
MCUSchedule pass then inlines the producer's loop nest, so the consumer reads its inputs "as if
concatenated". Chains (resize → concat → conv) fuse in successive rounds, or at once when FuseOps
already grouped the resize with its concat. A bilinear resize is injective too: the consumer
recomputes its four-tap interpolation at each of its own taps, the price of never storing the
upsampled (and concatenated) tensor.
"""
import tvm
from tvm import relax

from .grouping import call_tir_parts, group_into_consumer

INJECTIVE = 2  # tvm::relax::OpPatternKind::kInjective
MAX_ROUNDS = 4


def _is_data_movement(mod, kernel) -> bool:
    func = mod[kernel]
    pattern = func.attrs.get("op_pattern", None) if func.attrs is not None else None
    return pattern is not None and int(pattern) == INJECTIVE


@relax.expr_functor.mutator
class _Fuser(relax.PyExprMutator):
    def __init__(self, mod, func):
        super().__init__(mod)
        users = {}
        for block in func.body.blocks:
            for binding in block.bindings:
                _, args = call_tir_parts(binding.value)
                for arg in args or getattr(binding.value, "args", []):
                    if isinstance(arg, relax.Var):
                        users.setdefault(arg, []).append(binding.value)
        self.candidates = set()
        for block in func.body.blocks:
            for binding in block.bindings:
                kernel, _ = call_tir_parts(binding.value)
                consumers = users.get(binding.var, [])
                if kernel is not None and isinstance(binding.var, relax.DataflowVar) and len(consumers) == 1 \
                        and call_tir_parts(consumers[0])[0] is not None and _is_data_movement(mod, kernel):
                    self.candidates.add(binding.var)
        self.deferred = {}
        self.fused = 0

    def visit_var_binding_(self, binding):
        var, value = binding.var, binding.value
        if var in self.candidates:
            self.deferred[var] = value  # emitted inside its consumer
            return
        kernel, args = call_tir_parts(value)
        produced = [a for a in args or [] if isinstance(a, relax.Var) and a in self.deferred]
        if not produced:
            super().visit_var_binding_(binding)
            return
        producer = self.visit_expr(self.deferred.pop(produced[0]))
        consumer = self.visit_expr(value)
        producer_kernel, _ = call_tir_parts(producer)
        name = f"{producer_kernel.name_hint}_into_{kernel.name_hint}"
        call = group_into_consumer(self.builder_, name, consumer, [(producer, produced[0])])
        new_var = self.builder_.emit(call, name_hint=var.name) if isinstance(var, relax.DataflowVar) \
            else self.builder_.emit_output(call, name_hint=var.name)
        self.set_var_remap(var, new_var)
        self.fused += 1


@tvm.transform.module_pass(opt_level=0, name="FuseDataMovementIntoConsumer")
class FuseDataMovementIntoConsumer:
    """Compute concat/resize/pad kernels inside their single consumer (see module docstring)."""

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        # FuseTIR leaves its kernels without a pattern: a resize that FuseOps grouped with the
        # concat reading it (fused_qresize_nearest_concatenate) would never be a candidate.
        mod = relax.transform.AnnotateTIROpPattern()(mod)
        for _ in range(MAX_ROUNDS):
            fuser = _Fuser(mod, mod["main"])
            if not fuser.candidates:
                break
            fuser.builder_.update_func(mod.get_global_var("main"), fuser.visit_expr(mod["main"]))
            mod = relax.transform.FuseTIR()(fuser.builder_.finalize())
            mod = relax.transform.DeadCodeElimination()(mod)
            mod = relax.transform.AnnotateTIROpPattern()(mod)  # fused kernels need a pattern for the next round
        return mod
