#!/usr/bin/env python3
"""Generate the models-as-users-write-them suite (models/user/): standard Keras layers and exporters.

Usage (needs tensorflow, tf_keras, torch, onnx, onnxruntime; not run in CI):

    python models/generate_user_models.py                      # everything, 64x64, into models/user/
    python models/generate_user_models.py unet_nearest enet_prelu
    python models/generate_user_models.py --size 128 --out /tmp/user128   # compile-time benchmark inputs

Unlike models/generate.py, nothing here is written to suit the compiler: the networks use the
layers a user reaches for (keras.applications backbones with ``weights=None``, UpSampling2D,
SeparableConv2D, ZeroPadding2D + valid convs, Dropout, PReLU, GlobalAveragePooling2D, Softmax)
and the exporters a user runs. Each Keras architecture is written in three export styles:

* ``<arch>_keras3``: Keras 3, ``keras.Input(shape)`` (batch ``-1`` in the input's shape_signature);
* ``<arch>_keras3_b1``: Keras 3 with ``keras.Input(shape, batch_size=1)``;
* ``<arch>_tfkeras``: the same network in tf_keras (legacy Keras 2), batch ``-1``.

All are full-int8 post-training quantized with ``TFLiteConverter.from_keras_model`` (seeded
representative dataset, int8 input and output). Besides those: one PyTorch U-Net exported with
``torch.onnx.export`` and quantized by ``onnxruntime.quantization.quantize_static`` (QDQ,
per-channel int8 weights), and one float MediaPipe-style network (depthwise encoder with a
squeeze-excite gate, transposed-conv decoder with fused ReLU). Weights are seeded random
(He-normal kernels, randomised BatchNorm statistics, no training); outputs are deterministic for
given library versions.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from generate import _quiet, inspect_tflite, op_summary  # noqa: E402  (models/generate.py)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

N_REPR = 16
CLASSES = 3
STYLES = ("keras3", "keras3_b1", "tfkeras")


# ---------------------------------------------------------------------------
# Architectures: each takes the Keras module (keras or tf_keras), the input size and the batch
# (None: unknown, 1: fixed) and returns an uncompiled functional model.
# ---------------------------------------------------------------------------
def _cbr(K, x, c, k=3, s=1, rate=1, act="relu"):
    x = K.layers.Conv2D(c, k, strides=s, padding="same", dilation_rate=rate, use_bias=False)(x)
    x = K.layers.BatchNormalization()(x)
    return K.layers.Activation(act)(x)


def _tap(backbone, size, stride):
    """The output of the last backbone layer at ``size / stride`` resolution."""
    want = size // stride
    found = [layer for layer in backbone.layers if len(layer.output.shape) == 4
             and layer.output.shape[1] == want]
    return found[-1].output


def deeplabv3plus_mbv2(K, size, batch):
    """DeepLabV3+ (output stride 8): MobileNetV2-0.35 to block 6, ASPP with 1x1, two dilated 3x3
    and a GlobalAveragePooling2D branch, bilinear decoder with a stride-4 low-level skip."""
    inp = K.Input((size, size, 3), batch_size=batch)
    backbone = K.applications.MobileNetV2(input_tensor=inp, alpha=0.35, include_top=False, weights=None)
    high = backbone.get_layer("block_6_expand_relu").output        # stride 8
    low = backbone.get_layer("block_3_expand_relu").output         # stride 4
    f = size // 8
    branches = [_cbr(K, high, 24, 1), _cbr(K, high, 24, 3, rate=2), _cbr(K, high, 24, 3, rate=4)]
    pooled = K.layers.GlobalAveragePooling2D(keepdims=True)(high)
    pooled = _cbr(K, pooled, 24, 1)
    branches.append(K.layers.UpSampling2D(f, interpolation="bilinear")(pooled))
    x = _cbr(K, K.layers.Concatenate()(branches), 24, 1)
    x = K.layers.UpSampling2D(2, interpolation="bilinear")(x)
    x = K.layers.Concatenate()([x, _cbr(K, low, 12, 1)])
    x = _cbr(K, x, 24, 3)
    x = K.layers.Conv2D(CLASSES, 1)(x)
    out = K.layers.UpSampling2D(4, interpolation="bilinear")(x)
    return K.Model(inp, out)


def lraspp_mbv3s(K, size, batch):
    """LR-ASPP (Howard et al., 2019) on MobileNetV3-Small-0.75 (hard-swish) truncated at stride 16."""
    inp = K.Input((size, size, 3), batch_size=batch)
    backbone = K.applications.MobileNetV3Small(input_tensor=inp, alpha=0.75, minimalistic=False,
                                               include_top=False, weights=None,
                                               include_preprocessing=False)
    high, low = _tap(backbone, size, 16), _tap(backbone, size, 8)
    b1 = _cbr(K, high, 32, 1)
    gate = K.layers.GlobalAveragePooling2D(keepdims=True)(high)
    gate = K.layers.Conv2D(32, 1, activation="sigmoid")(gate)
    x = K.layers.Multiply()([b1, gate])
    x = K.layers.UpSampling2D(2, interpolation="bilinear")(x)
    x = K.layers.Add()([K.layers.Conv2D(CLASSES, 1)(x), K.layers.Conv2D(CLASSES, 1)(low)])
    out = K.layers.UpSampling2D(8, interpolation="bilinear")(x)
    return K.Model(inp, out)


def _unet(K, size, batch, interpolation, softmax=False):
    inp = K.Input((size, size, 3), batch_size=batch)
    skips, x = [], inp
    for c in (8, 16):
        x = _cbr(K, _cbr(K, x, c), c)
        skips.append(x)
        x = K.layers.MaxPooling2D()(x)
    x = _cbr(K, _cbr(K, x, 32), 32)
    for c, skip in zip((16, 8), reversed(skips)):
        x = K.layers.UpSampling2D(2, interpolation=interpolation)(x)
        x = K.layers.Concatenate()([x, skip])
        x = _cbr(K, _cbr(K, x, c), c)
    out = K.layers.Conv2D(CLASSES, 1)(x)
    if softmax:
        out = K.layers.Softmax()(out)
    return K.Model(inp, out)


def unet_nearest(K, size, batch):
    """U-Net 8-16-32, MaxPooling2D down, UpSampling2D(interpolation="nearest") up, concat skips."""
    return _unet(K, size, batch, "nearest")


def unet_bilinear(K, size, batch):
    """The same U-Net with UpSampling2D(interpolation="bilinear")."""
    return _unet(K, size, batch, "bilinear")


def unet_nearest_softmax(K, size, batch):
    """unet_nearest with a Softmax head (class probabilities instead of logits)."""
    return _unet(K, size, batch, "nearest", softmax=True)


def unet_sepconv(K, size, batch):
    """Separable-conv U-Net: ZeroPadding2D + valid 3x3 stem, SeparableConv2D blocks with residual
    Add (1x1 projection) and Dropout, strided down, Conv2DTranspose(3, stride 2, same) up."""
    inp = K.Input((size, size, 3), batch_size=batch)
    x = K.layers.ZeroPadding2D(1)(inp)
    x = K.layers.Conv2D(12, 3, padding="valid", activation="relu")(x)

    def block(x, c, s):
        y = K.layers.SeparableConv2D(c, 3, strides=s, padding="same", use_bias=False)(x)
        y = K.layers.Activation("relu")(K.layers.BatchNormalization()(y))
        y = K.layers.SeparableConv2D(c, 3, padding="same", use_bias=False)(y)
        y = K.layers.BatchNormalization()(y)
        y = K.layers.Dropout(0.1)(y)
        shortcut = K.layers.Conv2D(c, 1, strides=s)(x)
        return K.layers.Activation("relu")(K.layers.Add()([y, shortcut]))

    s1 = block(x, 16, 2)              # 1/2
    s2 = block(s1, 24, 2)             # 1/4
    x = block(s2, 32, 2)              # 1/8
    for c, skip in ((24, s2), (16, s1)):
        x = K.layers.Conv2DTranspose(c, 3, strides=2, padding="same")(x)
        x = K.layers.Concatenate()([x, skip])
        x = block(x, c, 1)
    x = K.layers.Conv2DTranspose(12, 3, strides=2, padding="same", activation="relu")(x)
    out = K.layers.Conv2D(CLASSES, 1)(x)
    return K.Model(inp, out)


def enet_prelu(K, size, batch):
    """ENet-like: initial block (strided conv concat max-pool), PReLU bottlenecks (regular,
    dilated, asymmetric 5x1/1x5, downsampling), SpatialDropout2D, transposed-conv upsampling."""
    inp = K.Input((size, size, 3), batch_size=batch)

    def prelu(x):
        return K.layers.PReLU(shared_axes=[1, 2])(x)

    conv = K.layers.Conv2D(13, 3, strides=2, padding="same")(inp)
    x = K.layers.Concatenate()([conv, K.layers.MaxPooling2D()(inp)])
    x = prelu(K.layers.BatchNormalization()(x))                    # 1/2, 16 ch

    def bottleneck(x, c, kind="regular", rate=1):
        mid = c // 4
        s = 2 if kind == "down" else 1
        y = prelu(K.layers.BatchNormalization()(K.layers.Conv2D(mid, s, strides=s, use_bias=False)(x)))
        if kind == "asym":
            y = K.layers.Conv2D(mid, (5, 1), padding="same", use_bias=False)(y)
            y = K.layers.Conv2D(mid, (1, 5), padding="same", use_bias=False)(y)
        else:
            y = K.layers.Conv2D(mid, 3, padding="same", dilation_rate=rate, use_bias=False)(y)
        y = prelu(K.layers.BatchNormalization()(y))
        y = K.layers.BatchNormalization()(K.layers.Conv2D(c, 1, use_bias=False)(y))
        y = K.layers.SpatialDropout2D(0.1)(y)
        main = x
        if kind == "down":
            main = K.layers.Conv2D(c, 1, use_bias=False)(K.layers.MaxPooling2D()(x))
        return prelu(K.layers.Add()([y, main]))

    x = bottleneck(x, 32, "down")                                   # 1/4
    x = bottleneck(x, 32)
    x = bottleneck(x, 32, rate=2)
    x = bottleneck(x, 32, "asym")
    x = bottleneck(x, 32, rate=4)
    up = K.layers.Conv2DTranspose(16, 3, strides=2, padding="same", use_bias=False)(x)
    x = prelu(K.layers.BatchNormalization()(up))                   # 1/2
    x = bottleneck(x, 16)
    out = K.layers.Conv2DTranspose(CLASSES, 2, strides=2)(x)       # full resolution
    return K.Model(inp, out)


def mediapipe_style(K, size, batch):
    """Float MediaPipe-selfie-like net: strided conv + hard-swish, depthwise-separable blocks with
    a squeeze-excite gate, decoder of Conv2DTranspose(2, stride 2, relu) + Add skips, sigmoid mask."""
    inp = K.Input((size, size, 3), batch_size=batch)
    x = K.layers.Conv2D(16, 3, strides=2, padding="same", activation="hard_swish")(inp)  # 1/2

    def dsblock(x, c, s):
        y = K.layers.DepthwiseConv2D(3, strides=s, padding="same", activation="relu")(x)
        y = K.layers.Conv2D(c, 1)(y)
        se = K.layers.GlobalAveragePooling2D(keepdims=True)(y)
        se = K.layers.Conv2D(max(c // 4, 4), 1, activation="relu")(se)
        se = K.layers.Conv2D(c, 1, activation="sigmoid")(se)
        return K.layers.Multiply()([y, se])

    s1 = dsblock(x, 16, 1)                                          # 1/2
    s2 = dsblock(s1, 24, 2)                                         # 1/4
    x = dsblock(s2, 32, 2)                                          # 1/8
    for c, skip in ((24, s2), (16, s1)):
        x = K.layers.Conv2DTranspose(c, 2, strides=2, activation="relu")(x)
        x = K.layers.Add()([x, skip])
    x = K.layers.Conv2DTranspose(1, 2, strides=2)(x)                # full resolution
    out = K.layers.Activation("sigmoid")(x)
    return K.Model(inp, out)


KERAS_ARCHS = {f.__name__: f for f in (deeplabv3plus_mbv2, lraspp_mbv3s, unet_nearest, unet_bilinear,
                                        unet_nearest_softmax, unet_sepconv, enet_prelu)}
SEEDS = {name: 1000 + i for i, name in enumerate(
    [*KERAS_ARCHS, "mediapipe_style_float", "torch_unet_qdq"])}


# ---------------------------------------------------------------------------
# Seeded weights
# ---------------------------------------------------------------------------
def _weight_name(w):
    return w.name.split("/")[-1].split(":")[0]  # "kernel" in Keras 3, "conv2d/kernel:0" in tf_keras


def randomize(model, seed):
    """He-normal kernels, small biases, PReLU slopes in [0.05, 0.3], BatchNorm statistics drawn
    around an identity transform (no training, nothing downloaded)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for w in layer.weights:
            name, shape = _weight_name(w), tuple(w.shape)
            if name in ("kernel", "depthwise_kernel", "pointwise_kernel"):
                if name == "depthwise_kernel":
                    fan_in = shape[0] * shape[1]
                elif type(layer).__name__ == "Conv2DTranspose":
                    fan_in = shape[0] * shape[1] * shape[3] / 4
                else:
                    fan_in = int(np.prod(shape[:-1]))
                values.append(rng.normal(0, np.sqrt(2.0 / fan_in), shape))
            elif name == "bias":
                values.append(rng.normal(0, 0.05, shape))
            elif name == "alpha":
                values.append(rng.uniform(0.05, 0.3, shape))
            elif name == "gamma":
                values.append(rng.uniform(0.6, 1.4, shape))
            elif name == "beta":
                values.append(rng.normal(0.1, 0.3, shape))
            elif name == "moving_mean":
                values.append(rng.normal(0, 0.2, shape))
            elif name == "moving_variance":
                values.append(rng.uniform(0.5, 1.5, shape))
            else:
                raise SystemExit(f"{layer.name}: no initialiser for weight {w.name}")
        if values:
            layer.set_weights([v.astype(np.float32) for v in values])


