#!/usr/bin/env python3
"""Generate the frontend test models: small networks exported the way users export them
(Keras 3 ``TFLiteConverter.from_keras_model`` and ``model.export``), with seeded random weights.

    python models/frontend/generate.py            # all
    python models/frontend/generate.py enet_like_float

Needs tensorflow (not a test dependency: the outputs are committed beside this script). The
tests (tests/test_frontend_*.py) compile them and compare with LiteRT / TFLite Micro; these files
live apart from the zoo because some use ops TFLite Micro lacks (TILE).
"""
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402
from keras import layers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 7


def _prelu(x):
    return layers.PReLU(alpha_initializer=keras.initializers.RandomUniform(0.05, 0.4))(x)


def _bottleneck(x, channels, down=False):
    """ENet's bottleneck: 1x1 (2x2 s2 when downsampling) → 3x3 → 1x1, PReLU, residual Add; the
    downsampling shortcut is a MaxPool (ENet keeps its indices; this net does not) + 1x1."""
    y = layers.Conv2D(channels // 4, 2 if down else 1, strides=2 if down else 1, padding="same", use_bias=False)(x)
    y = _prelu(layers.BatchNormalization()(y))
    y = _prelu(layers.BatchNormalization()(layers.Conv2D(channels // 4, 3, padding="same")(y)))
    y = layers.BatchNormalization()(layers.Conv2D(channels, 1, use_bias=False)(y))
    skip = layers.Conv2D(channels, 1, use_bias=False)(layers.MaxPooling2D(2)(x)) if down else x
    return _prelu(layers.Add()([skip, y]))


def enet_like(batch_size=1):
    """ENet-like: initial block (conv s2 ‖ maxpool), bottlenecks, and an indices-free unpooling
    (UpSampling2D + 1x1 added to a Conv2DTranspose), float."""
    inp = keras.Input((32, 48, 3), batch_size=batch_size)
    x = _prelu(layers.Concatenate()([layers.Conv2D(13, 3, strides=2, padding="same")(inp),
                                      layers.MaxPooling2D(2)(inp)]))
    x = _bottleneck(x, 32, down=True)
    x = _bottleneck(_bottleneck(x, 32), 32)
    up = layers.UpSampling2D(2)(layers.Conv2D(16, 1)(x))
    x = _prelu(layers.Add()([up, layers.Conv2DTranspose(16, 3, strides=2, padding="same")(x)]))
    x = _bottleneck(x, 16)
    return keras.Model(inp, layers.Conv2DTranspose(4, 2, strides=2, padding="same")(x))


def _calibrated(model, shape):
    """Run seeded batches through in training mode so BatchNorm statistics are not the identity."""
    rng = np.random.default_rng(SEED)
    for _ in range(4):
        model(rng.standard_normal((1, *shape)).astype(np.float32), training=True)
    return model


def _keras3_default_export(model):
    """Keras 3's ``model.export`` (a SavedModel with a dynamic batch), converted to TFLite."""
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "saved_model")
        model.export(saved, format="tf_saved_model", verbose=False)
        return tf.lite.TFLiteConverter.from_saved_model(saved).convert()


def enet_like_float():
    """Keras 3 default export: input [-1, 32, 48, 3], SHAPE/STRIDED_SLICE/PACK feeding the
    transposed convs' output shapes, EXPAND_DIMS/TILE/RESHAPE for UpSampling2D."""
    keras.utils.set_random_seed(SEED)
    model = _calibrated(enet_like(batch_size=None), (32, 48, 3))
    return _keras3_default_export(model)


def _int8(converter, shape):
    """Full-integer post-training quantization with a seeded representative dataset."""
    rng = np.random.default_rng(SEED)
    samples = [rng.uniform(-1, 1, (1, *shape)).astype(np.float32) for _ in range(16)]
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def unet_upsampling(resize=False):
    """A two-level U-Net whose decoder uses UpSampling2D (nearest) + concat + conv, and an ASPP-like
    block of dilated 3x3 convs (exported as SPACE_TO_BATCH_ND → CONV_2D → BATCH_TO_SPACE_ND).
    ``resize``: the same upsampling as a Resizing layer (RESIZE_NEAREST_NEIGHBOR, which TFLite
    Micro runs, unlike the TILE that UpSampling2D becomes)."""
    inp = keras.Input((24, 32, 3))
    e1 = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    e2 = layers.Conv2D(16, 3, padding="same", activation="relu")(layers.MaxPooling2D(2)(e1))
    aspp = layers.Concatenate()([
        layers.Conv2D(8, 1, activation="relu")(e2),
        layers.Conv2D(8, 3, padding="same", dilation_rate=2)(e2),  # no activation: TFLite would
        layers.DepthwiseConv2D(3, padding="same", dilation_rate=3)(e2)])  # make it a standalone RELU
    upsample = layers.Resizing(24, 32, interpolation="nearest") if resize else layers.UpSampling2D(2)
    d1 = layers.Concatenate()([upsample(aspp), e1])
    d1 = layers.Conv2D(8, 3, padding="same", activation="relu")(d1)
    return keras.Model(inp, layers.Conv2D(3, 1)(d1))


def _unet_model(resize=False):
    keras.utils.set_random_seed(SEED)
    return unet_upsampling(resize)


def _unet_int8(resize):
    with tempfile.TemporaryDirectory() as tmp:
        saved = os.path.join(tmp, "saved_model")
        _unet_model(resize).export(saved, format="tf_saved_model", verbose=False)
        return _int8(tf.lite.TFLiteConverter.from_saved_model(saved), (24, 32, 3))


def unet_upsampling_int8():
    """Keras 3 default export (dynamic batch), full int8."""
    return _unet_int8(resize=False)


def unet_resize_int8():
    """The same weights and quantization with RESIZE_NEAREST_NEIGHBOR: TFLite Micro's reference."""
    return _unet_int8(resize=True)


def unet_upsampling_float():
    """Same network, Keras 3 default export, float."""
    return _keras3_default_export(_unet_model())


MODELS = {"enet_like_float": enet_like_float, "unet_upsampling_int8": unet_upsampling_int8,
          "unet_upsampling_float": unet_upsampling_float, "unet_resize_int8": unet_resize_int8}


def main(names):
    for name in names or MODELS:
        keras.backend.clear_session()  # layer names (in the file) must not depend on the models before
        data = MODELS[name]()
        with open(os.path.join(HERE, name + ".tflite"), "wb") as f:
            f.write(data)
        print(f"{name}.tflite: {len(data)} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
