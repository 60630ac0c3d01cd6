"""Model frontends: a .tflite or .onnx file → validated Relax IRModule (``ImportedModel``)."""
import os

import numpy as np
import tvm
from tvm import relax

from tvm_tinyseg.errors import ModelFileError, UnsupportedModelError

from .builder_cleanup import close_builders
from .model import ImportedModel, TensorInfo
from .onnx_model import load_onnx
from .tflite_model import load_tflite

_LOADERS = {".tflite": load_tflite, ".onnx": load_onnx}


def load_model(path, input_shapes: dict = None) -> ImportedModel:
    """Load a model file, choosing the frontend by extension; errors are one-line TinySegErrors.
    ``input_shapes`` ({input name: shape}) fixes inputs' dynamic dimensions (input_shapes.py)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFileError(f"{path}: model file not found")
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: not a regular file")
    loader = _LOADERS.get(os.path.splitext(path)[1].lower())
    if loader is None:
        raise ModelFileError(f"{path}: unknown model format (expected .tflite or .onnx)")
    try:
        model = loader(path, input_shapes)
    except Exception as err:
        close_builders(err)
        raise
    _check_static_nonempty_shapes(path, model.mod)
    _check_finite_constants(path, model.mod)
    _check_no_runtime_calls(path, model)
    return model


def _check_no_runtime_calls(path, model) -> None:
    """TVM imports a few ops (MATRIX_SET_DIAG, ...) as calls of its runtime library
    (``R.call_dps_packed``), which the plain C here has no place for: refuse them by name."""
    for block in model.mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and value.op == tvm.ir.Op.get("relax.call_dps_packed"):
                callee = getattr(value.args[0], "global_symbol", value.args[0])
                raise UnsupportedModelError(
                    f"{path}: TVM imports one of its ops ({', '.join(sorted(set(model.ops)))}) as a call of its "
                    f"runtime library function '{callee}', which plain C has not: unsupported")


def _dim(d):
    return int(d) if isinstance(d, tvm.tirx.IntImm) else str(d)


def _check_static_nonempty_shapes(path, mod) -> None:
    """Shapes the frontend inferred, not only those the file declares, must be static and
    non-empty (e.g. a pooling window larger than its input infers an empty output)."""
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            ty = binding.var.ty
            if not isinstance(ty, relax.TensorType) or ty.shape is None:
                continue
            dims = list(getattr(ty.shape, "values", []))
            if not all(isinstance(d, tvm.tirx.IntImm) and int(d) > 0 for d in dims):
                op = getattr(getattr(binding.value, "op", None), "name", type(binding.value).__name__)
                raise UnsupportedModelError(
                    f"{path}: {op} produces a tensor of shape {[_dim(d) for d in dims]} "
                    "(empty or dynamic); check the model's windows, strides and input size")


# Ops whose infinite operands are bounds, not values: TVM's ONNX importer writes an absent Clip
# bound as where(..., -inf/inf), and min/max against infinity is the identity.
_BOUND_OPS = frozenset({"relax.where", "relax.minimum", "relax.maximum", "relax.clip"})


# Float constants beyond this magnitude are refused: float32 products with them overflow for
# ordinary activations (|x| > 2.7e8), and which ones do depends on the order of operations (a
# batch normalization folded into its convolution here, applied after it by onnxruntime), so the
# infinities and NaNs would land elsewhere than the reference's. Trained weights stay far below.
FLOAT_CONSTANT_LIMIT = 2.0**100


def _check_finite_constants(path, mod) -> None:
    """Float constants as imported, after the frontends' folding (e.g. a square root of a
    negative constant), must be finite: the reference would compute NaN or infinity from them;
    and within FLOAT_CONSTANT_LIMIT. An infinite or huge bound of a clamp is fine."""
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            op = getattr(getattr(binding.value, "op", None), "name", None)
            constants = []
            relax.analysis.post_order_visit(
                binding.value, lambda e: constants.append(e) if isinstance(e, tvm.ir.GenericConst) else None)
            for constant in constants:
                values = constant.value.numpy()
                if values.dtype.kind != "f":
                    continue
                bad = np.isnan(values) if op in _BOUND_OPS else ~np.isfinite(values)
                if np.any(bad):
                    raise ModelFileError(f"{path}: a constant used by '{binding.var.name}' ({op}) is not finite "
                                         f"({np.count_nonzero(bad)} NaN or infinite values)")
                if op in _BOUND_OPS:
                    continue
                huge = np.abs(values.astype(np.float64)) > FLOAT_CONSTANT_LIMIT
                if np.any(huge):
                    raise ModelFileError(
                        f"{path}: a constant used by '{binding.var.name}' ({op}) holds {np.count_nonzero(huge)} values "
                        f"beyond {FLOAT_CONSTANT_LIMIT:.3g} (first: {float(values[huge].reshape(-1)[0]):.4g}); float32 "
                        "arithmetic overflows near them, where depends on the order of operations")


__all__ = ["ImportedModel", "TensorInfo", "load_model"]