def repr_data(shape, seed):
    return np.random.default_rng(seed).uniform(0, 1, (N_REPR, *shape)).astype(np.float32)


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------
def to_tflite(model, data=None):
    """Full-int8 PTQ with int8 input/output, or float when ``data`` is None."""
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if data is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([d[None]] for d in data)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    with _quiet():
        return conv.convert()


def distinct_outputs(buf):
    """Distinct output values on a seeded input (LiteRT's builtin kernels: its reference kernels
    lack int8 TILE): a near-constant output would make the suite's comparisons prove little."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=buf,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    rng = np.random.default_rng(0)
    x = (rng.integers(-128, 128, d["shape"], dtype=np.int8) if d["dtype"] == np.int8
         else rng.uniform(0, 1, d["shape"]).astype(np.float32))
    it.set_tensor(d["index"], x)
    it.invoke()
    return len(np.unique(it.get_tensor(it.get_output_details()[0]["index"])))


def _write(path, buf):
    with open(path + ".tmp", "wb") as f:
        f.write(buf)
    os.replace(path + ".tmp", path)


def _report(path, buf):
    ops, wbytes, (ishape, itype), (oshape, otype) = inspect_tflite(buf)
    distinct = distinct_outputs(buf)
    print(f"{os.path.basename(path)}: {len(buf)} B, in {list(ishape)} {itype}, out {list(oshape)} {otype}, "
          f"[{op_summary(ops)}], distinct outputs {distinct}", flush=True)
    if distinct < 8:
        raise SystemExit(f"{path}: output (nearly) constant on random input")
    return ops


def generate_keras(arch, size, out_dir):
    seed = SEEDS[arch]
    data = repr_data((size, size, 3), seed + 1)
    rows = []
    for style in STYLES:
        K = tf_keras if style == "tfkeras" else keras
        K.backend.clear_session()  # layer and tensor names restart: a file does not depend on what came before
        K.utils.set_random_seed(seed)
        model = KERAS_ARCHS[arch](K, size, 1 if style == "keras3_b1" else None)
        randomize(model, seed)
        path = os.path.join(out_dir, f"{arch}_{style}.tflite")
        buf = to_tflite(model, data)
        _write(path, buf)
        rows.append((os.path.basename(path), KERAS_ARCHS[arch].__doc__, _report(path, buf), len(buf)))
    return rows


def generate_mediapipe_style(size, out_dir):
    seed = SEEDS["mediapipe_style_float"]
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = mediapipe_style(keras, size, 1)
    randomize(model, seed)
    path = os.path.join(out_dir, "mediapipe_style_float.tflite")
    buf = to_tflite(model)
    _write(path, buf)
    return [(os.path.basename(path), mediapipe_style.__doc__, _report(path, buf), len(buf))]


def generate_torch_qdq(size, out_dir):
    """PyTorch U-Net -> torch.onnx.export (opset 17) -> quantize_static (QDQ, per-channel int8)."""
    import onnx
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from torch import nn

    seed = SEEDS["torch_unet_qdq"]
    torch.manual_seed(seed)

    def cbr(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc1, self.enc2, self.mid = cbr(3, 8), cbr(8, 16), cbr(16, 32)
            self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
            self.dec2 = cbr(32, 16)
            self.dec1 = cbr(24, 8)
            self.head = nn.Conv2d(8, CLASSES, 1)

        def forward(self, x):
            e1 = self.enc1(x)
            e2 = self.enc2(nn.functional.max_pool2d(e1, 2))
            m = self.mid(nn.functional.max_pool2d(e2, 2))
            d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
            d1 = self.dec1(torch.cat([nn.functional.interpolate(d2, scale_factor=2.0, mode="nearest"), e1], 1))
            return self.head(d1)

    net = UNet().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.uniform_(0.6, 1.4, generator=gen)
                m.bias.normal_(0.1, 0.3, generator=gen)
                m.running_mean.normal_(0, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
                assert m.running_var.shape == (c,)
    data = repr_data((3, size, size), seed + 1)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter([{"input": d[None]} for d in data])

        def get_next(self):
            return next(self.samples, None)

    path = os.path.join(out_dir, "torch_unet_qdq.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        float_path = os.path.join(tmp, "float.onnx")
        torch.onnx.export(net, torch.from_numpy(data[:1]), float_path, input_names=["input"],
                          output_names=["output"], opset_version=17, dynamo=False)
        quantize_static(float_path, path + ".tmp", Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        os.replace(path + ".tmp", path)
    model = onnx.load(path)
    ops = [n.op_type for n in model.graph.node]
    print(f"torch_unet_qdq.onnx: {os.path.getsize(path)} B, [{op_summary(ops)}]", flush=True)
    return [(os.path.basename(path), generate_torch_qdq.__doc__, ops, os.path.getsize(path))]


README_HEAD = """# Models as users write them

