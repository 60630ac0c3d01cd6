#!/usr/bin/env python3
"""Generate the tvm_tinyseg model zoo (deterministic, seeded random weights).

Usage (needs the ``models`` extra, i.e. tensorflow; onnx + numpy for the ONNX files):

    python models/generate.py            # all models
    python models/generate.py tinyunet_80x120 attendseg   # a subset

Every output is written next to this script.  Nothing is downloaded: weights are
seeded random (He-normal convs, BatchNorm statistics calibrated on the seeded
representative data and then perturbed, so that activations are neither dead
nor exploding), and the int8 models are produced by TFLite full-integer
post-training quantization with a seeded representative dataset
(``inference_input_type = inference_output_type = tf.int8``, builtin int8 ops
only).  The converter folds BatchNorm into the preceding convolution.

The int8 models are restricted to ops that TFLite Micro implements and the
compiler reproduces bit-exactly: CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV,
MAX_POOL_2D, AVERAGE_POOL_2D, CONCATENATION, ADD, MUL, LOGISTIC,
RESIZE_NEAREST_NEIGHBOR, PAD, RESHAPE, QUANTIZE.  This script checks that.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

ALLOWED_INT8_OPS = {
    "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "MAX_POOL_2D",
    "AVERAGE_POOL_2D", "CONCATENATION", "ADD", "MUL", "LOGISTIC",
    "RESIZE_NEAREST_NEIGHBOR", "PAD", "RESHAPE", "QUANTIZE",
}
N_REPR = 32  # representative samples for calibration


def _import_tf():
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover
        sys.exit("generate.py needs tensorflow (install the `models` extra)")
    import keras
    return tf, keras


tf, keras = _import_tf()
layers = keras.layers


# ---------------------------------------------------------------------------
# A tiny graph recorder: every layer call is logged so that the same float
# network can be written to ONNX without a converter.
# ---------------------------------------------------------------------------
class Nearest2D(layers.Layer):
    """Nearest-neighbour upsampling by an integer factor.

    keras.layers.UpSampling2D(interpolation="nearest") is implemented with
    ops.repeat in Keras 3 (-> non-builtin-friendly graph); this one lowers to a
    single RESIZE_NEAREST_NEIGHBOR (align_corners=False, half_pixel_centers=False).
    """

    def __init__(self, factor=2, **kw):
        super().__init__(**kw)
        self.factor = int(factor)

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        return tf.raw_ops.ResizeNearestNeighbor(
            images=x, size=[h * self.factor, w * self.factor],
            align_corners=False, half_pixel_centers=False)

    def compute_output_shape(self, s):
        return (s[0], s[1] * self.factor, s[2] * self.factor, s[3])

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


class Net:
    """Builds a Keras functional model and records (layer, inputs, output)."""

    def __init__(self, name, shape):
        self.name = name
        self.input = keras.Input(shape=shape, batch_size=1, name="input")
        self.nodes = []
        self._count = {}

    def _uname(self, kind):
        n = self._count.get(kind, 0)
        self._count[kind] = n + 1
        return f"{kind}_{n}"

    def __call__(self, layer, *xs):
        y = layer(xs[0] if len(xs) == 1 else list(xs))
        self.nodes.append((layer, list(xs), y))
        return y

    # convenience wrappers -------------------------------------------------
    def conv(self, x, c, k=3, s=1, bias=True):
        return self(layers.Conv2D(c, k, strides=s, padding="same", use_bias=bias,
                                  name=self._uname("conv")), x)

    def dw(self, x, k=3, s=1, bias=True):
        return self(layers.DepthwiseConv2D(k, strides=s, padding="same", use_bias=bias,
                                           name=self._uname("dwconv")), x)

    def bn(self, x):
        return self(layers.BatchNormalization(epsilon=1e-3, name=self._uname("bn")), x)

    def relu(self, x, max_value=None):
        return self(layers.ReLU(max_value=max_value,
                                name=self._uname("relu6" if max_value else "relu")), x)

    def sigmoid(self, x):
        return self(layers.Activation("sigmoid", name=self._uname("sigmoid")), x)

    def maxpool(self, x, p=2):
        return self(layers.MaxPooling2D(p, name=self._uname("maxpool")), x)

    def avgpool_full(self, x):
        return self(layers.AveragePooling2D(pool_size=(x.shape[1], x.shape[2]),
                                            name=self._uname("avgpool")), x)

    def up(self, x, f=2):
        return self(Nearest2D(f, name=self._uname("upsample")), x)

    def tconv(self, x, c):
        return self(layers.Conv2DTranspose(c, 2, strides=2, padding="valid",
                                           name=self._uname("tconv")), x)

    def concat(self, *xs):
        return self(layers.Concatenate(axis=-1, name=self._uname("concat")), *xs)

    def add(self, a, b):
        return self(layers.Add(name=self._uname("add")), a, b)

    def mul(self, a, b):
        return self(layers.Multiply(name=self._uname("mul")), a, b)

    def model(self, out):
        return keras.Model(self.input, out, name=self.name)


# ---------------------------------------------------------------------------
# Architectures
# ---------------------------------------------------------------------------
def tinyunet(h, w, cin, name, up_channels=lambda y, c: y.shape[-1] // 2):
    """TinyUNet of the TinySeg paper (Chae et al., LCTES 2024); each up step transposes the deeper
    tensor ``y`` to ``up_channels(y, c)`` channels (here half of y's: 64->32, 32->16, 16->8), then
    concatenates [skip, up] and applies DoubleConv(c)."""
    n = Net(name, (h, w, cin))

    def double_conv(x, c):
        for _ in range(2):
            x = n.relu(n.bn(n.conv(x, c, 3, bias=False)))
        return x

    x1 = double_conv(n.input, 8)
    x2 = double_conv(n.maxpool(x1), 16)
    x3 = double_conv(n.maxpool(x2), 32)
    x4 = double_conv(n.maxpool(x3), 64)
    y = x4
    for skip, c in ((x3, 32), (x2, 16), (x1, 8)):
        y = double_conv(n.concat(skip, n.tconv(y, up_channels(y, c))), c)
    out = n.conv(y, 1, 1)
    return n, n.model(out)


def tinyunet_authentic(h, w, cin, name):
    """TinyUNet exactly as the TinySeg authors define it (coslab-kr/tinyseg, model/models/unet.py):
    ``Up(c)`` transposes to ``c // 2`` channels (64->16, 32->8, 16->4; ``tinyunet`` above halves the
    input's channels instead), concatenates [skip, up] and applies DoubleConv(c). Differences kept
    from the zoo's conventions: int8 input/output (theirs: uint8, i.e. an extra QUANTIZE at each
    end) and one BatchNorm per conv (theirs shares one per DoubleConv; only the weights differ)."""
    return tinyunet(h, w, cin, name, up_channels=lambda y, c: c // 2)


def attention_condenser(n, x, mid, residual):
    """Attention condenser (Wen et al. 2021): condense (max-pool), embed
    (depthwise 3x3 + pointwise convs), expand (nearest upsampling),
    selective attention sigmoid(A) * V, optional residual ADD."""
    c = x.shape[-1]
    q = n.maxpool(x, 2)                                   # condensation
    k = n.relu(n.bn(n.dw(q, 3, bias=False)))              # embedding
    k = n.relu(n.bn(n.conv(k, mid, 1, bias=False)))
    k = n.conv(k, c, 1)
    a = n.sigmoid(n.up(k, 2))                             # expansion + attention
    v = n.mul(x, a)                                       # selective attention
    return n.add(v, x) if residual else v


def attendseg(h=96, w=96, cin=3, classes=4, name="attendseg"):
    n = Net(name, (h, w, cin))

    def cbr(x, c, k=3, s=1):
        return n.relu(n.bn(n.conv(x, c, k, s, bias=False)))

    def dsconv(x, c, s=1):
        x = n.relu(n.bn(n.dw(x, 3, s, bias=False)))
        return cbr(x, c, 1)

    x = cbr(n.input, 16, 3, 2)                         # 48x48x16
    x = cbr(x, 24)                                     # 48x48x24
    s1 = attention_condenser(n, x, 12, residual=True)
    x = dsconv(s1, 48, 2)                              # 24x24x48
    x = attention_condenser(n, x, 24, residual=True)
    s2 = dsconv(x, 48)
    x = dsconv(s2, 96, 2)                              # 12x12x96
    x = attention_condenser(n, x, 32, residual=True)
    x = dsconv(x, 96)
    x = attention_condenser(n, x, 32, residual=False)
    x = cbr(x, 48, 1)
    x = n.concat(n.up(x, 2), s2)                       # 24x24x96
    x = cbr(x, 48, 1)
    x = attention_condenser(n, x, 24, residual=True)
    x = dsconv(x, 32)
    x = cbr(x, 24, 1)
    x = n.concat(n.up(x, 2), s1)                       # 48x48x48
    x = dsconv(x, 24)
    x = attention_condenser(n, x, 12, residual=True)
    x = n.conv(x, classes, 1)                          # logits 48x48
    out = n.up(x, 2)                                   # 96x96xclasses
    return n, n.model(out)


def mbv2_lraspp(h=96, w=96, cin=3, classes=3, name="mbv2_lraspp"):
    """MobileNetV2-style encoder (width ~0.35) + LR-ASPP head."""
    n = Net(name, (h, w, cin))

    def cbr6(x, c, k, s=1):
        return n.relu(n.bn(n.conv(x, c, k, s, bias=False)), 6.0)

    def inverted_residual(x, t, c, s):
        cin_ = x.shape[-1]
        y = x
        if t != 1:
            y = cbr6(y, cin_ * t, 1)                            # expand
        y = n.relu(n.bn(n.dw(y, 3, s, bias=False)), 6.0)        # depthwise
        y = n.bn(n.conv(y, c, 1, bias=False))                   # project (linear)
        if s == 1 and cin_ == c:
            y = n.add(x, y)
        return y

    x = cbr6(n.input, 16, 3, 2)                        # 48x48
    low = None
    for t, c, reps, s in ((1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 3, 2),
                          (6, 24, 2, 2), (6, 32, 2, 1)):
        for i in range(reps):
            x = inverted_residual(x, t, c, s if i == 0 else 1)
        if c == 12:
            low = x                                    # 24x24x12, stride 4
    # LR-ASPP head on the 6x6x32 stride-16 feature
    b1 = n.relu(n.bn(n.conv(x, 32, 1, bias=False)))
    g = n.sigmoid(n.conv(n.avgpool_full(x), 32, 1))
    y = n.mul(b1, g)
    y = n.up(y, 4)                                     # 24x24x32
    y = n.add(n.conv(y, classes, 1), n.conv(low, classes, 1))
    out = n.up(y, 4)                                   # 96x96xclasses
    return n, n.model(out)


# ---------------------------------------------------------------------------
# Deterministic weights
# ---------------------------------------------------------------------------
def init_weights(net, model, data, seed):
    """He-normal convs, small biases; BatchNorm moving statistics measured on
    ``data`` (in graph order, so every BN sees already-initialised inputs) and
    then perturbed, random gamma/beta."""
    rng = np.random.default_rng(seed)
    for layer, xs, y in net.nodes:
        if isinstance(layer, layers.Conv2DTranspose):
            k = layer.kernel.shape  # (kh, kw, out, in)
            std = np.sqrt(2.0 / k[3])
            ws = [rng.normal(0, std, k)]
            if layer.use_bias:
                ws.append(rng.normal(0, 0.05, layer.bias.shape))
            layer.set_weights([w.astype(np.float32) for w in ws])
        elif isinstance(layer, layers.DepthwiseConv2D):
            k = layer.kernel.shape  # (kh, kw, in, mult)
            std = np.sqrt(2.0 / (k[0] * k[1]))
            ws = [rng.normal(0, std, k)]
            if layer.use_bias:
                ws.append(rng.normal(0, 0.05, layer.bias.shape))
            layer.set_weights([w.astype(np.float32) for w in ws])
        elif isinstance(layer, layers.Conv2D):
            k = layer.kernel.shape  # (kh, kw, in, out)
            std = np.sqrt(2.0 / (k[0] * k[1] * k[2]))
            ws = [rng.normal(0, std, k)]
            if layer.use_bias:
                ws.append(rng.normal(0, 0.05, layer.bias.shape))
            layer.set_weights([w.astype(np.float32) for w in ws])
    # BatchNorm: calibrate on the data in graph order
    for layer, xs, y in net.nodes:
        if not isinstance(layer, layers.BatchNormalization):
            continue
        probe = keras.Model(net.input, xs[0])
        a = np.concatenate([probe(d[None], training=False).numpy() for d in data])
        mean = a.mean(axis=(0, 1, 2))
        var = a.var(axis=(0, 1, 2)) + 1e-4
        c = mean.shape[0]
        gamma = rng.uniform(0.6, 1.4, c)
        beta = rng.normal(0.1, 0.3, c)
        mmean = mean + 0.1 * np.sqrt(var) * rng.normal(0, 1, c)
        mvar = var * rng.uniform(0.8, 1.25, c)
        layer.set_weights([w.astype(np.float32) for w in (gamma, beta, mmean, mvar)])


def repr_data(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, size=(N_REPR,) + tuple(shape)).astype(np.float32)


# ---------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------
def _converter(model):
    """from_keras_model, falling back to a concrete function if the Keras 3
    path is broken in this TF version."""
    try:
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        return conv
    except Exception as e:  # pragma: no cover
        print("  from_keras_model failed (%s); using a concrete function" % e)
    spec = tf.TensorSpec(model.inputs[0].shape, tf.float32, name="input")
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    return tf.lite.TFLiteConverter.from_concrete_functions([fn], model)


class _quiet:
    """Silence the converter's stdout chatter (Keras export prints every
    captured resource) while keeping our own summary readable."""

    def __enter__(self):
        sys.stdout.flush()
        self._fd = os.dup(1)
        self._null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self._null, 1)

    def __exit__(self, *a):
        sys.stdout.flush()
        os.dup2(self._fd, 1)
        os.close(self._fd)
        os.close(self._null)


def to_tflite_int8(model, data):
    conv = _converter(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([d[None]] for d in data)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with _quiet():
        return conv.convert()


def to_tflite_float(model):
    conv = _converter(model)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with _quiet():
        return conv.convert()


# ---------------------------------------------------------------------------
# Inspection (flatbuffer) -- uses the `tflite` package if present
# ---------------------------------------------------------------------------
def inspect_tflite(buf):
    """Return (ops in execution order, constant weight bytes, in/out info)."""
    from tflite.Model import Model
    from tflite.BuiltinOperator import BuiltinOperator
    from tflite.TensorType import TensorType
    names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    tnames = {v: k for k, v in vars(TensorType).items() if not k.startswith("_")}
    m = Model.GetRootAsModel(buf, 0)
    g = m.Subgraphs(0)
    ops = []
    for i in range(g.OperatorsLength()):
        oc = m.OperatorCodes(g.Operators(i).OpcodeIndex())
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        ops.append(names.get(code, str(code)))
    wbytes = 0
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        b = m.Buffers(t.Buffer())
        if b is not None and b.DataLength() > 0:
            wbytes += b.DataLength()

    def io(idx):
        t = g.Tensors(idx)
        return tuple(t.ShapeAsNumpy().tolist()), tnames[t.Type()].lower()

    return ops, wbytes, io(g.Inputs(0)), io(g.Outputs(0))


def op_summary(ops):
    seen = []
    for o in ops:
        if o not in seen:
            seen.append(o)
    return ", ".join(f"{o}x{ops.count(o)}" for o in seen)


def check_int8_runs(buf, ops):
    bad = sorted(set(ops) - ALLOWED_INT8_OPS)
    if bad:
        raise SystemExit(f"  disallowed ops in int8 model: {bad}")
    # reference kernels (XNNPACK rounds differently from TFLite Micro)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = tf.lite.Interpreter(
            model_content=buf,
            experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    x = np.random.default_rng(0).integers(-128, 128, size=d["shape"], dtype=np.int8)
    it.set_tensor(d["index"], x)
    it.invoke()
    y = it.get_tensor(it.get_output_details()[0]["index"])
    return len(np.unique(y))


# ---------------------------------------------------------------------------
# ONNX export straight from the recorded Keras graph (float32, NCHW)
# ---------------------------------------------------------------------------
def _same_pads(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def to_onnx(net, model, opset=17):
    import onnx
    from onnx import helper, numpy_helper, TensorProto

    nodes, inits = [], []
    names = {id(net.input): "input"}

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    for layer, xs, y in net.nodes:
        ln = layer.name
        ins = [names[id(x)] for x in xs]
        out = ln
        names[id(y)] = out
        if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)) and not \
                isinstance(layer, layers.Conv2DTranspose):
            kh, kw = layer.kernel_size
            sh, sw = layer.strides
            H, W = xs[0].shape[1], xs[0].shape[2]
            if layer.padding == "same":
                pt, pb = _same_pads(H, kh, sh)
                pl, pr = _same_pads(W, kw, sw)
            else:
                pt = pb = pl = pr = 0
            k = layer.kernel.numpy()
            if isinstance(layer, layers.DepthwiseConv2D):
                assert k.shape[3] == 1
                wt = k[:, :, :, 0].transpose(2, 0, 1)[:, None]
                group = k.shape[2]
            else:
                wt = k.transpose(3, 2, 0, 1)
                group = 1
            cin = [ins[0], const(ln + ".weight", wt)]
            if layer.use_bias:
                cin.append(const(ln + ".bias", layer.bias.numpy()))
            assert layer.activation.__name__ == "linear"
            nodes.append(helper.make_node(
                "Conv", cin, [out], name=ln, kernel_shape=[kh, kw], strides=[sh, sw],
                pads=[pt, pl, pb, pr], group=group))
        elif isinstance(layer, layers.Conv2DTranspose):
            assert tuple(layer.kernel_size) == tuple(layer.strides) and layer.padding == "valid"
            k = layer.kernel.numpy()  # (kh, kw, out, in) -> (in, out, kh, kw)
            cin = [ins[0], const(ln + ".weight", k.transpose(3, 2, 0, 1))]
            if layer.use_bias:
                cin.append(const(ln + ".bias", layer.bias.numpy()))
            nodes.append(helper.make_node(
                "ConvTranspose", cin, [out], name=ln, kernel_shape=list(layer.kernel_size),
                strides=list(layer.strides)))
        elif isinstance(layer, layers.BatchNormalization):
            g, b, m, v = [w.numpy() for w in (layer.gamma, layer.beta,
                                                layer.moving_mean, layer.moving_variance)]
            nodes.append(helper.make_node(
                "BatchNormalization",
                [ins[0], const(ln + ".gamma", g), const(ln + ".beta", b),
                 const(ln + ".mean", m), const(ln + ".var", v)],
                [out], name=ln, epsilon=float(layer.epsilon)))
        elif isinstance(layer, layers.ReLU):
            if layer.max_value is None:
                nodes.append(helper.make_node("Relu", ins, [out], name=ln))
            else:
                nodes.append(helper.make_node(
                    "Clip", [ins[0], const(ln + ".min", np.float32(0)),
                             const(ln + ".max", np.float32(layer.max_value))], [out], name=ln))
        elif isinstance(layer, layers.Activation):
            assert layer.activation.__name__ == "sigmoid"
            nodes.append(helper.make_node("Sigmoid", ins, [out], name=ln))
        elif isinstance(layer, (layers.MaxPooling2D, layers.AveragePooling2D)):
            assert layer.padding == "valid"
            op = "MaxPool" if isinstance(layer, layers.MaxPooling2D) else "AveragePool"
            nodes.append(helper.make_node(op, ins, [out], name=ln,
                                          kernel_shape=list(layer.pool_size),
                                          strides=list(layer.strides)))
        elif isinstance(layer, Nearest2D):
            f = float(layer.factor)
            nodes.append(helper.make_node(
                "Resize", [ins[0], "", const(ln + ".scales", [1, 1, f, f])], [out], name=ln,
                mode="nearest", coordinate_transformation_mode="asymmetric",
                nearest_mode="floor"))
        elif isinstance(layer, layers.Concatenate):
            nodes.append(helper.make_node("Concat", ins, [out], name=ln, axis=1))
        elif isinstance(layer, layers.Add):
            nodes.append(helper.make_node("Add", ins, [out], name=ln))
        elif isinstance(layer, layers.Multiply):
            nodes.append(helper.make_node("Mul", ins, [out], name=ln))
        else:
            raise NotImplementedError(type(layer))
    nodes[-1].output[0] = "output"
    names[id(net.nodes[-1][2])] = "output"

    def vi(name, t):
        s = t.shape
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [s[0], s[3], s[1], s[2]])

    graph = helper.make_graph(nodes, net.name, [vi("input", net.input)],
                              [vi("output", model.outputs[0])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="tvm_tinyseg models/generate.py")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m.SerializeToString()


def check_onnx(buf, model, data):
    import onnxruntime as ort
    sess = ort.InferenceSession(buf, providers=["CPUExecutionProvider"])
    worst = 0.0
    for d in data[:4]:
        ref = model(d[None], training=False).numpy().transpose(0, 3, 1, 2)
        got = sess.run(None, {"input": d[None].transpose(0, 3, 1, 2)})[0]
        worst = max(worst, float(np.abs(got - ref).max() / (np.abs(ref).max() + 1e-12)))
    if worst > 1e-4:
        raise SystemExit(f"  ONNX does not match Keras: max rel err {worst:.2e}")
    return worst


# ---------------------------------------------------------------------------
# Model table
# ---------------------------------------------------------------------------
SPECS = {
    # name: (builder, kwargs, seed, extra outputs)
    "tinyunet_80x120": (tinyunet, dict(h=80, w=120, cin=3), 80120, ("float", "onnx")),
    "tinyunet_160x240": (tinyunet, dict(h=160, w=240, cin=3), 160240, ()),
    "tinyunet_32x32_c1": (tinyunet, dict(h=32, w=32, cin=1), 3232, ()),
    "tinyunet_authentic_80x120": (tinyunet_authentic, dict(h=80, w=120, cin=3), 80121, ()),
    "attendseg": (attendseg, dict(h=96, w=96, cin=3, classes=4), 2021, ("onnx",)),
    "mbv2_lraspp": (mbv2_lraspp, dict(h=96, w=96, cin=3, classes=3), 2019, ()),
}


def _write(path, buf):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(buf)
    os.replace(tmp, path)


def generate(name):
    builder, kw, seed, extras = SPECS[name]
    keras.utils.set_random_seed(seed)
    net, model = builder(name=name, **kw)
    data = repr_data(model.inputs[0].shape[1:], seed + 1)
    init_weights(net, model, data, seed)
    nparams = int(sum(np.prod(w.shape) for w in model.get_weights()))

    path = os.path.join(HERE, name + ".tflite")
    buf = to_tflite_int8(model, data)
    _write(path, buf)
    ops, wbytes, (ishape, itype), (oshape, otype) = inspect_tflite(buf)
    distinct = check_int8_runs(buf, ops)
    print(f"{name}.tflite: {len(buf)} B, in {ishape} {itype}, out {oshape} {otype}, "
          f"{len(ops)} ops [{op_summary(ops)}], weights {wbytes} B, "
          f"float params {nparams}, distinct outputs on random input {distinct}")
    if distinct < 8:
        raise SystemExit("  output (nearly) constant on random input")
    rows = [(name + ".tflite", ops, wbytes, ishape, itype, len(buf))]

    if "float" in extras:
        fbuf = to_tflite_float(model)
        fpath = os.path.join(HERE, name + "_float.tflite")
        _write(fpath, fbuf)
        fops, fw, (fi, fit), _ = inspect_tflite(fbuf)
        print(f"{name}_float.tflite: {len(fbuf)} B, in {fi} {fit}, "
              f"{len(fops)} ops [{op_summary(fops)}], weights {fw} B")
        rows.append((name + "_float.tflite", fops, fw, fi, fit, len(fbuf)))
    if "onnx" in extras:
        obuf = to_onnx(net, model)
        err = check_onnx(obuf, model, data)
        _write(os.path.join(HERE, name + ".onnx"), obuf)
        print(f"{name}.onnx: {len(obuf)} B, NCHW float32, max rel err vs Keras {err:.1e}")
    return rows


ARCH = {
    "tinyunet_80x120": "TinyUNet (TinySeg, LCTES'24): DoubleConv 8-16-32-64, 3x MaxPool / "
                       "3x TransposeConv(k2,s2)+concat skip, 1x1 head, 1 class",
    "tinyunet_80x120_float": "TinyUNet 80x120, float32 (BatchNorm folded by the converter)",
    "tinyunet_160x240": "TinyUNet, same as above at 160x240",
    "tinyunet_32x32_c1": "TinyUNet, same as above at 32x32, 1 input channel",
    "tinyunet_authentic_80x120": "TinyUNet as the TinySeg authors' code defines it: Up(c) transposes to c/2 "
                                 "channels (64->16, 32->8, 16->4), concat [skip, up], DoubleConv(c)",
    "attendseg": "AttendSeg-style: 9 attention condensers (MaxPool condense, DW3x3+PW embed, "
                 "nearest expand, sigmoid*V, residual ADD) in a 2-level encoder-decoder, 4 classes",
    "mbv2_lraspp": "MobileNetV2-0.35-style inverted residuals (ReLU6) + LR-ASPP head "
                   "(AvgPool-full -> 1x1 -> sigmoid gate, nearest upsample, low-level skip), 3 classes",
}

README_HEAD = """# Model zoo

