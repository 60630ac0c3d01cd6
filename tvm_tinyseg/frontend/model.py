"""What a frontend hands the compiler: a Relax module plus the facts a user needs to know."""
from dataclasses import dataclass

import tvm


@dataclass
class TensorInfo:
    name: str
    shape: tuple
    dtype: str
    scale: float = None  # per-tensor quantization (real = scale * (q - zero_point)); None if not quantized
    zero_point: int = None


@dataclass
class ImportedModel:
    path: str
    format: str  # "tflite" or "onnx"
    mod: tvm.IRModule  # Relax, fake-quantized where the model is quantized
    inputs: list  # [TensorInfo]
    outputs: list  # [TensorInfo]
    ops: list  # source-format op names in execution order