Generated by `models/generate_user_models.py` (seeded random weights, nothing downloaded; see its
docstring for the export styles). `tests/test_user_models.py` compiles each one with and without
TinySeg and compares it with its reference runtime; its `NOT_YET` table lists the ones that do not
compile yet and why. Per architecture, `_keras3` is Keras 3's default export (batch -1),
`_keras3_b1` Keras 3 with a batch-1 Input, `_tfkeras` tf_keras (legacy Keras 2).

| file | network | ops (count) | bytes |
|---|---|---|---|
"""


def write_readme(rows, versions):
    with open(os.path.join(HERE, "user", "README.md"), "w") as f:
        f.write(README_HEAD)
        for name, doc, ops, size in rows:
            summary = " ".join(doc.split()).split(". ")[0].rstrip(".")
            f.write(f"| `{name}` | {summary} | {op_summary(ops)} | {size} |\n")
        f.write(f"\nGenerated with {versions}.\n")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"subset of {list(SEEDS)}")
    parser.add_argument("--size", type=int, default=64, help="input height and width (default 64)")
    parser.add_argument("--out", default=os.path.join(HERE, "user"), help="output directory")
    args = parser.parse_args(argv)
    names = args.names or list(SEEDS)
    unknown = sorted(set(names) - set(SEEDS))
    if unknown:
        raise SystemExit(f"unknown models {unknown}; choose from {list(SEEDS)}")
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for name in names:
        if name in KERAS_ARCHS:
            rows += generate_keras(name, args.size, args.out)
        elif name == "mediapipe_style_float":
            rows += generate_mediapipe_style(args.size, args.out)
        else:
            rows += generate_torch_qdq(args.size, args.out)
    if not args.names and os.path.abspath(args.out) == os.path.join(HERE, "user"):
        import onnxruntime
        import torch
        write_readme(rows, f"TensorFlow {tf.__version__}, Keras {keras.__version__}, tf_keras "
                           f"{tf_keras.__version__}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")


if __name__ == "__main__":
    main(sys.argv[1:])
