"""TileToNearestResize: rewrite a chain of reshapes and tiles that repeats every pixel of an NHWC
tensor (Keras 3's ``UpSampling2D(interpolation="nearest")`` export) into one nearest resize.

    a = reshape(x, [1, H, 1, W, C]); b = tile(a, [1, 1, f, 1, 1]); c = reshape(b, [1, H·f, W, 1, C])
    d = tile(c, [1, 1, 1, g, 1]); y = reshape(d, [1, H·f, W·g, C])
      →  y = resize2d(x, (H·f, W·g), "NHWC", nearest_neighbor, asymmetric)

Any chain of single-use ``reshape``/``expand_dims``/``squeeze``/``tile`` from a 4-D tensor to a 4-D
tensor is checked by running it on the tensor's element indices at compile time: when the result
is exactly the nearest upsampling by integer factors (``out[n, y, x, c] = in[n, y // f, x // g, c]``),
the chain becomes one resize2d. A resize is what the int8 lowering (TFLite's exact nearest
mapping) and TinySeg's fusion of data movement into its consumer understand; a tile is not.
"""
import numpy as np
import tvm
from tvm import relax
from tvm.ir import Op

_MOVES = {Op.get("relax." + name) for name in ("reshape", "expand_dims", "squeeze", "tile")}
_TILE = Op.get("relax.tile")


def _shape(expr):
    return [int(s) for s in expr.ty.shape.values]


def _is_move(value) -> bool:
    return isinstance(value, relax.Call) and value.op in _MOVES


def _simulate(root_shape, chain) -> np.ndarray:
    """The chain applied to the root's element indices."""
    ids = np.arange(int(np.prod(root_shape))).reshape(root_shape)
    for var, call in chain:
        ids = np.tile(ids, [int(r) for r in call.attrs.repeats]) if call.op == _TILE else ids.reshape(_shape(var))
    return ids


def _upsampling_factors(root_shape, ids):
    """(f, g) when ``ids`` is the nearest upsampling of the root by integer factors, else None."""
    n, h, w, c = root_shape
    if ids.ndim != 4 or ids.shape[0] != n or ids.shape[3] != c or ids.shape[1] % h or ids.shape[2] % w:
        return None
    f, g = ids.shape[1] // h, ids.shape[2] // w
    expected = np.arange(n * h * w * c).reshape(root_shape).repeat(f, axis=1).repeat(g, axis=2)
    return (f, g) if (f, g) != (1, 1) and np.array_equal(ids, expected) else None


@tvm.transform.module_pass(opt_level=0, name="TileToNearestResize")
class TileToNearestResize:
    """Replace pixel-repeating reshape/tile chains by resize2d (see module docstring)."""

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                replacements = self._replacements(func)
                if replacements:
                    mod[gv] = _Replace(replacements).visit_expr(func)
        return relax.transform.DeadCodeElimination()(mod)

    @staticmethod
    def _replacements(func) -> dict:
        producer, uses = {}, {}
        for block in func.body.blocks:
            for binding in block.bindings:
                producer[binding.var] = binding.value
                for arg in getattr(binding.value, "args", []):
                    if isinstance(arg, relax.Var):
                        uses[arg] = uses.get(arg, 0) + 1
        replacements = {}
        for var, value in producer.items():
            if not _is_move(value) or len(_shape(var)) != 4:
                continue
            chain, root = [(var, value)], value.args[0]
            while isinstance(root, relax.Var) and _is_move(producer.get(root)) and uses.get(root) == 1:
                chain.insert(0, (root, producer[root]))
                root = producer[root].args[0]
            if len(chain) < 2 or not any(call.op == _TILE for _, call in chain) \
                    or not isinstance(root.ty, relax.TensorType) or len(_shape(root)) != 4:
                continue
            factors = _upsampling_factors(_shape(root), _simulate(_shape(root), chain))
            if factors is not None:
                size = _shape(var)[1:3]
                replacements[var] = relax.op.image.resize2d(root, size, None, "NHWC", "nearest_neighbor",
                                                            "asymmetric", "")
        return replacements


@relax.expr_functor.mutator
class _Replace(relax.PyExprMutator):
    def __init__(self, replacements):
        super().__init__()
        self.replacements = replacements

    def visit_var_binding_(self, binding):
        if binding.var in self.replacements:
            value = self.visit_expr(self.replacements[binding.var])
            if isinstance(binding.var, relax.DataflowVar):
                new_var = self.builder_.emit(value, name_hint=binding.var.name)
            else:
                new_var = self.builder_.emit_output(value, name_hint=binding.var.name)
            self.set_var_remap(binding.var, new_var)
        else:
            super().visit_var_binding_(binding)
