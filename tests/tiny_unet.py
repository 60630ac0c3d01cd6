"""A TinyUNet small enough for an 8 KiB-SRAM microcontroller (ATmega2560), written with the int8
test builder: 24x24x1 int8 input, DoubleConv widths 4-8-16, two MaxPool levels, TRANSPOSE_CONV
(k2, s2) up-sampling with skip concatenations, a 1x1 head. Without TinySeg its arena (9,216 B)
exceeds the whole SRAM; with TinySeg the 24x24x4 skip is spilled and read back row by row."""
import numpy as np

from int8_net import Net

SIZE, WIDTHS = 24, (4, 8, 16)


def _transpose_conv_like(net, x, out_channels, like):
    """TRANSPOSE_CONV k2 s2 whose output shares ``like``'s quantization (TFLite Micro's
    CONCATENATION requires equal input and output scales)."""
    (_, h, w, channels), (in_scale, _) = net.shape(x), net.qparams(x)
    weights, w_scales = net._weights([out_channels, 2, 2, channels], 0)
    shape = [1, 2 * h, 2 * w, out_channels]
    y = net.activation("tconv", shape, *net.qparams(like))
    net.b.op("TRANSPOSE_CONV", [net.const("output_shape", shape), weights, x, net._bias(in_scale, w_scales)], [y],
             options=("TransposeConvOptions", {"padding": "VALID", "stride_h": 2, "stride_w": 2}))
    return y


def tiny_unet(path, size=SIZE, widths=WIDTHS):
    """Write the model to ``path`` and return the path."""
    net = Net((1, size, size, 1))

    def double_conv(x, channels):
        return net.conv(net.conv(x, channels, activation="RELU"), channels, activation="RELU")

    skips, x = [], net.x
    for channels in widths[:-1]:
        x = double_conv(x, channels)
        skips.append(x)
        x = net.pool(x, "MAX_POOL_2D", (2, 2), 2, "VALID")
    x = double_conv(x, widths[-1])
    for skip, channels in zip(reversed(skips), reversed(widths[:-1])):
        x = double_conv(net.concat([skip, _transpose_conv_like(net, x, channels, skip)], 3), channels)
    return net.save(path, net.conv(x, 1, kernel=1))


def tiny_input(seed):
    return np.random.default_rng(seed).integers(-128, 128, size=(1, SIZE, SIZE, 1), dtype=np.int8)
