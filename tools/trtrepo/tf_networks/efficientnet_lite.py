"""EfficientNet-Lite (efficientnet-lite-pytorch) in Keras: MBConv blocks without squeeze-excitation, ReLU6."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trtrepo.tf_networks.layers import batch_norm, conv2d, dense, nchw_input

if TYPE_CHECKING:
    import keras
    import torch

    from trtrepo.specs import ModelSpec


def _same_conv(x: "keras.KerasTensor", conv: "torch.nn.Module", name: str) -> "keras.KerasTensor":
    """The package's Conv2dStaticSamePadding: its ZeroPad2d (left, right, top, bottom), then the convolution."""
    padding = getattr(conv.static_padding, "padding", (0, 0, 0, 0))
    return conv2d(x, conv, name, padding=tuple(padding))


def _mbconv(x: "keras.KerasTensor", block: "torch.nn.Module", name: str) -> "keras.KerasTensor":
    import keras

    if block.has_se:
        raise NotImplementedError(f"{name}: squeeze-excitation (not in the Lite models) has no twin here")
    args = block._block_args
    y = x
    if args.expand_ratio != 1:
        y = keras.layers.ReLU(6.0, name=f"{name}_expand_relu")(
            batch_norm(_same_conv(y, block._expand_conv, f"{name}_expand"), block._bn0, f"{name}_bn0"))
    y = keras.layers.ReLU(6.0, name=f"{name}_depthwise_relu")(
        batch_norm(_same_conv(y, block._depthwise_conv, f"{name}_depthwise"), block._bn1, f"{name}_bn1"))
    y = batch_norm(_same_conv(y, block._project_conv, f"{name}_project"), block._bn2, f"{name}_bn2")
    # The package's own test, kept as it is: a stage's first block holds its stride as a list, never equal to 1.
    if block.id_skip and args.stride == 1 and args.input_filters == args.output_filters:
        y = keras.layers.Add(name=f"{name}_add")([y, x])
    return y


def efficientnet_lite(spec: "ModelSpec", network: "torch.nn.Module") -> "keras.Model":
    import keras

    if network._global_params.local_pooling:
        raise NotImplementedError("local pooling (Lite1 and up) has no twin here")
    tensor = spec.inputs[0]
    inputs, x = nchw_input(tensor.shape, tensor.name)
    x = keras.layers.ReLU(6.0, name="stem_relu")(
        batch_norm(_same_conv(x, network._conv_stem, "stem_conv"), network._bn0, "stem_bn"))
    for index, block in enumerate(network._blocks):
        x = _mbconv(x, block, f"block{index}")
    x = keras.layers.ReLU(6.0, name="head_relu")(
        batch_norm(_same_conv(x, network._conv_head, "head_conv"), network._bn1, "head_bn"))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, dense(x, network._fc, spec.outputs[0].name), name=spec.name)
