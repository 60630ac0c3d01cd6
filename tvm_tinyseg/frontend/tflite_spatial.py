"""TFLite spatial and data-movement ops: what TVM's TFLite converter lacks for them, and the
quantization TFLite Micro assumes.

TFLite Micro's int8 TRANSPOSE, SPLIT/SPLIT_V, STRIDED_SLICE, DEPTH_TO_SPACE/SPACE_TO_DEPTH,
MIRROR_PAD and RESIZE_BILINEAR copy (or interpolate) int8 codes without requantizing: the result
means what the model says only if input and outputs share scale and zero point, which the TFLite
converter guarantees. A file that breaks this is refused rather than copied into a wrong meaning.
"""
import numpy as np
from tvm import relax

from tvm_tinyseg.errors import UnsupportedModelError

# int8 ops computed on int8 codes as they are (passes/lower_spatial_int8.py lowers the two that
# interpolate or average).
SPATIAL_INT8_OPS = frozenset({
    "RESIZE_BILINEAR", "MEAN", "MIRROR_PAD", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "TRANSPOSE", "SPLIT",
    "SPLIT_V", "STRIDED_SLICE", "ARG_MAX"})
# TVM's converter refuses these with quantized tensors although they only move int8 values.
QUANTIZED_DATA_MOVEMENT = frozenset({
    "MIRROR_PAD", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "TRANSPOSE", "SPLIT", "SPLIT_V", "STRIDED_SLICE",
    "ARG_MAX"})
# op → position of the input whose quantization every output must repeat
_SAME_QPARAMS_INPUT = {"MIRROR_PAD": 0, "DEPTH_TO_SPACE": 0, "SPACE_TO_DEPTH": 0, "TRANSPOSE": 0, "SPLIT": 1,
                       "SPLIT_V": 0, "STRIDED_SLICE": 0, "RESIZE_BILINEAR": 0}


def _qparams(subgraph, index):
    quant = subgraph.Tensors(index).Quantization()
    if quant is None or quant.ScaleLength() == 0:
        return None
    return tuple(np.float32(s) for s in quant.ScaleAsNumpy()), tuple(int(z) for z in quant.ZeroPointAsNumpy())


def _bilinear_flags(op):
    from tflite.ResizeBilinearOptions import ResizeBilinearOptions

    options = ResizeBilinearOptions()
    options.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
    return options.AlignCorners(), options.HalfPixelCenters()


def check_spatial_ops(path, subgraph, ops):
    """Refuse data movement whose output quantization differs from its input's (see module doc),
    and RESIZE_BILINEAR with both align_corners and half_pixel_centers (TFLite refuses it; TVM's
    converter would silently drop align_corners)."""
    for i, op_name in enumerate(ops):
        if op_name == "RESIZE_BILINEAR" and subgraph.Operators(i).BuiltinOptions() is not None \
                and all(_bilinear_flags(subgraph.Operators(i))):
            raise UnsupportedModelError(f"{path}: RESIZE_BILINEAR (operator #{i}) sets both align_corners and "
                                        "half_pixel_centers, which TFLite does not allow")
        position = _SAME_QPARAMS_INPUT.get(op_name)
        if position is None:
            continue
        op = subgraph.Operators(i)
        source = int(op.InputsAsNumpy()[position])
        for output in op.OutputsAsNumpy():
            if _qparams(subgraph, source) != _qparams(subgraph, int(output)):
                name = subgraph.Tensors(int(output)).Name().decode()
                raise UnsupportedModelError(
                    f"{path}: {op_name} (operator #{i}) output '{name}' is quantized differently from its input; "
                    "TFLite Micro copies the int8 codes unchanged, so the model's output would not mean what it says")


class SpatialOpsConverter:
    """Mixin for TVM's ``OperatorConverter``: MIRROR_PAD in both modes (TVM refuses SYMMETRIC) and
    ARG_MAX/ARG_MIN with the output type the model declares (TVM always returns int64)."""

    def convert_mirror_pad(self, op):
        from tflite.MirrorPadOptions import MirrorPadOptions

        data, paddings = self.get_input_tensors(op)
        options = MirrorPadOptions()
        options.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        edge_repeated = options.Mode() != 0  # 0 = REFLECT (edge once), 1 = SYMMETRIC (edge twice)
        expr = self.get_expr(data.tensor_idx)
        shape = [int(s) for s in data.tensor.ShapeAsNumpy()]
        for axis, (before, after) in enumerate(self.get_tensor_value(paddings).reshape(-1, 2)):
            if before or after:
                source = mirrored_indices(shape[axis], int(before), int(after), edge_repeated)
                expr = relax.op.take(expr, relax.const(source, "int32"), axis=axis)
        return expr

    def _convert_arg_min_max(self, op, relax_op):
        out = super()._convert_arg_min_max(op, relax_op)
        dtype = self.get_tensor_type_str(self.get_output_tensors(op)[0].tensor.Type())
        return out if dtype == "int64" else relax.op.astype(out, dtype)


def mirrored_indices(size, before, after, edge_repeated) -> np.ndarray:
    """Source index of every output position of a mirror pad along one axis (TFLite's
    GetInputDimension: REFLECT mirrors around the edge element, SYMMETRIC repeats it)."""
    offset = 0 if edge_repeated else 1
    position = np.arange(-before, size + after)
    source = np.where(position < 0, -position - 1 + offset, position)
    source = np.where(source >= size, 2 * size - 1 - offset - source, source)
    if np.any((source < 0) | (source >= size)):
        raise UnsupportedModelError(f"MIRROR_PAD of {before}+{after} on a dimension of size {size} is too wide")
    return source.astype(np.int32)