Seeded random-weight segmentation networks for testing the compiler (no training,
no downloads).  All int8 models are TFLite full-integer post-training quantized
(int8 input and output, per-channel int8 weights, int32 biases) and use only ops
that TFLite Micro implements: CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV,
MAX_POOL_2D, AVERAGE_POOL_2D, CONCATENATION, ADD, MUL, LOGISTIC,
RESIZE_NEAREST_NEIGHBOR (align_corners=False, half_pixel_centers=False).
BatchNorm is folded into the convolutions by the converter.  Each int8 model runs
in TFLite Micro and gives a non-constant output on random int8 input; LiteRT with
its reference kernels (`OpResolverType.BUILTIN_REF`) matches TFLite Micro
bit-exactly (the default XNNPACK path does not: it rounds differently).

Regenerate: `python models/generate.py` (optionally naming a subset, e.g.
`python models/generate.py tinyunet_80x120`) after installing the `models` extra
(tensorflow, onnx, onnxruntime, tflite).  Output is deterministic for a given
TensorFlow version.

"""


def _onnx_info(path):
    import onnx
    m = onnx.load(path)
    ops = [n.op_type for n in m.graph.node]
    wbytes = sum(np.prod(t.dims) * 4 for t in m.graph.initializer)
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    return ops, int(wbytes), tuple(dims)


def update_readme(tf_version):
    rows = []
    for name in ARCH:
        for ext in (".tflite", ".onnx"):
            p = os.path.join(HERE, name + ext)
            if not os.path.exists(p):
                continue
            size = os.path.getsize(p)
            if ext == ".tflite":
                with open(p, "rb") as f:
                    ops, wb, (ish, ity), _ = inspect_tflite(f.read())
                inp = f"1x{ish[1]}x{ish[2]}x{ish[3]} {ity} (NHWC)"
                arch = ARCH[name]
            else:
                ops, wb, ish = _onnx_info(p)
                inp = "x".join(map(str, ish)) + " float32 (NCHW)"
                arch = ARCH[name].split(":")[0] + ", float32 ONNX (opset 17, BatchNorm kept)"
            rows.append(f"| `{name + ext}` | {arch} | {inp} | {op_summary(ops)} | "
                        f"{wb} | {size} |")
    table = ("| file | architecture | input | ops (count) | weight bytes | file bytes |\n"
             "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    with open(os.path.join(HERE, "README.md"), "w") as f:
        f.write(README_HEAD + table +
                f"\nGenerated with TensorFlow {tf_version}.  Weight bytes = sum of the "
                "constant buffers (TFLite) or initializers (ONNX).\n")


def main(argv):
    names = argv or list(SPECS)
    for n in names:
        if n not in SPECS:
            raise SystemExit(f"unknown model {n}; choose from {list(SPECS)}")
    print(f"tensorflow {tf.__version__}, keras {keras.__version__}")
    for n in names:
        generate(n)
    update_readme(tf.__version__)


if __name__ == "__main__":
    main(sys.argv[1:])
